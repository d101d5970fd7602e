"""The review store's tables (SQLAlchemy 2, typed mappings).

Argilla's split, kept: a model's **suggestion** (probabilities, decisions, model version) is a row
apart from a person's **review** (labels, decision, status draft/submitted/discarded). A claim is a
draft review with a lease. `items.status` is a cache written only from `queue.item_status`, the
one pure function over an item's suggestions and reviews; `items.version` is bumped by every
change to an item and its reviews, which is how concurrent claims and submissions are detected.

Audit events are append-only: this module maps them, `audit.record_event` inserts them, and no
code path updates or deletes one; the migration adds database triggers that refuse it as well.

Times are stored as naive UTC (SQLite has no time zones) and read back as aware UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ITEM_STATUSES = ("pending", "in_review", "decided", "disagreement")
REVIEW_STATUSES = ("draft", "submitted", "discarded")
REVIEW_DECISIONS = ("controlled", "not_controlled", "needs_info")
ROLES = ("reviewer", "admin")
EXTERNAL_ID_MAX = 500  # characters of a listing's own id the queue keeps

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Now, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC and returned as aware UTC on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use an aware datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        when: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint names Alembic can rely on."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A person (or a service) who reviews or administers."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str | None] = mapped_column(String(300), default=None)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Item(Base):
    """A snapshot of one catalog listing as it entered the queue."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_hash: Mapped[str] = mapped_column(String(64), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_MAX), default=None)
    source: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    brand: Mapped[str] = mapped_column(Text, default="")
    seller_category: Mapped[str] = mapped_column(Text, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    required_reviews: Mapped[int] = mapped_column(Integer, default=1)
    # Caches, written from the latest suggestion and from queue.item_status only.
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    model_version: Mapped[str] = mapped_column(String(100), default="", index=True)
    suggested_labels: Mapped[str] = mapped_column(String(500), default="|")
    margin: Mapped[float] = mapped_column(Float, default=1.0)
    entropy: Mapped[float] = mapped_column(Float, default=0.0)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    suggestions: Mapped[list[Suggestion]] = relationship(
        back_populates="item", order_by="Suggestion.id", lazy="selectin"
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="item", order_by="Review.id", lazy="selectin"
    )


Index("ix_items_queue", Item.status, Item.margin)


class Suggestion(Base):
    """What one model version said about an item."""

    __tablename__ = "suggestions"
    __table_args__ = (UniqueConstraint("item_id", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    taxonomy_version: Mapped[str] = mapped_column(String(50))
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    label_decisions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    flag_thresholds: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    decision: Mapped[str] = mapped_column(String(20))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    margin: Mapped[float] = mapped_column(Float)
    entropy: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    item: Mapped[Item] = relationship(back_populates="suggestions")


class Review(Base):
    """What one person decided (or is deciding: a draft is a claim with a lease)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    suggestion_id: Mapped[int | None] = mapped_column(ForeignKey("suggestions.id"), default=None)
    reviewer: Mapped[str] = mapped_column(String(120), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="review")  # review | adjudication
    status: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    discard_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    labels: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    decision: Mapped[str | None] = mapped_column(String(20), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    model_version: Mapped[str] = mapped_column(String(100), default="")
    claimed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    item: Mapped[Item] = relationship(back_populates="reviews")


class AuditEvent(Base):
    """One append-only record: who did what, when, and the state before and after."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(60))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id"), default=None, index=True)
    review_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"), default=None)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
