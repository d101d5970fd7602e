"""The review queue as JSON under `/v1/review/*`: enqueue, list, claim, submit, skip, history,
audit and stats.

Callers authenticate with the API's keys (scope `review`, and `admin` for admin data; the same
rule as the classification API, `serving.auth_keys.authenticate_key`) or with a review user's own
API key. Handlers are thin: authenticate, call `queue.py` (or the intake), return its view.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from serving.auth_keys import DEVELOPMENT_KEY
from serving.contract.schemas import Item as ItemIn
from serving.contract.text import build_text
from serving.http_errors import ApiError
from serving.review.audit import event_dict, item_events, list_events
from serving.review.errors import ReviewError
from serving.review.intake import IntakePolicy
from serving.review.models import Item, Review, utcnow
from serving.review.queue import (
    QueueFilters,
    claim_item,
    claim_next,
    count_by_status,
    list_queue,
    release_expired,
    skip_review,
    submit_review,
)
from serving.review.rules import decision_for
from serving.review.service import Service, get_service
from serving.review.stats import admin_stats
from serving.review.users import user_by_api_key
from serving.review.views import item_dict, queue_row, review_dict


@dataclass(frozen=True)
class Actor:
    """Who is calling: a review user, or an API key of the key store."""

    name: str
    role: Literal["reviewer", "admin"]

    @property
    def is_admin(self) -> bool:
        """Admin role."""
        return self.role == "admin"


_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


def _api_actor(needed: Literal["review", "admin"]) -> Any:
    def check(request: Request, key: Annotated[str | None, Depends(_key_header)]) -> Actor:
        svc = get_service(request)
        found = svc.authenticate_key(key)
        if found is DEVELOPMENT_KEY:
            return Actor("development", "admin")
        if found is not None:
            if "review" not in found.scopes:
                raise ApiError(403, "this API key lacks the 'review' scope")
            if needed == "admin" and "admin" not in found.scopes:
                raise ApiError(403, "this API key lacks the 'admin' scope")
            return Actor(f"key:{found.name}", "admin" if "admin" in found.scopes else "reviewer")
        with svc.store().reader() as session:
            user = user_by_api_key(session, key) if key else None
        if user is None:
            raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})
        if needed == "admin" and user.role != "admin":
            raise ApiError(403, "this user is not an admin")
        return Actor(user.name, "admin" if user.role == "admin" else "reviewer")

    return check


ReviewActor = Annotated[Actor, Depends(_api_actor("review"))]
AdminActor = Annotated[Actor, Depends(_api_actor("admin"))]

api = APIRouter(
    prefix="/v1/review",
    tags=["review"],
    responses={503: {"description": "review store unavailable; retry after Retry-After seconds"}},
)
ItemId = Annotated[int, PathParam(ge=1, le=2**62, description="the review item's number")]


class EnqueueBody(BaseModel):
    """Listings to score and put in the review queue."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(min_length=1, description="listings (as for /v1/classify)")
    source: str = Field(default="api", min_length=1, max_length=200)


