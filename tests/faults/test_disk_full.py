"""Fault: the disk holding the scorer's output fills up mid-run.

The output folder is a small tmpfs (mounted for the test, unmounted in `finally`) that a ballast
file fills to within 200 KiB. Where mounting is not permitted the child runs under RLIMIT_FSIZE
instead (SIGXFSZ ignored, so writes fail with EFBIG rather than killing it); the test records
which of the two ran as the `disk_full_by` property. The scorer must stop with one clear error
line (no traceback) and a nonzero exit, its checkpoint intact; once space is freed, `--resume`
must finish with output and rejects byte-identical to a clean run.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.batch.score import checkpoint_path, rejects_path
from tests.faults.conftest import score_args, score_to_end

pytestmark = pytest.mark.slow

ROOM = 200 * 1024  # bytes left for the output when the disk is "full"
DISK = 4 * 1024 * 1024


@contextlib.contextmanager
def small_disk(folder: Path) -> Iterator[str]:
    """Mount a tmpfs at `folder` and fill it to ROOM bytes free: yields "tmpfs", or "rlimit"."""
    folder.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(folder)],
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    )
    try:
        if mounted:
            stat = os.statvfs(folder)
            (folder / "ballast").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - ROOM))
        yield "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], timeout=30, check=True)


def _file_size_limit() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (ROOM, ROOM))


def test_disk_full_stops_cleanly_and_resume_completes(
    catalog, smoke_model, clean_scores, tmp_path, record_property
):
    clean, _ = clean_scores(".csv")
    assert clean.stat().st_size > ROOM, "the output would fit; the disk never fills"

    with small_disk(tmp_path / "disk") as how:
        record_property("disk_full_by", how)
        print(f"disk full by {how}")
        out = tmp_path / "disk" / "out.csv"
        args = score_args(catalog, out, smoke_model)
        limit = {"preexec_fn": _file_size_limit} if how == "rlimit" else {}
        code, _, err = score_to_end(args, **limit)
        assert code == 2, err
        assert "Traceback" not in err and err.count("\n") <= 3, err
        assert ("No space left" if how == "tmpfs" else "File too large") in err, err
        assert "--resume" in err, err
        # Intact: valid, past the first chunk, and what it vouches for is a clean run's prefix.
        state = json.loads(checkpoint_path(out).read_text(encoding="utf-8"))
        assert state["last_line"] > 0
        pos, rejects_pos = state["output_pos"], state["rejects_pos"]
        assert out.read_bytes()[:pos] == clean.read_bytes()[:pos] and len(out.read_bytes()) >= pos
        assert (
            rejects_path(out).read_bytes()[:rejects_pos]
            == (rejects_path(clean).read_bytes()[:rejects_pos])
        )

        if how == "tmpfs":
            (tmp_path / "disk" / "ballast").unlink()
        code, summary, err = score_to_end([*args, "--resume", "--json-summary"])
        assert code == 0, err
        assert json.loads(summary)["resumed"] is True
        assert out.read_bytes() == clean.read_bytes()
        assert rejects_path(out).read_bytes() == rejects_path(clean).read_bytes()
        assert not checkpoint_path(out).exists()
