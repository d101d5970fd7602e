"""Output writers for bulk scoring: CSV, JSONL, Parquet; each resumable at a chunk boundary.

CSV and JSONL are appended to one file whose byte offset is checkpointed after each chunk; on
resume the file is cut back to the checkpointed offset. Parquet cannot be appended to, so each
chunk is written as a part file and the parts are merged, row group by row group, at the end.

CSV output is opened in spreadsheets, so a cell that starts like a formula (`= + - @`, a tab or a
carriage return) gets a leading `'` and shows as text (CSV injection); plain numbers such as `-5`
stay as they are. JSONL and Parquet keep every value verbatim.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from serving.contract.errors import InputError

OUTPUT_FORMATS = ("csv", "jsonl", "parquet")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def output_format(path: Path, fmt: str | None) -> str:
    """Output format from an explicit name or the file extension."""
    if fmt:
        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"unknown output format {fmt!r}; use {', '.join(OUTPUT_FORMATS)}")
        return fmt
    name = path.name.lower()
    for ext, kind in (
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".parquet", "parquet"),
    ):
        if name.endswith(ext):
            return kind
    raise InputError(f"{path}: cannot tell the output format; use .csv, .jsonl or .parquet")


class ChunkWriter(Protocol):
    """Writes scored chunks and reports a resumable position."""

    def write_chunk(self, rows: list[dict[str, Any]], columns: list[str]) -> None: ...
    def position(self) -> int: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


def _fsync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class _AppendWriter:
    def __init__(self, path: Path, resume_at: int | None) -> None:
        self.path = path
        mode = "r+b" if resume_at is not None and path.exists() else "wb"
        self.handle = open(path, mode)  # noqa: SIM115 - closed in finish()
        if resume_at is not None and mode == "r+b":
            self.handle.truncate(resume_at)
            self.handle.seek(resume_at)
        self.started = resume_at is not None and resume_at > 0

    def position(self) -> int:
        return self.handle.tell()

    def finish(self) -> None:
        _fsync(self.handle)
        self.handle.close()

    def abort(self) -> None:
        """Close after a failed write; a resume cuts the file back to the checkpoint anyway."""
        with contextlib.suppress(OSError):
            self.handle.close()


class CsvWriter(_AppendWriter):
    """CSV with a header row; every value written as text."""

    def write_chunk(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        table = [[_safe_cell(_cell(row.get(c))) for c in columns] for row in rows]
        if not self.started:
            table.insert(0, [_safe_cell(c) for c in columns])
            self.started = True
        self.handle.write(_csv_lines(table).encode("utf-8"))
        _fsync(self.handle)


def _csv_lines(table: list[list[str]]) -> str:
    """CSV rows, each ending in a newline.

    csv quotes a field only for the characters of its line terminator: with CRLF a field holding
    a bare carriage return is quoted too (with LF alone it was not, and the row split in two when
    read back); each row still ends in LF as before.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    lines = []
    for cells in table:
        writer.writerow(cells)
        lines.append(buf.getvalue()[:-2] + "\n")
        buf.seek(0)
        buf.truncate()
    return "".join(lines)


def _safe_cell(text: str) -> str:
    """`text` as a spreadsheet shows it rather than runs it: a formula-like start gets a `'`."""
    if not text.startswith(_FORMULA_START):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text  # a plain number is never a formula


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class JsonlWriter(_AppendWriter):
    """One JSON object per line, input types kept."""

    def write_chunk(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        text = "".join(
            json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False, default=str) + "\n"
            for row in rows
        )
        self.handle.write(text.encode("utf-8"))
        _fsync(self.handle)


class ParquetWriter:
    """Part files per chunk in `<output>.parts/`, merged into one file by `finish`."""

    def __init__(self, path: Path, resume_at: int | None) -> None:
        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        if resume_at is None and self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.count = resume_at or 0
        for stale in self.parts.glob("*.parquet"):
            if int(stale.stem) >= self.count:
                stale.unlink()

    def position(self) -> int:
        return self.count

    def abort(self) -> None:
        """Nothing is open between chunks; part files past the checkpoint go on resume."""

    def write_chunk(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({c: _column(rows, c) for c in columns})
        tmp = self.parts / f"{self.count:08d}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.parts / f"{self.count:08d}.parquet")
        self.count += 1

    def finish(self) -> None:
        import pyarrow.parquet as pq

        files = sorted(self.parts.glob("*.parquet"))
        tmp = self.path.with_name(self.path.name + ".tmp")
        writer = None
        for part in files:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is not None:
            writer.close()
            os.replace(tmp, self.path)
        shutil.rmtree(self.parts)


def _column(rows: list[dict[str, Any]], name: str) -> Any:
    import pyarrow as pa

    values = [row.get(name) for row in rows]
    if name.startswith("p_") or name == "risk":
        return pa.array(values, type=pa.float64())
    return pa.array(
        [None if v is None else _cell(v) if not isinstance(v, str) else v for v in values],
        type=pa.string(),
    )


def open_writer(path: Path, kind: str, resume_at: int | None) -> ChunkWriter:
    """A writer for `kind`, cut back to `resume_at` when resuming."""
    if kind == "csv":
        return CsvWriter(path, resume_at)
    if kind == "jsonl":
        return JsonlWriter(path, resume_at)
    return ParquetWriter(path, resume_at)
