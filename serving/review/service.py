"""The review service: what the review pages and JSON endpoints share in one process.

One `ReviewService` per app holds the store (opened lazily, so the API starts while the database
is still coming up), the session signer, the log-in limiter, the explanation and similar-item
caches and the templates. It knows nothing of the classification API: the app factory
(`serving/app.py`) hands it the settings, the API key store and a way to reach the loaded model.

Database work is synchronous (SQLAlchemy); handlers are plain `def`s, which FastAPI runs in its
thread pool, so the event loop that micro-batches classification is never blocked by them.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.auth_keys import ApiKey, KeyStore, authenticate_key
from serving.contract.errors import DualscreenError
from serving.contract.listing import ScoredListing
from serving.contract.schemas import Term
from serving.explain import ExplainCache, explain_text
from serving.http_errors import ApiError
from serving.predictor import Predictor
from serving.review import db
from serving.review.intake import IntakePolicy, IntakeResult, enqueue_listings, flag_thresholds
from serving.review.models import Item
from serving.review.rules import final_outcome
from serving.review.security import LoginLimiter, SessionSigner
from serving.review.similar import Doc, SimilarCache
from serving.review.store import ReviewStore
from serving.settings import Settings

log = logging.getLogger("dualscreen.review")

SIMILAR_POOL = 3000


class ReviewService:
    """Everything the review handlers share; the store opens on first use."""

    def __init__(
        self, settings: Settings, keys: KeyStore, model: Callable[[], Predictor | None]
    ) -> None:
        self.settings = settings
        self.keys = keys
        self._model = model
        s = settings
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
        s = self.settings
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
                        self.url, migrate=self.settings.database_auto_migrate
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
        return self.settings.claim_lease_s

    @property
    def predictor(self) -> Predictor | None:
        """The loaded model, when ready."""
        return self._model()

    def authenticate_key(self, key: str | None) -> ApiKey | None:
        """The API key store's entry for `key` (the classification API's rule)."""
        return authenticate_key(self.keys, self.settings.mode, key)

    def enqueue(
        self, scored: Sequence[ScoredListing], policy: IntakePolicy, source: str, actor: str
    ) -> IntakeResult:
        """Queue scored listings through the intake, with this process's settings."""
        predictor = self.predictor
        if predictor is None:
            raise ApiError(503, "model not loaded yet")
        return enqueue_listings(
            self.store(),
            scored,
            policy,
            source,
            flag_thresholds=flag_thresholds(predictor.manifest),
            actor=actor,
            double_review_share=self.settings.double_review_share,
        )

    def enqueue_classified(self, scored: Sequence[ScoredListing], actor: str) -> IntakeResult:
        """`/v1/classify?enqueue=true`: queue the flagged and review items of a batch."""
        return self.enqueue(scored, IntakePolicy.NOT_CLEAR, "classify", actor)

    def explain(self, text: str, targets: list[str]) -> dict[str, list[Term]]:
        """The words that drove each target label in `text` (cached per model version and text)."""
        predictor = self.predictor
        if predictor is None or not text or not targets:
            return {}
        key = (predictor.manifest.version, text)
        cached = self.explanations.get(key)
        if cached is None:
            cached = explain_text(
                predictor.probabilities,
                text,
                predictor.labels,
                max_words=self.settings.explain_max_words,
            )
            self.explanations.put(key, cached)
        return {t: cached.get(t, []) for t in targets if t in predictor.labels}

    def similar_items(self, session: Session, item: Item) -> list[dict[str, Any]]:
        """Up to five decided items most like `item`, with their outcome."""
        decided = select(func.count(), func.max(Item.id)).where(Item.status == "decided")
        count, newest = session.execute(decided).one()
        key = (int(count or 0), int(newest or 0))
        index = self.similar.get(key, None)
        if index is None:
            rows = session.execute(
                select(Item.id, Item.text)
                .where(Item.status == "decided")
                .order_by(Item.id.desc())
                .limit(SIMILAR_POOL)
            ).all()
            index = self.similar.get(key, [Doc(int(i), str(t)) for i, t in rows])
        assert index is not None
        out = []
        for other_id, score in index.query(item.text, k=5, exclude=item.id):
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


def get_service(request: Request) -> ReviewService:
    """The review service of this app."""
    svc: ReviewService = request.app.state.review
    return svc


Service = Annotated[ReviewService, Depends(get_service)]


def _pretty_json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
