"""One JSON error envelope for every failure of the HTTP service: {"error", "type", "detail"}.

Shared by the classification API and the review queue's JSON endpoints (both raise `ApiError`);
it lives outside both so neither imports the other.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.contract.errors import DualscreenError

log = logging.getLogger("dualscreen.api")

_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with a status, a type and optional detail, raised by handlers."""

    def __init__(
        self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers


def envelope(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSONResponse in the envelope shape."""
    body = {"error": message, "type": _TYPES.get(status, "error"), "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _clean_validation(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        out.append({"field": ".".join(loc), "problem": msg})
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Translate every exception into the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.message, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _clean_validation(list(exc.errors()))
        first = detail[0] if detail else {"field": "body", "problem": "invalid"}
        return envelope(422, f"{first['field']}: {first['problem']}", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a JSON body its parser gives up on (nested past the recursion limit,
        # a number with too many digits) with a bare 400; name the reason like any bad JSON.
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, RecursionError | ValueError):
            problem = (
                "JSON nested too deeply"
                if isinstance(cause, RecursionError)
                else f"invalid JSON: {cause}"
            )
            return envelope(422, f"body: {problem}", [{"field": "body", "problem": problem}])
        headers = dict(exc.headers) if exc.headers else None
        return envelope(exc.status_code, str(exc.detail), None, headers)

    @app.exception_handler(DualscreenError)
    async def _ours(_: Request, exc: DualscreenError) -> JSONResponse:
        return envelope(400, str(exc), None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return envelope(500, "internal error", None)
