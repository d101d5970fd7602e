import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.contract.errors import InputError, TruncatedInputError
from serving.contract.readers import ColumnMapping, RejectedRow, Row, read_records

ROWS = [
    {
        "id": "a1",
        "title": "Survey GNSS receiver",
        "description": "L1/L2/L5 RTK",
        "labels": "navigation_avionics",
    },
    {"id": "a2", "title": "Cotton T-shirt", "description": "crew neck", "labels": ""},
    {
        "id": "a3",
        "title": "Drone with thermal gimbal",
        "description": "640x512",
        "labels": "uav|sensors_lasers",
    },
]


def write_csv(path: Path, rows=ROWS, sep=",") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=sep)
        writer.writeheader()
        writer.writerows(rows)
    return path


def good(results):
    return [r for r in results if isinstance(r, Row)]


def bad(results):
    return [r for r in results if isinstance(r, RejectedRow)]


def test_csv_with_pipe_labels(tmp_path, taxonomy):
    results = list(read_records(write_csv(tmp_path / "c.csv"), taxonomy=taxonomy))
    assert [r.labels for r in good(results)] == [
        ["navigation_avionics"],
        [],
        ["uav", "sensors_lasers"],
    ]
    assert [r.line for r in results] == [2, 3, 4]


def test_tsv_and_gzip(tmp_path, taxonomy):
    plain = write_csv(tmp_path / "c.tsv", sep="\t")
    gz = tmp_path / "c.tsv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, gz):
        assert len(good(read_records(path, taxonomy=taxonomy))) == 3


def test_jsonl_list_labels_and_gzip(tmp_path, taxonomy):
    rows = [dict(r, labels=[x for x in r["labels"].split("|") if x]) for r in ROWS]
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    path = tmp_path / "c.jsonl"
    path.write_text(text)
    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    for p in (path, gz):
        assert [r.labels for r in good(read_records(p, taxonomy=taxonomy))][2] == [
            "uav",
            "sensors_lasers",
        ]


def test_parquet_and_wide_label_columns(tmp_path, taxonomy):
    table = pa.table(
        {
            "sku": ["x1", "x2"],
            "name": ["GaN amplifier 6 GHz 10 W", "Garden hose"],
            "electronics": [1, 0],
            "uav": [0, 0],
        }
    )
    path = tmp_path / "c.parquet"
    pq.write_table(table, path)
    mapping = ColumnMapping(id_col="sku", text_cols=("name",), labels_col=None)
    rows = good(read_records(path, mapping=mapping, taxonomy=taxonomy))
    assert [r.labels for r in rows] == [["electronics"], []]
    assert rows[0].data["sku"] == "x1"


def test_column_mapping_missing_columns_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "c.csv")
    with pytest.raises(InputError, match="none of the text columns name, body"):
        list(read_records(path, mapping=ColumnMapping(text_cols=("name", "body"))))


def test_wrong_label_name_rejects_row_and_names_label(tmp_path, taxonomy):
    rows = ROWS + [{"id": "a4", "title": "x y z", "description": "", "labels": "drones"}]
    results = list(read_records(write_csv(tmp_path / "c.csv", rows), taxonomy=taxonomy))
    rejected = bad(results)
    assert len(good(results)) == 3
    assert rejected[0].line == 5 and "unknown label 'drones'" in rejected[0].reason


def test_undecodable_bytes_reject_only_their_row(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"id,title\n1,good one\n2,bad \xff\xfe byte\n3,good three\n")
    results = list(read_records(path, mapping=ColumnMapping(text_cols=("title",))))
    assert [r.data["id"] for r in good(results)] == ["1", "3"]
    assert bad(results)[0].line == 3 and "undecodable" in bad(results)[0].reason
    jpath = tmp_path / "c.jsonl"
    jpath.write_bytes(b'{"title": "ok"}\n{"title": "\xff"}\n')
    results = list(read_records(jpath, mapping=ColumnMapping(text_cols=("title",))))
    assert len(good(results)) == 1 and bad(results)[0].line == 2


def test_wrong_column_count_and_unbalanced_quote(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,title\n1,fine\n2,too,many\n3,"open quote\n4,after\n')
    results = list(read_records(path, mapping=ColumnMapping(text_cols=("title",))))
    assert good(results)[0].data["title"] == "fine"
    reasons = [r.reason for r in bad(results)]
    assert "wrong column count: 3 fields" in reasons[0]
    assert bad(results)[0].line == 3
    assert len(good(results)) + len(bad(results)) >= 2


def test_missing_text_and_malformed_json(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"title": "", "description": ""}\n{not json}\n[1, 2]\n{"title": "ok item"}\n')
    results = list(read_records(path, mapping=ColumnMapping(text_cols=("title", "description"))))
    assert [r.line for r in bad(results)] == [1, 2, 3]
    assert "missing text" in bad(results)[0].reason
    assert "malformed JSON" in bad(results)[1].reason
    assert "expected a JSON object" in bad(results)[2].reason
    assert good(results)[0].line == 4


def test_oversized_field_rejected(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"title": "x" * 5000}) + "\n" + json.dumps({"title": "ok"}) + "\n")
    results = list(
        read_records(path, mapping=ColumnMapping(text_cols=("title",)), max_field_chars=1000)
    )
    assert "over the limit" in bad(results)[0].reason and len(good(results)) == 1


def test_empty_file_utf16_and_unknown_extension(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        list(read_records(empty))
    u16 = tmp_path / "u.csv"
    u16.write_bytes("id,title\n1,x\n".encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16"):
        list(read_records(u16))
    with pytest.raises(InputError, match="cannot tell the format"):
        list(read_records(tmp_path / "file.xlsx"))


def test_truncated_gzip_yields_rows_then_raises(tmp_path):
    rows = [{"title": f"item number {i}"} for i in range(2000)]
    data = gzip.compress("\n".join(json.dumps(r) for r in rows).encode())
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(TruncatedInputError, match="ends early"):
        for result in read_records(path, mapping=ColumnMapping(text_cols=("title",))):
            seen.append(result)
    assert seen and all(isinstance(r, Row) for r in seen)


def test_parquet_wrong_text_type_is_clear(tmp_path):
    path = tmp_path / "w.parquet"
    pq.write_table(pa.table({"title": [1, 2]}), path)
    with pytest.raises(InputError, match="text column 'title' has type int64"):
        list(read_records(path, mapping=ColumnMapping(text_cols=("title",))))


def test_start_after_skips_done_rows(tmp_path):
    path = write_csv(tmp_path / "c.csv")
    assert [r.line for r in read_records(path, start_after=3)] == [4]
