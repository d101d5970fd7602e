"""No secret reaches a log, the console or the audit trail.

Secrets: API keys (settings keys and a review user's key), passwords (right and wrong), the session
secret, session cookie values and a database password. Everything is captured at DEBUG from every
logger plus stdout/stderr, while keys are created, people log in and out, keys are sent to the API
and the settings are dumped. `serve --first-run` runs as
a real process; it prints its new key and admin password once, by design, and nowhere else.
"""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest
from sqlalchemy.engine import make_url

from serving.review.audit import event_dict, list_events
from serving.review.sessions import LOGIN_COOKIE, SESSION_COOKIE
from serving.review.users import create_user
from tests.review.conftest import ADMIN_KEY, CLASSIFY_KEY, REVIEW_KEY, SECRET, make_settings, serve

pytestmark = pytest.mark.anyio

USER_KEY = "ds_user-key-that-must-not-be-logged-42"
PASSWORDS = ("rita-password-must-stay-secret", "ada-password-must-stay-secret")
WRONG_PASSWORD = "wrong-password-typed-by-mistake"
DB_PASSWORD = "db-password-must-not-be-logged"
SHIRT = {"title": "Cotton crew-neck T-shirt, pack of 3"}


def _with_password(db_url: str) -> str:
    # PostgreSQL here trusts local connections, so the password is sent but never needed.
    if db_url.startswith("sqlite"):
        return db_url
    return make_url(db_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


async def _login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    page = await client.get("/review/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return await client.post(
        "/review/login", data={"name": name, "password": password, "csrf": token}
    )


async def test_secrets_never_reach_logs_console_or_audit(store, db_url, predictor, caplog, capfd):
    url = _with_password(db_url)
    seen: set[str] = set()
    caplog.set_level(logging.DEBUG)
    with store.transaction() as session:
        create_user(session, "rita", "reviewer", password=PASSWORDS[0])
        create_user(session, "ada", "admin", password=PASSWORDS[1], api_key=USER_KEY)
    settings = make_settings(url)
    logging.getLogger("tests.security").info(
        "settings: %s | %r | %s | %s",
        json.dumps(settings.redacted(), default=str),
        settings,
        settings,
        settings.model_dump_json(),
    )
    async with serve(url, predictor) as client:
        for key in (CLASSIFY_KEY, ADMIN_KEY, "ds_not-a-key-but-looks-like-one-0"):
            await client.post("/v1/classify", json=SHIRT, headers={"X-API-Key": key})
        for key in (REVIEW_KEY, USER_KEY, ADMIN_KEY):
            await client.get("/v1/review/queue", headers={"X-API-Key": key})
            await client.get("/v1/review/audit", headers={"X-API-Key": key})
        assert (await _login(client, "rita", WRONG_PASSWORD)).status_code == 401
        assert (await _login(client, WRONG_PASSWORD, PASSWORDS[0])).status_code == 401
        login = await _login(client, "rita", PASSWORDS[0])
        assert login.status_code == 303
        seen.add(client.cookies[SESSION_COOKIE])
        page = await client.get("/review/queue")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        await client.post("/review/logout", data={"csrf": csrf})
        login = await _login(client, "ada", PASSWORDS[1])
        seen.add(login.cookies[SESSION_COOKIE])
        seen.add(client.cookies.get(LOGIN_COOKIE, "") or "")
        assert (await client.get("/review/admin")).status_code == 200
    seen.discard("")
    with store.session() as session:
        audit = json.dumps([event_dict(e) for e in list_events(session, limit=1000)])
    out, err = capfd.readouterr()
    logged = _log_text(caplog)
    assert "settings: " in logged and "review store: " in logged  # the capture worked
    secrets = {
        "settings API key": (CLASSIFY_KEY, REVIEW_KEY, ADMIN_KEY),
        "review user's API key": (USER_KEY,),
        "password": (*PASSWORDS,),
        "session secret": (SECRET,),
        "session cookie": tuple(seen),
        "database password": (DB_PASSWORD,),
    }
    for kind, values in secrets.items():
        for value in values:
            for where, text in (("logs", logged), ("stdout", out), ("stderr", err)):
                assert value not in text, f"{kind} appears in {where}"
            assert value not in audit, f"{kind} appears in the audit trail"
    # A password typed into the name field is recorded as the failed log-in's actor: the audit
    # trail keeps who tried, and people do mistype. Known limit, stated in SECURITY.md.
    assert WRONG_PASSWORD not in logged + out + err


@pytest.mark.slow
def test_first_run_prints_its_secrets_once_and_logs_none(smoke_model, tmp_path):
    from tests.servers import free_port, wait_ready
    from tests.service.test_first_run import _start, _stop

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, smoke_model, port)
    try:
        wait_ready(base, proc)
        keys = json.loads((tmp_path / "var" / "api_keys.json").read_text())["keys"]
        assert len(keys) == 1
        with httpx.Client(base_url=base, timeout=60) as browser:
            # The key and password are read back from the banner below; make every kind of call.
            browser.post("/v1/classify", json=SHIRT, headers={"X-API-Key": "ds_wrong-key-000000"})
            page = browser.get("/review/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            r = browser.post(
                "/review/login", data={"name": "admin", "password": WRONG_PASSWORD, "csrf": token}
            )
            assert r.status_code == 401
    finally:
        first = _stop(proc)
    key = re.search(r"\b(ds_[A-Za-z0-9_\-]{20,})", first).group(1)
    password = re.search(r"password shown once\):\s*\n\s*(\S+)", first).group(1)
    session_secret = (tmp_path / "var" / "session_secret").read_text().strip()
    proc = _start(tmp_path, smoke_model, port)
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=60) as browser:
            r = browser.post("/v1/classify", json=SHIRT, headers={"X-API-Key": key})
            assert r.status_code == 200
            page = browser.get("/review/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            r = browser.post(
                "/review/login", data={"name": "admin", "password": password, "csrf": token}
            )
            assert r.status_code == 303
            cookie = browser.cookies[SESSION_COOKIE]
            assert browser.get("/review/queue").status_code == 200
    finally:
        second = _stop(proc)
    # Shown once: the key on its own line and in the curl example, the password on its own line.
    assert first.count(key) == 2 and first.count(password) == 1, first
    for secret in (key, password, session_secret, cookie, WRONG_PASSWORD):
        assert secret not in second, second
    for secret in (session_secret, WRONG_PASSWORD):
        assert secret not in first, first
    assert "INFO" in first and "settings: " in first  # the log was captured
