"""The review UI at `/review` and the JSON endpoints at `/v1/review/*`, in the API's process.

Handlers are thin: authenticate, authorize, call `queue.py`, render. Pages are server-rendered
Jinja2 with autoescaping on (a listing holding `<script>` shows as text) and one small
same-origin script for keyboard shortcuts; the Content-Security-Policy allows scripts and styles
from this origin only. Every form carries a CSRF token; sessions are signed cookies that expire.
The JSON endpoints use the API's keys (scope `review`, and `admin` for admin data) or a review
user's own API key.

Database work is synchronous (SQLAlchemy); handlers are plain `def`s, which FastAPI runs in its
thread pool, so the event loop that micro-batches classification is never blocked by them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from serving.api.deps import DEVELOPMENT_KEY, AppState, authenticate_key
from serving.api.errors import ApiError, envelope
from serving.contract.errors import DualscreenError
from serving.contract.schemas import Item as ItemIn
from serving.contract.text import build_text
from serving.predictor import Predictor
from serving.review import db
from serving.review.audit import event_dict, item_events, list_events, record_event
from serving.review.explain import ExplainCache, Segment, Term, highlight, occlusion
from serving.review.models import Item, User, utcnow
from serving.review.queue import (
    ConflictError,
    QueueFilters,
    ReviewError,
    active_draft,
    claim_item,
    claim_next,
    conflict_detail,
    count_by_status,
    decision_for,
    enqueue_predictions,
    facet_values,
    final_outcome,
    item_dict,
    item_status,
    list_queue,
    release_expired,
    review_dict,
    skip_review,
    submit_review,
)
from serving.review.security import LoginLimiter, SessionSigner
from serving.review.similar import Doc, SimilarCache
from serving.review.stats import admin_stats, known_labels
from serving.review.store import ReviewStore
from serving.review.users import authenticate, list_users, user_by_api_key

log = logging.getLogger("dualscreen.review")

SESSION_COOKIE = "ds_review_session"
LOGIN_COOKIE = "ds_review_login"
SIMILAR_POOL = 3000
MESSAGES = {
    "submitted": "Submitted. Here is the next item.",
    "submitted_last": "Submitted. Nothing left to claim under these filters.",
    "skipped": "Skipped. Here is the next item.",
    "empty": "Nothing to claim under these filters.",
    "logged_out": "You are logged out.",
    "expired": "Your session expired; log in again.",
}
STORE_DOWN = "review store unavailable; retry shortly"
_STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


# ---------------------------------------------------------------------------------------------
# The service object: store, signer, limiter, caches


class ReviewService:
    """Everything the review handlers share; created by `install_review`, the store lazily."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        s = state.settings
        self.url = (
            s.database_url.get_secret_value() if s.database_url is not None else db.default_url()
        )
        self.signer = SessionSigner(self._secret(), s.session_max_age_s)
        self.limiter = LoginLimiter(s.login_max_failures, s.login_window_s)
        self.explanations = ExplainCache()
        self.similar = SimilarCache()
        self._store: ReviewStore | None = None
        self._lock = threading.Lock()
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("serving.review", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["pretty_json"] = _pretty_json
        env.filters["pct"] = lambda p: f"{100 * float(p):.1f} %"
        self.templates = Jinja2Templates(env=env)

    def _secret(self) -> str:
        s = self.state.settings
        if s.session_secret is not None:
            return s.session_secret.get_secret_value()
        if s.session_secret_file is not None and s.session_secret_file.exists():
            return s.session_secret_file.read_text(encoding="utf-8").strip()
        log.warning(
            "no DUALSCREEN_SESSION_SECRET: review sessions use a per-process secret and end "
            "when the process restarts"
        )
        return secrets.token_urlsafe(32)

    def store(self) -> ReviewStore:
        """The review store, opened (and migrated, if allowed) on first use."""
        with self._lock:
            if self._store is None:
                try:
                    self._store = ReviewStore.open(
                        self.url, migrate=self.state.settings.database_auto_migrate
                    )
                except DualscreenError:
                    raise
                except Exception as exc:
                    log.exception("cannot open the review store")
                    raise ApiError(503, f"review store unavailable: {type(exc).__name__}") from None
                log.info("review store: %s", self._store.url)
            return self._store

    def close(self) -> None:
        """Dispose of the store's connections."""
        with self._lock:
            if self._store is not None:
                self._store.dispose()
                self._store = None

    @property
    def lease_s(self) -> int:
        """Claim lease in seconds."""
        return self.state.settings.claim_lease_s

    @property
    def predictor(self) -> Predictor | None:
        """The loaded model, when ready."""
        return self.state.predictor if self.state.ready else None


def get_service(request: Request) -> ReviewService:
    """The review service of this app."""
    svc: ReviewService = request.app.state.dualscreen.extras["review"]
    return svc


Service = Annotated[ReviewService, Depends(get_service)]


def _pretty_json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------
# Scoring and enqueueing (API, classify?enqueue=true)


def _flag_thresholds(predictor: Predictor) -> dict[str, float]:
    return {lb: t.flag for lb, t in predictor.manifest.thresholds.items()}


def scored_items(predictor: Predictor, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Listing dicts with the model's text, probabilities and decisions, ready to enqueue."""
    predictions = predictor.predict(records)
    out = []
    for record, p in zip(records, predictions, strict=True):
        out.append(
            {
                "id": record.get("id"),
                "title": record.get("title") or "",
                "description": record.get("description") or "",
                "brand": record.get("brand") or "",
                "seller_category": record.get("seller_category") or "",
                "attributes": record.get("attributes") or {},
                "text": p.text,
                "probabilities": p.result.probabilities,
                "label_decisions": p.result.label_decisions,
                "decision": p.result.decision,
                "reasons": p.result.reasons,
            }
        )
    return out


def enqueue_scored(
    svc: ReviewService,
    predictor: Predictor,
    items: list[dict[str, Any]],
    source: str,
    actor: str,
) -> int:
    """Enqueue listings that already carry the predictor's output."""
    m = predictor.manifest
    return enqueue_predictions(
        svc.store(),
        items,
        m.name,
        m.version,
        m.taxonomy_version,
        source,
        flag_thresholds=_flag_thresholds(predictor),
        double_review_share=svc.state.settings.double_review_share,
        actor=actor,
    )


def enqueue_classified(
    state: AppState,
    items: list[ItemIn],
    texts: list[str],
    decisions: list[Any],
    actor: str,
) -> int:
    """`/v1/classify?enqueue=true`: queue the flagged and review items of a classified batch."""
    svc: ReviewService = state.extras["review"]
    assert state.predictor is not None
    chosen = []
    for item, text, d in zip(items, texts, decisions, strict=True):
        if d.decision == "clear":
            continue
        chosen.append(
            {
                "id": item.id,
                "title": item.title,
                "description": item.description,
                "brand": item.brand,
                "seller_category": item.seller_category,
                "attributes": item.attributes,
                "text": text,
                "probabilities": d.probabilities,
                "label_decisions": d.label_decisions,
                "decision": d.decision,
                "reasons": d.reasons,
            }
        )
    if not chosen:
        return 0
    return enqueue_scored(svc, state.predictor, chosen, "classify", actor)


# ---------------------------------------------------------------------------------------------
# JSON API


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
        state: AppState = request.app.state.dualscreen
        found = authenticate_key(state, key)
        if found is DEVELOPMENT_KEY:
            return Actor("development", "admin")
        if found is not None:
            if "review" not in found.scopes:
                raise ApiError(403, "this API key lacks the 'review' scope")
            if needed == "admin" and "admin" not in found.scopes:
                raise ApiError(403, "this API key lacks the 'admin' scope")
            return Actor(f"key:{found.name}", "admin" if "admin" in found.scopes else "reviewer")
        svc = get_service(request)
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
    if len(body.items) > svc.state.settings.max_items:
        raise ApiError(
            413,
            f"{len(body.items)} items; at most {svc.state.settings.max_items} per request",
            {"max_items": svc.state.settings.max_items},
        )
    records = [i.model_dump() for i in body.items]
    for n, r in enumerate(records):
        if not build_text(r["title"], r["description"], r["brand"], r["seller_category"]).text:
            raise ApiError(
                422,
                f"items.{n}.title: missing text: title or description must hold words",
                [{"field": f"items.{n}.title", "problem": "missing text"}],
            )
    scored = scored_items(predictor, records)
    queued = enqueue_scored(svc, predictor, scored, body.source, actor.name)
    return {
        "queued": queued,
        "received": len(records),
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
            "items": [_queue_row(i, now) for i in items],
        }


def _queue_row(item: Item, now: dt.datetime) -> dict[str, Any]:
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


def _claim_dict(review: Any, item: Item, now: dt.datetime) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------
# Web pages


@dataclass(frozen=True)
class WebUser:
    """The logged-in user of a page request."""

    id: int
    name: str
    role: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        """Admin role."""
        return self.role == "admin"


class PageError(Exception):
    """An error shown as an HTML page."""

    def __init__(self, status: int, message: str, user: WebUser | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.user = user


class LoginRequired(Exception):
    """Redirect to the log-in page."""

    def __init__(self, next_path: str, expired: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.expired = expired


web = APIRouter(prefix="/review", include_in_schema=False)


def _secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _render(
    svc: ReviewService,
    request: Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    base: dict[str, Any] = {"user": None, "message": None}
    response = svc.templates.TemplateResponse(request, template, base | context, status_code=status)
    _secure_headers(response)
    return response


def current_user(request: Request, svc: ReviewService) -> WebUser:
    """The session's user, or `LoginRequired` (also when the session expired)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    data = svc.signer.read(cookie)
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    if data is None:
        raise LoginRequired(path, expired=bool(cookie))
    with svc.store().reader() as session:
        user = session.get(User, data.user_id)
        if user is None or not user.active:
            raise LoginRequired(path)
        return WebUser(user.id, user.name, user.role, svc.signer.csrf_token(data.sid))


def _page_user(request: Request, svc: Service) -> WebUser:
    """`current_user` as a dependency: it runs before the form is validated, so an anonymous post
    goes to the log-in page instead of learning which fields the form needs."""
    return current_user(request, svc)


PageUser = Annotated[WebUser, Depends(_page_user)]


def _check_post(request: Request, svc: ReviewService, user: WebUser, csrf: str | None) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != expected:
            raise PageError(403, "cross-origin form post refused", user)
    data = svc.signer.read(request.cookies.get(SESSION_COOKIE))
    if data is None or not svc.signer.check_csrf(data.sid, csrf):
        raise PageError(403, "the form's security token is missing or stale; reload the page", user)


def _filters_from(params: dict[str, str]) -> QueueFilters:
    def num(name: str) -> float | None:
        value = (params.get(name) or "").strip()
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            raise ReviewError(f"{name} must be a number") from None
        if not 0 <= number <= 1e6:
            raise ReviewError(f"{name} must be between 0 and 1000000")
        return number

    order = params.get("order") or "margin"
    return QueueFilters(
        label=(params.get("label") or None),
        source=(params.get("source") or None),
        model_version=(params.get("model_version") or None),
        min_age_hours=num("min_age_hours"),
        max_age_hours=num("max_age_hours"),
        order=order,
    )


def _query_filters(raw: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    keep = ("label", "source", "model_version", "min_age_hours", "max_age_hours", "order")
    return {k: v for k, v in parse_qsl(raw or "")[:20] if k in keep and len(v) <= 200}


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@web.get("")
@web.get("/")
def page_root(request: Request, svc: Service) -> Response:
    """Start at the queue."""
    return _redirect("/review/queue")


@web.get("/login")
def page_login(
    request: Request,
    svc: Service,
    next: str = "/review/queue",
    msg: str | None = None,
) -> Response:
    """The log-in form."""
    token = secrets.token_urlsafe(24)
    response = _render(
        svc,
        request,
        "login.html",
        {"next": _safe_next(next), "login_token": token, "message": MESSAGES.get(msg or "")},
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/review",
    )
    return response


def _safe_next(path: str) -> str:
    # Only same-site paths under /review: never an open redirect.
    if not path.startswith("/review") or path.startswith("//") or "\\" in path:
        return "/review/queue"
    return path


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@web.post("/login")
def page_login_post(
    request: Request,
    svc: Service,
    name: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/review/queue",
) -> Response:
    """Check the password and start a session."""
    cookie_token = request.cookies.get(LOGIN_COOKIE)
    if not cookie_token or not secrets.compare_digest(cookie_token, csrf):
        raise PageError(403, "the log-in form expired; reload the page")
    client = _client(request)
    wait = svc.limiter.retry_after(name, client)
    if wait:
        response = _render(
            svc,
            request,
            "login.html",
            {
                "next": _safe_next(next),
                "login_token": cookie_token,
                "error": f"Too many failed log-ins. Try again in {wait} s.",
            },
            status=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    user_id: int | None = None
    with svc.store().transaction() as session:
        user = authenticate(session, name, password)
        if user is None:
            svc.limiter.failed(name, client)
            record_event(session, name[:120] or "?", "login.fail", after={"client": client})
        else:
            record_event(session, user.name, "login", after={"client": client})
            user_id = user.id
    if user_id is None:
        return _render(
            svc,
            request,
            "login.html",
            {
                "next": _safe_next(next),
                "login_token": cookie_token,
                "error": "Wrong name or password.",
            },
            status=401,
        )
    svc.limiter.succeeded(name, client)
    value, _ = svc.signer.issue(user_id)
    redirect = _redirect(_safe_next(next))
    redirect.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=svc.signer.max_age_s,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    redirect.delete_cookie(LOGIN_COOKIE, path="/review")
    return redirect


@web.post("/logout")
def page_logout(
    request: Request, svc: Service, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """End the session."""
    user = current_user(request, svc)
    _check_post(request, svc, user, csrf)
    response = _redirect("/review/login?msg=logged_out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@web.get("/queue")
def page_queue(request: Request, svc: Service, msg: str | None = None) -> Response:
    """Counts, filters and the open items in queue order."""
    user = current_user(request, svc)
    raw = _query_filters(request.url.query)
    try:
        filters = _filters_from(raw)
    except ReviewError as exc:
        raise PageError(422, str(exc), user) from None
    now = utcnow()
    with svc.store().transaction() as session:
        release_expired(session, now)
    with svc.store().reader() as session:
        items = list_queue(session, filters, now, limit=100)
        rows = [_queue_row(i, now) for i in items]
        context = {
            "user": user,
            "counts": count_by_status(session),
            "matching": count_by_status(session, filters, now),
            "rows": rows,
            "filters": raw,
            "filter_qs": urlencode(filters.as_params()),
            "facets": facet_values(session),
            "labels": known_labels(session),
            "message": MESSAGES.get(msg or ""),
        }
    return _render(svc, request, "queue.html", context)


@web.post("/claim")
def page_claim_next(
    request: Request,
    svc: Service,
    csrf: Annotated[str, Form(max_length=200)] = "",
    filters: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Claim the next item and open it."""
    user = current_user(request, svc)
    _check_post(request, svc, user, csrf)
    return _claim_and_go(svc, user, filters, empty_msg="empty")


def _claim_and_go(
    svc: ReviewService,
    user: WebUser,
    filters_qs: str,
    empty_msg: str,
    found_msg: str | None = None,
) -> Response:
    raw = _query_filters(filters_qs)
    try:
        filters = _filters_from(raw)
    except ReviewError as exc:
        raise PageError(422, str(exc), user) from None
    with svc.store().transaction() as session:
        review = claim_next(session, user.name, filters, svc.lease_s)
        item_id = review.item_id if review is not None else None
    if item_id is None:
        return _redirect("/review/queue?" + urlencode(filters.as_params() | {"msg": empty_msg}))
    params = filters.as_params() | ({"msg": found_msg} if found_msg else {})
    qs = urlencode(params)
    return _redirect(f"/review/items/{item_id}" + (f"?{qs}" if qs else ""))


def _explain_for(
    svc: ReviewService, item: Item, probabilities: dict[str, float], targets: list[str]
) -> dict[str, list[Term]]:
    predictor = svc.predictor
    if predictor is None or not item.text or not targets:
        return {}
    labels = predictor.labels
    targets = [t for t in targets if t in labels]
    key = (predictor.manifest.version, item.text)
    cached = svc.explanations.get(key)
    if cached is None:
        cached = occlusion(
            predictor.probabilities,
            item.text,
            labels,
            labels,
            max_words=svc.state.settings.explain_max_words,
        )
        svc.explanations.put(key, cached)
    return {t: cached.get(t, []) for t in targets}


def _similar_for(svc: ReviewService, session: Any, item: Item) -> list[dict[str, Any]]:
    from sqlalchemy import func

    decided = select(func.count(), func.max(Item.id)).where(Item.status == "decided")
    count, newest = session.execute(decided).one()
    key = (int(count or 0), int(newest or 0))
    index = svc.similar.get(key, None)
    if index is None:
        rows = session.execute(
            select(Item.id, Item.text)
            .where(Item.status == "decided")
            .order_by(Item.id.desc())
            .limit(SIMILAR_POOL)
        ).all()
        index = svc.similar.get(key, [Doc(int(i), str(t)) for i, t in rows])
    assert index is not None
    found = index.query(item.text, k=5, exclude=item.id)
    out = []
    for other_id, score in found:
        other = session.get(Item, other_id)
        if other is None:
            continue
        outcome = final_outcome(other.reviews, other.required_reviews)
        out.append(
            {
                "item_id": other.id,
                "title": other.title,
                "score": score,
                "labels": outcome.labels if outcome else [],
                "decision": outcome.decision if outcome else "",
            }
        )
    return out


def _label_rows(
    svc: ReviewService,
    probabilities: dict[str, float],
    label_decisions: dict[str, str],
    terms: dict[str, list[Term]],
    checked: set[str],
) -> list[dict[str, Any]]:
    predictor = svc.predictor
    rows = []
    for n, (label, p) in enumerate(probabilities.items(), start=1):
        refs: list[str] = []
        display = label
        definition = ""
        if predictor is not None:
            try:
                category = predictor.taxonomy.category(label)
                refs, display, definition = (
                    list(category.control_refs),
                    category.display_name,
                    category.definition,
                )
            except DualscreenError:
                pass
        rows.append(
            {
                "key": n if n <= 9 else None,
                "label": label,
                "display": display,
                "definition": definition,
                "probability": p,
                "decision": label_decisions.get(label, ""),
                "control_refs": refs,
                "terms": terms.get(label, []),
                "checked": label in checked,
            }
        )
    return rows


@web.get("/items/{item_id}")
def page_item(item_id: int, request: Request, svc: Service, msg: str | None = None) -> Response:
    """One item: listing, model labels, highlighted words, similar items, the decision form."""
    user = current_user(request, svc)
    now = utcnow()
    with svc.store().reader() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise PageError(404, f"no review item {item_id}", user)
        status = item_status(item.reviews, item.required_reviews, now)
        suggestion = item.suggestions[-1] if item.suggestions else None
        probabilities = dict(suggestion.probabilities) if suggestion else {}
        label_decisions = dict(suggestion.label_decisions) if suggestion else {}
        suggested = [lb for lb in item.suggested_labels.split("|") if lb]
        targets = suggested or sorted(probabilities, key=lambda lb: -probabilities[lb])[:2]
        terms = _explain_for(svc, item, probabilities, targets)
        draft = active_draft(item, user.name, now)
        outcome = final_outcome(item.reviews, item.required_reviews)
        context = {
            "user": user,
            "item": item,
            "status": status,
            "suggestion": suggestion,
            "suggested": suggested,
            "label_rows": _label_rows(svc, probabilities, label_decisions, terms, set(suggested)),
            "segments": highlight(item.text, terms),
            "similar": _similar_for(svc, session, item),
            "draft": draft,
            "outcome": outcome,
            "reviews": [r for r in item.reviews if r.status == "submitted"],
            "filter_qs": urlencode(_query_filters(request.url.query)),
            "can_claim": draft is None
            and (
                status in ("pending", "in_review") or (status == "disagreement" and user.is_admin)
            ),
            "explained_with": svc.predictor.manifest.version if svc.predictor else None,
            "message": MESSAGES.get(msg or ""),
        }
    return _render(svc, request, "item.html", context)


@web.post("/items/{item_id}/claim")
def page_claim_item(
    item_id: int,
    request: Request,
    svc: Service,
    csrf: Annotated[str, Form(max_length=200)] = "",
    filters: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Claim this item."""
    user = current_user(request, svc)
    _check_post(request, svc, user, csrf)
    try:
        with svc.store().transaction() as session:
            claim_item(session, item_id, user.name, user.is_admin, svc.lease_s)
    except ConflictError as exc:
        return _conflict_page(svc, request, user, item_id, str(exc))
    except ReviewError as exc:
        raise PageError(exc.status, str(exc), user) from None
    qs = urlencode(_query_filters(filters))
    return _redirect(f"/review/items/{item_id}" + (f"?{qs}" if qs else ""))


def _conflict_page(
    svc: ReviewService, request: Request, user: WebUser, item_id: int, message: str
) -> Response:
    with svc.store().reader() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise PageError(404, f"no review item {item_id}", user)
        detail = conflict_detail(item, utcnow())
    return _render(
        svc,
        request,
        "conflict.html",
        {"user": user, "item_id": item_id, "error": message, "detail": detail},
        status=409,
    )


@web.post("/items/{item_id}/submit")
def page_submit(
    item_id: int,
    request: Request,
    svc: Service,
    user: PageUser,
    review_id: Annotated[int, Form(ge=1, le=2**62)],
    version: Annotated[int, Form(ge=1, le=2**62)],
    action: Annotated[str, Form(max_length=20)] = "submit",
    labels: Annotated[list[str] | None, Form(max_length=100)] = None,
    note: Annotated[str, Form(max_length=5000)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    filters: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Accept the suggestion, submit changed labels, mark needs-info, or skip."""
    _check_post(request, svc, user, csrf)
    chosen = list(labels or [])
    try:
        with svc.store().transaction() as session:
            if action == "skip":
                skip_review(session, item_id, review_id, version, user.name, note)
            else:
                if action == "accept":
                    item = session.get(Item, item_id)
                    if item is None:
                        raise PageError(404, f"no review item {item_id}", user)
                    chosen = [lb for lb in item.suggested_labels.split("|") if lb]
                if action == "needs_info":
                    decision = "needs_info"
                elif action in ("submit", "accept"):
                    decision = decision_for(chosen)
                else:
                    raise PageError(422, f"unknown action {action!r}", user)
                submit_review(
                    session, item_id, review_id, version, user.name, chosen, decision, note
                )
    except ConflictError as exc:
        return _conflict_page(svc, request, user, item_id, str(exc))
    except ReviewError as exc:
        raise PageError(exc.status, str(exc), user) from None
    return _claim_and_go(
        svc,
        user,
        filters,
        empty_msg="submitted_last" if action != "skip" else "empty",
        found_msg="submitted" if action != "skip" else "skipped",
    )


@web.get("/items/{item_id}/history")
def page_history(item_id: int, request: Request, svc: Service) -> Response:
    """Every suggestion, claim and review of the item, from the audit log."""
    user = current_user(request, svc)
    now = utcnow()
    with svc.store().reader() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise PageError(404, f"no review item {item_id}", user)
        context = {
            "user": user,
            "item": item,
            "status": item_status(item.reviews, item.required_reviews, now),
            "events": item_events(session, item_id),
            "outcome": final_outcome(item.reviews, item.required_reviews),
        }
    return _render(svc, request, "history.html", context)


@web.get("/admin")
def page_admin(request: Request, svc: Service) -> Response:
    """Throughput per reviewer, agreement, queue age, disagreements and users (admins only)."""
    user = current_user(request, svc)
    if not user.is_admin:
        raise PageError(403, "the admin page is for admins", user)
    with svc.store().reader() as session:
        stats = admin_stats(session)
        disagreements = list(
            session.scalars(
                select(Item).where(Item.status == "disagreement").order_by(Item.id).limit(100)
            )
        )
        context = {
            "user": user,
            "stats": stats,
            "disagreements": disagreements,
            "users": list_users(session),
        }
    return _render(svc, request, "admin.html", context)


@web.get("/static/{name}")
def page_static(name: str) -> Response:
    """The review UI's script and style sheet."""
    if name not in _STATIC:
        raise ApiError(404, "not found")
    body = resources.files("serving.review").joinpath("static", name).read_bytes()
    response = Response(body, media_type=_STATIC[name])
    response.headers["Cache-Control"] = "max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# ---------------------------------------------------------------------------------------------
# Installation


def install_review(app: FastAPI, state: AppState) -> ReviewService:
    """Add the review pages and JSON endpoints to the API app."""
    svc = ReviewService(state)
    state.extras["review"] = svc
    app.include_router(api)
    app.include_router(web)

    async def on_page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return _render(
            svc,
            request,
            "error.html",
            {"user": exc.user, "status": exc.status, "error": exc.message},
            status=exc.status,
        )

    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        query = {"next": exc.next_path} | ({"msg": "expired"} if exc.expired else {})
        response = _redirect("/review/login?" + urlencode(query))
        if exc.expired:
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def on_review_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ReviewError)
        return envelope(exc.status, str(exc), exc.detail)

    async def on_store_unavailable(request: Request, exc: Exception) -> Response:
        # The database restarted, failed over or is saturated: a retryable 503, not a 500. The
        # pool's pre-ping reconnects once it is back; a retried submission that had committed
        # gets 409 naming the caller's own review, so nothing is recorded twice.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        log.warning(
            "review store unavailable (%s %s): %s", request.method, request.url.path, reason
        )
        retry_after = state.settings.retry_after_s
        headers = {"Retry-After": str(retry_after)}
        if request.url.path.startswith("/review"):
            page = _render(svc, request, "error.html", {"status": 503, "error": STORE_DOWN}, 503)
            page.headers.update(headers)
            return page
        return envelope(503, STORE_DOWN, {"retry_after_s": retry_after}, headers)

    app.add_exception_handler(PageError, on_page_error)
    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(ReviewError, on_review_error)
    for unavailable in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(unavailable, on_store_unavailable)
    return svc


__all__ = [
    "Actor",
    "ReviewService",
    "Segment",
    "enqueue_classified",
    "install_review",
    "scored_items",
]
