"""Figures for the admin page: reviewer throughput, agreement, queue age."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.review.kappa import agreement_per_label
from serving.review.models import Item, Review, utcnow
from serving.review.queue import count_by_status
from serving.review.rules import OPEN_STATUSES

AGE_BUCKETS = (("< 1 h", 1.0), ("1-24 h", 24.0), ("1-7 d", 168.0), ("> 7 d", float("inf")))


def throughput(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Per reviewer: submitted in 24 h, 7 d and in all; skips; median seconds per review."""
    rows: dict[str, dict[str, Any]] = {}
    seconds: dict[str, list[float]] = {}
    stmt = select(Review).where(Review.status.in_(("submitted", "discarded")))
    for r in session.scalars(stmt):
        row = rows.setdefault(
            r.reviewer,
            {"reviewer": r.reviewer, "last_24h": 0, "last_7d": 0, "total": 0, "skipped": 0},
        )
        if r.status == "discarded":
            row["skipped"] += r.discard_reason == "skipped"
            continue
        row["total"] += 1
        if r.submitted_at is not None:
            age = now - r.submitted_at
            row["last_24h"] += age <= dt.timedelta(hours=24)
            row["last_7d"] += age <= dt.timedelta(days=7)
            seconds.setdefault(r.reviewer, []).append(
                (r.submitted_at - r.claimed_at).total_seconds()
            )
    for name, row in rows.items():
        times = seconds.get(name)
        row["median_seconds"] = round(statistics.median(times), 1) if times else None
    return sorted(rows.values(), key=lambda r: (-r["total"], r["reviewer"]))


def double_review_pairs(session: Session) -> list[tuple[list[str], list[str]]]:
    """(first labels, second labels) of every item with two submitted regular reviews."""
    stmt = (
        select(Review)
        .where(Review.status == "submitted", Review.kind == "review")
        .order_by(Review.item_id, Review.id)
    )
    by_item: dict[int, list[Review]] = {}
    for r in session.scalars(stmt):
        by_item.setdefault(r.item_id, []).append(r)
    return [
        (list(rs[0].labels or []), list(rs[1].labels or []))
        for rs in by_item.values()
        if len(rs) >= 2
    ]


def agreement(session: Session, labels: Sequence[str]) -> dict[str, Any]:
    """Kappa and raw agreement per label, and exact label-set agreement, over double reviews."""
    pairs = double_review_pairs(session)
    exact = sum(1 for a, b in pairs if sorted(a) == sorted(b))
    return {
        "items": len(pairs),
        "exact_agreement": exact / len(pairs) if pairs else None,
        "per_label": [vars(x) for x in agreement_per_label(pairs, labels)],
    }


def queue_age(session: Session, now: dt.datetime) -> dict[str, Any]:
    """Open items: how many, oldest and median age in hours, and counts per age bucket."""
    ages = [
        (now - created).total_seconds() / 3600
        for created in session.scalars(
            select(Item.created_at).where(Item.status.in_(OPEN_STATUSES))
        )
    ]
    buckets = dict.fromkeys((name for name, _ in AGE_BUCKETS), 0)
    for age in ages:
        for name, upper in AGE_BUCKETS:
            if age < upper:
                buckets[name] += 1
                break
    return {
        "open": len(ages),
        "oldest_hours": round(max(ages), 2) if ages else None,
        "median_hours": round(statistics.median(ages), 2) if ages else None,
        "buckets": buckets,
    }


def known_labels(session: Session) -> list[str]:
    """Labels in the newest suggestion's probabilities (the taxonomy in use)."""
    from serving.review.models import Suggestion

    latest = session.scalar(select(Suggestion).order_by(Suggestion.id.desc()).limit(1))
    return list(latest.probabilities) if latest is not None else []


def admin_stats(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the admin page shows."""
    now = now or utcnow()
    return {
        "at": now.isoformat(),
        "status": count_by_status(session),
        "throughput": throughput(session, now),
        "agreement": agreement(session, known_labels(session)),
        "queue_age": queue_age(session, now),
    }
