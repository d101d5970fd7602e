"""`serve --workers N` (issue 14): several server processes answer as one process does.

Real `dualscreen serve` subprocesses on 127.0.0.1 with the smoke model; no timing assertions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from serving.settings import usable_cores
from tests.servers import free_port, wait_ready
from tests.service.conftest import CLASSIFY_KEY, HEADERS, make_settings, serve

ROOT = Path(__file__).resolve().parents[2]
LISTINGS = [
    {"id": "t1", "title": "LWIR thermal imaging core 640x512", "description": "uncooled VOx"},
    {"id": "s1", "title": "Cotton crew-neck T-shirt", "description": "pack of 3, machine wash"},
    {"title": "IC FPGA 285 I/O 484FBGA", "brand": "Xilinx"},
    {"title": "GNSS RTK module", "attributes": {"bands": "L1/L2/L5", "rate": 20}},
    {"title": "Quadcopter frame 450 mm carbon", "description": "for FPV drones"},
    {"title": "industrial sensor module"},
]
needs_two_cores = pytest.mark.skipif(usable_cores() < 2, reason="needs 2 usable CPU cores")


# --- settings ------------------------------------------------------------------------------


def test_workers_default_to_one_and_threads_to_all_cores():
    s = make_settings()
    assert s.workers == 1 and s.threads_per_worker() == 0  # 0: the backend uses every core


def test_workers_must_be_positive():
    with pytest.raises(ValidationError, match="workers"):
        make_settings(workers=0)


def test_more_workers_than_cores_is_refused_with_the_core_count():
    cores = usable_cores()
    with pytest.raises(ValidationError, match=rf"workers={cores + 1} but only {cores} CPU cores"):
        make_settings(workers=cores + 1)


@needs_two_cores
def test_threads_times_workers_over_the_cores_is_refused():
    cores = usable_cores()
    with pytest.raises(ValidationError, match=r"threads=.* x workers=2 .* set threads to at most"):
        make_settings(workers=2, threads=cores)


@needs_two_cores
def test_threads_default_to_the_cores_divided_among_workers():
    assert make_settings(workers=2).threads_per_worker() == usable_cores() // 2
    assert make_settings(workers=2, threads=1).threads_per_worker() == 1


def test_serve_refuses_too_many_workers_before_loading_anything(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dualscreen.cli", "serve", "--workers", str(usable_cores() + 1)],
        cwd=tmp_path,
        env=_env({"DUALSCREEN_API_KEYS": f"{CLASSIFY_KEY}:classify"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "CPU cores" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- two worker processes ------------------------------------------------------------------


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DUALSCREEN_")
        and k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR")
    }
    env["PYTHONPATH"] = str(ROOT)
    return env | extra


def _start(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dualscreen.cli", "serve", *args],
        cwd=cwd,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return out


@pytest.fixture(scope="module")
def two_workers(smoke_model, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`serve --workers 2` with the smoke model; yields its base URL and metrics folder."""
    if usable_cores() < 2:
        pytest.skip("needs 2 usable CPU cores")
    tmp = tmp_path_factory.mktemp("workers")
    metrics = tmp / "metrics"
    metrics.mkdir()
    port = free_port()
    proc = _start(
        tmp,
        ["--workers", "2", "--model", str(smoke_model), "--port", str(port)],
        {
            "DUALSCREEN_API_KEYS": f"{CLASSIFY_KEY}:classify+admin",
            "DUALSCREEN_DATABASE_URL": f"sqlite:///{tmp / 'review.db'}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, metrics
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output
    assert output.count("Application startup complete") == 2, output


def _fresh(
    base: str, method: str, path: str, cookies: dict[str, str] | None = None, **kw
) -> httpx.Response:
    """One request on a new connection, so that the kernel may hand it to either worker."""
    with httpx.Client(base_url=base, timeout=60, cookies=cookies) as client:
        return client.request(method, path, **kw)


@pytest.mark.slow
@pytest.mark.anyio
async def test_two_workers_answer_as_one_process_does(two_workers, predictor):
    base, metrics_dir = two_workers
    many = [_fresh(base, "POST", "/v1/classify", json=x, headers=HEADERS) for x in LISTINGS * 4]
    batch = _fresh(base, "POST", "/v1/classify", json={"items": LISTINGS}, headers=HEADERS)
    assert all(r.status_code == 200 for r in [*many, batch]), [r.text for r in many]

    async with serve(predictor) as one:  # the same model in one process
        expected = (
            await one.post("/v1/classify", json={"items": LISTINGS}, headers=HEADERS)
        ).json()
    for got in [r.json()["items"][0] for r in many[: len(LISTINGS)]], batch.json()["items"]:
        for a, b in zip(expected["items"], got, strict=True):
            assert (a["id"], a["decision"], a["reasons"]) == (b["id"], b["decision"], b["reasons"])
            assert [lb["decision"] for lb in a["labels"]] == [lb["decision"] for lb in b["labels"]]
            for la, lb in zip(a["labels"], b["labels"], strict=True):
                assert abs(la["probability"] - lb["probability"]) < 1e-4
    assert batch.json()["model"] == expected["model"]
    # The same listing gets the same answer from either worker.
    first = [r.json()["items"][0] for r in many[: len(LISTINGS)]]
    for round_ in range(1, 4):
        again = many[round_ * len(LISTINGS) : (round_ + 1) * len(LISTINGS)]
        assert [r.json()["items"][0] for r in again] == first

    # Both workers served classification requests (each writes its own metrics file)...
    pids = {p.stem.rpartition("_")[2] for p in metrics_dir.glob("counter_*.db")}
    assert len(pids) == 2, sorted(metrics_dir.iterdir())
    # ...and /metrics, from whichever worker answers, counts the requests of both.
    text = _fresh(base, "GET", "/metrics", headers=HEADERS).text
    counted = re.search(
        r'dualscreen_requests_total\{route="/v1/classify",status="200"\} (\d+(?:\.\d+)?)', text
    )
    assert counted and float(counted.group(1)) == len(many) + 1, text
    info = _fresh(base, "GET", "/info", headers=HEADERS).json()
    assert info["workers"] == {"processes": 2, "threads_each": usable_cores() // 2}


@pytest.mark.slow
def test_two_workers_keep_auth_and_errors(two_workers):
    base, _ = two_workers
    for _ in range(4):
        assert _fresh(base, "POST", "/v1/classify", json=LISTINGS[0]).status_code == 401
        wrong = _fresh(base, "POST", "/v1/classify", json={"title": ""}, headers=HEADERS)
        assert wrong.status_code == 422 and set(wrong.json()) == {"error", "type", "detail"}
    assert _fresh(base, "GET", "/ready").status_code == 200


@pytest.mark.slow
def test_first_run_with_two_workers_shares_one_review_session(smoke_model, tmp_path):
    """The key and admin are made once by the supervisor, and a review log-in made on one
    worker is valid on the other (one session secret for all workers)."""
    if usable_cores() < 2:
        pytest.skip("needs 2 usable CPU cores")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--first-run", "--workers", "2", "--model", str(smoke_model), "--port", str(port)]
    proc = _start(tmp_path, args, {})
    try:
        wait_ready(base, proc)
    finally:
        output = _stop(proc)
    key = re.search(r"\b(ds_[A-Za-z0-9_\-]{20,})", output)
    password = re.search(r"password shown once\):\s*\n\s*(\S+)", output)
    assert key and password, output
    assert output.count("Created an API key") == 1 and output.count("password shown once") == 1

    proc = _start(tmp_path, args, {})
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base) as browser:
            page = browser.get("/review/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token, page.text
            login = browser.post(
                "/review/login",
                data={"name": "admin", "password": password.group(1), "csrf": token.group(1)},
            )
            assert login.status_code == 303, login.text
            cookies = dict(browser.cookies)
        for _ in range(8):  # new connections: either worker must accept the session
            queue = _fresh(base, "GET", "/review/queue", cookies=cookies)
            assert queue.status_code == 200, queue.text[:300]
            ok = _fresh(
                base,
                "POST",
                "/v1/classify",
                json=LISTINGS[1],
                headers={"X-API-Key": key.group(1)},
            )
            assert ok.status_code == 200
    finally:
        second = _stop(proc)
    assert "Created an API key" not in second and "password shown once" not in second
