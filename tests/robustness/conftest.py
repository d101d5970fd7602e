"""Fixtures for the bad-input corpus: the real console entry point, the review databases, the API.

The CLI runs in this process through `dualscreen.cli.main`, the function the `dualscreen` script
calls, so a test sees its exit code and stderr as a shell would without paying a Python start-up
per file; `test_cli_process.py` runs a few files through a real child process as well.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# The review store on both databases (a SQLite file, a fresh PostgreSQL schema), as tests/review.
from tests.review.conftest import db_url, pg_database  # noqa: F401
from tests.robustness.make_corpus import Case, cases
from tests.service.conftest import HEADERS

GOOD_ITEM = {"id": "alive", "title": "LWIR thermal imaging core 640x512"}


@dataclass
class CliResult:
    """What a run of the `dualscreen` command left: exit code, stdout and stderr."""

    code: int
    out: str
    err: str


@pytest.fixture()
def dualscreen(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run `dualscreen ARGS...` through the console entry point; an exception fails the test."""
    from dualscreen.cli import main

    def run(*args: object) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["dualscreen", *(str(a) for a in args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def predictor(smoke_model: Path):
    from serving.predictor import Predictor

    return Predictor.load(smoke_model)


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def case_ids(select: Callable[[Case], bool] = lambda c: True) -> list[str]:
    """Corpus file names (the test ids) of the cases `select` keeps."""
    return [name for name, case in cases().items() if select(case)]


def spreadsheet_safe(text: str) -> str:
    """What a formula-looking cell becomes in CSV output: a leading `'`, unless it is a number."""
    if not text.startswith(("=", "+", "-", "@", "\t", "\r")):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text


async def assert_alive(client: httpx.AsyncClient) -> None:
    """The API still answers /health and classifies a good item."""
    assert (await client.get("/health")).json() == {"status": "ok"}
    r = await client.post("/v1/classify", json=GOOD_ITEM, headers=HEADERS)
    assert r.status_code == 200 and r.json()["items"][0]["id"] == "alive", r.text
