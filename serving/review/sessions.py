"""Log-in and sessions of the review UI, and what every page shares: rendering with security
headers, the session's user, the CSRF check on posts.

Sessions are signed cookies that expire (`security.SessionSigner`); the log-in form carries a
double-submit token, every other form the session's CSRF token, and a post from another origin is
refused. Failed log-ins are rate-limited per name and client, and audited.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from serving.review.audit import record_event
from serving.review.models import User
from serving.review.service import ReviewService, Service
from serving.review.users import authenticate

SESSION_COOKIE = "ds_review_session"
LOGIN_COOKIE = "ds_review_login"
MESSAGES = {
    "submitted": "Submitted. Here is the next item.",
    "submitted_last": "Submitted. Nothing left to claim under these filters.",
    "skipped": "Skipped. Here is the next item.",
    "empty": "Nothing to claim under these filters.",
    "logged_out": "You are logged out.",
    "expired": "Your session expired; log in again.",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


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


login_router = APIRouter(prefix="/review", include_in_schema=False)


def secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def render(
    svc: ReviewService,
    request: Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    base: dict[str, Any] = {"user": None, "message": None}
    response = svc.templates.TemplateResponse(request, template, base | context, status_code=status)
    secure_headers(response)
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


def check_post(request: Request, svc: ReviewService, user: WebUser, csrf: str | None) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != expected:
            raise PageError(403, "cross-origin form post refused", user)
    data = svc.signer.read(request.cookies.get(SESSION_COOKIE))
    if data is None or not svc.signer.check_csrf(data.sid, csrf):
        raise PageError(403, "the form's security token is missing or stale; reload the page", user)


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@login_router.get("/login")
def page_login(
    request: Request,
    svc: Service,
    next: str = "/review/queue",
    msg: str | None = None,
) -> Response:
    """The log-in form."""
    token = secrets.token_urlsafe(24)
    response = render(
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


@login_router.post("/login")
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
        response = render(
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
        return render(
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
    redirected = redirect(_safe_next(next))
    redirected.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=svc.signer.max_age_s,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    redirected.delete_cookie(LOGIN_COOKIE, path="/review")
    return redirected


@login_router.post("/logout")
def page_logout(
    request: Request, svc: Service, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """End the session."""
    user = current_user(request, svc)
    check_post(request, svc, user, csrf)
    response = redirect("/review/login?msg=logged_out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
