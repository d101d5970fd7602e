"""The Parquet half of `serving.contract.readers`: row groups streamed, non-UTF-8 strings rejected.

Arrow does not check that strings are UTF-8, so a batch that fails to decode is read again row by
row to reject only the rows that hold bad bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving.contract.errors import InputError
from serving.contract.readers import (
    ColumnMapping,
    LabelParser,
    ReadResult,
    RejectedRow,
    check_text_cols,
    finish_row,
)
from serving.contract.taxonomy import Taxonomy


def read_parquet(
    path: Path,
    mapping: ColumnMapping,
    taxonomy: Taxonomy | None,
    max_field_chars: int,
) -> Iterator[ReadResult]:
    """Yield the rows of a Parquet file as `read_records` does (row numbers count from 1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = str(path)
    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    schema = pfile.schema_arrow
    check_text_cols(path, schema.names, mapping)
    for col in mapping.text_cols:
        if col in schema.names:
            typ = schema.field(col).type
            if not (
                pa.types.is_string(typ)
                or pa.types.is_large_string(typ)
                or pa.types.is_null(typ)
                or pa.types.is_dictionary(typ)
            ):
                raise InputError(f"{path}: text column {col!r} has type {typ}, expected string")
    labels = LabelParser(taxonomy, mapping.labels_col, schema.names) if taxonomy else None
    number = 0
    try:
        for batch in pfile.iter_batches(batch_size=4096):
            try:
                records: list[dict[str, Any] | str] = list(batch.to_pylist())
            except UnicodeDecodeError:
                # Arrow does not check that strings are UTF-8: find the rows that are not.
                records = [_parquet_row(batch, i) for i in range(batch.num_rows)]
            for data in records:
                number += 1
                if isinstance(data, str):
                    reason = f"undecodable bytes (not UTF-8) in field {data!r}"
                    yield RejectedRow(number, "", reason, where)
                    continue
                raw = json.dumps(data, ensure_ascii=False, default=str)
                yield finish_row(number, raw, data, mapping, labels, max_field_chars, where)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: Parquet data unreadable after row {number}: {exc}") from None


def _parquet_row(batch: Any, index: int) -> dict[str, Any] | str:
    """Row `index` of a record batch, or the name of its first column that is not UTF-8 there."""
    row: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[index].as_py()
        except UnicodeDecodeError:
            return str(name)
    return row
