"""One listing, three ways into the review queue: the API's `?enqueue=true` (real HTTP through the
ASGI app), `dualscreen score --enqueue-review` and `dualscreen review import` give the same
decisions and probabilities, and one queue item per listing with the same stored listing, on
SQLite and on PostgreSQL (issue 13).

Before issue 13 the bulk scorer built its own queue record (an invented `line-N` id, no extra
text columns), so a row queued by `score --enqueue-review` and again by `review import` became two
items.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from serving.contract.listing import Listing
from serving.review.intake import IntakePolicy
from serving.review.models import Item
from serving.review.store import ReviewStore
from tests.review.conftest import ADMIN_KEY, _fresh_pg_schema, serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The file's text columns: `notes` is not a listing field, so the model reads it as "notes: ...",
# which is what an API attribute `notes` gives too.
TEXT_COLS = "title,description,brand,notes"
ROWS: list[dict[str, Any]] = [
    {
        "id": "x1",
        "title": "LWIR thermal imaging core 640x512",
        "description": "uncooled VOx microbolometer, 12 um pitch",
        "brand": "Acme Optics",
        "notes": "NETD < 40 mK",
    },
    {"id": 7, "title": "Cotton crew-neck T-shirt", "description": "pack of 3", "notes": ""},
    {"id": "x3", "title": "module", "brand": "", "notes": "spare part"},
    {
        "id": "x4",
        "title": "Quadcopter frame 450 mm carbon",
        "description": "for FPV drones, GPS mount",
        "notes": "arms 5 mm",
    },
    {"title": "GNSS RTK module", "description": "L1/L2/L5, 20 Hz", "notes": "no id"},
]


def api_item(row: dict[str, Any]) -> dict[str, Any]:
    """The row as an API listing: the extra text column is an attribute."""
    item = {k: v for k, v in row.items() if k in ("id", "title", "description", "brand")}
    if row.get("notes"):
        item["attributes"] = {"notes": row["notes"]}
    return item


def key_of(row: dict[str, Any]) -> str:
    return IntakePolicy.item_key(Listing(**api_item(row)))


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request: pytest.FixtureRequest, tmp_path: Path):
    """Makes empty review databases of one kind (SQLite files, or fresh PostgreSQL schemas)."""
    made = []

    def make() -> str:
        made.append(None)
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / f'review-{len(made)}.db'}"
        return _fresh_pg_schema(request.getfixturevalue("pg_database"))

    return make


@pytest.fixture()
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def dualscreen(*args: object) -> str:
    from dualscreen.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def via_api(url: str, predictor: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Per listing key: (decision, probabilities) from `/v1/classify?enqueue=true`; headers."""
    async with serve(url, predictor) as client:
        r = await client.post(
            "/v1/classify?enqueue=true",
            json={"items": [api_item(row) for row in ROWS]},
            headers={"X-API-Key": ADMIN_KEY},
        )
    assert r.status_code == 200, r.text
    out = {}
    for row, item in zip(ROWS, r.json()["items"], strict=True):
        probs = {lb["label"]: lb["probability"] for lb in item["labels"]}
        out[key_of(row)] = (item["decision"], probs)
    queued = {k: v for k, v in r.headers.items() if k.startswith("x-review-")}
    return out, queued


def via_score(url: str, catalog: Path, model: Path, out: Path) -> tuple[dict[str, Any], dict]:
    """Per listing key: (decision, probabilities) from the bulk output; the run's summary."""
    summary = json.loads(
        dualscreen(
            "score",
            catalog,
            "-o",
            out,
            "--model",
            model,
            "--text-cols",
            TEXT_COLS,
            "--enqueue-review",
            "--database-url",
            url,
            "--json-summary",
            "--overwrite",
        )  # fmt: skip
    )
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    found = {}
    for row, scored in zip(ROWS, rows, strict=True):
        probs = {k[2:]: v for k, v in scored.items() if k.startswith("p_")}
        found[key_of(row)] = (scored["decision"], probs)
    return found, summary


def via_import(url: str, catalog: Path, model: Path) -> str:
    return dualscreen(
        "review", "import", catalog, "--model", model, "--text-cols", TEXT_COLS,
        "--database-url", url,
    )  # fmt: skip


def queue_of(url: str) -> dict[str, dict[str, Any]]:
    """Per item key: the stored listing and its suggestions (decision, probabilities)."""
    store = ReviewStore.open(url)
    try:
        with store.session() as session:
            out = {}
            for item in session.query(Item).all():
                out[item.input_hash] = {
                    "listing": {
                        "id": item.external_id,
                        "title": item.title,
                        "description": item.description,
                        "brand": item.brand,
                        "seller_category": item.seller_category,
                        "attributes": item.attributes,
                        "text": item.text,
                    },
                    "suggestions": [(s.decision, s.probabilities) for s in item.suggestions],
                }
            return out
    finally:
        store.dispose()


