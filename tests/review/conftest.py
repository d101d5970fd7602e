"""Fixtures for the review store (issue 6): a real SQLite file and the real PostgreSQL server.

PostgreSQL: one throw-away database per test session (`dualscreen_review_<random>`, dropped at
the end, so concurrent runs never collide), and one fresh schema in it per test. The server is
the one DEVELOPERS.md and `.ci/run` make sure of, at `DUALSCREEN_TEST_PG_URL` (default
`postgresql+psycopg://postgres@127.0.0.1:5432/test`, trust authentication).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from serving.contract.taxonomy import load_taxonomy
from serving.review.store import ReviewStore

PG_URL = os.environ.get(
    "DUALSCREEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REVIEW_KEY = "test-review-key-0123456789abcdef"
ADMIN_KEY = "test-review-admin-key-0123456789"
CLASSIFY_KEY = "test-classify-only-key-0123456789"
SECRET = "a-test-session-secret-that-is-long-enough-0123456789"
LABELS = load_taxonomy(
    os.path.join(os.path.dirname(__file__), "..", "..", "data", "taxonomy.yaml")
).labels


def _pg_admin_conninfo() -> str:
    u = make_url(PG_URL)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import psycopg

    name = f"dualscreen_review_{secrets.token_hex(6)}"
    try:
        conn = psycopg.connect(_pg_admin_conninfo(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is not reachable ({exc}); start it as DEVELOPERS.md says "
            "(.ci/run does: pg_ctlcluster ... main start)"
        )
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_pg_schema(pg_database: str) -> str:
    import psycopg

    schema = f"t_{secrets.token_hex(5)}"
    conninfo = make_url(pg_database).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    return (
        make_url(pg_database)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database: a SQLite file in tmp_path, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    return _fresh_pg_schema(request.getfixturevalue("pg_database"))


@pytest.fixture()
def store(db_url: str) -> Iterator[ReviewStore]:
    """A migrated review store on `db_url`."""
    s = ReviewStore.open(db_url)
    yield s
    s.dispose()


def prediction(
    ident: str,
    title: str,
    probs: dict[str, float],
    description: str = "",
    decision: str = "review",
) -> dict[str, Any]:
    """A scored listing as the bulk scorer hands it to `enqueue_predictions`."""
    full = {lb: 0.01 for lb in LABELS} | probs
    return {
        "id": ident,
        "title": title,
        "description": description,
        "brand": "",
        "seller_category": "",
        "text": f"{title} | {description}" if description else title,
        "probabilities": full,
        "label_decisions": {
            lb: ("flag" if p >= 0.5 else "review" if p >= 0.2 else "clear")
            for lb, p in full.items()
        },
        "decision": decision,
        "reasons": [],
    }


THRESHOLDS = {lb: 0.5 for lb in LABELS}


def enqueue(store: ReviewStore, items: list[dict[str, Any]], version: str = "v1", **kw: Any) -> int:
    """Queue scored-listing dicts directly (below the intake); returns how many were new."""
    from serving.review.enqueue import enqueue_predictions

    return enqueue_predictions(
        store,
        items,
        "dualscreen",
        version,
        "2026.11.1",
        kw.pop("source", "test"),
        flag_thresholds=THRESHOLDS,
        **kw,
    ).queued


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


# ---------------------------------------------------------------------------------------------
# The app, through real HTTP on the ASGI transport


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def predictor(smoke_model):
    from serving.predictor import Predictor

    return Predictor.load(smoke_model)


def make_settings(db_url: str, **kw: Any):
    from serving.settings import Settings

    base: dict[str, Any] = {
        "api_keys": f"{REVIEW_KEY}:review,{ADMIN_KEY}:review+admin+classify,"
        f"{CLASSIFY_KEY}:classify",
        "model": "unused-when-a-predictor-is-given",
        "database_url": db_url,
        "session_secret": SECRET,
    }
    return Settings(**(base | kw))


@contextlib.asynccontextmanager
async def serve(db_url: str, predictor: Any = None, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The whole API app; with a predictor its lifespan runs (model ready), else it does not."""
    from serving.app import create_app

    app = create_app(make_settings(db_url, **kw), predictor=predictor)
    lifespan = (
        app.router.lifespan_context(app) if predictor is not None else contextlib.nullcontext()
    )
    async with lifespan:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as client:
            yield client
    app.state.review.close()
