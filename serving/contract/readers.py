"""Read catalog and labelled files: CSV, TSV, JSONL and Parquet, each optionally gzip-compressed.

One streaming reader for every entry point (corpus tools, evaluation, bulk scoring, review
import). It yields `Row` for each good record and `RejectedRow` for each bad one, with the
physical line (or row number for Parquet) and a reason, and never stops at a bad row. Only a
file that cannot be read at all raises `InputError`; a gzip stream that ends early raises
`TruncatedInputError` after every row before the break has been yielded.

Compromise: CSV records are decoded line by line with `surrogateescape`, so one undecodable byte
rejects its own record and no other. A quote left open swallows the following lines into one
field; when that record comes out malformed (wrong column count, its quote closed mid-field, still
open at the end of the file, or past the field limit) only its first line is rejected and the
lines it swallowed are read again as rows. An open quote that a later quote happens to close
cleanly, with the right column count, goes unnoticed: no reader can tell it from a multi-line field.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from serving.contract.errors import InputError, TaxonomyError, TruncatedInputError
from serving.contract.listing import TEXT_FIELDS
from serving.contract.taxonomy import Taxonomy

Format = Literal["csv", "tsv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "tsv", "jsonl", "parquet")
DEFAULT_TEXT_COLS = TEXT_FIELDS
DEFAULT_MAX_FIELD_CHARS = 1_000_000
MAX_JSON_DEPTH = 64
_RAW_PREVIEW = 2000
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns hold the id, the text and the labels."""

    id_col: str = "id"
    text_cols: tuple[str, ...] = DEFAULT_TEXT_COLS
    labels_col: str | None = "labels"


@dataclass
class Row:
    """One good record: its location, its columns, and labels when the file has them."""

    line: int
    data: dict[str, Any]
    labels: list[str] | None = None


@dataclass
class RejectedRow:
    """One bad record: its location, the raw text (capped) and why it was rejected."""

    line: int
    raw: str
    reason: str
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


ReadResult = Row | RejectedRow


def detect_format(path: str | Path, fmt: str | None = None) -> tuple[Format, bool]:
    """Return (format, gzipped) from an explicit format or the file name's extension."""
    name = Path(path).name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if fmt:
        fmt = fmt.lower()
        if fmt == "ndjson":
            fmt = "jsonl"
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt, gz
    for ext, found in (
        (".csv", "csv"),
        (".tsv", "tsv"),
        (".tab", "tsv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if name.endswith(ext):
            return found, gz  # type: ignore[return-value]
    raise InputError(
        f"{path}: cannot tell the format from the extension; name it .csv, .tsv, .jsonl or "
        ".parquet (optionally .gz), or pass --format"
    )


def _preview(raw: str) -> str:
    return raw if len(raw) <= _RAW_PREVIEW else raw[:_RAW_PREVIEW] + "…"


def _open_binary(path: Path, gz: bool) -> IO[bytes]:
    try:
        handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None
    if gz:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def _lines(handle: IO[bytes], path: Path) -> Iterator[bytes]:
    try:
        yield from handle
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise TruncatedInputError(
            f"{path}: compressed stream is damaged or ends early ({exc}); rows before it were read"
        ) from None


def _has_undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _strip_bom(first: bytes) -> tuple[bytes, str | None]:
    if first.startswith(b"\xef\xbb\xbf"):
        return first[3:], None
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        return first, "the file is UTF-16 encoded; convert it to UTF-8"
    return first, None


def _depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


def _lone_surrogate(data: Mapping[str, Any]) -> str | None:
    """Where a lone surrogate is in a decoded JSON object (`field 'x'`, `a field name`), or None."""
    for key, value in data.items():
        if _SURROGATE_RE.search(key):
            return "a field name"
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if _SURROGATE_RE.search(item):
                    return f"field {key!r}"
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


class LabelParser:
    """Turn a file's label column(s) into a checked list of label names."""

    def __init__(self, taxonomy: Taxonomy | None, labels_col: str | None, header: Iterable[str]):
        self.taxonomy = taxonomy
        self.labels_col = labels_col
        cols = set(header)
        self.wide = (
            taxonomy is not None
            and (labels_col is None or labels_col not in cols)
            and any(label in cols for label in taxonomy.labels)
        )
        self.enabled = taxonomy is not None and (self.wide or (labels_col in cols))

    def parse(self, data: Mapping[str, Any]) -> list[str]:
        assert self.taxonomy is not None
        if self.wide:
            labels = []
            for label in self.taxonomy.labels:
                value = data.get(label)
                if value in (None, ""):
                    continue
                text = str(value).strip().lower()
                if text in ("1", "1.0", "true", "yes"):
                    labels.append(label)
                elif text not in ("0", "0.0", "false", "no"):
                    raise ValueError(f"label column {label!r} must be 0 or 1, got {value!r}")
            return labels
        value = data.get(self.labels_col or "")
        if value is None:
            return []
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"labels {text[:80]!r} is not a valid JSON list") from None
            else:
                value = [p.strip() for p in text.replace(",", "|").split("|") if p.strip()]
        if hasattr(value, "tolist"):
            value = value.tolist()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"labels must be a list of names or a '|'-separated string: {value!r}")
        labels = list(dict.fromkeys(v.strip() for v in value if v.strip()))
        return self.taxonomy.check_labels(labels)


