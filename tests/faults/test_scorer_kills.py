"""Fault: `dualscreen score` is SIGKILLed five times at random moments and resumed each time.

tests/batch/test_score.py kills one run once, at a checkpoint. Here a seeded RNG picks five
moments spread over the run: each waits until the checkpoint passes a random line, then a random
few milliseconds more (landing mid-chunk, while it scores); three of the five then also wait for
the moment a chunk's output is written and its checkpoint is not, so the resume has bytes to cut
off. After each kill `--resume` picks up; the last resume finishes. The output and the rejects
file (the catalog has bad rows of three kinds) must be byte-identical to a clean run's.

Both kinds of writer run: CSV (one file cut back to an offset) and Parquet (part files merged
at the end). Both use the transformer smoke model rather than the TF-IDF one: a run here starts
six times, and the transformer's CLI starts in under a second on ONNX where the TF-IDF model
spends about three seconds loading its 40 MB skops file.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from serving.batch.score import checkpoint_path, rejects_path
from tests.faults.conftest import CATALOG_ROWS, CHUNK, score_args, score_cli, score_to_end

pytestmark = pytest.mark.slow

KILLS = 5
WAIT_S = 120.0
POLL_S = 0.005


def checkpointed(output: Path) -> tuple[int, bool]:
    """The checkpoint's last input line (0 before the first), and whether output runs past it.

    Output past the checkpoint: a chunk's rows are written and its checkpoint is not (yet).
    """
    try:
        state = json.loads(checkpoint_path(output).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0, False
    if output.suffix == ".parquet":  # the position counts part files
        written = len(list(output.with_name(output.name + ".parts").glob("*.parquet")))
    else:
        written = output.stat().st_size
    return int(state["last_line"]), written > state["output_pos"]


def kill_after(args: list[str], output: Path, line: int, extra_s: float, in_write: bool) -> int:
    """Start the scorer, SIGKILL it once its checkpoint passes `line`, `extra_s` later.

    With `in_write`, it then waits (a while at most) for a chunk whose output is written and
    whose checkpoint is not, so the kill leaves bytes that the resume has to cut off.
    """
    proc = score_cli(args)
    try:
        deadline = time.monotonic() + WAIT_S
        while checkpointed(output)[0] < line:
            assert proc.poll() is None, f"exited before line {line}: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"no checkpoint past line {line}"
            time.sleep(POLL_S)
        time.sleep(extra_s)
        until = time.monotonic() + (2.0 if in_write else 0.0)
        while time.monotonic() < until:
            done, past = checkpointed(output)
            if past or done >= line + 3 * CHUNK:  # caught it, or give up well before the end
                break
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return checkpointed(output)[0]


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_five_sigkills_and_resumes_give_a_clean_runs_bytes(
    catalog, smoke_model, clean_scores, tmp_path, ext, record_property
):
    clean, clean_summary = clean_scores(ext)
    last_line = catalog.read_bytes().count(b"\n")
    rng = random.Random(f"dualscreen-faults-{ext}")
    # One kill in each fifth of 5 %..80 % of the file, so each resumed run has to make progress
    # and the last kill still comes well before the end.
    span = (0.80 - 0.05) * last_line / KILLS
    targets = [int(0.05 * last_line + span * (k + rng.random())) for k in range(KILLS)]
    killed = tmp_path / f"killed{ext}"
    args = score_args(catalog, killed, smoke_model)
    in_write = rng.sample([True, True, True, False, False], KILLS)
    reached, past = [], 0
    for k, target in enumerate(targets):
        resume = ["--resume"] if k else []
        extra_s = rng.uniform(0.0, 0.05)
        reached.append(kill_after([*args, *resume], killed, target, extra_s, in_write[k]))
        assert reached[-1] >= target
        past += checkpointed(killed)[1]
    assert reached[-1] < last_line
    # How many kills left output past the checkpoint (fsync speed decides how often the window
    # is caught, so it is recorded, not asserted).
    record_property("kills_past_checkpoint", past)

    code, out, err = score_to_end([*args, "--resume", "--json-summary"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed"] is True
    assert killed.read_bytes() == clean.read_bytes()
    assert rejects_path(killed).read_bytes() == rejects_path(clean).read_bytes()
    for key in ("rows_read", "scored", "rejected", "decisions", "per_label", "duplicate_ids"):
        assert summary[key] == clean_summary[key], key
    assert summary["rejected"] == 3 * len(range(50, CATALOG_ROWS, 97))
    assert not checkpoint_path(killed).exists()