class FiltersBody(BaseModel):
    """Which part of the queue to claim from."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=100)
    source: str | None = Field(default=None, max_length=200)
    model_version: str | None = Field(default=None, max_length=100)
    min_age_hours: float | None = Field(default=None, ge=0, le=1e6)
    max_age_hours: float | None = Field(default=None, ge=0, le=1e6)
    order: Literal["margin", "entropy", "oldest", "newest"] = "margin"

    def filters(self) -> QueueFilters:
        """As queue filters."""
        return QueueFilters(**self.model_dump())


class SubmitBody(BaseModel):
    """A decision on a claimed item."""

    model_config = ConfigDict(extra="forbid")

    review_id: int = Field(ge=1, le=2**62)
    version: int = Field(ge=1, le=2**62, description="the claim's version, from the claim")
    labels: list[str] = Field(default_factory=list, max_length=100)
    decision: Literal["controlled", "not_controlled", "needs_info"] | None = Field(
        default=None, description="default: controlled with labels, else not_controlled"
    )
    note: str = Field(default="", max_length=5000)


class SkipBody(BaseModel):
    """Give a claimed item back."""

    model_config = ConfigDict(extra="forbid")

    review_id: int = Field(ge=1, le=2**62)
    version: int = Field(ge=1, le=2**62)
    note: str = Field(default="", max_length=5000)


def _as_api_error(exc: ReviewError) -> ApiError:
    return ApiError(exc.status, str(exc), exc.detail)


@api.post("/items", summary="Score listings and put them in the review queue.")
def api_enqueue(body: EnqueueBody, actor: ReviewActor, svc: Service) -> dict[str, Any]:
    """Score listings and put them in the review queue."""
    predictor = svc.predictor
    if predictor is None:
        raise ApiError(503, "model not loaded yet")
    max_items = svc.settings.max_items
    if len(body.items) > max_items:
        raise ApiError(
            413,
            f"{len(body.items)} items; at most {max_items} per request",
            {"max_items": max_items},
        )
    for n, i in enumerate(body.items):
        if not build_text(i.title, i.description, i.brand, i.seller_category).text:
            raise ApiError(
                422,
                f"items.{n}.title: missing text: title or description must hold words",
                [{"field": f"items.{n}.title", "problem": "missing text"}],
            )
    scored = predictor.score(body.items)
    result = svc.enqueue(scored, IntakePolicy.EVERY, body.source, actor.name)
    return {
        "queued": result.queued,
        "already_queued": result.already_queued,
        "received": result.received,
        "model": {"name": predictor.manifest.name, "version": predictor.manifest.version},
    }


@api.get("/queue", summary="Counts and the open items in queue order.")
def api_queue(
    actor: ReviewActor,
    svc: Service,
    label: Annotated[str | None, Query(max_length=100)] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    model_version: Annotated[str | None, Query(max_length=100)] = None,
    min_age_hours: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    max_age_hours: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    order: Literal["margin", "entropy", "oldest", "newest"] = "margin",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    """Counts and the open items in queue order."""
    try:
        filters = QueueFilters(label, source, model_version, min_age_hours, max_age_hours, order)
    except ReviewError as exc:
        raise _as_api_error(exc) from None
    now = utcnow()
    with svc.store().transaction() as session:
        release_expired(session, now)
    with svc.store().reader() as session:
        items = list_queue(session, filters, now, limit, offset)
        return {
            "counts": count_by_status(session),
            "matching": count_by_status(session, filters, now),
            "items": [queue_row(i, now) for i in items],
        }


@api.post("/claim", summary="Claim the next item in queue order (item is null when none).")
def api_claim_next(
    actor: ReviewActor, svc: Service, body: FiltersBody | None = None
) -> dict[str, Any]:
    """Claim the next item in queue order (item is null when none)."""
    try:
        filters = (body or FiltersBody()).filters()
    except ReviewError as exc:
        raise _as_api_error(exc) from None
    now = utcnow()
    with svc.store().transaction() as session:
        review = claim_next(session, actor.name, filters, svc.lease_s, now)
        if review is None:
            return {"item": None}
        item = session.get(Item, review.item_id)
        assert item is not None
        return _claim_dict(review, item, now)


def _claim_dict(review: Review, item: Item, now: dt.datetime) -> dict[str, Any]:
    return {
        "review_id": review.id,
        "version": review.version,
        "kind": review.kind,
        "lease_until": review.lease_until.isoformat(),
        "item": item_dict(item, now),
    }


@api.get("/items/{item_id}", summary="One item with its suggestions, reviews and status.")
def api_item(item_id: ItemId, actor: ReviewActor, svc: Service) -> dict[str, Any]:
    """One item with its suggestions, reviews and status."""
    with svc.store().reader() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise ApiError(404, f"no review item {item_id}")
        return item_dict(item)


@api.post("/items/{item_id}/claim", summary="Claim one item (admins adjudicate disagreements).")
def api_claim_item(item_id: ItemId, actor: ReviewActor, svc: Service) -> dict[str, Any]:
    """Claim one item (admins adjudicate disagreements)."""
    now = utcnow()
    try:
        with svc.store().transaction() as session:
            review = claim_item(session, item_id, actor.name, actor.is_admin, svc.lease_s, now)
            item = session.get(Item, item_id)
            assert item is not None
            return _claim_dict(review, item, now)
    except ReviewError as exc:
        raise _as_api_error(exc) from None


@api.post(
    "/items/{item_id}/submit",
    summary="Submit a decision on a claimed item (409 with the winning decision on conflict).",
)
def api_submit(
    item_id: ItemId, body: SubmitBody, actor: ReviewActor, svc: Service
) -> dict[str, Any]:
    """Submit a decision on a claimed item (409 with the winning decision on conflict)."""
    now = utcnow()
    decision = body.decision or decision_for(body.labels)
    try:
        with svc.store().transaction() as session:
            review = submit_review(
                session,
                item_id,
                body.review_id,
                body.version,
                actor.name,
                body.labels,
                decision,
                body.note,
                now,
            )
            item = session.get(Item, item_id)
            assert item is not None
            return {"review": review_dict(review), "item": item_dict(item, now)}
    except ReviewError as exc:
        raise _as_api_error(exc) from None


@api.post("/items/{item_id}/skip", summary="Give a claimed item back without deciding.")
def api_skip(item_id: ItemId, body: SkipBody, actor: ReviewActor, svc: Service) -> dict[str, Any]:
    """Give a claimed item back without deciding."""
    try:
        with svc.store().transaction() as session:
            review = skip_review(
                session, item_id, body.review_id, body.version, actor.name, body.note
            )
            return {"review": review_dict(review)}
    except ReviewError as exc:
        raise _as_api_error(exc) from None


@api.get("/items/{item_id}/history", summary="The item's audit trail, oldest first.")
def api_history(item_id: ItemId, actor: ReviewActor, svc: Service) -> dict[str, Any]:
    """The item's audit trail, oldest first."""
    with svc.store().reader() as session:
        if session.get(Item, item_id) is None:
            raise ApiError(404, f"no review item {item_id}")
        return {
            "item_id": item_id,
            "events": [event_dict(e) for e in item_events(session, item_id)],
        }


@api.get("/audit", summary="Audit events after an id, oldest first (read only).")
def api_audit(
    actor: AdminActor,
    svc: Service,
    after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Audit events after an id, oldest first (read only)."""
    with svc.store().reader() as session:
        events = list_events(session, after_id, limit)
        return {"events": [event_dict(e) for e in events]}


@api.get("/stats", summary="Throughput per reviewer, agreement (kappa per label), queue age.")
def api_stats(actor: AdminActor, svc: Service) -> dict[str, Any]:
    """Throughput per reviewer, agreement (kappa per label), queue age."""
    with svc.store().reader() as session:
        return admin_stats(session)
