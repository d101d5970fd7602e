"""Every route of the real app needs authentication unless it is on a short, reasoned allow-list.

The app is the whole one `dualscreen serve` runs: classification API, review JSON API and review
pages, with the smoke model loaded. Routes are walked from `app.routes` (included routers and
mounted sub-apps too), so a new route without an auth check fails here until it either checks
credentials or is added to PUBLIC with a reason. Role checks are listed route by route for the
same reason: a new review route must be put in REVIEWER_API or ADMIN_API on purpose.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import routing as fastapi_routing
from starlette.routing import Mount

from serving.app import create_app
from serving.review.users import create_user
from tests.review.conftest import (
    ADMIN_KEY,
    CLASSIFY_KEY,
    REVIEW_KEY,
    enqueue,
    make_settings,
    prediction,
)

pytestmark = pytest.mark.anyio

# (method, path) -> why it is open to anyone. Keep it short.
PUBLIC = {
    ("GET", "/health"): "liveness probe; says only 'ok'",
    ("GET", "/ready"): "readiness probe; says only whether the model is loaded",
    ("GET", "/openapi.json"): "the API description (README: OpenAPI at /docs)",
    ("GET", "/docs"): "Swagger UI over /openapi.json",
    ("GET", "/docs/oauth2-redirect"): "part of FastAPI's Swagger UI; serves a static page",
    ("GET", "/redoc"): "ReDoc over /openapi.json",
    ("GET", "/review"): "redirects to /review/queue, which needs a log-in",
    ("GET", "/review/"): "redirects to /review/queue, which needs a log-in",
    ("GET", "/review/login"): "the log-in form",
    ("POST", "/review/login"): "the log-in itself (double-submit CSRF token, rate-limited)",
    ("GET", "/review/static/{name}"): "the review UI's script and style sheet",
}
# The review JSON API by role: any key with the review scope (or a review user's key) may use
# REVIEWER_API; ADMIN_API needs the admin scope (or an admin user).
REVIEWER_API = {
    ("POST", "/v1/review/items"),
    ("GET", "/v1/review/queue"),
    ("POST", "/v1/review/claim"),
    ("GET", "/v1/review/items/{item_id}"),
    ("POST", "/v1/review/items/{item_id}/claim"),
    ("POST", "/v1/review/items/{item_id}/submit"),
    ("POST", "/v1/review/items/{item_id}/skip"),
    ("GET", "/v1/review/items/{item_id}/history"),
}
ADMIN_API = {("GET", "/v1/review/audit"), ("GET", "/v1/review/stats")}
ADMIN_PAGES = {"/review/admin"}
USER_KEY = "ds_user-key-for-security-tests-0123"


def _route_contexts(routes: list) -> Iterator:
    # FastAPI 0.16x keeps included routers as nodes in app.routes; iter_route_contexts flattens them
    # (older versions list plain routes, which it passes through unchanged).
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    return iter(flatten(routes)) if flatten else iter(routes)


def app_routes(routes: list, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every HTTP endpoint, descending into mounted apps."""
    for route in _route_contexts(routes):
        original = getattr(route, "original_route", route)
        path = prefix + (route.path or "")
        if isinstance(original, Mount):
            inner = getattr(original.app, "routes", None) or original.routes
            if inner:
                yield from app_routes(list(inner), path)
            else:  # a mounted ASGI app without routes of its own (static files): every GET
                yield "GET", path + "/{path:path}"
            continue
        if route.methods is None:  # a websocket route: no HTTP method
            yield "WS", path
            continue
        for method in sorted(set(route.methods) - {"HEAD"}):
            yield method, path


def concrete(path: str, item_id: int = 1) -> str:
    """A request path for a route path: every parameter becomes an existing item id."""
    return re.sub(r"\{[^}]+\}", str(item_id), path)


@contextlib.asynccontextmanager
async def real_app(db_url: str, predictor) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    app = create_app(make_settings(db_url), predictor=predictor)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client
    app.state.review.close()


def _item(store) -> int:
    from serving.review.models import Item

    enqueue(store, [prediction("s1", "Thermal imaging core 640x512", {"sensors_lasers": 0.45})])
    with store.session() as session:
        return session.query(Item).one().id


