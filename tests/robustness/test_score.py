"""`dualscreen score` on every corpus file: good rows in OUTPUT, bad ones in OUTPUT.rejects.jsonl.

The sweeps over the whole corpus score with the TF-IDF artifact (it loads several times faster and
the reader and writers are the same for every backend); the huge cases use the transformer.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.robustness.conftest import case_ids, spreadsheet_safe
from tests.robustness.make_corpus import FORMULA_ROWS, Case, cases, huge_field, huge_word

pytestmark = pytest.mark.slow

# Files whose good rows carry odd text, written as JSONL or Parquet too (values kept verbatim);
# the lone surrogates crashed every writer, so they go through both.
ODD_TEXT = (
    ("lone_surrogates.jsonl", "jsonl"),
    ("lone_surrogates.jsonl", "parquet"),
    ("emoji.jsonl", "parquet"),
    ("nul_bytes.jsonl", "parquet"),
    ("formula_payloads.csv", "jsonl"),
    ("html_script.csv", "parquet"),
    ("bidi_zero_width.csv", "jsonl"),
    ("mixed_types.parquet", "parquet"),
    ("invalid_utf8.parquet", "jsonl"),
)


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_rejects(output: Path) -> list[dict]:
    path = output.with_name(output.name + ".rejects.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_run(case: Case, result, out: Path, ids: list[str]) -> list[dict]:
    """The documented outcome of one run; returns the output rows."""
    if case.error:
        assert result.code == 2, result.err
        assert "error:" in result.err and case.error in result.err
        return []
    if case.truncated:
        assert result.code == 2 and "ends early" in result.err, result.err
        assert f"rows before the break are in {out}" in result.err
    else:
        assert result.code == 0, result.err
    rows = read_output(out)
    assert [str(r["id"]) for r in rows] == ids
    assert all(r["decision"] in {"flag", "review", "clear"} for r in rows)
    rejects = read_rejects(out)
    assert [r["line"] for r in rejects] == [r.line for r in case.rejects]
    for got, want in zip(rejects, case.rejects, strict=True):
        assert want.reason in got["reason"], got
    return rows


@pytest.mark.parametrize("name", case_ids())
def test_score_csv_output_has_every_good_row_and_rejects_every_bad_one(
    dualscreen, tfidf_model, tmp_path, name
):
    case = cases()[name]
    out = tmp_path / "scored.csv"
    result = dualscreen("score", case.path, "-o", out, "--model", tfidf_model)
    check_run(case, result, out, [spreadsheet_safe(i) for i in case.good])


@pytest.mark.parametrize(("name", "ext"), ODD_TEXT)
def test_score_jsonl_and_parquet_output_keep_odd_text_verbatim(
    dualscreen, tfidf_model, tmp_path, name, ext
):
    """Issue: a lone surrogate from a JSON escape crashed every writer (UnicodeEncodeError)."""
    case = cases()[name]
    out = tmp_path / f"scored.{ext}"
    result = dualscreen("score", case.path, "-o", out, "--model", tfidf_model)
    rows = check_run(case, result, out, case.good)
    if name == "formula_payloads.csv":
        assert [r["title"] for r in rows if r["id"].startswith("f")] == [
            r["title"] for r in FORMULA_ROWS[:-1]
        ]


def test_score_csv_output_neutralises_formulas(dualscreen, smoke_model, tmp_path):
    """Issue: `score -o x.csv` wrote =HYPERLINK(...) and friends as live spreadsheet formulas, and
    a field with a bare carriage return unquoted, so the row split in two when read back."""
    case = cases()["formula_payloads.csv"]
    out = tmp_path / "scored.csv"
    assert dualscreen("score", case.path, "-o", out, "--model", smoke_model).code == 0
    rows = {r["id"]: r for r in read_output(out)}
    for row in FORMULA_ROWS:
        got = rows[spreadsheet_safe(row["id"])]
        for column, value in row.items():
            assert got[column] == spreadsheet_safe(value), (column, got[column])
    cells = [c for r in rows.values() for c in r.values()]
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r", "-")) and c != "-5"]
    assert rows["f2"]["price"] == "-5" and rows["f3"]["title"] == "'-1+1 GNSS module"


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_score_rejects_a_10mb_field_and_keeps_its_neighbours(
    dualscreen, smoke_model, tmp_path, ext
):
    case = huge_field(tmp_path / f"huge.{ext}")
    out = tmp_path / "scored.jsonl"
    result = dualscreen("score", tmp_path / case.file, "-o", out, "--model", smoke_model)
    check_run(case, result, out, case.good)
    assert len(read_rejects(out)[0]["raw"]) <= 2001  # the raw text in rejects is capped


def test_score_truncates_a_million_character_word(dualscreen, smoke_model, tmp_path):
    case = huge_word(tmp_path / "word.csv")
    out = tmp_path / "scored.jsonl"
    result = dualscreen("score", tmp_path / case.file, "-o", out, "--model", smoke_model)
    rows = check_run(case, result, out, case.good)
    assert "truncated" in rows[1]["reasons"].split("|")


def test_score_finishes_the_rows_before_a_gzip_break(dualscreen, smoke_model, tmp_path):
    """Issue: rows read before the break but not yet a full chunk were never written."""
    case = cases()["truncated.jsonl.gz"]
    out = tmp_path / "scored.parquet"
    result = dualscreen("score", case.path, "-o", out, "--model", smoke_model)
    check_run(case, result, out, case.good)
    assert not out.with_name(out.name + ".checkpoint.json").exists()
    again = dualscreen("score", case.path, "-o", out, "--model", smoke_model)
    assert again.code == 2 and "--overwrite" in again.err


def test_score_unknown_labels_pass_through_as_input_labels(dualscreen, smoke_model, tmp_path):
    case = cases()["unknown_labels.csv"]
    out = tmp_path / "scored.csv"
    assert dualscreen("score", case.path, "-o", out, "--model", smoke_model).code == 0
    with open(case.path, newline="", encoding="utf-8") as handle:
        given = [r["labels"] for r in csv.DictReader(handle)]
    assert [r["input_labels"] for r in read_output(out)] == given
