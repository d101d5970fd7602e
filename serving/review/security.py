"""Passwords, session cookies, CSRF tokens and the log-in rate limit of the review UI.

- Passwords: scrypt (n=2^14, r=8, p=1, 16-byte salt), stored as `scrypt$n$r$p$salt$hash`, compared
  in constant time.
- Sessions: a cookie signed with itsdangerous holding the user id and a random session id; its
  signature carries the issue time, so a cookie older than `max_age` is refused (sessions expire
  even if the browser keeps the cookie). Every request re-reads the user, so a deactivated user
  or a changed role takes effect at once.
- CSRF: every form carries HMAC(secret, session id); the log-in form, before a session exists,
  uses a double-submit token (a random cookie repeated in the form).
- Rate limit: failed log-ins per (name, client) and per client in a sliding window, in process
  memory. Compromise: a multi-process deployment multiplies the allowance by the process count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """True when `password` matches the stored hash (constant-time comparison)."""
    if not stored:
        # Spend the same time as a real check so unknown names are not told apart by timing.
        hashlib.scrypt(b"x", salt=b"0" * 16, dklen=32, **_SCRYPT)
        return False
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=_unb64(salt), dklen=32, n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, _unb64(digest))


def new_password() -> str:
    """A random password for a new account (shown once)."""
    return secrets.token_urlsafe(15)


def hash_api_key(key: str) -> str:
    """sha256 hex of an API key (the same scheme as `serving.auth_keys`)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """A random API key for a user (shown once)."""
    return "ds_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class SessionData:
    """What a valid session cookie says."""

    user_id: int
    sid: str


class SessionSigner:
    """Signs and checks session cookies; derives CSRF tokens from the session id."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._secret = secret.encode("utf-8")
        self.max_age_s = max_age_s
        self._serializer = URLSafeTimedSerializer(secret, salt="dualscreen-review-session")

    def issue(self, user_id: int) -> tuple[str, SessionData]:
        """A new cookie value for `user_id` and its data."""
        data = SessionData(user_id, secrets.token_urlsafe(18))
        return self._serializer.dumps({"u": data.user_id, "s": data.sid}), data

    def read(self, cookie: str | None) -> SessionData | None:
        """The session of a cookie, or None if missing, forged or expired."""
        if not cookie:
            return None
        try:
            raw: Any = self._serializer.loads(cookie, max_age=self.max_age_s)
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("u"), int):
            return None
        if not isinstance(raw.get("s"), str):
            return None
        return SessionData(raw["u"], raw["s"])

    def csrf_token(self, sid: str) -> str:
        """The CSRF token of a session."""
        return hmac.new(self._secret, b"csrf:" + sid.encode("utf-8"), "sha256").hexdigest()

    def check_csrf(self, sid: str, token: str | None) -> bool:
        """True when `token` is the session's CSRF token."""
        return bool(token) and hmac.compare_digest(self.csrf_token(sid), str(token))


class LoginLimiter:
    """Counts failed log-ins in a sliding window; thread-safe, in memory."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, name: str, client: str) -> tuple[str, str]:
        # The per-client key allows a few names per client before it blocks them all.
        return f"n:{name.lower()}|{client}", f"c:{client}"

    def _recent(self, key: str, now: float) -> deque[float]:
        window = self._failures.setdefault(key, deque())
        while window and window[0] <= now - self.window_s:
            window.popleft()
        return window

    def retry_after(self, name: str, client: str, now: float | None = None) -> int:
        """Seconds until another attempt is allowed (0: allowed now)."""
        now = time.monotonic() if now is None else now
        per_name, per_client = self._keys(name, client)
        with self._lock:
            waits = []
            for key, limit in ((per_name, self.max_failures), (per_client, 4 * self.max_failures)):
                window = self._recent(key, now)
                if len(window) >= limit:
                    waits.append(int(window[0] + self.window_s - now) + 1)
            return max(waits, default=0)

    def failed(self, name: str, client: str, now: float | None = None) -> None:
        """Record one failed attempt."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in self._keys(name, client):
                self._recent(key, now).append(now)

    def succeeded(self, name: str, client: str) -> None:
        """Forget the name's failures from this client after a good log-in."""
        with self._lock:
            self._failures.pop(self._keys(name, client)[0], None)


def ensure_secret_file(path: Path) -> None:
    """Create a random session secret in `path` (mode 0600) unless it exists."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
