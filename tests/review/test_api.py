"""The review endpoints and pages through real HTTP on the ASGI app, on both databases (issue 6)."""

from __future__ import annotations

import re

import httpx
import pytest

from serving.review.audit import list_events
from serving.review.store import ReviewStore
from serving.review.users import create_user
from tests.review.conftest import (
    ADMIN_KEY,
    CLASSIFY_KEY,
    REVIEW_KEY,
    enqueue,
    prediction,
    serve,
)

pytestmark = pytest.mark.anyio

XSS_TITLE = "<script>alert('xss')</script> Drone <b>frame</b>"
XSS_DESC = '<img src=x onerror="alert(1)"> carbon arms & "quotes"'


def envelope(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "type", "detail"}
    return body


def add_users(store: ReviewStore) -> None:
    with store.transaction() as session:
        create_user(session, "rita", "reviewer", password="rita-password-1")
        create_user(session, "ada", "admin", password="ada-password-12")
        create_user(session, "bot", "reviewer", api_key="ds_user-key-for-bot-0123456789")


async def login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    page = await client.get("/review/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return await client.post(
        "/review/login",
        data={"name": name, "password": password, "csrf": token, "next": "/review/queue"},
    )


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def test_api_auth_and_scopes(store, db_url):
    add_users(store)
    async with serve(db_url) as client:
        assert envelope(await client.get("/v1/review/queue"), 401)["type"] == "unauthorized"
        r = await client.get("/v1/review/queue", headers={"X-API-Key": "wrong-key-0123456789"})
        envelope(r, 401)
        r = await client.get("/v1/review/queue", headers={"X-API-Key": CLASSIFY_KEY})
        assert "review" in envelope(r, 403)["error"]
        r = await client.get("/v1/review/queue", headers={"X-API-Key": REVIEW_KEY})
        assert r.status_code == 200 and set(r.json()) == {"counts", "matching", "items"}
        for path in ("/v1/review/stats", "/v1/review/audit"):
            envelope(await client.get(path, headers={"X-API-Key": REVIEW_KEY}), 403)
            assert (await client.get(path, headers={"X-API-Key": ADMIN_KEY})).status_code == 200
        user_key = {"X-API-Key": "ds_user-key-for-bot-0123456789"}
        assert (await client.get("/v1/review/queue", headers=user_key)).status_code == 200
        envelope(await client.get("/v1/review/stats", headers=user_key), 403)


async def test_development_mode_without_keys_admits_the_review_api_as_admin(store, db_url):
    # The same rule as the classification API (serving.api.deps.authenticate_key): development
    # mode with no key configured admits every caller, as the admin "development".
    async with serve(db_url, api_keys=None, mode="development") as client:
        for path in ("/v1/review/queue", "/v1/review/stats", "/v1/review/audit"):
            assert (await client.get(path)).status_code == 200, path
    async with serve(db_url, mode="development") as client:  # keys configured: they count
        envelope(await client.get("/v1/review/stats"), 401)