def read_records(
    path: str | Path,
    fmt: str | None = None,
    mapping: ColumnMapping | None = None,
    taxonomy: Taxonomy | None = None,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    start_after: int = 0,
) -> Iterator[ReadResult]:
    """Stream the records of a catalog or labelled file.

    Args:
        path: the file (.csv, .tsv, .jsonl, .parquet, each optionally .gz).
        fmt: format name overriding the extension.
        mapping: id, text and label columns; text columns must exist in the header.
        taxonomy: when given, labels are parsed and checked (list, '|'-string or 0/1 columns).
        max_field_chars: a field longer than this rejects its row.
        start_after: skip records whose line number is at most this (used when resuming).

    Yields:
        `Row` for each good record and `RejectedRow` for each bad one, in file order.
    """
    path = Path(path)
    mapping = mapping or ColumnMapping()
    kind, gz = detect_format(path, fmt)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if kind == "parquet":
        from serving.contract.parquet_reader import read_parquet

        reader: Iterator[ReadResult] = read_parquet(path, mapping, taxonomy, max_field_chars)
    elif kind == "jsonl":
        reader = _read_jsonl(path, gz, mapping, taxonomy, max_field_chars)
    else:
        reader = _read_delimited(
            path, gz, "," if kind == "csv" else "\t", mapping, taxonomy, max_field_chars
        )
    for result in reader:
        if result.line > start_after:
            yield result


def check_text_cols(path: Path, header: Iterable[str], mapping: ColumnMapping) -> None:
    """Raise InputError when a file's header has none of the mapping's text columns."""
    cols = list(header)
    missing = [c for c in mapping.text_cols if c not in cols]
    if len(missing) == len(mapping.text_cols):
        raise InputError(
            f"{path}: none of the text columns {', '.join(mapping.text_cols)} is in the file; "
            f"it has: {', '.join(cols[:30])}. Choose them with --text-cols"
        )


