"""Bulk catalog scoring: streaming, resumable, nothing lost (local engine; Ray Data engine)."""