async def test_claim_submit_conflict_and_history_over_http(store, db_url):
    enqueue(store, [prediction("h1", "GNSS RTK module", {"navigation_avionics": 0.47})])
    enqueue(store, [prediction("h2", "Cotton shirt", {"navigation_avionics": 0.05})])
    headers = {"X-API-Key": REVIEW_KEY}
    async with serve(db_url) as client:
        r = await client.post(
            "/v1/review/claim", json={"label": "navigation_avionics"}, headers=headers
        )
        claim = r.json()
        assert claim["item"]["listing"]["id"] == "h1" and claim["item"]["status"] == "in_review"
        item_id = claim["item"]["item_id"]
        body = {
            "review_id": claim["review_id"],
            "version": claim["version"],
            "labels": ["navigation_avionics"],
        }
        r = await client.post(f"/v1/review/items/{item_id}/submit", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["item"]["status"] == "decided"
        assert r.json()["review"]["decision"] == "controlled"
        again = body | {"labels": []}
        conflict = envelope(
            await client.post(f"/v1/review/items/{item_id}/submit", json=again, headers=headers),
            409,
        )
        assert conflict["type"] == "conflict"
        assert conflict["detail"]["submitted"][0]["labels"] == ["navigation_avionics"]
        r = await client.get(f"/v1/review/items/{item_id}/history", headers=headers)
        actions = [e["action"] for e in r.json()["events"]]
        assert actions == ["item.enqueue", "claim", "review.submit"]
        envelope(await client.get("/v1/review/items/999999", headers=headers), 404)
        r = await client.post("/v1/review/claim", json={"order": "sideways"}, headers=headers)
        envelope(r, 422)


async def test_the_api_cannot_alter_audit_events(store, db_url):
    enqueue(store, [prediction("a1", "audited", {"uav": 0.4})])
    with store.session() as session:
        before = [(e.id, e.actor, e.action, e.after) for e in list_events(session)]
    event_id = before[0][0]
    headers = {"X-API-Key": ADMIN_KEY}
    async with serve(db_url) as client:
        for method in ("PUT", "PATCH", "DELETE"):
            for path in ("/v1/review/audit", f"/v1/review/audit/{event_id}"):
                r = await client.request(method, path, json={"actor": "forged"}, headers=headers)
                assert r.status_code in (404, 405), (method, path, r.status_code)
        schema = (await client.get("/openapi.json")).json()
        for path, ops in schema["paths"].items():
            if "audit" in path:
                assert set(ops) == {"get"}, path
    with store.session() as session:
        assert [(e.id, e.actor, e.action, e.after) for e in list_events(session)] == before


async def test_pages_need_a_login_and_reviewers_cannot_reach_admin(store, db_url):
    add_users(store)
    async with serve(db_url) as client:
        r = await client.get("/review/queue")
        assert r.status_code == 303 and r.headers["location"].startswith("/review/login")
        r = await login(client, "rita", "rita-password-1")
        assert r.status_code == 303 and r.headers["location"] == "/review/queue"
        page = await client.get("/review/queue")
        assert page.status_code == 200 and "rita (reviewer)" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        r = await client.get("/review/admin")
        assert r.status_code == 403 and "for admins" in r.text
    async with serve(db_url) as client:
        await login(client, "ada", "ada-password-12")
        r = await client.get("/review/admin")
        assert r.status_code == 200 and "Reviewer throughput" in r.text


async def test_login_failures_are_rate_limited(store, db_url):
    add_users(store)
    async with serve(db_url, login_max_failures=3) as client:
        for _ in range(3):
            assert (await login(client, "rita", "wrong-password")).status_code == 401
        r = await login(client, "rita", "rita-password-1")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    with store.session() as session:
        assert [e.action for e in list_events(session)].count("login.fail") == 3


async def test_forms_need_the_csrf_token(store, db_url):
    add_users(store)
    enqueue(store, [prediction("f1", "form", {"uav": 0.4})])
    async with serve(db_url) as client:
        r = await client.post(
            "/review/login", data={"name": "rita", "password": "rita-password-1", "csrf": "x"}
        )
        assert r.status_code == 403  # the log-in form's double-submit token
        await login(client, "rita", "rita-password-1")
        page = await client.get("/review/queue")
        assert (await client.post("/review/claim", data={"filters": ""})).status_code == 403
        r = await client.post("/review/claim", data={"csrf": "forged", "filters": ""})
        assert r.status_code == 403
        r = await client.post(
            "/review/claim",
            data={"csrf": csrf_of(page.text), "filters": ""},
            headers={"Origin": "http://evil.example"},
        )
        assert r.status_code == 403
        r = await client.post("/review/claim", data={"csrf": csrf_of(page.text), "filters": ""})
        assert r.status_code == 303 and r.headers["location"].startswith("/review/items/")


async def test_expired_session_goes_back_to_login(store, db_url, monkeypatch):
    import itsdangerous.timed

    from serving.review.models import User
    from serving.review.security import SessionSigner
    from serving.review.sessions import SESSION_COOKIE
    from tests.review.conftest import SECRET

    add_users(store)
    with store.session() as session:
        user_id = session.query(User).filter_by(name="rita").one().id
    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() - 120)
    old_cookie, _ = SessionSigner(SECRET, 60).issue(user_id)
    monkeypatch.undo()
    fresh_cookie, _ = SessionSigner(SECRET, 60).issue(user_id)
    async with serve(db_url, session_max_age_s=60) as client:
        client.cookies.set(SESSION_COOKIE, fresh_cookie)
        assert (await client.get("/review/queue")).status_code == 200
        client.cookies.set(SESSION_COOKIE, old_cookie)
        r = await client.get("/review/queue")
        assert r.status_code == 303 and "msg=expired" in r.headers["location"]


