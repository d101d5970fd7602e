"""Review users: create, authenticate by password or API key, list."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.review.audit import record_event
from serving.review.errors import InvalidError
from serving.review.models import ROLES, User
from serving.review.security import hash_api_key, hash_password, verify_password

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 10


def create_user(
    session: Session,
    name: str,
    role: str,
    password: str | None = None,
    api_key: str | None = None,
    actor: str = "system",
) -> User:
    """Add a user with a password and/or an API key (both stored hashed). The caller commits."""
    if not _NAME_RE.match(name) or name.startswith("key:"):
        raise InvalidError(
            "user names are 1-100 letters, digits and . _ @ - and start with a letter or digit"
        )
    if role not in ROLES:
        raise InvalidError(f"role must be one of {', '.join(ROLES)}")
    if password is None and api_key is None:
        raise InvalidError("a user needs a password or an API key")
    if password is not None and len(password) < MIN_PASSWORD:
        raise InvalidError(f"passwords need at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise InvalidError(f"user {name!r} exists already")
    user = User(
        name=name,
        role=role,
        password_hash=hash_password(password) if password is not None else None,
        api_key_hash=hash_api_key(api_key) if api_key is not None else None,
        active=True,
    )
    session.add(user)
    session.flush()
    record_event(
        session,
        actor,
        "user.create",
        after={
            "name": name,
            "role": role,
            "password": password is not None,
            "api_key": bool(api_key),
        },
    )
    return user


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The active user with this name and password, else None (same cost either way)."""
    user = session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None and user.active else None
    if not verify_password(password, stored):
        return None
    return user


def user_by_api_key(session: Session, key: str) -> User | None:
    """The active user owning this API key, if any."""
    user = session.scalar(select(User).where(User.api_key_hash == hash_api_key(key)))
    return user if user is not None and user.active else None


def count_users(session: Session) -> int:
    """How many users exist."""
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def list_users(session: Session) -> list[User]:
    """All users by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def ensure_first_admin(session: Session, password: str | None = None) -> tuple[bool, str | None]:
    """Create user `admin` when there are no users yet.

    Returns (created, generated password or None when `password` was given). The caller commits.
    """
    if count_users(session):
        return False, None
    generated = None
    if not password:
        from serving.review.security import new_password

        generated = password = new_password()
    create_user(session, "admin", "admin", password=password, actor="first-run")
    return True, generated
