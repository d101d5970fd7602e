"""The review queue: enqueue, order, claim with a lease, submit, skip; and the item status.

Everything the queue does lives here; web handlers load, authorize and call these functions.

- `item_status` is the one pure function that says what state an item is in. The `items.status`
  column is only a cache of its answer, rewritten after every change; a lease that runs out is
  applied by `release_expired` (which records `claim.expire` in the audit log) before the queue
  is read, so the cache never lags for long and the pure function decides either way. A new
  suggestion (a newer model) never reopens a human decision: status depends on reviews only.
- Entering is idempotent by input hash plus model version: an item is one listing snapshot (its
  id and text fields), and each model version adds at most one suggestion to it.
- Order: most uncertain first: `margin` (closest any label comes to its flag threshold) or
  `entropy` (the highest binary entropy over labels), or by age.
- Claims are draft reviews with a lease. Every change to an item bumps `items.version` with a
  compare-and-swap `UPDATE ... WHERE version = :seen`; a claim whose swap fails lost a race and
  moves on to the next item, so two reviewers never hold the same slot. A submission swaps the
  draft's own version, so the second of two concurrent submissions gets `ConflictError` with
  the decision that won.
- Double review: a share of items (chosen by input hash, so reproducibly) needs two reviewers;
  if they differ the item's status is `disagreement` until an admin adjudicates.

Errors (all `DualscreenError`):

    ReviewError
    ├── NotFoundError     no such item or review
    ├── ForbiddenError    not yours, or your role may not do it
    ├── InvalidError      labels or decision not acceptable
    └── ConflictError     someone else changed it first (carries what they decided)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from serving.contract.errors import DualscreenError
from serving.review.audit import record_event
from serving.review.models import EXTERNAL_ID_MAX, Item, Review, Suggestion, utcnow

Status = Literal["pending", "in_review", "decided", "disagreement"]
OPEN_STATUSES = ("pending", "in_review")
ORDERS = ("margin", "entropy", "oldest", "newest")
DEFAULT_THRESHOLD = 0.5
_IN_CHUNK = 500
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


class ReviewError(DualscreenError):
    """Base of the queue's errors."""

    status = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class NotFoundError(ReviewError):
    """No such item or review."""

    status = 404


class ForbiddenError(ReviewError):
    """The actor may not do this."""

    status = 403


class InvalidError(ReviewError):
    """Labels or decision are not acceptable."""

    status = 422


class ConflictError(ReviewError):
    """Someone changed the item first; `detail` holds what is there now."""

    status = 409


# ---------------------------------------------------------------------------------------------
# Pure functions


