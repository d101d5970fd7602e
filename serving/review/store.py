"""`ReviewStore`: one engine, its session factory, and the schema check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from serving.contract.errors import ConfigError
from serving.review import db


class ReviewStore:
    """The review database: open it once per process, take a session per unit of work."""

    def __init__(self, engine: Engine, read_engine: Engine | None = None) -> None:
        self.engine = engine
        self.read_engine = read_engine or engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers = sessionmaker(self.read_engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> ReviewStore:
        """Connect to `url`; upgrade the schema to the newest revision, or check it is there.

        Args:
            url: SQLAlchemy URL (`sqlite:///var/review.db`, `postgresql+psycopg://...`).
            migrate: run pending migrations; when False, refuse a database that is behind.
        """
        read_engine = db.make_engine(url, immediate=False) if db.is_sqlite(url) else None
        store = cls(db.make_engine(url), read_engine)
        if migrate:
            db.migrate(store.engine)
        else:
            current = db.current_revision(store.engine)
            if current != db.head_revision():
                store.dispose()
                raise ConfigError(
                    f"review database at revision {current or 'none'}, code needs "
                    f"{db.head_revision()}: run `dualscreen review migrate`"
                )
        return store

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def session(self) -> Session:
        """A new session for writing (use as a context manager; commit explicitly)."""
        return self._sessions()

    def reader(self) -> Session:
        """A new session for reading only (on SQLite: a snapshot that never blocks writers)."""
        return self._readers()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits at the end of the block, or rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
