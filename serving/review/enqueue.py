"""Putting scored listings in the queue: one item per listing snapshot, one suggestion per model.

Entering is idempotent by input hash (`rules.input_hash` of the listing's id and content fields)
plus model version: a listing already in the queue gets at most one suggestion per model version,
and a second attempt writes nothing and is counted as already queued. The records come from
`intake.py`, which decides which listings enter and what of them is stored; tests may call
`enqueue_predictions` with plain dicts.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.review.audit import record_event
from serving.review.errors import InvalidError
from serving.review.models import EXTERNAL_ID_MAX, Item, Suggestion, utcnow
from serving.review.queue import touch_item
from serving.review.rules import (
    input_hash,
    labels_key,
    suggested_labels,
    uncertainty,
    wants_double_review,
)
from serving.review.views import item_snapshot, suggestion_dict

_IN_CHUNK = 500
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Enqueued:
    """What one enqueue did, per distinct listing (duplicates within one call count once)."""

    queued: int = 0
    """(listing, model version) pairs that were new: a new item, or a new model's suggestion."""
    already_queued: int = 0
    """Pairs the queue held already; nothing was written for them."""
    item_ids: dict[str, int] = field(default_factory=dict)
    """Input hash -> queue item id, for every distinct listing of the call."""


def _new_session_target(target: Any) -> tuple[Session, bool]:
    from serving.review.store import ReviewStore

    if isinstance(target, ReviewStore):
        return target.session(), True
    if isinstance(target, Session):
        return target, False
    raise TypeError("enqueue needs a ReviewStore or a SQLAlchemy Session")


def enqueue_predictions(
    session_or_store: Any,
    items: list[dict[str, Any]],
    model_name: str,
    model_version: str,
    taxonomy_version: str,
    source: str,
    *,
    flag_thresholds: Mapping[str, float] | None = None,
    double_review_share: float = 0.0,
    actor: str = "system",
    now: dt.datetime | None = None,
) -> Enqueued:
    """Put scored listings in the review queue; idempotent by input hash plus model version.

    Args:
        session_or_store: a `ReviewStore` (committed here, retried once if a concurrent writer
            inserted the same listing) or a `Session` (flushed; the caller commits).
        items: dicts with the listing fields `id`, `title`, `description`, `brand`,
            `seller_category` (optional `attributes`), the built `text`, `probabilities`
            (label -> calibrated probability), `decision`, `reasons`, and optionally
            `label_decisions` (label -> flag/review/clear).
        model_name: the model's name (manifest `name`).
        model_version: the model's version (manifest `version`).
        taxonomy_version: the taxonomy version the labels come from.
        source: where the items came from (`api`, `classify`, `import:<file>`, `score:<file>`).
        flag_thresholds: per-label flag thresholds (manifest), used to rank by margin.
        double_review_share: share of new items that need two reviewers (0..1).
        actor: who enqueued, for the audit log.
        now: the time to record (tests).

    Returns:
        How many (listing, model version) pairs were new and how many were queued already, and
        each listing's item id.
    """
    session, owned = _new_session_target(session_or_store)

    def run() -> Enqueued:
        return _enqueue(
            session,
            items,
            model_name,
            model_version,
            taxonomy_version,
            source,
            flag_thresholds,
            double_review_share,
            actor,
            now,
        )

    if not owned:
        return run()
    from sqlalchemy.exc import IntegrityError

    try:
        for attempt in range(2):
            try:
                with session.begin():
                    return run()
            except IntegrityError:
                # A concurrent writer inserted one of these listings first: the retry sees it.
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        session.close()


def _storable(value: Any) -> str:
    """Text a database can hold: no NUL (PostgreSQL refuses it), no lone surrogate (not UTF-8).

    The model never reads either (`normalize_text` drops them), so the snapshot loses nothing
    the reviewer needs.
    """
    return _UNSTORABLE_RE.sub("", str(value or ""))


def _enqueue(
    session: Session,
    items: list[dict[str, Any]],
    model_name: str,
    model_version: str,
    taxonomy_version: str,
    source: str,
    flag_thresholds: Mapping[str, float] | None,
    double_review_share: float,
    actor: str,
    now: dt.datetime | None,
) -> Enqueued:
    now = now or utcnow()
    for record in items:
        given = "" if record.get("id") is None else str(record.get("id"))
        if len(given) > EXTERNAL_ID_MAX:
            problem = f"{len(given):,} characters; the review queue keeps at most {EXTERNAL_ID_MAX}"
            raise InvalidError(
                f"id {given[:40]!r}...: {problem}", [{"field": "id", "problem": problem}]
            )
    thresholds = dict(flag_thresholds or {})
    by_hash: dict[str, dict[str, Any]] = {}
    for record in items:
        by_hash.setdefault(input_hash(record), record)
    hashes = list(by_hash)
    existing: dict[str, Item] = {}
    for start in range(0, len(hashes), _IN_CHUNK):
        chunk = hashes[start : start + _IN_CHUNK]
        for found in session.scalars(select(Item).where(Item.input_hash.in_(chunk))):
            existing[found.input_hash] = found
    have_suggestion: set[int] = set()
    ids = [i.id for i in existing.values()]
    for start in range(0, len(ids), _IN_CHUNK):
        stmt = select(Suggestion.item_id).where(
            Suggestion.item_id.in_(ids[start : start + _IN_CHUNK]),
            Suggestion.model_version == model_version,
        )
        have_suggestion.update(session.scalars(stmt))
    queued = already = 0
    item_ids: dict[str, int] = {}
    for h, record in by_hash.items():
        item: Item | None = existing.get(h)
        if item is not None and item.id in have_suggestion:
            already += 1
            item_ids[h] = item.id
            continue
        probabilities = {str(k): float(v) for k, v in dict(record["probabilities"]).items()}
        decisions = {str(k): str(v) for k, v in dict(record.get("label_decisions") or {}).items()}
        margin, entropy = uncertainty(probabilities, thresholds)
        labels = suggested_labels(probabilities, decisions, thresholds)
        created = item is None
        if item is None:
            ident = record.get("id")
            item = Item(
                input_hash=h,
                external_id=None if ident is None or ident == "" else _storable(ident),
                source=source,
                title=_storable(record.get("title")),
                description=_storable(record.get("description")),
                brand=_storable(record.get("brand")),
                seller_category=_storable(record.get("seller_category")),
                attributes=dict(record.get("attributes") or {}),
                text=str(record.get("text") or ""),
                created_at=now,
                required_reviews=2 if wants_double_review(h, double_review_share) else 1,
                status="pending",
                version=1,
            )
            session.add(item)
            session.flush()
        else:
            touch_item(session, item)
        suggestion = Suggestion(
            item_id=item.id,
            model_name=model_name,
            model_version=model_version,
            taxonomy_version=taxonomy_version,
            probabilities=probabilities,
            label_decisions=decisions,
            flag_thresholds=thresholds,
            decision=str(record.get("decision") or ""),
            reasons=[str(r) for r in record.get("reasons") or []],
            margin=margin,
            entropy=entropy,
            created_at=now,
        )
        session.add(suggestion)
        item.model_version = model_version
        item.margin = margin
        item.entropy = entropy
        item.suggested_labels = labels_key(labels)
        session.flush()
        record_event(
            session,
            actor,
            "item.enqueue" if created else "suggestion.add",
            item_id=item.id,
            after={
                "item": item_snapshot(item) if created else None,
                "suggestion": suggestion_dict(suggestion),
                "source": source,
            },
            at=now,
        )
        queued += 1
        item_ids[h] = item.id
    return Enqueued(queued, already, item_ids)