class ReviewLike(Protocol):
    """What `item_status` reads of a review (ORM rows and plain records both fit)."""

    @property
    def reviewer(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def labels(self) -> list[str] | None: ...
    @property
    def decision(self) -> str | None: ...
    @property
    def lease_until(self) -> dt.datetime: ...


def _same_outcome(a: ReviewLike, b: ReviewLike) -> bool:
    return a.decision == b.decision and sorted(a.labels or []) == sorted(b.labels or [])


def item_status(reviews: Sequence[ReviewLike], required_reviews: int, now: dt.datetime) -> Status:
    """An item's status from its reviews.

    Args:
        reviews: every review of the item (drafts, submitted, discarded), any order.
        required_reviews: 1, or 2 for a double-reviewed item.
        now: the time leases are judged against.

    Returns:
        `decided` once an adjudication or enough agreeing reviews are submitted;
        `disagreement` when the required reviews are in and differ; `in_review` while a claim's
        lease runs; else `pending`.
    """
    submitted = [r for r in reviews if r.status == "submitted"]
    if any(r.kind == "adjudication" for r in submitted):
        return "decided"
    regular = [r for r in submitted if r.kind != "adjudication"]
    if len(regular) >= max(1, required_reviews):
        first = regular[0]
        if all(_same_outcome(first, r) for r in regular[1:]):
            return "decided"
        return "disagreement"
    if any(r.status == "draft" and r.lease_until > now for r in reviews):
        return "in_review"
    return "pending"


def open_slots(reviews: Sequence[ReviewLike], required_reviews: int, now: dt.datetime) -> int:
    """How many more reviewers may claim the item now."""
    if item_status(reviews, required_reviews, now) in ("decided", "disagreement"):
        return 0
    submitted = sum(1 for r in reviews if r.status == "submitted")
    active = sum(1 for r in reviews if r.status == "draft" and r.lease_until > now)
    return max(0, max(1, required_reviews) - submitted - active)


@dataclass(frozen=True)
class Outcome:
    """The final human answer for an item."""

    labels: list[str]
    decision: str
    reviewers: list[str]
    decided_at: dt.datetime | None
    model_version: str


def final_outcome(reviews: Sequence[Review], required_reviews: int) -> Outcome | None:
    """The decided labels and decision (an adjudication wins), or None while not decided."""
    submitted = [r for r in reviews if r.status == "submitted"]
    adjudications = [r for r in submitted if r.kind == "adjudication"]
    if adjudications:
        last = adjudications[-1]
        chosen = [last]
    else:
        regular = [r for r in submitted if r.kind != "adjudication"]
        if len(regular) < max(1, required_reviews) or not all(
            _same_outcome(regular[0], r) for r in regular[1:]
        ):
            return None
        chosen = regular
    last = chosen[-1]
    return Outcome(
        labels=sorted(last.labels or []),
        decision=last.decision or "",
        reviewers=[r.reviewer for r in chosen],
        decided_at=max((r.submitted_at for r in chosen if r.submitted_at), default=None),
        model_version=chosen[0].model_version,
    )


def binary_entropy(p: float) -> float:
    """Entropy in bits of a yes/no probability."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def uncertainty(
    probabilities: Mapping[str, float], flag_thresholds: Mapping[str, float] | None = None
) -> tuple[float, float]:
    """(margin, entropy): how close any label is to its flag threshold; the highest entropy."""
    if not probabilities:
        return 1.0, 0.0
    thresholds = flag_thresholds or {}
    margin = min(abs(p - thresholds.get(lb, DEFAULT_THRESHOLD)) for lb, p in probabilities.items())
    entropy = max(binary_entropy(p) for p in probabilities.values())
    return round(margin, 6), round(entropy, 6)


def suggested_labels(
    probabilities: Mapping[str, float],
    label_decisions: Mapping[str, str] | None,
    flag_thresholds: Mapping[str, float] | None = None,
) -> list[str]:
    """Labels the model flagged or sent to review (from thresholds when no decisions given)."""
    if label_decisions:
        return [lb for lb in probabilities if label_decisions.get(lb, "clear") != "clear"]
    thresholds = flag_thresholds or {}
    return [lb for lb, p in probabilities.items() if p >= thresholds.get(lb, DEFAULT_THRESHOLD)]


def input_hash(record: Mapping[str, Any]) -> str:
    """sha256 of a listing's id and text fields (the item's identity in the queue)."""
    ident = record.get("id")
    canon = {
        "id": None if ident is None or ident == "" else str(ident),
        "title": str(record.get("title") or ""),
        "description": str(record.get("description") or ""),
        "brand": str(record.get("brand") or ""),
        "seller_category": str(record.get("seller_category") or ""),
        "attributes": record.get("attributes") or {},
    }
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def wants_double_review(hash_hex: str, share: float) -> bool:
    """Whether an item goes to two reviewers: a fixed share, chosen by its hash."""
    if share <= 0:
        return False
    return int(hash_hex[:8], 16) / 0xFFFFFFFF < share


def _labels_key(labels: Iterable[str]) -> str:
    return "|" + "".join(f"{lb}|" for lb in labels)


# ---------------------------------------------------------------------------------------------
# Enqueue


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
) -> int:
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
        How many (listing, model version) pairs were new, i.e. how many suggestions were queued.
    """
    session, owned = _new_session_target(session_or_store)

    def run() -> int:
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
) -> int:
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
    queued = 0
    for h, record in by_hash.items():
        item: Item | None = existing.get(h)
        if item is not None and item.id in have_suggestion:
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
            _touch(session, item)
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
        item.suggested_labels = _labels_key(labels)
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
    return queued


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
    from sqlalchemy.orm.attributes import set_committed_value

    set_committed_value(item, "version", expected + 1)
    return True


def _touch(session: Session, item: Item) -> None:
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
            _touch(session, item)
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


