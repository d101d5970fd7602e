"""The audit log: every change to the review store is recorded here, and nothing here changes.

Only two operations exist: `record_event` (insert) and the readers. There is no update or delete
path in the code and no endpoint for one; the database refuses both with triggers (migration
0001), so even a direct SQL session cannot rewrite history without dropping the schema.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.review.models import AuditEvent, utcnow


def record_event(
    session: Session,
    actor: str,
    action: str,
    item_id: int | None = None,
    review_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> AuditEvent:
    """Append one event (flushed with the caller's transaction, so it commits with the change)."""
    event = AuditEvent(
        at=at or utcnow(),
        actor=actor,
        action=action,
        item_id=item_id,
        review_id=review_id,
        before=before,
        after=after,
    )
    session.add(event)
    session.flush()
    return event


def item_events(session: Session, item_id: int) -> list[AuditEvent]:
    """Every event about one item, oldest first."""
    stmt = select(AuditEvent).where(AuditEvent.item_id == item_id).order_by(AuditEvent.id)
    return list(session.scalars(stmt))


def list_events(
    session: Session, after_id: int = 0, limit: int = 100, actor: str | None = None
) -> list[AuditEvent]:
    """Events with id above `after_id`, oldest first (page with the last id seen)."""
    stmt = select(AuditEvent).where(AuditEvent.id > after_id)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    return list(session.scalars(stmt.order_by(AuditEvent.id).limit(limit)))


def event_dict(event: AuditEvent) -> dict[str, Any]:
    """An event as JSON-ready data."""
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "item_id": event.item_id,
        "review_id": event.review_id,
        "before": event.before,
        "after": event.after,
    }