def assert_same_scores(a: tuple[str, dict[str, float]], b: tuple[str, dict[str, float]]) -> None:
    assert a[0] == b[0]
    assert set(a[1]) == set(b[1])
    for label, p in a[1].items():
        assert p == pytest.approx(b[1][label], abs=1e-5), label


async def test_each_path_stores_the_same_item(new_url, predictor, smoke_model, catalog, tmp_path):
    api_url, score_url, import_url = new_url(), new_url(), new_url()
    api_scores, _ = await via_api(api_url, predictor)
    score_scores, _ = via_score(score_url, catalog, smoke_model, tmp_path / "scored.jsonl")
    via_import(import_url, catalog, smoke_model)
    urls = {"api": api_url, "score": score_url, "import": import_url}
    queues = {path: queue_of(url) for path, url in urls.items()}

    keys = [key_of(row) for row in ROWS]
    assert len(set(keys)) == len(ROWS)
    # Each path admits what its policy says, and only that.
    decided = {k: api_scores[k][0] for k in keys}
    for path, policy in (
        ("api", IntakePolicy.NOT_CLEAR),
        ("score", IntakePolicy.REVIEW),
        ("import", IntakePolicy.EVERY),
    ):
        assert set(queues[path]) == {k for k in keys if policy.admits(decided[k])}, path
    in_all = [k for k in keys if decided[k] == "review"]
    assert in_all, f"no listing decided 'review' by the smoke model: {decided}"

    for k in keys:
        assert_same_scores(api_scores[k], score_scores[k])
        [imported] = queues["import"][k]["suggestions"]
        assert_same_scores(api_scores[k], imported)
    for k in in_all:
        listings = [queues[path][k]["listing"] for path in ("api", "score", "import")]
        assert listings[0] == listings[1] == listings[2]
        suggestions = [queues[path][k]["suggestions"] for path in ("api", "score", "import")]
        assert all(len(s) == 1 for s in suggestions)
        for s in suggestions[1:]:
            assert_same_scores(suggestions[0][0], s[0])
    stored = queues["import"]
    assert stored[key_of(ROWS[0])]["listing"]["attributes"] == {"notes": "NETD < 40 mK"}
    assert stored[key_of(ROWS[1])]["listing"]["attributes"] == {}  # an empty column adds nothing
    assert stored[key_of(ROWS[1])]["listing"]["id"] == "7"
    assert stored[key_of(ROWS[4])]["listing"]["id"] is None  # no invented `line-N` id


async def test_the_second_and_third_path_find_the_items_queued(
    new_url, predictor, smoke_model, catalog, tmp_path
):
    url = new_url()
    _, first = via_score(url, catalog, smoke_model, tmp_path / "scored.jsonl")
    n_review = first["decisions"]["review"]
    assert first["enqueued"] == n_review > 0 and first["already_queued"] == 0

    # `score --enqueue-review`, then `review import` (issue 13's example): one item per listing.
    imported = via_import(url, catalog, smoke_model)
    assert f"queued {len(ROWS) - n_review} new ({n_review} already queued)" in imported
    api_scores, headers = await via_api(url, predictor)
    not_clear = sum(1 for decision, _ in api_scores.values() if decision != "clear")
    assert headers == {"x-review-queued": "0", "x-review-already-queued": str(not_clear)}

    queue = queue_of(url)
    assert set(queue) == {key_of(row) for row in ROWS}
    assert all(len(entry["suggestions"]) == 1 for entry in queue.values())


def test_the_double_review_share_reaches_score_and_import(smoke_model, catalog, tmp_path):
    # DUALSCREEN_DOUBLE_REVIEW_SHARE applies to every way into the queue, as it does on the
    # server (`score --enqueue-review` used to queue for one reviewer whatever it said); the
    # flag overrides it.
    def required(url: str) -> list[int]:
        store = ReviewStore.open(url)
        try:
            with store.session() as session:
                return [item.required_reviews for item in session.query(Item).all()]
        finally:
            store.dispose()

    def run(*args: object, env: dict[str, str]) -> None:
        from dualscreen.cli import app

        result = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output

    both = {"DUALSCREEN_DOUBLE_REVIEW_SHARE": "1"}
    urls = {name: f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("score", "import", "flag")}
    run(
        "score", catalog, "-o", tmp_path / "s.jsonl", "--model", smoke_model,
        "--text-cols", TEXT_COLS, "--enqueue-review", "--database-url", urls["score"],
        env=both,
    )  # fmt: skip
    run(
        "review", "import", catalog, "--model", smoke_model, "--text-cols", TEXT_COLS,
        "--database-url", urls["import"], env=both,
    )  # fmt: skip
    run(
        "review", "import", catalog, "--model", smoke_model, "--text-cols", TEXT_COLS,
        "--database-url", urls["flag"], "--double-review-share", "0", env=both,
    )  # fmt: skip
    assert required(urls["score"]) and set(required(urls["score"])) == {2}
    assert len(required(urls["import"])) == len(ROWS) and set(required(urls["import"])) == {2}
    assert set(required(urls["flag"])) == {1}
