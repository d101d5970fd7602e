"""A few corpus files through a real `dualscreen` process: the exit code and stderr a shell sees."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.robustness.make_corpus import cases

pytestmark = pytest.mark.slow


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dualscreen.cli", *(str(a) for a in args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unreadable_file_exits_2_with_one_error_line(tfidf_model, tmp_path):
    out = tmp_path / "scored.csv"
    done = run("score", cases()["utf16_bom.csv"].path, "-o", out, "--model", tfidf_model)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr and "UTF-16 encoded; convert it to UTF-8" in done.stderr


def test_bad_rows_exit_0_and_are_named(tfidf_model, tmp_path):
    """Issue: a number past 4,300 digits in a JSONL line crashed the reader with a traceback."""
    url = f"sqlite:///{tmp_path / 'review.db'}"
    case = cases()["malformed.jsonl"]
    done = run("review", "import", case.path, "--model", tfidf_model, "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for reject in case.rejects:
        assert f"line {reject.line}: {reject.reason}" in done.stderr
    assert f"read {len(case.good)} rows ({len(case.rejects)} rejected)" in done.stderr
