"""Dependencies: the app state and API-key authentication, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from serving.api.batcher import MicroBatcher
from serving.api.metrics import Metrics
from serving.auth_keys import ApiKey, KeyStore, authenticate_key
from serving.contract.listing import ScoredListing
from serving.http_errors import ApiError
from serving.predictor import Predictor
from serving.settings import Settings

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


class Enqueued(Protocol):
    """What the review queue reports for `?enqueue=true`."""

    @property
    def queued(self) -> int: ...
    @property
    def already_queued(self) -> int: ...


ReviewIntake = Callable[[Sequence[ScoredListing], str], Enqueued]
"""Queue scored listings (as the given actor); blocking, so handlers run it in a thread."""


@dataclass
class AppState:
    """Everything the handlers share, created by the app factory and filled in the lifespan."""

    settings: Settings
    metrics: Metrics
    keys: KeyStore
    predictor: Predictor | None = None
    batcher: MicroBatcher | None = None
    ready: bool = False
    review_intake: ReviewIntake | None = None
    """Set by `serving.app` when the review queue is mounted; `?enqueue=true` needs it."""
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)
    """Called when the lifespan ends (the review store's connections, say)."""


async def get_state(request: Request) -> AppState:
    """The app's state (async: FastAPI runs a plain `def` dependency in a thread)."""
    state: AppState = request.app.state.dualscreen
    return state


State = Annotated[AppState, Depends(get_state)]


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, ApiKey]]:
    """A dependency that admits keys with `scope` (401 without a valid key, 403 without scope)."""

    async def check(state: State, key: Annotated[str | None, Depends(_header)]) -> ApiKey:
        found = authenticate_key(state.keys, state.settings.mode, key)
        if found is None:
            raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})
        if scope not in found.scopes:
            raise ApiError(403, f"this API key lacks the {scope!r} scope")
        return found

    return check


ClassifyKey = Annotated[ApiKey, Depends(require_scope("classify"))]
