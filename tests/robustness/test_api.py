"""The classification API fed the corpus through real HTTP on the ASGI app: raw file bytes as the
body, each JSONL line as a body, each file's good rows as JSON items. Every answer is a 2xx or a
4xx envelope naming the field, and the process keeps answering afterwards."""

from __future__ import annotations

import json

import httpx
import pytest

from serving.contract.errors import TruncatedInputError
from serving.contract.readers import ColumnMapping, Row, read_records
from serving.review.models import EXTERNAL_ID_MAX, Item
from serving.review.store import ReviewStore
from tests.robustness.conftest import assert_alive, case_ids
from tests.robustness.make_corpus import TEXT_COLS, cases, huge_word
from tests.service.conftest import ALL_KEY, HEADERS, serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

AS_JSON = HEADERS | {"content-type": "application/json"}


def assert_rejected(r: httpx.Response, problem: str = "") -> dict:
    """A 4xx envelope whose detail names a field, and `problem` in its message or detail."""
    assert 400 <= r.status_code < 500, r.text
    body = r.json()
    assert set(body) == {"error", "type", "detail"}, body
    if isinstance(body["detail"], list):
        assert all(d["field"] for d in body["detail"]), body
    texts = [body["error"]] + [
        f"{d['field']}: {d['problem']}" for d in body["detail"] if isinstance(body["detail"], list)
    ]
    assert any(problem in t for t in texts), (problem, body)
    return body


@pytest.mark.parametrize("name", case_ids(lambda c: bool(c.data)))
async def test_whole_file_as_the_body_is_refused_cleanly(predictor, name):
    data = cases()[name].data
    async with serve(predictor) as client:
        r = await client.post("/v1/classify", content=data, headers=AS_JSON)
        assert_rejected(r, "body")
        r = await client.post(
            "/v1/classify", content=data, headers=HEADERS | {"content-type": "text/csv"}
        )
        assert_rejected(r, "body")
        await assert_alive(client)


async def test_empty_body_is_refused_cleanly(predictor):
    async with serve(predictor) as client:
        assert_rejected(await client.post("/v1/classify", content=b"", headers=AS_JSON), "body")
        await assert_alive(client)


@pytest.mark.parametrize("name", case_ids(lambda c: bool(c.api)))
async def test_each_jsonl_line_as_a_body(predictor, name):
    """Issue: a body nested past the recursion limit, or a number with over 4,300 digits, got a
    bare 400 "There was an error parsing the body"; now a 422 says why."""
    case = cases()[name]
    lines = case.data.split(b"\n")
    assert case.api, name  # each case names the lines it expects answers for
    async with serve(predictor) as client:
        for expect in case.api:
            body = lines[expect.line - 1]
            r = await client.post("/v1/classify", content=body, headers=AS_JSON)
            if expect.status == 200:
                assert r.status_code == 200, (expect, r.text)
                assert r.json()["items"][0]["id"] == json.loads(body)["id"]
            else:
                assert r.status_code == expect.status, (expect, r.text)
                assert_rejected(r, expect.problem)
        await assert_alive(client)


def good_items(name: str) -> list[dict[str, str]]:
    """The rows the shared reader reads from a file, as API items (text fields only)."""
    items = []
    try:
        for result in read_records(cases()[name].path, mapping=ColumnMapping()):
            if isinstance(result, Row):
                data = result.data
                items.append({c: str(data[c]) for c in TEXT_COLS if data.get(c) is not None})
    except TruncatedInputError:
        pass
    return items


# Rows a file reader keeps but the API refuses: nothing visible is left once invisible characters
# go, and the API says "missing text" where the reader only sees a non-empty field.
API_MISSING_TEXT = {"z5"}


@pytest.mark.parametrize("name", case_ids(lambda c: bool(c.good) and not c.api))
async def test_every_good_row_of_a_file_as_json_items(predictor, name):
    items = good_items(name)
    assert [i["id"] for i in items] == cases()[name].good
    async with serve(predictor) as client:
        r = await client.post("/v1/classify", json={"items": items}, headers=HEADERS)
        refused = [n for n, i in enumerate(items) if i["id"] in API_MISSING_TEXT]
        if refused:
            body = assert_rejected(r, "missing text")
            assert [d["field"] for d in body["detail"]] == [f"items.{n}.title" for n in refused]
            items = [i for i in items if i["id"] not in API_MISSING_TEXT]
            r = await client.post("/v1/classify", json={"items": items}, headers=HEADERS)
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == [i["id"] for i in items]
        await assert_alive(client)