async def test_every_route_needs_authentication(store, db_url, predictor):
    item_id = _item(store)
    async with real_app(db_url, predictor) as (app, client):
        routes = sorted(set(app_routes(app.routes)))
        # The walk must see the whole app, or the test below proves nothing.
        assert {("POST", "/v1/classify"), ("GET", "/review/queue")} <= set(routes)
        assert set(routes) >= REVIEWER_API | ADMIN_API
        assert set(PUBLIC) <= set(routes), set(PUBLIC) - set(routes)
        answers = {}
        for method, path in routes:
            assert method != "WS", f"websocket route {path}: add an auth test for it"
            if (method, path) in PUBLIC:
                continue
            r = await client.request(method, concrete(path, item_id))
            answers[(method, path)] = r.status_code
            if path.startswith("/review"):
                assert r.status_code == 303, (method, path, r.status_code, r.text[:200])
                assert r.headers["location"].startswith("/review/login?"), (method, path)
            else:
                assert r.status_code in (401, 403), (method, path, r.status_code, r.text[:200])
                assert r.json()["type"] in ("unauthorized", "forbidden")
                if r.status_code == 401:
                    assert r.headers["www-authenticate"] == "APIKey"
        assert len(answers) >= 20, answers
        for path in ("/review", "/review/"):
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/review/queue"
        r = await client.get("/review/static/review.js")
        assert r.status_code == 200 and "set-cookie" not in r.headers


def test_every_review_api_route_is_classified_by_role():
    app = create_app(make_settings("sqlite:///:memory:"))
    review_api = {(m, p) for m, p in app_routes(app.routes) if p.startswith("/v1/review")}
    assert review_api == REVIEWER_API | ADMIN_API, (
        "a review API route changed: put it in REVIEWER_API or ADMIN_API on purpose",
        review_api ^ (REVIEWER_API | ADMIN_API),
    )


async def test_keys_reach_only_their_scopes(store, db_url, predictor):
    item_id = _item(store)
    with store.transaction() as session:
        create_user(session, "bot", "reviewer", api_key=USER_KEY)
    classify_only = {"X-API-Key": CLASSIFY_KEY}
    reviewer_keys = ({"X-API-Key": REVIEW_KEY}, {"X-API-Key": USER_KEY})
    admin = {"X-API-Key": ADMIN_KEY}
    async with real_app(db_url, predictor) as (_, client):

        async def call(method: str, path: str, headers: dict[str, str]) -> httpx.Response:
            return await client.request(method, concrete(path, item_id), headers=headers)

        for method, path in sorted(REVIEWER_API | ADMIN_API):
            r = await call(method, path, classify_only)
            assert r.status_code == 403 and "'review' scope" in r.json()["error"], (method, path)
        for method, path in sorted(ADMIN_API):
            for headers in reviewer_keys:
                r = await call(method, path, headers)
                assert r.status_code == 403, (method, path, headers, r.status_code)
            assert (await call(method, path, admin)).status_code == 200, (method, path)
        for method, path in sorted(REVIEWER_API):
            for headers in (*reviewer_keys, admin):
                r = await call(method, path, headers)
                assert r.status_code not in (401, 403), (method, path, headers, r.text[:200])
        shirt = {"title": "Cotton crew-neck T-shirt, pack of 3"}
        for path in ("/info", "/metrics"):
            assert (await client.get(path, headers={"X-API-Key": REVIEW_KEY})).status_code == 403
        r = await client.post("/v1/classify", json=shirt, headers={"X-API-Key": REVIEW_KEY})
        assert r.status_code == 403
        r = await client.post("/v1/classify?enqueue=true", json=shirt, headers=classify_only)
        assert r.status_code == 403 and "'review' scope" in r.json()["error"]
        r = await client.post("/v1/classify", json=shirt, headers={"X-API-Key": USER_KEY})
        assert r.status_code == 401  # a review user's key is not a classification key


async def test_reviewers_cannot_open_admin_pages(store, db_url, predictor):
    from tests.review.test_api import login

    item_id = _item(store)
    with store.transaction() as session:
        create_user(session, "rita", "reviewer", password="rita-password-1")
        create_user(session, "ada", "admin", password="ada-password-12")
    async with real_app(db_url, predictor) as (app, client):
        pages = sorted(
            p
            for m, p in app_routes(app.routes)
            if m == "GET" and p.startswith("/review") and (m, p) not in PUBLIC
        )
        assert set(pages) >= ADMIN_PAGES
        assert (await login(client, "rita", "rita-password-1")).status_code == 303
        for path in pages:
            r = await client.get(concrete(path, item_id))
            expected = 403 if path in ADMIN_PAGES else 200
            assert r.status_code == expected, (path, r.status_code)
    async with real_app(db_url, predictor) as (_, client):
        assert (await login(client, "ada", "ada-password-12")).status_code == 303
        for path in ADMIN_PAGES:
            assert (await client.get(path)).status_code == 200
