"""The classification API: app factory, settings, auth, micro-batching, routes and errors."""
