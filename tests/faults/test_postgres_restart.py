"""Fault: the review database restarts while reviewers submit (a private PostgreSQL server).

Three reviewers claim and submit through the real HTTP API (ASGI app, httpx) while the server is
stopped mid-loop and started again. During the outage every failing request must get the
documented 503 envelope with Retry-After, never a 500; the clients retry. Afterwards every
acknowledged submission is in the database exactly once with exactly one audit event, nothing
unacknowledged appears, and every item is either decided or held by a claim whose reply was lost.
A second, quiet restart checks that the first request after it needs no retry (pool pre-ping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from serving.review.audit import list_events
from serving.review.models import Item, Review
from serving.review.store import ReviewStore
from serving.review.users import create_user
from tests.faults.conftest import PrivatePostgres
from tests.review.conftest import enqueue, prediction, serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

N_ITEMS = 60
REVIEWERS = {f"rev-{c}": f"ds_fault-key-for-reviewer-{c}-0123456789" for c in "abc"}
DOWN_AFTER = 20  # acknowledged submissions before the server goes down
RETRY_S = 0.05
MAX_ATTEMPTS = 600  # per request: about 30 s of retrying, far more than one restart takes
WAIT_S = 60.0


@dataclass
class Ledger:
    """What the clients were told, to compare with what the database holds."""

    acked: dict[int, tuple[int, str, list[str]]] = field(default_factory=dict)
    # A submit that got 503 but had committed: its retry gets 409 naming this very review.
    ambiguous: dict[int, tuple[int, str, list[str]]] = field(default_factory=dict)
    claimed: set[int] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    restarted: bool = False
    acked_after_restart: int = 0


async def call(
    client: httpx.AsyncClient, ledger: Ledger, path: str, **kw: Any
) -> tuple[httpx.Response, int]:
    """POST, retrying the documented 503; returns the response and how many 503s came first."""
    for attempt in range(MAX_ATTEMPTS):
        r = await client.post(path, **kw)
        ledger.statuses[r.status_code] += 1
        if r.status_code != 503:
            return r, attempt
        body = r.json()
        assert set(body) == {"error", "type", "detail"}, r.text
        assert body["type"] == "unavailable" and "retry" in body["error"], r.text
        assert int(r.headers["retry-after"]) >= 1
        await asyncio.sleep(RETRY_S)
    raise AssertionError(f"{path}: still 503 after {MAX_ATTEMPTS} attempts")


async def review_until_empty(client: httpx.AsyncClient, name: str, ledger: Ledger) -> None:
    headers = {"X-API-Key": REVIEWERS[name]}
    for _ in range(N_ITEMS + 1):
        r, _ = await call(client, ledger, "/v1/review/claim", json={}, headers=headers)
        assert r.status_code == 200, r.text
        claim = r.json()
        if claim["item"] is None:
            return
        ledger.claimed.add(claim["review_id"])
        item_id = claim["item"]["item_id"]
        labels = claim["item"]["suggested_labels"][:1]
        body = {"review_id": claim["review_id"], "version": claim["version"], "labels": labels}
        r, retried = await call(
            client, ledger, f"/v1/review/items/{item_id}/submit", json=body, headers=headers
        )
        record = (item_id, name, sorted(labels))
        if r.status_code == 200:
            assert r.json()["review"]["id"] == claim["review_id"]
            ledger.acked[claim["review_id"]] = record
            ledger.acked_after_restart += ledger.restarted
            continue
        assert r.status_code == 409 and retried, r.text
        mine = [s for s in r.json()["detail"]["submitted"] if s["id"] == claim["review_id"]]
        assert mine and mine[0]["labels"] == sorted(labels), r.text
        ledger.ambiguous[claim["review_id"]] = record
    raise AssertionError(f"{name} claimed more items than the queue holds")


async def restart_midway(pg: PrivatePostgres, ledger: Ledger) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(ledger.acked) < DOWN_AFTER:
        assert time.monotonic() < deadline, "reviewers made no progress before the restart"
        await asyncio.sleep(0.01)
    await asyncio.to_thread(pg.stop, "fast")
    # Keep it down until the clients have met the outage, so the fault is really exercised.
    while ledger.statuses[503] < 3:
        assert time.monotonic() < deadline, "no request met the outage"
        await asyncio.sleep(0.01)
    await asyncio.to_thread(pg.start)
    ledger.restarted = True


async def test_acknowledged_reviews_survive_a_postgres_restart(private_postgres, caplog):
    url = private_postgres.url
    store = ReviewStore.open(url)
    try:
        enqueue(
            store,
            [
                prediction(f"pg{i}", f"listing {i}", {"uav": 0.2 + 0.005 * i, "marine": 0.3})
                for i in range(N_ITEMS)
            ],
        )
        with store.transaction() as session:
            for name, key in REVIEWERS.items():
                create_user(session, name, "reviewer", api_key=key)
    finally:
        store.dispose()

    ledger = Ledger()
    with caplog.at_level(logging.WARNING):
        async with serve(url) as client:
            await asyncio.wait_for(
                asyncio.gather(
                    restart_midway(private_postgres, ledger),
                    *(review_until_empty(client, name, ledger) for name in REVIEWERS),
                ),
                timeout=WAIT_S * 2,
            )
            # A quiet restart (no request meets it): the pool's pre-ping has to notice the dead
            # connections, so the very first request afterwards succeeds without a retry.
            await asyncio.to_thread(private_postgres.stop, "fast")
            await asyncio.to_thread(private_postgres.start)
            headers = {"X-API-Key": REVIEWERS["rev-a"]}
            r = await client.get("/v1/review/queue", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["counts"]["decided"] == len(ledger.acked) + len(ledger.ambiguous)

    assert ledger.restarted and ledger.statuses[503] >= 3, ledger.statuses
    assert set(ledger.statuses) <= {200, 409, 503}, ledger.statuses
    assert ledger.acked_after_restart > 0, "nothing was acknowledged after the restart"
    assert not [r for r in caplog.records if r.getMessage() == "unhandled error"]

    store = ReviewStore.open(url, migrate=False)
    try:
        with store.session() as session:
            reviews = list(session.scalars(select(Review)))
            items = list(session.scalars(select(Item)))
            events = list_events(session, limit=10_000)
    finally:
        store.dispose()
    submitted = {
        r.id: (r.item_id, r.reviewer, sorted(r.labels or []))
        for r in reviews
        if r.status == "submitted"
    }
    for review_id, record in ledger.acked.items():
        assert submitted.get(review_id) == record, f"acknowledged review {review_id} lost"
    assert set(submitted) == set(ledger.acked) | set(ledger.ambiguous)
    per_item = Counter(item_id for item_id, _, _ in submitted.values())
    assert max(per_item.values()) == 1, "an item got two submissions"

    submit_events = Counter(e.review_id for e in events if e.action == "review.submit")
    assert submit_events == Counter(set(submitted)), "audit trail and reviews disagree"
    for e in events:
        if e.action == "review.submit":
            assert sorted(e.after["labels"]) == submitted[e.review_id][2]
    claim_events = Counter(e.review_id for e in events if e.action == "claim")
    assert claim_events == Counter({r.id for r in reviews}), "a claim without one audit event"

    assert len(items) == N_ITEMS
    drafts = [r for r in reviews if r.status == "draft"]
    # Only a claim whose reply was lost in the outage may be left open (until its lease ends).
    assert not {r.id for r in drafts} & ledger.claimed, "an acknowledged claim was not finished"
    assert {r.status for r in reviews} <= {"submitted", "draft"}
    assert {i.id for i in items} == set(per_item) | {r.item_id for r in drafts}