async def test_listing_text_is_escaped_everywhere(store, db_url):
    add_users(store)
    enqueue(store, [prediction("<x1>", XSS_TITLE, {"uav": 0.45}, XSS_DESC)])
    async with serve(db_url) as client:
        await login(client, "rita", "rita-password-1")
        page = await client.get("/review/queue")
        r = await client.post("/review/claim", data={"csrf": csrf_of(page.text), "filters": ""})
        item_path = r.headers["location"]
        item_page = await client.get(item_path)
        history = await client.get(item_path.split("?")[0] + "/history")
        queue = await client.get("/review/queue")
    for html in (item_page.text, history.text, queue.text):
        assert "<script>alert" not in html
        assert 'onerror="alert' not in html and "<img src=x" not in html
        assert "<b>frame</b>" not in html
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in item_page.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in item_page.text
    assert "&lt;x1&gt;" in item_page.text


async def test_web_claim_label_change_submit_and_history(store, db_url):
    add_users(store)
    enqueue(
        store,
        [prediction("w1", "Marine echo sounder", {"marine": 0.46, "navigation_avionics": 0.3})],
    )
    async with serve(db_url) as client:
        await login(client, "rita", "rita-password-1")
        page = await client.get("/review/queue")
        assert 'id="count-pending">1<' in page.text
        r = await client.post("/review/claim", data={"csrf": csrf_of(page.text), "filters": ""})
        item_page = await client.get(r.headers["location"])
        assert 'id="label-marine"' in item_page.text
        review_id = re.search(r'name="review_id" value="(\d+)"', item_page.text).group(1)
        version = re.search(r'name="version" value="(\d+)"', item_page.text).group(1)
        item_id = r.headers["location"].split("/")[3].split("?")[0]
        form = {
            "csrf": csrf_of(item_page.text),
            "review_id": review_id,
            "version": version,
            "action": "submit",
            "labels": ["navigation_avionics"],
            "note": "sonar for boats, but GNSS inside",
            "filters": "",
        }
        r = await client.post(f"/review/items/{item_id}/submit", data=form)
        assert r.status_code == 303 and "msg=submitted_last" in r.headers["location"]
        again = await client.post(f"/review/items/{item_id}/submit", data=form)
        assert again.status_code == 409 and "Someone else was first" in again.text
        history = await client.get(f"/review/items/{item_id}/history")
        assert "review.submit" in history.text and "sonar for boats" in history.text
        done = await client.get(f"/review/items/{item_id}")
        assert "Decided" in done.text and "navigation_avionics" in done.text


async def test_static_files_and_unknown_names(db_url):
    async with serve(db_url) as client:
        r = await client.get("/review/static/review.js")
        assert r.status_code == 200 and "keydown" in r.text
        assert (await client.get("/review/static/../web.py")).status_code == 404
        assert (await client.get("/review/static/other.js")).status_code == 404


@pytest.mark.slow
async def test_enqueue_endpoint_and_classify_flag_with_the_model(store, db_url, predictor):
    items = [
        {"id": "m1", "title": "LWIR thermal imaging core 640x512", "description": "uncooled VOx"},
        {"id": "m2", "title": "Cotton crew-neck T-shirt", "description": "pack of 3"},
    ]
    async with serve(db_url, predictor) as client:
        headers = {"X-API-Key": REVIEW_KEY}
        r = await client.post("/v1/review/items", json={"items": items}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["queued"] == 2 and r.json()["model"]["version"]
        r = await client.post("/v1/review/items", json={"items": items}, headers=headers)
        assert (r.json()["queued"], r.json()["already_queued"]) == (0, 2)  # idempotent
        r = await client.post(
            "/v1/review/items", json={"items": [{"id": "e", "title": ""}]}, headers=headers
        )
        envelope(r, 422)
        r = await client.post(
            "/v1/classify?enqueue=true", json=items[0], headers={"X-API-Key": CLASSIFY_KEY}
        )
        envelope(r, 403)
        r = await client.post(
            "/v1/classify?enqueue=true",
            json={
                "items": [
                    {
                        "id": "n1",
                        "title": "Quadcopter frame 450 mm carbon",
                        "description": "for FPV drones, GPS mount",
                    }
                ]
            },
            headers={"X-API-Key": ADMIN_KEY},
        )
        assert r.status_code == 200 and r.headers["x-review-already-queued"] == "0"
        queued = int(r.headers["x-review-queued"])
        assert queued == (1 if r.json()["items"][0]["decision"] != "clear" else 0)
        q = (await client.get("/v1/review/queue", headers=headers)).json()
        assert q["counts"]["pending"] == 2 + queued
        thermal = next(i for i in q["items"] if i["id"] == "m1")
        detail = (
            await client.get(f"/v1/review/items/{thermal['item_id']}", headers=headers)
        ).json()
        [s] = detail["suggestions"]
        assert set(s["probabilities"]) == set(predictor.labels)
        assert s["flag_thresholds"] and s["model_version"] == predictor.manifest.version