def finish_row(
    line: int,
    raw: str,
    data: dict[str, Any],
    mapping: ColumnMapping,
    labels: LabelParser | None,
    max_field_chars: int,
    where: str,
) -> ReadResult:
    """Check one parsed row (field sizes, text, labels) and return it or its rejection."""
    for key, value in data.items():
        if isinstance(value, str):
            if len(value) > max_field_chars:
                return RejectedRow(
                    line,
                    _preview(raw),
                    f"field {key!r} has {len(value):,} characters, over the "
                    f"limit of {max_field_chars:,}",
                    where,
                )
            if _has_undecodable(value):
                return RejectedRow(
                    line,
                    _preview(raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")),
                    f"undecodable bytes (not UTF-8) in field {key!r}",
                    where,
                )
            if "\x00" in value:
                data[key] = value.replace("\x00", "")
    texts = [data.get(c) for c in mapping.text_cols]
    if not any(isinstance(t, str) and t.strip() for t in texts):
        non_str = [
            c
            for c in mapping.text_cols
            if data.get(c) is not None and not isinstance(data.get(c), str)
        ]
        if non_str:
            return RejectedRow(
                line, _preview(raw), f"text column {non_str[0]!r} is not a string", where
            )
        return RejectedRow(
            line, _preview(raw), f"missing text: {', '.join(mapping.text_cols)} all empty", where
        )
    for c in mapping.text_cols:
        value = data.get(c)
        if value is not None and not isinstance(value, str | int | float | dict):
            return RejectedRow(
                line, _preview(raw), f"text column {c!r} has type {type(value).__name__}", where
            )
    parsed: list[str] | None = None
    if labels is not None and labels.enabled:
        try:
            parsed = labels.parse(data)
        except (ValueError, TaxonomyError) as exc:
            return RejectedRow(line, _preview(raw), str(exc), where)
    return Row(line, data, parsed)


def _read_delimited(
    path: Path,
    gz: bool,
    delimiter: str,
    mapping: ColumnMapping,
    taxonomy: Taxonomy | None,
    max_field_chars: int,
) -> Iterator[ReadResult]:
    handle = _open_binary(path, gz)
    where = str(path)
    csv.field_size_limit(max(max_field_chars * 4, 1 << 20))
    with handle:
        raw_lines = _lines(handle, path)
        state = {"line": 0, "first": True, "eof": False}
        utf16: list[str] = []
        # The physical lines of the record being parsed, and lines to parse again: when a record
        # that spans lines turns out malformed (a quote left open), only its first line is
        # rejected and the lines it swallowed are read again as rows of their own.
        record: list[tuple[int, str]] = []
        again: deque[tuple[int, str]] = deque()

        def text_lines() -> Iterator[str]:
            while True:
                if again:
                    number, text = again.popleft()
                else:
                    raw = next(raw_lines, None)
                    if raw is None:
                        state["eof"] = True
                        return
                    if state["first"]:
                        raw, problem = _strip_bom(raw)
                        state["first"] = False
                        if problem:
                            utf16.append(problem)
                            return
                    state["line"] += 1
                    number, text = state["line"], raw.decode("utf-8", "surrogateescape")
                record.append((number, text))
                yield text

        def new_reader() -> Iterator[list[str]]:
            state["eof"] = False
            return csv.reader(text_lines(), delimiter=delimiter, strict=False)

        def read_again(lines: list[tuple[int, str]]) -> Iterator[list[str]]:
            again.extendleft(reversed(lines))
            # A reader whose input ended cannot be fed again; between records a new one is equal.
            return new_reader() if state["eof"] else reader

        reader = new_reader()
        try:
            header = next(reader)
        except StopIteration:
            if utf16:
                raise InputError(f"{path}: {utf16[0]}") from None
            raise InputError(f"{path}: the file is empty (no header row)") from None
        except csv.Error as exc:
            raise InputError(f"{path}: cannot read the header row: {exc}") from None
        header = [h.strip() for h in header]
        if any(_has_undecodable(h) for h in header):
            raise InputError(f"{path}: the header row has bytes that are not UTF-8")
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise InputError(f"{path}: duplicate column names in header: {', '.join(dup)}")
        check_text_cols(path, header, mapping)
        labels = LabelParser(taxonomy, mapping.labels_col, header) if taxonomy else None
        while True:
            record.clear()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                lines = record[:] or [(state["line"], "")]
                yield RejectedRow(
                    lines[0][0], _preview(lines[0][1]), _csv_problem(exc, max_field_chars), where
                )
                reader = read_again(lines[1:])
                continue
            lines = record[:]
            line = lines[0][0]
            raw = delimiter.join(fields)
            if not fields or (len(fields) == 1 and fields[0] == ""):
                continue
            unbalanced = None
            if state["eof"]:
                # The reader only returns a record after its input ended when a quoted field
                # was still open: the quote opened in this record is never closed.
                unbalanced = "a quoted field opened on this line is never closed"
            elif len(lines) > 1 and (
                len(fields) != len(header) or not _strict_record(lines, delimiter)
            ):
                # A quote left open is closed by some later quote, usually mid-field.
                unbalanced = (
                    f"a quoted field opened on this line runs on to line {lines[-1][0]} "
                    f"({len(fields)} fields, header has {len(header)})"
                )
            if unbalanced is not None:
                if len(lines) > 1:
                    unbalanced += "; the lines after this one were read again as rows"
                    raw = lines[0][1]
                yield RejectedRow(line, _preview(raw), f"unbalanced quote: {unbalanced}", where)
                reader = read_again(lines[1:])
                continue
            if len(fields) != len(header):
                yield RejectedRow(
                    line,
                    _preview(raw),
                    f"wrong column count: {len(fields)} fields, header has {len(header)}",
                    where,
                )
                continue
            if any(len(f) > max_field_chars and f.count("\n") > 0 for f in fields):
                yield RejectedRow(
                    line,
                    _preview(raw),
                    "malformed quoting: a quoted field runs over many lines",
                    where,
                )
                continue
            data = dict(zip(header, fields, strict=True))
            yield finish_row(line, raw, data, mapping, labels, max_field_chars, where)


def _strict_record(lines: list[tuple[int, str]], delimiter: str) -> bool:
    """Whether a record read over several lines is also well-formed CSV to a strict reader."""
    try:
        for _ in csv.reader((text for _, text in lines), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return False
    return True


def _csv_problem(exc: csv.Error, max_field_chars: int) -> str:
    message = str(exc)
    if "field larger than field limit" in message:
        return (
            f"a field has over {csv.field_size_limit():,} characters, over the limit of "
            f"{max_field_chars:,}"
        )
    if "new-line character seen in unquoted field" in message:
        return "malformed CSV: a carriage return inside an unquoted field (quote the field)"
    return f"malformed CSV: {message}"


def _read_jsonl(
    path: Path,
    gz: bool,
    mapping: ColumnMapping,
    taxonomy: Taxonomy | None,
    max_field_chars: int,
) -> Iterator[ReadResult]:
    handle = _open_binary(path, gz)
    where = str(path)
    labels: LabelParser | None = None
    checked = False
    with handle:
        for number, raw_bytes in enumerate(_lines(handle, path), start=1):
            if number == 1:
                raw_bytes, problem = _strip_bom(raw_bytes)
                if problem:
                    raise InputError(f"{path}: {problem}")
            if not raw_bytes.strip():
                continue
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RejectedRow(
                    number,
                    raw_bytes[:_RAW_PREVIEW].decode("utf-8", "replace"),
                    f"undecodable bytes (not UTF-8) at byte {exc.start}",
                    where,
                )
                continue
            if len(raw) > max_field_chars * 4:
                yield RejectedRow(
                    number,
                    _preview(raw),
                    f"line has {len(raw):,} characters, over the limit",
                    where,
                )
                continue
            try:
                data = json.loads(raw)
            except RecursionError:
                yield RejectedRow(number, _preview(raw), "JSON nested too deeply", where)
                continue
            except json.JSONDecodeError as exc:
                yield RejectedRow(
                    number, _preview(raw), f"malformed JSON: {exc.msg} at column {exc.colno}", where
                )
                continue
            except ValueError as exc:  # a number past Python's integer-digits limit
                yield RejectedRow(number, _preview(raw), f"malformed JSON: {exc}", where)
                continue
            if not isinstance(data, dict):
                yield RejectedRow(
                    number,
                    _preview(raw),
                    f"expected a JSON object, got {type(data).__name__}",
                    where,
                )
                continue
            if _depth(data) > MAX_JSON_DEPTH:
                yield RejectedRow(number, _preview(raw), "JSON nested too deeply", where)
                continue
            # A \ud800 escape decodes to a lone surrogate, which no UTF-8 writer or database takes.
            surrogate = _lone_surrogate(data)
            if surrogate is not None:
                yield RejectedRow(
                    number,
                    _preview(raw),
                    f"invalid unicode (a lone surrogate) in {surrogate}",
                    where,
                )
                continue
            if not checked:
                check_text_cols(path, data.keys(), mapping)
                checked = True
            if taxonomy is not None:
                labels = LabelParser(taxonomy, mapping.labels_col, data.keys())
            yield finish_row(number, raw, data, mapping, labels, max_field_chars, where)
