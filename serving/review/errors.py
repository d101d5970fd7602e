"""The review queue's errors, each with the HTTP status the JSON API answers it with.

DualscreenError
└── ReviewError       400
    ├── NotFoundError     404  no such item or review
    ├── ForbiddenError    403  not yours, or your role may not do it
    ├── InvalidError      422  labels, decision, filters or listing not acceptable
    └── ConflictError     409  someone else changed it first (carries what they decided)
"""

from __future__ import annotations

from typing import Any

from serving.contract.errors import DualscreenError


class ReviewError(DualscreenError):
    """Base of the queue's errors."""

    status = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class NotFoundError(ReviewError):
    """No such item or review."""

    status = 404


class ForbiddenError(ReviewError):
    """The actor may not do this."""

    status = 403


class InvalidError(ReviewError):
    """Labels or decision are not acceptable."""

    status = 422


class ConflictError(ReviewError):
    """Someone changed the item first; `detail` holds what is there now."""

    status = 409
