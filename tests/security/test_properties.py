"""Property tests on what hostile listings and catalog files reach first: the text builder and the
readers. They may refuse input only with our own errors (serving/contract/errors.py), never crash
with anything else, and the readers account for every line as a row or a reject.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.contract.errors import DualscreenError, InputError
from serving.contract.readers import ColumnMapping, RejectedRow, Row, read_records
from serving.contract.text import BuiltText, build_text, build_text_from_record, normalize_text

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TRICKY = [
    "&amp;",
    "&amp;amp;",
    "&amp;amp;lt;",
    "&lt;b&gt;",
    "&#x26;",
    "&#38;lt;",
    "&nbsp;",
    "&",
    "&amp",
    "&#",
    ";",
    "<",
    ">",
    "<b>",
    "</p >",
    "<br/>",
    "<a href='x'>",
    "<scr<b>ipt>",
    "\u200b",
    "\ufeff",
    "\u202e",
    "\u00ad",
    "\x00",
    "\x7f",
    "\ud800",
    "\udcff",
    "\u0301",
    "ｆｕｌｌ",
    "＆ａｍｐ；",
    "＜ｂ＞",
    "ﬁ",
    "Ⅻ",
    "①",
    "㎏",
    "\t\n\r\x0b\x0c",
    "  ",
    "\u3000",
    "\u2028",
]
ANY_CHAR = st.characters(exclude_categories=())  # surrogates and unassigned code points too
TEXT = st.lists(
    st.one_of(st.text(ANY_CHAR, max_size=12), st.sampled_from(TRICKY)), max_size=12
).map("".join)
SCALAR = st.one_of(
    TEXT, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True)
)
VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(TEXT, SCALAR, max_size=3))


@BOUNDED
@given(TEXT)
def test_normalize_is_idempotent_and_leaves_no_hidden_characters(raw):
    once = normalize_text(raw)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once
    hidden = {"\x00", "\t", "\n", "\r", "\u200b", "\ufeff", "\u202e", "\u00ad"}
    assert not hidden & set(once)
    assert not any("\ud800" <= ch <= "\udfff" for ch in once)


@BOUNDED
@given(
    fields=st.tuples(VALUE, VALUE, VALUE, VALUE),
    attributes=st.one_of(st.none(), st.dictionaries(st.one_of(TEXT, st.integers()), VALUE)),
    max_chars=st.integers(min_value=1, max_value=400),
)
def test_build_text_is_bounded_and_raises_only_our_errors(fields, attributes, max_chars):
    try:
        built = build_text(*fields, attributes=attributes, max_chars=max_chars)
        whole = build_text(*fields, attributes=attributes, max_chars=10**9)
    except DualscreenError:
        return
    assert isinstance(built, BuiltText) and isinstance(built.text, str)
    assert len(built.text) <= max_chars
    assert built.truncated == (len(whole.text) > max_chars)
    assert whole.text.startswith(built.text)


@BOUNDED
@given(
    record=st.dictionaries(
        st.sampled_from(["title", "description", "brand", "seller_category", "attributes", "x"]),
        VALUE,
    ),
    cols=st.lists(
        st.sampled_from(["title", "description", "brand", "seller_category", "attributes", "x"]),
        min_size=1,
        max_size=6,
        unique=True,
    ),
)
def test_build_text_from_any_record_raises_only_our_errors(record, cols):
    try:
        built = build_text_from_record(record, tuple(cols), max_chars=500)
    except DualscreenError:
        return
    assert len(built.text) <= 500


def _read(path: Path, taxonomy=None, fmt: str | None = None) -> tuple[list, Exception | None]:
    """Every result until the reader ends or raises; anything but our error fails the test."""
    results: list = []
    try:
        for result in read_records(path, fmt, ColumnMapping(), taxonomy):
            assert isinstance(result, Row | RejectedRow), type(result)
            results.append(result)
    except DualscreenError as exc:
        return results, exc
    return results, None


@BOUNDED
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=500).map(lambda b: b"PAR1" + b + b"PAR1"),
        st.binary(max_size=500).map(lambda b: b"id,title\n" + b),
        st.binary(max_size=500).map(lambda b: b'{"title": "x"}\n' + b),
    ),
    name=st.sampled_from(
        ["in.csv", "in.tsv", "in.jsonl", "in.parquet", "in.csv.gz", "in.jsonl.gz", "in.txt"]
    ),
    compress=st.booleans(),
    labelled=st.booleans(),
)
def test_readers_take_random_bytes_without_crashing(
    data, name, compress, labelled, tmp_path, taxonomy
):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress and name.endswith(".gz") else data)
    results, _ = _read(path, taxonomy if labelled else None)
    lines = [r.line for r in results]
    assert lines == sorted(set(lines)) and all(n >= 1 for n in lines)
    if not name.endswith((".parquet", ".gz")):
        assert len(results) <= data.count(b"\n") + 1


def _non_blank_lines(data: bytes, first: int = 1) -> list[int]:
    numbers = []
    for n, line in enumerate(data.split(b"\n"), start=1):
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if n >= first and line.strip():
            numbers.append(n)
    return numbers


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=3)
    ),
    max_leaves=8,
)
LABELS = st.one_of(
    st.lists(st.sampled_from(["uav", "marine", "sensors_lasers", "not_a_label", ""]), max_size=3),
    st.sampled_from(["uav|marine", "uav,bogus", '["uav"]', "[1, 2]", "[", ""]),
    JSON_VALUE,
)
LISTING = st.fixed_dictionaries(
    {"title": st.one_of(TEXT, SCALAR)},
    optional={"id": SCALAR, "description": VALUE, "brand": VALUE, "labels": LABELS, "x": VALUE},
)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


JSONL_LINE = st.one_of(
    LISTING.map(lambda d: _encode(json.dumps(d, ensure_ascii=False))),
    LISTING.map(lambda d: json.dumps(d).encode()),
    JSON_VALUE.map(lambda v: _encode(json.dumps(v, ensure_ascii=False))),
    st.integers(1, 5000).map(lambda d: ("[" * d + "]" * d).encode()),
    st.integers(1, 200).map(lambda d: ('{"title": ' * d + '"x"' + "}" * d).encode()),
    TEXT.map(_encode),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"", b"   ", b"\r", b"\t", b"{", b"}", b"null", b"\xef\xbb\xbf{}"]),
)


@BOUNDED
@given(
    lines=st.lists(JSONL_LINE, max_size=25),
    bom=st.booleans(),
    trailing=st.booleans(),
    labelled=st.booleans(),
)
def test_every_jsonl_line_is_a_row_or_a_reject(lines, bom, trailing, labelled, tmp_path, taxonomy):
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + (b"\n" if trailing else b"")
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    results, error = _read(path, taxonomy if labelled else None)
    expected = _non_blank_lines(data)
    got = [r.line for r in results]
    if error is None:
        assert got == expected
    else:
        assert isinstance(error, InputError) and got == expected[: len(got)]


CELL = st.one_of(
    st.text(st.characters(exclude_categories=(), exclude_characters='"\n\r'), max_size=15).map(
        _encode
    ),
    st.sampled_from([b"", b" ", b"\xff", b"\xc3", b"\x00", b",", b"\t", b"uav|marine", b"nope"]),
)


@BOUNDED
@given(
    rows=st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=25),
    delimiter=st.sampled_from([b",", b"\t"]),
    labelled=st.booleans(),
    trailing=st.booleans(),
)
def test_every_delimited_line_is_a_row_or_a_reject(
    rows, delimiter, labelled, trailing, tmp_path, taxonomy
):
    header = delimiter.join([b"id", b"title", b"description", b"labels"])
    lines = [header] + [delimiter.join(cells) for cells in rows]
    data = b"\n".join(lines) + (b"\n" if trailing else b"")
    path = tmp_path / ("in.csv" if delimiter == b"," else "in.tsv")
    path.write_bytes(data)
    results, error = _read(path, taxonomy if labelled else None)
    assert error is None, error
    # Without quotes a record is one line; only an empty line is skipped.
    expected = [n for n, line in enumerate(data.split(b"\n"), start=1) if n > 1 and line != b""]
    assert [r.line for r in results] == expected
