"""Routes: health, readiness, info, metrics and classification."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Response
from numpy.typing import NDArray
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ConfigDict, Field, model_validator

from serving.api.batcher import QueueFull
from serving.api.deps import AppState, ClassifyKey, State
from serving.contract.decide import review_ceilings
from serving.contract.listing import CONTENT_FIELDS
from serving.contract.schemas import (
    ClassifyResponse,
    Item,
    ItemResult,
    LabelResult,
    ModelInfo,
    Term,
)
from serving.explain import plan_occlusion
from serving.http_errors import ApiError
from serving.predictor import Predictor, Prepared

router = APIRouter()
# Up to this many items are built and tokenised on the event loop (about 0.1 ms each); a thread
# hand-off costs as much again, so only larger requests go to a thread (issue 14).
INLINE_PREPARE_ITEMS = 8


class ClassifyBody(Item):
    """One item (its fields at the top level) or a batch (`items`)."""

    model_config = ConfigDict(extra="forbid")

    items: list[Item] | None = Field(default=None, description="a batch of items")

    @model_validator(mode="after")
    def _one_or_batch(self) -> ClassifyBody:
        single = self.id is not None or any(getattr(self, f) for f in CONTENT_FIELDS)
        if self.items is not None and single:
            raise ValueError("send either 'items' or one item's fields, not both")
        return self


@router.get("/health", summary="Process is alive.")
async def health() -> dict[str, str]:
    """Process is alive."""
    return {"status": "ok"}


@router.get(
    "/ready", summary="Model loaded and warmed up.", responses={503: {"description": "not ready"}}
)
async def ready(state: State) -> dict[str, str]:
    """Model loaded and warmed up."""
    if not state.ready:
        raise ApiError(503, "model not loaded yet")
    return {"status": "ready"}


def _predictor(state: AppState) -> Predictor:
    if state.predictor is None or not state.ready:
        raise ApiError(503, "model not loaded yet")
    return state.predictor


@router.get("/info", summary="Model, taxonomy, limits and backend.")
async def info(state: State, _: ClassifyKey) -> dict[str, Any]:
    """Model, taxonomy, limits and backend."""
    predictor = _predictor(state)
    m = predictor.manifest
    s = state.settings
    weights = (
        "model.skops"
        if m.kind == "tfidf"
        else (
            "model.int8.onnx"
            if predictor.backend.name in ("onnx-int8", "onnx-int8-fast", "cascade")
            else "model.onnx"
            if predictor.backend.name == "onnx"
            else "model.safetensors"
        )
    )
    return {
        "model": {
            "name": m.name,
            "version": m.version,
            "kind": m.kind,
            "sha256": m.files.get(weights),
            "file": weights,
            "base_model": m.base_model,
            "git_revision": m.git_revision,
            "created_at": m.created_at,
        },
        "taxonomy_version": m.taxonomy_version,
        "labels": m.labels,
        "backend": predictor.backend.name,
        "limits": {
            "max_items": s.max_items,
            "max_body_bytes": s.max_body_bytes,
            "max_text_chars": m.rules.max_chars,
            "max_tokens": m.rules.max_tokens,
            "request_timeout_s": s.request_timeout_s,
            "queue_max_items": s.queue_max_items,
        },
        "batching": {"max_batch": s.batch_max_size, "max_wait_ms": s.batch_max_wait_ms},
        "workers": {"processes": s.workers, "threads_each": s.threads_per_worker() or "all"},
        # The thresholds in use: a review budget set at start-up changes the review ones.
        "decisions": {
            "review_budget": (
                m.review_path.budget if m.review_path and m.review_path.budget else "none"
            ),
            "review_ceiling": m.review_path.review_ceiling if m.review_path else None,
            # the ceilings this model can be served at (DUALSCREEN_REVIEW_CEILING)
            "review_ceilings": review_ceilings(m),
            "thresholds": {lb: t.model_dump() for lb, t in m.thresholds.items()},
        },
    }


@router.get("/metrics", summary="Prometheus metrics.")
async def metrics(state: State, _: ClassifyKey) -> Response:
    """Prometheus metrics."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _has_surrogate(value: object) -> bool:
    return isinstance(value, str) and any("\ud800" <= ch <= "\udfff" for ch in value)


def _prepare_items(items: list[Item], predictor: Predictor) -> Prepared:
    """Build and encode the items' texts; 422 for a bad id or an item without text."""
    prepared = predictor.prepare(items)
    problems = []
    for i, (item, built) in enumerate(zip(items, prepared.built, strict=True)):
        if _has_surrogate(item.id):
            problems.append(
                {"field": f"items.{i}.id", "problem": "invalid unicode (a lone surrogate) in id"}
            )
        elif not built.text:
            problems.append(
                {
                    "field": f"items.{i}.title",
                    "problem": "missing text: title or description must hold words",
                }
            )
    if problems:
        raise ApiError(422, f"{problems[0]['field']}: {problems[0]['problem']}", problems)
    return prepared


