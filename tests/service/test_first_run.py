"""`dualscreen serve --first-run` (what `make run` starts): a key and an admin are created once,
shown once, and the API and the review page answer on 127.0.0.1 (issues 4 and 6)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, wait_ready

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _start(cwd: Path, model: Path, port: int) -> subprocess.Popen[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DUALSCREEN_") and k != "MLFLOW_TRACKING_URI"
    }
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dualscreen.cli",
            "serve",
            "--first-run",
            "--model",
            str(model),
            "--port",
            str(port),
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_first_run_creates_key_and_admin_once(smoke_model, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, smoke_model, port)
    try:
        wait_ready(base, proc)
        r = httpx.post(f"{base}/v1/classify", json={"title": "Cotton T-shirt"})
        assert r.status_code == 401
    finally:
        output = _stop(proc)
    key = re.search(r"\b(ds_[A-Za-z0-9_\-]{20,})", output)
    password = re.search(r"password shown once\):\s*\n\s*(\S+)", output)
    assert key and password, output
    keys_file = (tmp_path / "var" / "api_keys.json").read_text()
    assert key.group(1) not in keys_file and "sha256" in keys_file

    proc = _start(tmp_path, smoke_model, port)
    try:
        wait_ready(base, proc)
        r = httpx.post(
            f"{base}/v1/classify",
            json={"title": "Cotton T-shirt, crew neck"},
            headers={"X-API-Key": key.group(1)},
        )
        assert r.status_code == 200 and r.json()["items"][0]["decision"] in {
            "flag",
            "review",
            "clear",
        }
        with httpx.Client(base_url=base) as browser:
            page = browser.get("/review/login")
            assert page.status_code == 200 and "<form" in page.text
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token, page.text
            login = browser.post(
                "/review/login",
                data={"name": "admin", "password": password.group(1), "csrf": token.group(1)},
            )
            assert login.status_code == 303 and login.headers["location"].startswith(
                "/review/queue"
            )
            assert browser.get("/review/queue").status_code == 200
    finally:
        second = _stop(proc)
    assert "Created an API key" not in second and "password shown once" not in second
