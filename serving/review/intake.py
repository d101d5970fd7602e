"""Intake: the one way a scored listing enters the review queue (issue 13).

Every path that queues listings calls `enqueue_listings`; they differ only in which of the
model's decisions they admit, and each names its choice from `IntakePolicy`:

    path                                   policy                               source
    /v1/classify?enqueue=true              NOT_CLEAR                            classify
    POST /v1/review/items                  EVERY                                the body's (api)
    dualscreen score --enqueue-review      REVIEW                               score:FILE
    dualscreen review import               EVERY (--only-uncertain: NOT_CLEAR)  import:FILE

What is the same on every path, because only this module decides it:

- What is stored: the listing's id, text fields and attributes, with a file row's other text
  columns (the ones the model read, such as `notes`) folded into the attributes, every value as
  the text the text builder makes of it (`listing_from_record`): a JSONL number and an API string
  are one value. Attributes with an empty value (which add nothing to the text) and columns the
  model did not read are not stored. The model's text and suggestion are stored as scored.
- The item key: `rules.input_hash` of that stored listing. One listing is one queue item whichever
  path brings it (the bulk scorer used to invent `line-N` ids and drop the extra text columns, so
  `score --enqueue-review` and `review import` made two items of one row); a second attempt with
  the same model version writes nothing and is reported as already queued.

Compromise: a file row whose extra text column has the same name as one of its attributes keeps
the column's value in the stored attributes (the model read both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from sqlalchemy.orm import Session

from serving.contract.artifact import Manifest
from serving.contract.listing import CONTENT_FIELDS, Listing, ScoredListing
from serving.contract.readers import ColumnMapping
from serving.contract.text import listing_from_record
from serving.predictor import Predictor
from serving.review.enqueue import enqueue_predictions
from serving.review.rules import input_hash
from serving.review.store import ReviewStore


class IntakePolicy(Enum):
    """Which of the model's decisions a path admits to the queue; what is stored and the item key
    are the same for every member."""

    EVERY = ("flag", "review", "clear")
    NOT_CLEAR = ("flag", "review")
    REVIEW = ("review",)

    def admits(self, decision: str) -> bool:
        """Whether a listing the model decided `decision` enters the queue."""
        return decision in self.value

    @staticmethod
    def stored_listing(listing: Listing, extra: Mapping[str, Any] | None = None) -> Listing:
        """The listing as the queue stores it: values as text, other text columns as attributes."""
        record = listing.model_dump()
        record["attributes"] = {**record["attributes"], **(extra or {})}
        stored, _ = listing_from_record(record, CONTENT_FIELDS, ident=_ident(listing.id))
        # Only attributes that reach the model's text: an empty value adds nothing to it.
        kept = {k: v for k, v in stored.attributes.items() if k and v}
        return stored.model_copy(update={"attributes": kept})

    @staticmethod
    def item_key(listing: Listing, extra: Mapping[str, Any] | None = None) -> str:
        """The listing's key in the queue (its item's `input_hash`), the same on every path."""
        return input_hash(IntakePolicy.stored_listing(listing, extra).model_dump())


@dataclass(frozen=True)
class IntakeResult:
    """What one intake did with its listings."""

    received: int = 0
    admitted: int = 0
    """Listings the policy let in (the others were left out, not an error)."""
    queued: int = 0
    """Admitted (listing, model version) pairs that were new: new items or new suggestions."""
    already_queued: int = 0
    """Admitted pairs the queue held already: nothing written, not an error."""
    item_ids: list[int | None] = field(default_factory=list)
    """Per listing in input order: its queue item id, or None when it was not admitted."""


def flag_thresholds(manifest: Manifest) -> dict[str, float]:
    """The model's per-label flag thresholds, which rank the queue by margin."""
    return {lb: t.flag for lb, t in manifest.thresholds.items()}


def enqueue_listings(
    target: ReviewStore | Session,
    scored: Sequence[ScoredListing],
    policy: IntakePolicy,
    source: str,
    *,
    flag_thresholds: Mapping[str, float],
    actor: str,
    double_review_share: float = 0.0,
) -> IntakeResult:
    """Put the listings `policy` admits in the review queue, idempotently.

    Args:
        target: a `ReviewStore` (committed here) or a `Session` (flushed; the caller commits).
        scored: listings with the model's text and suggestion (all from one model version).
        policy: which decisions enter.
        source: where they came from (`classify`, `api`, `score:FILE`, `import:FILE`).
        flag_thresholds: the model's flag thresholds (`flag_thresholds(manifest)`).
        actor: who enqueued, for the audit log.
        double_review_share: share of new items that need two reviewers (0..1).

    Returns:
        Counts, and each listing's queue item id.

    Raises:
        InvalidError: an id longer than the queue keeps (nothing is queued).
    """
    admitted = [s for s in scored if policy.admits(s.decision)]
    keys: list[str | None] = []
    records = []
    for s in scored:
        if not policy.admits(s.decision):
            keys.append(None)
            continue
        stored = replace(s, listing=IntakePolicy.stored_listing(s.listing))
        record = stored.review_record()
        keys.append(input_hash(record))
        records.append(record)
    if not records:
        return IntakeResult(len(scored), 0, 0, 0, [None] * len(scored))
    versions = {(s.model_name, s.model_version, s.taxonomy_version) for s in admitted}
    if len(versions) != 1:
        raise ValueError(f"one intake takes one model's suggestions, got {sorted(versions)}")
    [(name, version, taxonomy)] = versions
    done = enqueue_predictions(
        target,
        records,
        name,
        version,
        taxonomy,
        source,
        flag_thresholds=flag_thresholds,
        double_review_share=double_review_share,
        actor=actor,
    )
    return IntakeResult(
        received=len(scored),
        admitted=len(admitted),
        queued=done.queued,
        already_queued=done.already_queued,
        item_ids=[None if k is None else done.item_ids[k] for k in keys],
    )


# ---------------------------------------------------------------------------------------------
# File rows (`score --enqueue-review`, `review import`)


def _ident(value: Any) -> str | int | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else str(value)


def scored_file_rows(
    records: Sequence[Mapping[str, Any]], scored: Sequence[ScoredListing], mapping: ColumnMapping
) -> list[ScoredListing]:
    """Scored file rows as the queue takes them: the row's id, every text column the model read."""
    out = []
    for record, s in zip(records, scored, strict=True):
        ident = _ident(record.get(mapping.id_col))
        listing, extra = listing_from_record(record, mapping.text_cols, ident=ident)
        out.append(replace(s, listing=IntakePolicy.stored_listing(listing, extra)))
    return out


def score_file_rows(
    predictor: Predictor, records: Sequence[Mapping[str, Any]], mapping: ColumnMapping
) -> list[ScoredListing]:
    """Score file rows as the bulk scorer does, ready for the queue (`review import`)."""
    listings, extras = [], []
    for record in records:
        listing, extra = listing_from_record(record, mapping.text_cols)
        listings.append(listing)
        extras.append(extra)
    return scored_file_rows(records, predictor.score(listings, extras), mapping)