async def _infer(state: AppState, texts: list[str]) -> NDArray[np.float64]:
    """Calibrated probabilities of built texts, through the micro-batcher."""
    predictor = _predictor(state)
    prepared = await asyncio.to_thread(predictor.prepare_texts, texts)
    return predictor.calibrate(await _run(state, prepared.inputs))


async def _run(state: AppState, inputs: list[Any]) -> NDArray[np.float32]:
    """Raw logits of prepared inputs, through the micro-batcher (429 when full, 503 on timeout)."""
    assert state.batcher is not None
    try:
        return await asyncio.wait_for(
            state.batcher.submit(inputs), timeout=state.settings.request_timeout_s
        )
    except QueueFull:
        state.metrics.rejected.labels("queue_full").inc()
        raise ApiError(
            429,
            "too many requests queued; retry shortly",
            headers={"Retry-After": str(state.settings.retry_after_s)},
        ) from None
    except TimeoutError:
        state.metrics.rejected.labels("timeout").inc()
        raise ApiError(
            503,
            f"no answer within {state.settings.request_timeout_s} s; retry later",
            headers={"Retry-After": str(state.settings.retry_after_s)},
        ) from None


async def _explain(state: AppState, text: str) -> dict[str, list[Term]]:
    """The words that drove each label (`serving.explain`, as the review UI), scored through the
    micro-batcher."""
    plan = plan_occlusion(text, state.settings.explain_max_words)
    if not plan.words:
        return {}
    return plan.terms(await _infer(state, list(plan.texts)), _predictor(state).labels)


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse,
    summary="Classify one or more listings.",
    responses={
        401: {"description": "no or invalid key"},
        403: {"description": "key lacks scope"},
        413: {"description": "too many items"},
        422: {"description": "invalid input"},
        429: {"description": "saturated; retry"},
        503: {"description": "not ready or timed out"},
    },
)
async def classify(
    body: ClassifyBody,
    state: State,
    key: ClassifyKey,
    response: Response,
    explain: Annotated[
        bool, Query(description="add the words that drove each flagged or review label")
    ] = False,
    enqueue: Annotated[
        bool,
        Query(
            description="also put flagged and review items in the review queue (needs the "
            "review scope; the count of new items comes back in the X-Review-Queued header, of "
            "items queued before in X-Review-Already-Queued)"
        ),
    ] = False,
) -> ClassifyResponse:
    """Classify one or more listings."""
    if enqueue and "review" not in key.scopes:
        raise ApiError(403, "enqueue=true needs an API key with the 'review' scope")
    if enqueue and state.review_intake is None:
        raise ApiError(503, "enqueue=true: this process serves no review queue")
    predictor = _predictor(state)
    items = body.items if body.items is not None else [Item(**body.model_dump(exclude={"items"}))]
    if not items:
        raise ApiError(
            422,
            "body.items: must hold at least 1 item",
            [{"field": "body.items", "problem": "must hold at least 1 item"}],
        )
    if len(items) > state.settings.max_items:
        raise ApiError(
            413,
            f"{len(items)} items; at most {state.settings.max_items} per request",
            {"max_items": state.settings.max_items},
        )
    prepared = (
        _prepare_items(items, predictor)
        if len(items) <= INLINE_PREPARE_ITEMS
        else await asyncio.to_thread(_prepare_items, items, predictor)
    )
    scored = predictor.finish(prepared, await _run(state, prepared.inputs))
    taxonomy = predictor.taxonomy
    labels = predictor.labels
    results = []
    for d in scored:
        explanation = await _explain(state, d.text) if explain and d.labels else {}
        state.metrics.items.labels(d.decision).inc()
        label_results = []
        for lb in labels:
            decision = d.label_decisions[lb]
            if decision != "clear":
                state.metrics.label_decisions.labels(lb, decision).inc()
            label_results.append(
                LabelResult(
                    label=lb,
                    probability=round(d.probabilities[lb], 6),
                    decision=decision,
                    control_refs=taxonomy.category(lb).control_refs,
                    explanation=explanation.get(lb) if explain and decision != "clear" else None,
                )
            )
        results.append(
            ItemResult(
                id=d.listing.id,
                decision=d.decision,
                risk=round(d.risk, 6),
                labels=label_results,
                reasons=d.reasons,
            )
        )
    if enqueue:
        assert state.review_intake is not None
        queued = await asyncio.to_thread(state.review_intake, scored, f"key:{key.name}")
        response.headers["X-Review-Queued"] = str(queued.queued)
        response.headers["X-Review-Already-Queued"] = str(queued.already_queued)
    m = predictor.manifest
    return ClassifyResponse(
        items=results,
        model=ModelInfo(
            name=m.name,
            version=m.version,
            taxonomy_version=m.taxonomy_version,
            backend=predictor.backend.name,
        ),
    )
