"""Review sessions, CSRF and the log-in limit: what tests/review/test_api.py does not cover yet.

Covered there: the log-in form's double-submit token, a missing, forged or cross-origin token on
/review/claim, an expired session, the per-name log-in limit. Here: every form post (found from
the routes) refuses a missing token and another session's token, the cookie's flags, a cookie
signed with another secret, a deactivated user or a changed role taking effect at once, the
per-client limit across names, and no open redirect after log-in.
"""

from __future__ import annotations

import re

import pytest

from serving.review.models import User
from serving.review.security import SessionSigner
from serving.review.sessions import SESSION_COOKIE
from serving.review.users import create_user
from tests.review.conftest import enqueue, prediction, serve
from tests.review.test_api import csrf_of, login

pytestmark = pytest.mark.anyio

# Enough for every form to pass validation, so the CSRF check is what answers.
FORM = {"review_id": "1", "version": "1", "action": "submit", "filters": "", "note": ""}


def _users(store) -> None:
    with store.transaction() as session:
        create_user(session, "rita", "reviewer", password="rita-password-1")
        create_user(session, "ada", "admin", password="ada-password-12")


def _form_posts() -> list[str]:
    from serving.app import create_app
    from tests.review.conftest import make_settings
    from tests.security.test_routes import app_routes

    app = create_app(make_settings("sqlite:///:memory:"))
    return sorted(
        p
        for m, p in app_routes(app.routes)
        if m == "POST" and p.startswith("/review") and p != "/review/login"
    )


async def test_every_form_post_needs_this_sessions_token(store, db_url):
    _users(store)
    enqueue(store, [prediction("c1", "Marine echo sounder", {"marine": 0.45})])
    posts = _form_posts()
    assert {"/review/claim", "/review/logout", "/review/items/{item_id}/submit"} <= set(posts)
    async with serve(db_url) as other:
        await login(other, "ada", "ada-password-12")
        foreign = csrf_of((await other.get("/review/queue")).text)
    async with serve(db_url) as client:
        await login(client, "rita", "rita-password-1")
        own = csrf_of((await client.get("/review/queue")).text)
        assert own != foreign
        for path in posts:
            url = re.sub(r"\{[^}]+\}", "1", path)
            for token in (None, "", foreign):
                data = FORM | ({"csrf": token} if token is not None else {})
                r = await client.post(url, data=data)
                assert r.status_code == 403, (path, token, r.status_code)
                assert "security token" in r.text
        # The session survived all of that (logout without a token did not log out).
        assert (await client.get("/review/queue")).status_code == 200


async def test_session_cookie_flags(store, db_url):
    _users(store)
    async with serve(db_url, session_max_age_s=600) as client:
        r = await login(client, "rita", "rita-password-1")
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        for flag in ("httponly", "samesite=lax", "path=/", "max-age=600"):
            assert flag in cookie, cookie
        assert "secure" not in cookie  # plain http here; https below
        client.base_url = "https://testserver"
        r = await login(client, "rita", "rita-password-1")
        assert "secure" in r.headers["set-cookie"].lower()


async def test_forged_cookie_deactivation_and_role_change(store, db_url):
    from tests.review.conftest import SECRET

    _users(store)
    with store.session() as session:
        rita = session.query(User).filter_by(name="rita").one().id
        ada = session.query(User).filter_by(name="ada").one().id
    async with serve(db_url) as client:
        forged, _ = SessionSigner("another-secret-" + SECRET, 3600).issue(ada)
        client.cookies.set(SESSION_COOKIE, forged)
        r = await client.get("/review/admin")
        assert r.status_code == 303 and r.headers["location"].startswith("/review/login?")
        genuine, _ = SessionSigner(SECRET, 3600).issue(rita)
        client.cookies.set(SESSION_COOKIE, genuine)
        assert (await client.get("/review/queue")).status_code == 200
        with store.transaction() as session:
            session.get(User, rita).active = False
        r = await client.get("/review/queue")
        assert r.status_code == 303 and r.headers["location"].startswith("/review/login?")
    async with serve(db_url) as client:
        await login(client, "ada", "ada-password-12")
        assert (await client.get("/review/admin")).status_code == 200
        with store.transaction() as session:
            session.get(User, ada).role = "reviewer"
        assert (await client.get("/review/admin")).status_code == 403


async def test_login_limit_per_client_spans_names(store, db_url):
    _users(store)
    async with serve(db_url, login_max_failures=2) as client:
        # 2 per name, 4 x 2 = 8 per client: eight names, two tries each would pass the per-name
        # limit, but the client limit stops the ninth try whatever the name.
        for n in range(8):
            r = await login(client, f"guess{n}", "not-the-password")
            assert r.status_code == 401, n
        r = await login(client, "rita", "rita-password-1")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


@pytest.mark.parametrize(
    "target",
    ["//evil.example/review", "https://evil.example/review", "/review\\@evil.example", "/health"],
)
async def test_login_never_redirects_off_the_review_pages(store, db_url, target):
    _users(store)
    async with serve(db_url) as client:
        page = await client.get("/review/login", params={"next": target})
        assert target not in page.text
        r = await client.post(
            "/review/login",
            data={
                "name": "rita",
                "password": "rita-password-1",
                "csrf": csrf_of(page.text),
                "next": target,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/review/queue"
