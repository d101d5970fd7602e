"""Engines and migrations for the review store.

The default database is a SQLite file in `var/` in WAL mode; `DUALSCREEN_DATABASE_URL` (for
example `postgresql+psycopg://user@host/db`) selects PostgreSQL. Alembic runs from code (no
alembic.ini), so migrations work from an installed package: `migrate(url)`, `downgrade(url)`.

SQLite compromise: every writing transaction starts with `BEGIN IMMEDIATE`, so writers queue up on
the file lock (with a busy timeout) instead of failing at commit on a stale WAL snapshot, which
keeps claims race-free; pages and reads use a second engine with deferred transactions, which read
a WAL snapshot and never wait for writers. PostgreSQL needs neither: row locks and the
compare-and-swap updates in `queue.py` do the work.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

DEFAULT_SQLITE = Path("var") / "review.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def default_url(root: Path | None = None) -> str:
    """The default database URL: a SQLite file `var/review.db` under `root` (or the cwd)."""
    path = (root or Path.cwd()) / DEFAULT_SQLITE
    return f"sqlite:///{path}"


def resolve_url(explicit: str | None = None) -> str:
    """The database URL: `explicit`, else `DUALSCREEN_DATABASE_URL`, else the default file."""
    return explicit or os.environ.get("DUALSCREEN_DATABASE_URL") or default_url()


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file of a file-based SQLite URL, else None."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str, echo: bool = False, immediate: bool = True) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys and a busy timeout.

    With `immediate` (for writers) every SQLite transaction begins with BEGIN IMMEDIATE; without
    it (for readers) a plain deferred BEGIN reads a WAL snapshot and never blocks writers.
    """
    if not is_sqlite(url):
        return create_engine(url, echo=echo, pool_pre_ping=True, future=True)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # It holds password hashes and the audit trail: readable by its owner only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default: the newest)."""
    from alembic import command

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    cfg = _alembic_config(engine)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the schema to `revision` (default: drop everything)."""
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        rev = MigrationContext.configure(connection).get_current_revision()
        connection.rollback()
        return rev


def head_revision() -> str:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def table_names(engine: Engine) -> list[str]:
    """Tables present in the database."""
    with engine.connect() as connection:
        names = sorted(inspect(connection).get_table_names())
        connection.rollback()
        return names
