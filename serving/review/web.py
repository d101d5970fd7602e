"""The review UI at `/review` and the JSON endpoints at `/v1/review/*`, mounted on an app.

`install_review` adds the routers of `sessions.py` (log-in), `pages.py` (the UI) and
`json_api.py`, and the exception handlers that answer a page with an HTML error page and a JSON
call with the API's error envelope. The app factory (`serving/app.py`) calls it; nothing here
knows the classification API.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from serving.http_errors import envelope
from serving.review.errors import ReviewError
from serving.review.json_api import api
from serving.review.pages import web
from serving.review.service import ReviewService
from serving.review.sessions import (
    SESSION_COOKIE,
    LoginRequired,
    PageError,
    login_router,
    redirect,
    render,
)

log = logging.getLogger("dualscreen.review")

STORE_DOWN = "review store unavailable; retry shortly"


def install_review(app: FastAPI, svc: ReviewService) -> None:
    """Add the review pages and JSON endpoints to `app`, served by `svc`."""
    app.state.review = svc
    app.include_router(api)
    app.include_router(login_router)
    app.include_router(web)

    async def on_page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return render(
            svc,
            request,
            "error.html",
            {"user": exc.user, "status": exc.status, "error": exc.message},
            status=exc.status,
        )

    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        query = {"next": exc.next_path} | ({"msg": "expired"} if exc.expired else {})
        response = redirect("/review/login?" + urlencode(query))
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
        retry_after = svc.settings.retry_after_s
        headers = {"Retry-After": str(retry_after)}
        if request.url.path.startswith("/review"):
            page = render(svc, request, "error.html", {"status": 503, "error": STORE_DOWN}, 503)
            page.headers.update(headers)
            return page
        return envelope(503, STORE_DOWN, {"retry_after_s": retry_after}, headers)

    app.add_exception_handler(PageError, on_page_error)
    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(ReviewError, on_review_error)
    for unavailable in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(unavailable, on_store_unavailable)
