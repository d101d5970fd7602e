"""The review UI's pages at `/review`: queue, claim, item, submit, history, admin, static files.

Pages are server-rendered Jinja2 with autoescaping on (a listing holding `<script>` shows as
text) and one small same-origin script for keyboard shortcuts; the Content-Security-Policy
(`sessions.secure_headers`) allows scripts and styles from this origin only. Every form carries a
CSRF token. Handlers are thin: check the session, call `queue.py`, render.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select

from serving.contract.errors import DualscreenError
from serving.contract.schemas import Term
from serving.http_errors import ApiError
from serving.review.audit import item_events
from serving.review.errors import ConflictError, ReviewError
from serving.review.explain import highlight
from serving.review.models import Item, utcnow
from serving.review.queue import (
    QueueFilters,
    active_draft,
    claim_item,
    claim_next,
    count_by_status,
    facet_values,
    list_queue,
    release_expired,
    skip_review,
    submit_review,
)
from serving.review.rules import decision_for, final_outcome, item_status
from serving.review.service import ReviewService, Service
from serving.review.sessions import (
    MESSAGES,
    PageError,
    PageUser,
    WebUser,
    check_post,
    current_user,
    redirect,
    render,
)
from serving.review.stats import admin_stats, known_labels
from serving.review.users import list_users
from serving.review.views import conflict_detail, queue_row

_STATIC = {"review.js": "text/javascript", "review.css": "text/css"}

web = APIRouter(prefix="/review", include_in_schema=False)


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
    keep = ("label", "source", "model_version", "min_age_hours", "max_age_hours", "order")
    return {k: v for k, v in parse_qsl(raw or "")[:20] if k in keep and len(v) <= 200}


@web.get("")
@web.get("/")
def page_root(request: Request, svc: Service) -> Response:
    """Start at the queue."""
    return redirect("/review/queue")


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
        rows = [queue_row(i, now) for i in items]
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
    return render(svc, request, "queue.html", context)


@web.post("/claim")
def page_claim_next(
    request: Request,
    svc: Service,
    csrf: Annotated[str, Form(max_length=200)] = "",
    filters: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Claim the next item and open it."""
    user = current_user(request, svc)
    check_post(request, svc, user, csrf)
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
        return redirect("/review/queue?" + urlencode(filters.as_params() | {"msg": empty_msg}))
    params = filters.as_params() | ({"msg": found_msg} if found_msg else {})
    qs = urlencode(params)
    return redirect(f"/review/items/{item_id}" + (f"?{qs}" if qs else ""))


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
        terms = svc.explain(item.text, targets)
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
            "similar": svc.similar_items(session, item),
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
    return render(svc, request, "item.html", context)


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
    check_post(request, svc, user, csrf)
    try:
        with svc.store().transaction() as session:
            claim_item(session, item_id, user.name, user.is_admin, svc.lease_s)
    except ConflictError as exc:
        return _conflict_page(svc, request, user, item_id, str(exc))
    except ReviewError as exc:
        raise PageError(exc.status, str(exc), user) from None
    qs = urlencode(_query_filters(filters))
    return redirect(f"/review/items/{item_id}" + (f"?{qs}" if qs else ""))


def _conflict_page(
    svc: ReviewService, request: Request, user: WebUser, item_id: int, message: str
) -> Response:
    with svc.store().reader() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise PageError(404, f"no review item {item_id}", user)
        detail = conflict_detail(item, utcnow())
    return render(
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
    check_post(request, svc, user, csrf)
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
    return render(svc, request, "history.html", context)


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
    return render(svc, request, "admin.html", context)


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
