"""Bulk scoring with a real smoke model: formats, rejects, order, duplicates, kill and resume."""

from __future__ import annotations

import csv
import gzip
import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch.score import ScoreOptions, Scorer, checkpoint_path, rejects_path
from serving.contract.errors import InputError
from serving.contract.readers import ColumnMapping
from serving.predictor import Predictor

pytestmark = pytest.mark.slow

TITLES = [
    "LWIR thermal core 640x512 uncooled",
    "Cotton T-shirt crew neck",
    "IC FPGA 285 I/O 484FBGA",
    "Quadcopter aerial platform 55 min endurance",
    "Garden hose 20 m green",
    "GNSS RTK OEM board L1 L2 L5",
]


@pytest.fixture(scope="module")
def scorer(smoke_model) -> Scorer:
    return Scorer(Predictor.load(smoke_model))


def catalog_rows(n: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"r{i}",
            "title": f"{TITLES[i % len(TITLES)]} v{i}",
            "description": "spec line " * (i % 7),
            "price": str(i),
        }
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_out(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("out_ext", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("in_ext", [".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz"])
def test_formats_keep_columns_order_and_add_scores(scorer, tmp_path, in_ext, out_ext):
    rows = catalog_rows(30)
    src = tmp_path / f"in{in_ext}"
    if in_ext in (".csv", ".csv.gz"):
        write_csv(tmp_path / "in.csv", rows)
        if in_ext == ".csv.gz":
            src.write_bytes(gzip.compress((tmp_path / "in.csv").read_bytes()))
    elif in_ext == ".tsv":
        with open(src, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
    elif in_ext == ".jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / f"out{out_ext}"
    summary = scorer.score_file(ScoreOptions(src, out, chunk_size=7))
    result = read_out(out)
    assert [r["id"] for r in result] == [r["id"] for r in rows]
    assert summary.scored == 30 and summary.rejected == 0 and summary.rows_read == 30
    first = result[0]
    for col in (
        "title",
        "description",
        "price",
        "decision",
        "risk",
        "labels",
        "reasons",
        "model_version",
        "taxonomy_version",
        "p_uav",
        "p_sensors_lasers",
    ):
        assert col in first, col
    assert {r["decision"] for r in result} <= {"flag", "review", "clear"}
    assert sum(summary.decisions.values()) == 30
    assert not checkpoint_path(out).exists()


def test_column_mapping_and_input_label_column_renamed(scorer, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("sku,name,labels\nA1,IC FPGA 285 I/O 484FBGA,electronics\nA2,Garden hose,\n")
    out = tmp_path / "out.csv"
    scorer.score_file(ScoreOptions(src, out, ColumnMapping("sku", ("name",), None)))
    result = read_out(out)
    assert [r["sku"] for r in result] == ["A1", "A2"]
    assert result[0]["input_labels"] == "electronics" and "labels" in result[0]


def test_every_bad_row_kind_goes_to_rejects_with_line_and_reason(scorer, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_bytes(
        b"id,title,description\n"
        b"1,Cotton T-shirt,fine\n"
        b"2,,\n"  # missing text
        b"3,bad \xff byte,x\n"  # undecodable
        b"4,too,many,fields\n"  # wrong column count
        b"5,Garden hose,ok\n"
        b'6,"unbalanced quote,x\n'  # malformed quoting (swallows the rest)
        b"7,after quote,x\n"
    )
    out = tmp_path / "out.jsonl"
    summary = scorer.score_file(ScoreOptions(src, out, chunk_size=3))
    rejects = [json.loads(line) for line in rejects_path(out).read_text().splitlines()]
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert "missing text" in reasons[3]
    assert "undecodable" in reasons[4]
    assert "wrong column count" in reasons[5]
    assert any(line >= 7 for line in reasons)
    scored = [r["id"] for r in read_out(out)]
    assert scored[:2] == ["1", "5"]
    assert summary.rows_read == summary.scored + summary.rejected


def test_duplicate_ids_are_reported(scorer, tmp_path):
    rows = catalog_rows(10)
    rows[7]["id"] = rows[2]["id"]
    out = tmp_path / "out.csv"
    summary = scorer.score_file(
        ScoreOptions(write_csv(tmp_path / "in.csv", rows), out, chunk_size=4)
    )
    assert summary.duplicate_ids == 1
    assert summary.duplicate_examples[0] == {"line": 9, "first_line": 4, "column": "id"}


def test_existing_output_and_unfinished_run_are_protected(scorer, tmp_path):
    src = write_csv(tmp_path / "in.csv", catalog_rows(5))
    out = tmp_path / "out.csv"
    scorer.score_file(ScoreOptions(src, out))
    with pytest.raises(InputError, match="--overwrite"):
        scorer.score_file(ScoreOptions(src, out))
    checkpoint_path(out).write_text("{}")
    with pytest.raises(InputError, match="--resume to continue"):
        scorer.score_file(ScoreOptions(src, out))
    scorer.score_file(ScoreOptions(src, out, overwrite=True))


def _cli(args: list[str]) -> subprocess.Popen[str]:
    from tests.faults.conftest import score_cli

    return score_cli(args)


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_sigkill_then_resume_gives_byte_identical_output(smoke_model, tmp_path, ext):
    rows = catalog_rows(800)
    rows[100]["title"] = ""
    rows[100]["description"] = ""  # one reject, so the rejects file is resumed too
    src = write_csv(tmp_path / "in.csv", rows)
    common = ["--model", str(smoke_model), "--batch-size", "50", "--threads", "1"]
    clean = tmp_path / f"clean{ext}"
    done = _cli([str(src), "-o", str(clean), *common, "--json-summary"])
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    clean_summary = json.loads(out)

    killed = tmp_path / f"killed{ext}"
    proc = _cli([str(src), "-o", str(killed), *common])
    ckpt = checkpoint_path(killed)
    deadline = time.time() + 300
    while time.time() < deadline:
        if ckpt.exists() and json.loads(ckpt.read_text() or "{}").get("last_line", 0) >= 200:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run finished before it could be killed"
    resumed = _cli([str(src), "-o", str(killed), *common, "--resume", "--json-summary"])
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    summary = json.loads(out)
    assert summary["resumed"] is True
    assert killed.read_bytes() == clean.read_bytes()
    assert rejects_path(killed).read_bytes() == rejects_path(clean).read_bytes()
    for key in ("rows_read", "scored", "rejected", "decisions", "per_label"):
        assert summary[key] == clean_summary[key], key
    assert summary["rejected"] == 1 and summary["scored"] == 799


def test_resume_refuses_a_changed_input(scorer, tmp_path):
    src = write_csv(tmp_path / "in.csv", catalog_rows(20))
    out = tmp_path / "out.csv"
    scorer.score_file(ScoreOptions(src, out, chunk_size=5))
    checkpoint_path(out).write_text(json.dumps({"version": 1, "fingerprint": {}, "options": {}}))
    with pytest.raises(InputError, match="changed since the interrupted run"):
        scorer.score_file(ScoreOptions(src, out, chunk_size=5, resume=True))


def test_enqueue_review_is_idempotent_and_survives_rerun(smoke_model, tmp_path):
    from sqlalchemy import func, select

    from serving.review.models import Item, Suggestion
    from serving.review.store import ReviewStore

    src = write_csv(tmp_path / "in.csv", catalog_rows(60))
    url = f"sqlite:///{tmp_path / 'review.db'}"
    args = [
        str(src),
        "--model",
        str(smoke_model),
        "--batch-size",
        "20",
        "--enqueue-review",
        "--database-url",
        url,
        "--json-summary",
    ]
    first = _cli([*args, "-o", str(tmp_path / "a.csv")])
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    summary = json.loads(out)
    assert summary["enqueued"] == summary["decisions"]["review"]
    second = _cli([*args, "-o", str(tmp_path / "b.csv")])
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert json.loads(out)["enqueued"] == 0
    store = ReviewStore.open(url)
    try:
        with store.transaction() as session:
            items = session.scalar(select(func.count()).select_from(Item))
            suggestions = session.scalar(select(func.count()).select_from(Suggestion))
    finally:
        store.dispose()
    assert items == suggestions == summary["decisions"]["review"]
