"""The queue's pure rules: an item's status, its ranking, its identity, a valid answer.

No database here: every function takes plain values (ORM rows fit the protocols), so the rules
are tested as units and the queue's mutations only apply them.

- `item_status` is the one function that says what state an item is in; the `items.status`
  column is a cache of its answer. A new suggestion (a newer model) never reopens a human
  decision: status depends on reviews only.
- Ranking: `uncertainty` gives the margin (closest any label comes to its flag threshold) and the
  highest binary entropy over labels.
- Identity: `input_hash` of a listing's id and content fields is the item's key in the queue.
- Double review: `wants_double_review` picks a fixed share of items by their hash, reproducibly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from serving.review.errors import InvalidError

Status = Literal["pending", "in_review", "decided", "disagreement"]
OPEN_STATUSES = ("pending", "in_review")
DEFAULT_THRESHOLD = 0.5
ANSWERS = ("controlled", "not_controlled", "needs_info")


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


class SubmittedLike(ReviewLike, Protocol):
    """What `final_outcome` reads of a submitted review."""

    @property
    def submitted_at(self) -> dt.datetime | None: ...
    @property
    def model_version(self) -> str: ...


@dataclass(frozen=True)
class Outcome:
    """The final human answer for an item."""

    labels: list[str]
    decision: str
    reviewers: list[str]
    decided_at: dt.datetime | None
    model_version: str


def final_outcome(reviews: Sequence[SubmittedLike], required_reviews: int) -> Outcome | None:
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


def labels_key(labels: Iterable[str]) -> str:
    """Labels as stored in `items.suggested_labels` (`|a|b|`): one LIKE finds a label."""
    return "|" + "".join(f"{lb}|" for lb in labels)


def decision_for(labels: Sequence[str]) -> str:
    """The decision that goes with a label set when the reviewer does not say needs_info."""
    return "controlled" if labels else "not_controlled"


def check_answer(
    labels: Sequence[str], decision: str, known: Iterable[str]
) -> tuple[list[str], str]:
    """A reviewer's labels (sorted, unique) and decision, or `InvalidError` saying what is wrong."""
    known_set = set(known)
    cleaned = sorted(dict.fromkeys(str(lb) for lb in labels))
    unknown = [lb for lb in cleaned if lb not in known_set]
    if unknown:
        raise InvalidError(
            f"unknown label(s) {', '.join(unknown)}; known: {', '.join(sorted(known_set))}"
        )
    if decision not in ANSWERS:
        raise InvalidError("decision must be controlled, not_controlled or needs_info")
    if decision == "controlled" and not cleaned:
        raise InvalidError("a controlled decision needs at least one label")
    if decision == "not_controlled" and cleaned:
        raise InvalidError("a not_controlled decision takes no labels")
    return cleaned, decision
