"""The classification API's app factory: settings, keys, metrics, error envelope, body limit; the
model loads in the lifespan.

The service's full app (this API with the review queue mounted) is built by `serving.app`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.batcher import MicroBatcher
from serving.api.deps import AppState
from serving.api.metrics import Metrics
from serving.api.routes import router
from serving.auth_keys import load_key_store
from serving.contract.decide import parse_review_budget, parse_review_ceiling
from serving.http_errors import envelope, install_error_handlers
from serving.predictor import Predictor
from serving.settings import Settings

log = logging.getLogger("dualscreen.api")
WARM_UP = "Warm-up listing: stainless steel kitchen scale, 5 kg, battery included"


class BodyLimit:
    """Reads request bodies up to the limit before the app sees them.

    Over the limit (declared or streamed): 413. A JSON body that is not valid UTF-8: 422 naming
    the byte. Otherwise the buffered body is replayed to the app, so FastAPI never meets a body
    it cannot parse as text.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = (413, f"request body over {self.limit} bytes", {"max_body_bytes": self.limit})
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reply(scope, receive, send, *too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._reply(scope, receive, send, *too_large)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b""):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = f"invalid UTF-8 at byte {exc.start}"
                await self._reply(
                    scope,
                    receive,
                    send,
                    422,
                    f"body: {problem}",
                    [{"field": "body", "problem": problem}],
                )
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reply(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str, detail: object
    ) -> None:
        await envelope(status, message, detail)(scope, receive, send)


class Observe:
    """Counts requests by route and status and times them until the response starts.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware` runs every
    request in an extra task with memory streams, which cost more event-loop time per request
    than the route itself (py-spy under 32 clients, issue 14).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        elapsed: float | None = None

        async def timed(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(
                elapsed if elapsed is not None else time.perf_counter() - started
            )


def create_api_app(settings: Settings | None = None, predictor: Predictor | None = None) -> FastAPI:
    """Build the classification API (without the review queue: see `serving.app.create_app`).

    Args:
        settings: defaults to `Settings()` from the environment.
        predictor: a loaded predictor (tests); otherwise `settings.model` loads in the lifespan.
    """
    settings = settings or Settings()
    api_keys = settings.api_keys.get_secret_value() if settings.api_keys is not None else None
    keys = load_key_store(api_keys, settings.keys_file)
    state = AppState(settings=settings, metrics=Metrics(), keys=keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("settings: %s", json.dumps(settings.redacted(), default=str))
        if settings.mode == "development" and not state.keys.keys:
            log.warning(
                "DEVELOPMENT MODE: the API accepts requests WITHOUT an API key. "
                "Never expose this process beyond localhost."
            )
        loaded = predictor
        if loaded is None:
            loaded = await asyncio.to_thread(
                Predictor.load,
                settings.model,
                settings.backend,
                settings.threads_per_worker(),
                settings.batch_max_size,
                settings.model_cache_dir,
                parse_review_budget(settings.review_budget),
                parse_review_ceiling(settings.review_ceiling),
            )
        state.predictor = loaded
        batcher = MicroBatcher(
            loaded.run,
            settings.batch_max_size,
            settings.batch_max_wait_ms,
            settings.queue_max_items,
            on_batch=state.metrics.on_batch,
        )
        batcher.start()
        state.batcher = batcher
        await batcher.submit(loaded.prepare_texts([WARM_UP]).inputs)
        state.ready = True
        m = loaded.manifest
        log.info(
            "ready: %s %s (%s), taxonomy %s",
            m.name,
            m.version,
            loaded.backend.name,
            m.taxonomy_version,
        )
        try:
            yield
        finally:
            state.ready = False
            await batcher.stop()
            for close in state.on_shutdown:
                close()
            state.metrics.close()

    app = FastAPI(
        title="dualscreen",
        version="1",
        summary="Screen product listings for likely dual-use goods.",
        description="A screening aid that routes uncertain items to people; "
        "not a legal classification.",
        lifespan=lifespan,
    )
    app.state.dualscreen = state
    install_error_handlers(app)
    app.include_router(router)

    app.add_middleware(Observe, metrics=state.metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
