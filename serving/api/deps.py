"""Dependencies: the app state and API-key authentication, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from serving.api.auth import ApiKey, KeyStore
from serving.api.batcher import MicroBatcher
from serving.api.errors import ApiError
from serving.api.metrics import Metrics
from serving.api.settings import Settings
from serving.predictor import Predictor

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


@dataclass
class AppState:
    """Everything the handlers share, created by the app factory and filled in the lifespan."""

    settings: Settings
    metrics: Metrics
    keys: KeyStore
    predictor: Predictor | None = None
    batcher: MicroBatcher | None = None
    ready: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    """The app's state."""
    state: AppState = request.app.state.dualscreen
    return state


State = Annotated[AppState, Depends(get_state)]


DEVELOPMENT_KEY = ApiKey("development", "", frozenset({"classify", "review", "admin"}))


def authenticate_key(state: AppState, key: str | None) -> ApiKey | None:
    """The key store's entry for `key`, or None when the store does not know it.

    Development mode without any configured key admits everyone as DEVELOPMENT_KEY (all scopes);
    otherwise a request without a key is refused with 401. Shared by the classification API and
    the review API, which looks unknown keys up among its users' keys next.
    """
    if state.settings.mode == "development" and not state.keys.keys:
        return DEVELOPMENT_KEY
    if not key:
        raise ApiError(
            401,
            "missing API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )
    return state.keys.find(key)


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, ApiKey]]:
    """A dependency that admits keys with `scope` (401 without a valid key, 403 without scope)."""

    async def check(state: State, key: Annotated[str | None, Depends(_header)]) -> ApiKey:
        found = authenticate_key(state, key)
        if found is None:
            raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})
        if scope not in found.scopes:
            raise ApiError(403, f"this API key lacks the {scope!r} scope")
        return found

    return check


ClassifyKey = Annotated[ApiKey, Depends(require_scope("classify"))]
