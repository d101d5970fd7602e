"""The review queue's reads and mutations: filter and order, claim with a lease, submit, skip.

Web and JSON handlers load, authorize and call these functions; the status rules they apply are
the pure functions of `rules.py`, entering the queue is `enqueue.py` (through `intake.py`).

- The `items.status` column is a cache of `rules.item_status`, rewritten after every change; a
  lease that runs out is applied by `release_expired` (which records `claim.expire` in the audit
  log) before the queue is read, so the cache never lags for long and the pure function decides
  either way.
- Order: most uncertain first: `margin` (closest any label comes to its flag threshold) or
  `entropy` (the highest binary entropy over labels), or by age.
- Claims are draft reviews with a lease. Every change to an item bumps `items.version` with a
  compare-and-swap `UPDATE ... WHERE version = :seen`; a claim whose swap fails lost a race and
  moves on to the next item, so two reviewers never hold the same slot. A submission swaps the
  draft's own version, so the second of two concurrent submissions gets `ConflictError` with
  the decision that won.
- Double review: a share of items (chosen by input hash, so reproducibly) needs two reviewers;
  if they differ the item's status is `disagreement` until an admin adjudicates.

Errors are those of `errors.py` (`ReviewError` and its subclasses).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from serving.review.audit import record_event
from serving.review.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from serving.review.models import Item, Review, Suggestion, utcnow
from serving.review.rules import OPEN_STATUSES, check_answer, item_status, open_slots
from serving.review.views import conflict_detail, review_dict

ORDERS = ("margin", "entropy", "oldest", "newest")


# ---------------------------------------------------------------------------------------------
# Reading the queue


@dataclass(frozen=True)
class QueueFilters:
    """What part of the queue to show or claim from."""

    label: str | None = None
    source: str | None = None
    model_version: str | None = None
    min_age_hours: float | None = None
    max_age_hours: float | None = None
    order: str = "margin"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise InvalidError(f"order must be one of {', '.join(ORDERS)}")
        if self.label is not None and not self.label.replace("_", "").isalnum():
            raise InvalidError(f"unknown label {self.label!r}")

    def as_params(self) -> dict[str, str]:
        """Non-empty filters as query parameters."""
        out = {
            "label": self.label,
            "source": self.source,
            "model_version": self.model_version,
            "min_age_hours": self.min_age_hours,
            "max_age_hours": self.max_age_hours,
            "order": None if self.order == "margin" else self.order,
        }
        return {k: str(v) for k, v in out.items() if v not in (None, "")}


def _filtered(stmt: Any, filters: QueueFilters, now: dt.datetime) -> Any:
    if filters.label:
        pattern = "%|" + filters.label.replace("_", "\\_") + "|%"
        stmt = stmt.where(Item.suggested_labels.like(pattern, escape="\\"))
    if filters.source:
        stmt = stmt.where(Item.source == filters.source)
    if filters.model_version:
        stmt = stmt.where(Item.model_version == filters.model_version)
    if filters.min_age_hours is not None:
        stmt = stmt.where(Item.created_at <= now - dt.timedelta(hours=filters.min_age_hours))
    if filters.max_age_hours is not None:
        stmt = stmt.where(Item.created_at >= now - dt.timedelta(hours=filters.max_age_hours))
    return stmt


def _ordered(stmt: Any, order: str) -> Any:
    if order == "entropy":
        return stmt.order_by(Item.entropy.desc(), Item.created_at, Item.id)
    if order == "oldest":
        return stmt.order_by(Item.created_at, Item.id)
    if order == "newest":
        return stmt.order_by(Item.created_at.desc(), Item.id.desc())
    return stmt.order_by(Item.margin, Item.created_at, Item.id)


def list_queue(
    session: Session,
    filters: QueueFilters | None = None,
    now: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Item]:
    """Open items (pending or in review) in queue order."""
    now = now or utcnow()
    filters = filters or QueueFilters()
    stmt = _filtered(select(Item).where(Item.status.in_(OPEN_STATUSES)), filters, now)
    return list(session.scalars(_ordered(stmt, filters.order).limit(limit).offset(offset)))


def count_by_status(
    session: Session, filters: QueueFilters | None = None, now: dt.datetime | None = None
) -> dict[str, int]:
    """Items per status (every status present, zero when none), under the filters."""
    now = now or utcnow()
    stmt = select(Item.status, func.count()).group_by(Item.status)
    if filters is not None:
        stmt = _filtered(stmt, filters, now)
    counts = dict.fromkeys(("pending", "in_review", "decided", "disagreement"), 0)
    for status, n in session.execute(stmt):
        counts[str(status)] = int(n)
    return counts


def facet_values(session: Session) -> dict[str, list[str]]:
    """Distinct sources and model versions, for the filter menus."""
    sources = sorted(s for s in session.scalars(select(Item.source).distinct()) if s)
    versions = sorted(
        (v for v in session.scalars(select(Item.model_version).distinct()) if v), reverse=True
    )
    return {"sources": sources, "model_versions": versions}


# ---------------------------------------------------------------------------------------------
# Changing the queue


def _bump(session: Session, item: Item, seen: int | None = None) -> bool:
    """Compare-and-swap the item's version; False when someone else changed it first."""
    expected = item.version if seen is None else seen
    result = session.execute(
        update(Item)
        .where(Item.id == item.id, Item.version == expected)
        .values(version=expected + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(item, "version", expected + 1)
    return True


def touch_item(session: Session, item: Item) -> None:
    """Bump the item's version unconditionally (locks its row first, always before a review's)."""
    session.execute(
        update(Item)
        .where(Item.id == item.id)
        .values(version=Item.version + 1)
        .execution_options(synchronize_session=False)
    )
    _current_version(session, item)


def _swap_review(session: Session, review: Review, seen: int, **values: Any) -> bool:
    """Compare-and-swap one review's row; False when its version moved on."""
    result = session.execute(
        update(Review)
        .where(Review.id == review.id, Review.version == seen)
        .values(version=seen + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.refresh(review)
    return True


def _refresh_status(session: Session, item: Item, now: dt.datetime) -> str:
    session.flush()
    session.refresh(item, ["reviews"])
    status = item_status(item.reviews, item.required_reviews, now)
    if status != item.status:
        item.status = status
    if status in ("decided", "disagreement"):
        if item.decided_at is None:
            item.decided_at = now
    elif item.decided_at is not None:
        item.decided_at = None
    session.flush()
    return status


def _expire(session: Session, review: Review, seen: int, now: dt.datetime) -> bool:
    """Discard a draft whose lease ran out (compare-and-swap on `seen`) and audit it.

    Returns False when another writer changed the review first (nothing is recorded).
    """
    if not _swap_review(session, review, seen, status="discarded", discard_reason="expired"):
        return False
    record_event(
        session,
        "system",
        "claim.expire",
        item_id=review.item_id,
        review_id=review.id,
        before={"status": "draft", "reviewer": review.reviewer},
        after={"status": "discarded", "discard_reason": "expired"},
        at=now,
    )
    return True


def release_expired(session: Session, now: dt.datetime | None = None) -> int:
    """Discard drafts whose lease ran out (audited as `claim.expire`); returns how many."""
    now = now or utcnow()
    stmt = select(Review).where(Review.status == "draft", Review.lease_until <= now)
    released = 0
    for review in list(session.scalars(stmt)):
        seen = review.version
        with session.begin_nested() as nested:
            item = session.get(Item, review.item_id)
            assert item is not None
            touch_item(session, item)
            if not _expire(session, review, seen, now):
                nested.rollback()
                continue
            _refresh_status(session, item, now)
            released += 1
    return released


def _latest_suggestion(item: Item) -> Suggestion | None:
    return item.suggestions[-1] if item.suggestions else None


def _take_slot(
    session: Session,
    item: Item,
    reviewer: str,
    lease_s: float,
    now: dt.datetime,
    kind: str = "review",
) -> Review | None:
    """Claim one slot of `item` for `reviewer` inside a savepoint; None if it cannot or lost."""
    session.flush()
    seen = _current_version(session, item)
    session.refresh(item, ["reviews", "suggestions"])
    reviews = item.reviews
    if kind == "review":
        if any(
            r.reviewer == reviewer
            and (r.status == "submitted" or (r.status == "draft" and r.lease_until > now))
            for r in reviews
        ):
            return None
        if open_slots(reviews, item.required_reviews, now) < 1:
            return None
    elif any(r.status == "draft" and r.lease_until > now for r in reviews):
        return None  # another admin is adjudicating it
    suggestion = _latest_suggestion(item)
    with session.begin_nested() as nested:
        if not _bump(session, item, seen):
            nested.rollback()
            return None
        for old in reviews:
            expired = old.status == "draft" and old.lease_until <= now
            if expired and not _expire(session, old, old.version, now):
                nested.rollback()
                return None
        review = Review(
            item_id=item.id,
            suggestion_id=suggestion.id if suggestion else None,
            reviewer=reviewer,
            kind=kind,
            status="draft",
            note="",
            model_version=suggestion.model_version if suggestion else "",
            claimed_at=now,
            lease_until=now + dt.timedelta(seconds=lease_s),
            version=1,
        )
        session.add(review)
        session.flush()
        _refresh_status(session, item, now)
        record_event(
            session,
            reviewer,
            "claim.adjudicate" if kind == "adjudication" else "claim",
            item_id=item.id,
            review_id=review.id,
            after={"lease_until": review.lease_until.isoformat(), "kind": kind},
            at=now,
        )
    return review


def claim_next(
    session: Session,
    reviewer: str,
    filters: QueueFilters | None = None,
    lease_s: float = 900,
    now: dt.datetime | None = None,
    scan: int = 200,
) -> Review | None:
    """Claim the first item in queue order this reviewer may take; None when there is none.

    Items the reviewer holds, has reviewed or has skipped are passed over. The caller commits.
    """
    now = now or utcnow()
    filters = filters or QueueFilters()
    release_expired(session, now)
    mine = exists().where(
        Review.item_id == Item.id,
        Review.reviewer == reviewer,
        or_(
            Review.status.in_(("draft", "submitted")),
            and_(Review.status == "discarded", Review.discard_reason == "skipped"),
        ),
    )
    stmt = _filtered(select(Item).where(Item.status.in_(OPEN_STATUSES), ~mine), filters, now)
    for item in list(session.scalars(_ordered(stmt, filters.order).limit(scan))):
        review = _take_slot(session, item, reviewer, lease_s, now)
        if review is not None:
            return review
    return None


def claim_item(
    session: Session,
    item_id: int,
    reviewer: str,
    is_admin: bool = False,
    lease_s: float = 900,
    now: dt.datetime | None = None,
) -> Review:
    """Claim one given item (an admin claims a disagreement to adjudicate it).

    Returns the reviewer's existing live draft if they already hold one. The caller commits.
    """
    now = now or utcnow()
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"no review item {item_id}")
    for r in item.reviews:
        if r.reviewer == reviewer and r.status == "draft" and r.lease_until > now:
            return r
    status = item_status(item.reviews, item.required_reviews, now)
    if status == "disagreement":
        if not is_admin:
            raise ForbiddenError("only an admin adjudicates a disagreement")
        review = _take_slot(session, item, reviewer, lease_s, now, kind="adjudication")
    elif status == "decided":
        raise ConflictError("this item is already decided", conflict_detail(item, now))
    else:
        review = _take_slot(session, item, reviewer, lease_s, now)
    if review is None:
        raise ConflictError(
            "this item is held by other reviewers or was reviewed by you already",
            conflict_detail(item, now),
        )
    return review


def _own_draft(session: Session, item_id: int, review_id: int, reviewer: str) -> Review:
    review = session.get(Review, review_id)
    if review is None or review.item_id != item_id:
        raise NotFoundError(f"no review {review_id} on item {item_id}")
    if review.reviewer != reviewer:
        raise ForbiddenError("this claim belongs to another reviewer")
    return review


def submit_review(
    session: Session,
    item_id: int,
    review_id: int,
    version: int,
    reviewer: str,
    labels: Sequence[str],
    decision: str,
    note: str = "",
    now: dt.datetime | None = None,
) -> Review:
    """Submit a claimed draft; `ConflictError` if it changed since `version` (or was taken).

    The caller commits.
    """
    now = now or utcnow()
    review = _own_draft(session, item_id, review_id, reviewer)
    item = session.get(Item, item_id)
    assert item is not None
    known = item.suggestions[-1].probabilities.keys() if item.suggestions else []
    cleaned, decision = check_answer(labels, decision, known)
    before = review_dict(review)
    if review.status != "draft" or review.version != version:
        raise ConflictError(_conflict_message(review), conflict_detail(item, now))
    lost = False
    with session.begin_nested() as nested:
        touch_item(session, item)
        if not _swap_review(
            session,
            review,
            version,
            status="submitted",
            labels=cleaned,
            decision=decision,
            note=note[:5000],
            submitted_at=now,
        ):
            nested.rollback()
            lost = True
        else:
            status = _refresh_status(session, item, now)
            record_event(
                session,
                reviewer,
                "review.submit" if review.kind == "review" else "review.adjudicate",
                item_id=item.id,
                review_id=review.id,
                before=before,
                after=review_dict(review) | {"item_status": status},
                at=now,
            )
    if lost:
        session.refresh(item, ["reviews"])
        session.refresh(review)
        raise ConflictError(_conflict_message(review), conflict_detail(item, now))
    return review


def _current_version(session: Session, item: Item) -> int:
    version = session.scalar(select(Item.version).where(Item.id == item.id))
    assert version is not None
    set_committed_value(item, "version", version)
    return version


def _conflict_message(review: Review) -> str:
    if review.status == "submitted":
        return "this claim was already submitted (another tab or request was first)"
    if review.status == "discarded":
        return f"this claim ended ({review.discard_reason}); the item may have been decided"
    return "this claim changed since you loaded it; reload"


def skip_review(
    session: Session,
    item_id: int,
    review_id: int,
    version: int,
    reviewer: str,
    note: str = "",
    now: dt.datetime | None = None,
) -> Review:
    """Give a claimed item back without deciding; the reviewer will not be given it again."""
    now = now or utcnow()
    review = _own_draft(session, item_id, review_id, reviewer)
    item = session.get(Item, item_id)
    assert item is not None
    if review.status != "draft" or review.version != version:
        raise ConflictError(_conflict_message(review), conflict_detail(item, now))
    lost = False
    with session.begin_nested() as nested:
        touch_item(session, item)
        if not _swap_review(
            session, review, version, status="discarded", discard_reason="skipped", note=note
        ):
            nested.rollback()
            lost = True
        else:
            _refresh_status(session, item, now)
            record_event(
                session,
                reviewer,
                "review.skip",
                item_id=item.id,
                review_id=review.id,
                before={"status": "draft"},
                after={"status": "discarded", "discard_reason": "skipped", "note": note},
                at=now,
            )
    if lost:
        session.refresh(item, ["reviews"])
        session.refresh(review)
        raise ConflictError(_conflict_message(review), conflict_detail(item, now))
    return review


def active_draft(item: Item, reviewer: str, now: dt.datetime) -> Review | None:
    """The reviewer's live claim on the item, if any."""
    for r in item.reviews:
        if r.reviewer == reviewer and r.status == "draft" and r.lease_until > now:
            return r
    return None
