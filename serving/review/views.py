"""Queue rows as JSON-ready data: what the JSON API returns and the audit log records."""

from __future__ import annotations

import datetime as dt
from typing import Any

from serving.review.models import Item, Review, Suggestion, utcnow
from serving.review.rules import final_outcome, item_status


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


def queue_row(item: Item, now: dt.datetime) -> dict[str, Any]:
    """One open item as the queue lists it: status, suggested labels, top label, ranking."""
    latest = item.suggestions[-1] if item.suggestions else None
    top = max(latest.probabilities.items(), key=lambda kv: kv[1]) if latest else None
    return {
        "item_id": item.id,
        "id": item.external_id,
        "title": item.title,
        "status": item_status(item.reviews, item.required_reviews, now),
        "suggested_labels": [lb for lb in item.suggested_labels.split("|") if lb],
        "top_label": top[0] if top else None,
        "top_probability": top[1] if top else None,
        "margin": item.margin,
        "entropy": item.entropy,
        "source": item.source,
        "model_version": item.model_version,
        "created_at": item.created_at.isoformat(),
        "required_reviews": item.required_reviews,
    }


def conflict_detail(item: Item, now: dt.datetime) -> dict[str, Any]:
    """What a losing reviewer is shown: the item's status and the submitted decisions."""
    return {
        "item_id": item.id,
        "status": item_status(item.reviews, item.required_reviews, now),
        "submitted": [review_dict(r) for r in item.reviews if r.status == "submitted"],
    }
