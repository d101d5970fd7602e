"""Export: decided reviews as a labelled file in the corpus schema, and the audit log as CSV.

The labelled file (`.jsonl` or `.csv`) has the corpus columns `id, title, description, brand,
seller_category, labels, split` with `split = "train"` (training adds reviewed rows to the train
split only and drops any that match a validation or test listing), plus `reviewer`,
`reviewed_at`, `model_version`, `decision` and `item_id` for provenance. Attributes are folded
into the description where the text builder puts them, so training reads the text the reviewer
judged. Only decided items whose
decision is controlled or not_controlled are written: a needs-info answer carries no labels, and
an item under disagreement waits for its adjudication.

The audit CSV is for compliance records, so it must be safe to open in a spreadsheet: any cell
that starts with `=`, `+`, `-`, `@` (or a tab or carriage return) gets a leading `'` so it is never
read as a formula (CSV injection).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.contract.errors import InputError
from serving.contract.text import FIELD_SEPARATOR
from serving.review.models import AuditEvent, Item
from serving.review.rules import final_outcome

EXPORT_COLUMNS = (
    "id",
    "title",
    "description",
    "brand",
    "seller_category",
    "labels",
    "split",
    "reviewer",
    "reviewed_at",
    "model_version",
    "decision",
    "item_id",
)
AUDIT_COLUMNS = ("id", "at", "actor", "action", "item_id", "review_id", "before", "after")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


@dataclass
class ExportSummary:
    """What an export wrote."""

    rows: int
    needs_info: int
    undecided: int
    path: str
    audit_rows: int = 0
    audit_path: str | None = None


def reviewed_rows(session: Session) -> Iterator[dict[str, Any] | str]:
    """Corpus-schema rows of decided items; yields a reason string for each item left out."""
    stmt = select(Item).where(Item.status.in_(("decided", "disagreement"))).order_by(Item.id)
    for item in session.scalars(stmt):
        outcome = final_outcome(item.reviews, item.required_reviews)
        if outcome is None:
            yield "undecided"
            continue
        if outcome.decision == "needs_info":
            yield "needs_info"
            continue
        yield {
            "id": item.external_id or f"review-{item.id}",
            "title": item.title,
            "description": _description(item),
            "brand": item.brand,
            "seller_category": item.seller_category,
            "labels": outcome.labels,
            "split": "train",
            "reviewer": ",".join(outcome.reviewers),
            "reviewed_at": outcome.decided_at.isoformat() if outcome.decided_at else None,
            "model_version": outcome.model_version,
            "decision": outcome.decision,
            "item_id": item.id,
        }


def _description(item: Item) -> str:
    """The description with the attributes folded in front, as the model read them.

    The corpus schema has no attributes; `build_text` puts "key: value" parts just before the
    description, so this keeps the training text identical to the text the reviewer judged.
    """
    parts = [f"{k}: {v}" for k, v in (item.attributes or {}).items() if v not in (None, "") and k]
    if item.description:
        parts.append(item.description)
    return FIELD_SEPARATOR.join(parts)


def export_reviews(session: Session, path: Path) -> ExportSummary:
    """Write decided reviews to `path` (.jsonl or .csv; labels '|'-joined in CSV)."""
    path = Path(path)
    name = path.name.lower()
    kind = "csv" if name.endswith(".csv") else "jsonl" if name.endswith((".jsonl", ".json")) else ""
    if not kind:
        raise InputError(f"{path}: export to a .jsonl or .csv file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    counts = {"rows": 0, "needs_info": 0, "undecided": 0}
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle) if kind == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_COLUMNS)
        for row in reviewed_rows(session):
            if isinstance(row, str):
                counts[row] += 1
                continue
            counts["rows"] += 1
            if writer is not None:
                # Training data stays verbatim; only the audit CSV is meant for spreadsheets.
                writer.writerow(
                    ["|".join(row[c]) if c == "labels" else row[c] for c in EXPORT_COLUMNS]
                )
            else:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return ExportSummary(counts["rows"], counts["needs_info"], counts["undecided"], str(path))


def export_audit_csv(session: Session, path: Path, batch: int = 1000) -> int:
    """Write every audit event to a CSV with formula-looking cells neutralised; returns rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(AUDIT_COLUMNS)
        last = 0
        while True:
            stmt = select(AuditEvent).where(AuditEvent.id > last).order_by(AuditEvent.id)
            events = list(session.scalars(stmt.limit(batch)))
            if not events:
                break
            for e in events:
                writer.writerow(
                    [
                        neutralize_cell(v)
                        for v in (
                            e.id,
                            e.at.isoformat(),
                            e.actor,
                            e.action,
                            e.item_id,
                            e.review_id,
                            json.dumps(e.before, ensure_ascii=False) if e.before else "",
                            json.dumps(e.after, ensure_ascii=False) if e.after else "",
                        )
                    ]
                )
                written += 1
            last = events[-1].id
    tmp.replace(path)
    return written