@pytest.mark.parametrize("name", case_ids(lambda c: c.file.startswith("wrong_type")))
async def test_wrong_typed_fields_name_the_field(predictor, name):
    import pyarrow.parquet as pq

    rows = pq.read_table(cases()[name].path).to_pylist()
    column = cases()[name].error.split("'")[1]  # type: ignore[union-attr]
    typed = [row for row in rows if row[column] is not None]  # a null is a missing field
    assert typed, name
    async with serve(predictor) as client:
        for row in typed:
            r = await client.post("/v1/classify", json={"items": [row]}, headers=HEADERS)
            assert r.status_code == 422
            assert_rejected(r, f"body.items.0.{column}")
        await assert_alive(client)


async def test_labels_are_an_unknown_field(predictor):
    async with serve(predictor) as client:
        for labels in (["uav"], ["drones"], "uav|not_a_label", [5]):
            r = await client.post(
                "/v1/classify", json={"title": "GNSS module", "labels": labels}, headers=HEADERS
            )
            assert_rejected(r, "body.labels: unknown field")
        await assert_alive(client)


async def test_a_10mb_field_is_413_and_a_million_character_word_is_truncated(predictor, tmp_path):
    big = json.dumps({"title": "GNSS module", "description": "spec " * 2_000_000})
    async with serve(predictor) as client:
        r = await client.post("/v1/classify", content=big.encode(), headers=AS_JSON)
        assert r.status_code == 413 and r.json()["detail"] == {"max_body_bytes": 4 * 1024 * 1024}
        await assert_alive(client)
        word = huge_word(tmp_path / "word.jsonl")
        line = (tmp_path / word.file).read_text().splitlines()[1]
        r = await client.post("/v1/classify", content=line.encode(), headers=AS_JSON)
        assert r.status_code == 200 and "truncated" in r.json()["items"][0]["reasons"]
        await assert_alive(client)


ODD_FOR_THE_QUEUE = [
    ("nul", {"id": "n1", "title": "GNSS\u0000 RTK module", "brand": "\u0000Acme"}, 200),
    ("surrogate", {"id": "s1", "title": "\ud800 quadcopter frame", "description": "\udc80"}, 200),
    ("emoji", {"id": "e1", "title": "\U0001f681 drone frame \U0001f469\u200d\U0001f52c"}, 200),
    ("bidi", {"id": "z1", "title": "\u202egnp.exe thermal camera core"}, 200),
    ("long id", {"id": "L" * (EXTERNAL_ID_MAX + 1), "title": "thermal core 640x512"}, 422),
]


@pytest.mark.parametrize(
    ("what", "item", "status"), ODD_FOR_THE_QUEUE, ids=[c[0] for c in ODD_FOR_THE_QUEUE]
)
async def test_enqueue_stores_odd_text_or_says_why_not(predictor, db_url, what, item, status):
    """Issue: NUL or a lone surrogate in a listing, or an id over 500 characters, made
    `?enqueue=true` and POST /v1/review/items answer 500 (PostgreSQL and UTF-8 refused them)."""
    body = json.dumps(item).encode()  # ensure_ascii: the surrogate travels as a \\ud800 escape
    headers = {"X-API-Key": ALL_KEY, "content-type": "application/json"}
    async with serve(predictor, database_url=db_url) as client:
        r1 = await client.post("/v1/classify?enqueue=true", content=body, headers=headers)
        r2 = await client.post(
            "/v1/review/items", content=b'{"items": [' + body + b"]}", headers=headers
        )
        for r in (r1, r2):
            if (
                status == 200
                or r is r1
                and r.json().get("items", [{}])[0].get("decision") == "clear"
            ):
                assert r.status_code == 200, r.text  # a clear item is not queued at all
            else:
                assert_rejected(r, "at most 500")
        await assert_alive(client)
    store = ReviewStore.open(db_url)
    with store.session() as session:
        stored = session.query(Item).all()
    store.dispose()
    if status != 200:
        assert stored == []
        return
    # POST /v1/review/items queues every listing, and `?enqueue=true` the same listing as the
    # same item (issue 13): exactly one, whatever the model decided.
    [found] = stored
    assert found.external_id == item["id"]
    assert "\x00" not in found.title + found.brand
    assert not any("\ud800" <= ch <= "\udfff" for ch in found.title + found.description)
