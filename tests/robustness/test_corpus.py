"""The corpus itself, and the shared reader on it: every good row read, every bad one rejected."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serving.contract.errors import InputError, TruncatedInputError
from serving.contract.readers import ColumnMapping, RejectedRow, Row, read_records
from tests.robustness.conftest import case_ids
from tests.robustness.make_corpus import CORPUS, Case, cases, huge_field, huge_word, write_corpus

TEXT = ("title", "description", "brand", "seller_category")


def read_all(path: Path, taxonomy=None) -> tuple[list[Row], list[RejectedRow], Exception | None]:
    rows: list[Row] = []
    rejected: list[RejectedRow] = []
    try:
        for result in read_records(path, mapping=ColumnMapping("id", TEXT), taxonomy=taxonomy):
            (rows if isinstance(result, Row) else rejected).append(result)  # type: ignore[arg-type]
    except InputError as exc:
        return rows, rejected, exc
    return rows, rejected, None


def assert_rejects(got: list[RejectedRow], expected: list) -> None:
    assert [r.line for r in got] == [e.line for e in expected], [(r.line, r.reason) for r in got]
    for r, e in zip(got, expected, strict=True):
        assert e.reason in r.reason, (r.line, r.reason)


def _gz_prefix_lines(data: bytes) -> list[bytes]:
    """The complete lines a truncated gzip still holds."""
    text = zlib.decompressobj(wbits=31).decompress(data)
    return text.split(b"\n")[:-1]


def test_corpus_is_what_the_script_writes(tmp_path):
    fresh = write_corpus(tmp_path)
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(p.name for p in fresh)
    for new in fresh:
        old = CORPUS / new.name
        if new.suffix == ".parquet" and new.stat().st_size:  # metadata names the writer
            assert pq.read_table(old).equals(pq.read_table(new)), new.name
        elif new.suffix == ".gz":  # zlib builds may compress differently; the rows must not
            assert _gz_prefix_lines(old.read_bytes()) == _gz_prefix_lines(new.read_bytes())
        else:
            assert old.read_bytes() == new.read_bytes(), f"rerun make_corpus.py: {new.name}"


def test_corpus_stays_small():
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 300_000


@pytest.mark.parametrize("name", case_ids())
def test_reader_reads_every_good_row_and_rejects_each_bad_one(name):
    case: Case = cases()[name]
    rows, rejected, error = read_all(case.path)
    if case.error:
        assert isinstance(error, InputError) and case.error in str(error)
        assert not rows and not rejected
        return
    if case.truncated:
        assert isinstance(error, TruncatedInputError) and "ends early" in str(error)
    else:
        assert error is None, error
    assert [str(r.data["id"]) for r in rows] == case.good
    assert_rejects(rejected, case.rejects)
    for row in rows:  # what the reader hands on is storable and writable as UTF-8
        for value in row.data.values():
            if isinstance(value, str):
                value.encode("utf-8")
                assert "\x00" not in value


@pytest.mark.parametrize("name", case_ids(lambda c: "labels" in c.file))
def test_reader_with_taxonomy_rejects_unknown_labels_with_line_and_reason(name, taxonomy):
    case = cases()[name]
    rows, rejected, error = read_all(case.path, taxonomy)
    assert error is None
    assert_rejects(rejected, case.label_rejects)
    bad_lines = {r.line for r in case.label_rejects}
    assert len(rows) == len(case.good) - len(bad_lines)
    assert all(set(r.labels or []) <= set(taxonomy.labels) for r in rows)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_reader_rejects_a_10mb_field_in_bounded_memory(tmp_path, ext):
    case = huge_field(tmp_path / f"huge.{ext}")
    tracemalloc.start()
    try:
        rows, rejected, error = read_all(tmp_path / case.file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error is None and [r.data["id"] for r in rows] == case.good
    assert_rejects(rejected, case.rejects)
    assert peak < 120_000_000  # a few copies of the one 10 MB row, never the whole input


def test_reader_keeps_a_million_character_word_and_rejects_one_more(tmp_path):
    case = huge_word(tmp_path / "word.csv")
    rows, rejected, _ = read_all(tmp_path / case.file)
    assert [r.data["id"] for r in rows] == case.good and not rejected
    huge_word(tmp_path / "over.csv", 1_000_001)
    rows, rejected, _ = read_all(tmp_path / "over.csv")
    assert [r.data["id"] for r in rows] == ["g1", "g3"]
    assert rejected[0].line == 3
    assert "field 'title' has 1,000,001 characters, over the limit of 1,000,000" in (
        rejected[0].reason
    )


def test_unclosed_quote_in_a_big_file_costs_one_row(tmp_path):
    """Issue: a quote left open swallowed every following row (silently at the end of a file)."""
    path = tmp_path / "open.csv.gz"
    lines = ["id,title"] + [f"g{n},item {n}" for n in range(3000)]
    lines[1000] = 'b1,"open quote'
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    rows, rejected, error = read_all(path)
    assert error is None
    assert [(r.line, r.reason.split(":")[0]) for r in rejected] == [(1001, "unbalanced quote")]
    assert len(rows) == 2999 and rows[999].data["id"] == "g1000"


def test_multi_line_fields_with_crlf_are_not_taken_for_open_quotes(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"id,title,description\r\n"
        b'g1,"multi\r\nline title","desc, with comma"\r\n'
        b'g2,plain,"x ""quoted"" y"\r\n'
        b'g3,"a\r\n\r\nb",c\r\n'
    )
    rows, rejected, error = read_all(path)
    assert error is None and not rejected
    assert [(r.line, r.data["id"]) for r in rows] == [(2, "g1"), (4, "g2"), (5, "g3")]
