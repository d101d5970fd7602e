"""Fixtures for the security tests: the review tests' real databases, model and app factory.

They are imported, not copied, so the security tests build the app exactly as tests/review and
tests/service do (a real SQLite file or a fresh PostgreSQL schema, the real smoke model).
"""

from __future__ import annotations

from tests.review.conftest import (  # noqa: F401 - fixtures, registered by being imported here
    anyio_backend,
    db_url,
    pg_database,
    predictor,
    store,
)
