"""`dualscreen review ...` and the first admin of `serve --first-run` (issue 6)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from serving.review.store import ReviewStore
from serving.review.users import authenticate, list_users

runner = CliRunner()


def dualscreen(*args: str, stdin: str | None = None):
    from dualscreen.cli import app

    result = runner.invoke(app, list(args), input=stdin, catch_exceptions=False)
    return result


def test_migrate_and_create_users(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    r = dualscreen("review", "migrate", "--database-url", url)
    assert r.exit_code == 0 and "0001_initial" in r.output
    r = dualscreen("review", "create-user", "rita", "--role", "reviewer", "--database-url", url)
    assert r.exit_code == 0, r.output
    password = r.output.split("password (shown once): ")[1].split()[0]
    r = dualscreen(
        "review",
        "create-user",
        "ada",
        "--role",
        "admin",
        "--password-stdin",
        "--api-key",
        "--database-url",
        url,
        stdin="ada-password-12\n",
    )
    assert r.exit_code == 0 and "API key (shown once): ds_" in r.output
    assert "password (shown once)" not in r.output
    r = dualscreen("review", "create-user", "rita", "--database-url", url)
    assert r.exit_code == 2 and "exists already" in r.output
    r = dualscreen("review", "create-user", "x", "--role", "boss", "--database-url", url)
    assert r.exit_code == 2 and "role must be" in r.output
    store = ReviewStore.open(url)
    with store.session() as session:
        assert authenticate(session, "rita", password) is not None
        assert authenticate(session, "ada", "ada-password-12").role == "admin"
        assert password not in json.dumps([u.password_hash for u in list_users(session)])
    store.dispose()
    r = dualscreen("review", "migrate", "--down", "--database-url", url)
    assert r.exit_code == 0 and "base (empty)" in r.output


@pytest.mark.parametrize("from_env", [True, False])
def test_first_run_creates_one_admin(tmp_path, monkeypatch, from_env):
    from serving.cli import _first_admin

    url = f"sqlite:///{tmp_path / 'r.db'}"
    if from_env:
        monkeypatch.setenv("DUALSCREEN_ADMIN_PASSWORD", "env-admin-password")
    else:
        monkeypatch.delenv("DUALSCREEN_ADMIN_PASSWORD", raising=False)
    _first_admin(url)
    _first_admin(url)  # a second start creates nobody
    store = ReviewStore.open(url)
    with store.session() as session:
        assert [(u.name, u.role) for u in list_users(session)] == [("admin", "admin")]
        if from_env:
            assert authenticate(session, "admin", "env-admin-password") is not None
    store.dispose()


def test_settings_refuse_a_weak_session_secret():
    from pydantic import ValidationError

    from serving.settings import Settings

    keys = "some-key-0123456789abcdef"
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        Settings(api_keys=keys, session_secret="changeme")
    with pytest.raises(ValidationError, match="SESSION_SECRET"):
        Settings(api_keys=keys, session_secret="short")
    assert Settings(mode="development", session_secret="dev").session_secret is not None
    ok = Settings(api_keys=keys, session_secret="x" * 40, database_url="postgresql://u:pw@h/db")
    redacted = ok.redacted()
    assert redacted["session_secret"] == "**********" and "pw" not in redacted["database_url"]


@pytest.mark.slow
def test_import_is_idempotent_and_export_writes_both_files(tmp_path, smoke_model):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    listings = tmp_path / "catalog.jsonl"
    rows = [
        {"sku": "a1", "name": "Marine GNSS compass", "notes": "heading 0.1 deg, NMEA 2000"},
        {"sku": "a2", "name": "Garden hose 20 m", "notes": "green"},
        {"sku": "a3", "name": '=HYPERLINK("http://x")', "notes": "-1+1 formula bait"},
    ]
    listings.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = (
        "review",
        "import",
        str(listings),
        "--model",
        str(smoke_model),
        "--database-url",
        url,
        "--id-col",
        "sku",
        "--text-cols",
        "name,notes",
    )
    r = dualscreen(*args)
    assert r.exit_code == 0, r.output
    assert "queued 3 new" in r.output
    assert "queued 0 new" in dualscreen(*args).output
    store = ReviewStore.open(url)
    from serving.review.queue import claim_next, submit_review

    for _ in range(3):
        with store.transaction() as session:
            review = claim_next(session, "rita")
            labels = ["navigation_avionics"] if review.item.external_id == "a1" else []
            submit_review(
                session,
                review.item_id,
                review.id,
                review.version,
                "rita",
                labels,
                "controlled" if labels else "not_controlled",
                "=SUM(1)",
            )
    store.dispose()
    out, audit = tmp_path / "reviewed.jsonl", tmp_path / "audit.csv"
    r = dualscreen(
        "review", "export", "-o", str(out), "--audit-csv", str(audit), "--database-url", url
    )
    assert r.exit_code == 0, r.output
    exported = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert exported["a1"]["labels"] == ["navigation_avionics"] and exported["a2"]["labels"] == []
    assert exported["a3"]["title"] == '=HYPERLINK("http://x")'  # training data stays verbatim
    # The non-listing column is folded in so training reads the text the reviewer judged.
    assert exported["a1"]["description"] == "notes: heading 0.1 deg, NMEA 2000"
    from serving.contract.text import build_text

    store = ReviewStore.open(url)
    with store.session() as session:
        from serving.review.models import Item

        item = session.query(Item).filter_by(external_id="a1").one()
        fields = {
            k: exported["a1"][k] for k in ("title", "description", "brand", "seller_category")
        }
        assert build_text(**fields).text == item.text
    store.dispose()
    import csv

    cells = [c for row in csv.reader(audit.open()) for c in row]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
