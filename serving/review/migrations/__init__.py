"""Alembic migrations of the review store, run from code by `serving.review.db`."""
