"""Fixtures for the API: a real smoke artifact, an app per test, real HTTP through httpx."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator

import httpx
import pytest

from serving.app import create_app
from serving.predictor import Predictor
from serving.settings import Settings

CLASSIFY_KEY = "test-classify-key-0123456789"
REVIEW_KEY = "test-review-only-key-0123456789"
ALL_KEY = "test-all-scopes-key-0123456789"
HEADERS = {"X-API-Key": CLASSIFY_KEY}
_DB_DIR = tempfile.mkdtemp(prefix="dualscreen-service-")


@pytest.fixture(scope="session")
def predictor(smoke_model) -> Predictor:
    return Predictor.load(smoke_model)


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def make_settings(**kw) -> Settings:
    base = {
        "api_keys": f"{CLASSIFY_KEY}:classify+admin,{REVIEW_KEY}:review,"
        f"{ALL_KEY}:classify+review+admin",
        "model": "unused-when-a-predictor-is-given",
        "database_url": f"sqlite:///{_DB_DIR}/review.db",
    }
    return Settings(**(base | kw))


@contextlib.asynccontextmanager
async def serve(predictor: Predictor, **settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(**settings), predictor=predictor)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=60
        ) as client:
            yield client


@pytest.fixture()
async def client(predictor) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(predictor) as c:
        yield c


@pytest.fixture(scope="session")
def live_server(predictor):
    """A real uvicorn server on 127.0.0.1 (random port) in a background thread."""
    from tests.servers import uvicorn_thread

    with uvicorn_thread(create_app(make_settings(), predictor=predictor)) as base:
        yield base