def _check_answer(
    labels: Sequence[str], decision: str, known: Iterable[str]
) -> tuple[list[str], str]:
    known_set = set(known)
    cleaned = sorted(dict.fromkeys(str(lb) for lb in labels))
    unknown = [lb for lb in cleaned if lb not in known_set]
    if unknown:
        raise InvalidError(
            f"unknown label(s) {', '.join(unknown)}; known: {', '.join(sorted(known_set))}"
        )
    if decision not in ("controlled", "not_controlled", "needs_info"):
        raise InvalidError("decision must be controlled, not_controlled or needs_info")
    if decision == "controlled" and not cleaned:
        raise InvalidError("a controlled decision needs at least one label")
    if decision == "not_controlled" and cleaned:
        raise InvalidError("a not_controlled decision takes no labels")
    return cleaned, decision


def decision_for(labels: Sequence[str]) -> str:
    """The decision that goes with a label set when the reviewer does not say needs_info."""
    return "controlled" if labels else "not_controlled"


def conflict_detail(item: Item, now: dt.datetime) -> dict[str, Any]:
    """What a losing reviewer is shown: the item's status and the submitted decisions."""
    return {
        "item_id": item.id,
        "status": item_status(item.reviews, item.required_reviews, now),
        "submitted": [review_dict(r) for r in item.reviews if r.status == "submitted"],
    }


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
    cleaned, decision = _check_answer(labels, decision, known)
    before = review_dict(review)
    if review.status != "draft" or review.version != version:
        raise ConflictError(_conflict_message(review), conflict_detail(item, now))
    lost = False
    with session.begin_nested() as nested:
        _touch(session, item)
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
    from sqlalchemy.orm.attributes import set_committed_value

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
        _touch(session, item)
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


# ---------------------------------------------------------------------------------------------
# Views


def item_snapshot(item: Item) -> dict[str, Any]:
    """The listing as it entered the queue."""
    return {
        "id": item.external_id,
        "title": item.title,
        "description": item.description,
        "brand": item.brand,
        "seller_category": item.seller_category,
        "attributes": item.attributes,
        "text": item.text,
        "source": item.source,
        "input_hash": item.input_hash,
        "required_reviews": item.required_reviews,
    }


def suggestion_dict(s: Suggestion) -> dict[str, Any]:
    """A suggestion as JSON-ready data."""
    return {
        "id": s.id,
        "model_name": s.model_name,
        "model_version": s.model_version,
        "taxonomy_version": s.taxonomy_version,
        "decision": s.decision,
        "probabilities": s.probabilities,
        "label_decisions": s.label_decisions,
        "flag_thresholds": s.flag_thresholds,
        "reasons": s.reasons,
        "margin": s.margin,
        "entropy": s.entropy,
        "created_at": s.created_at.isoformat(),
    }


def review_dict(r: Review) -> dict[str, Any]:
    """A review as JSON-ready data."""
    return {
        "id": r.id,
        "reviewer": r.reviewer,
        "kind": r.kind,
        "status": r.status,
        "discard_reason": r.discard_reason,
        "labels": r.labels,
        "decision": r.decision,
        "note": r.note,
        "model_version": r.model_version,
        "claimed_at": r.claimed_at.isoformat(),
        "lease_until": r.lease_until.isoformat(),
        "submitted_at": r.submitted_at.isoformat() if r.submitted_at else None,
        "version": r.version,
    }


def item_dict(item: Item, now: dt.datetime | None = None) -> dict[str, Any]:
    """An item with its status, suggestions and reviews."""
    now = now or utcnow()
    outcome = final_outcome(item.reviews, item.required_reviews)
    return {
        "item_id": item.id,
        "status": item_status(item.reviews, item.required_reviews, now),
        "version": item.version,
        "created_at": item.created_at.isoformat(),
        "listing": item_snapshot(item),
        "suggested_labels": [lb for lb in item.suggested_labels.split("|") if lb],
        "margin": item.margin,
        "entropy": item.entropy,
        "suggestions": [suggestion_dict(s) for s in item.suggestions],
        "reviews": [review_dict(r) for r in item.reviews],
        "outcome": None
        if outcome is None
        else {
            "labels": outcome.labels,
            "decision": outcome.decision,
            "reviewers": outcome.reviewers,
            "decided_at": outcome.decided_at.isoformat() if outcome.decided_at else None,
        },
    }
