"""What can go wrong talking to a tracking server, as the reasons of the Model's `Synced` condition.

Every error the client raises is an `MlflowError`; its `reason` is the condition reason and its text is
short, specific and free of credentials (the tracking URI's user and password, the token, the
Authorization header and anything the server echoed of them are cut out before the text is made).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Reason(StrEnum):
    """The reason of `status.source.conditions[Synced]` when a call to MLflow failed."""

    UNREACHABLE = "Unreachable"
    """No answer: refused, timed out, DNS, TLS, or a gateway saying the server is down (502, 503, 504)."""
    UNAUTHORIZED = "Unauthorized"
    """401 or 403: the credentials are missing, wrong, or may not do this (e.g. a read-only user
    setting a tag)."""
    NOT_FOUND = "NotFound"
    """The registered model, version or run does not exist."""
    BAD_RESPONSE = "BadResponse"
    """An answer the client cannot use: another status, not JSON, too large, fields missing."""


class MlflowError(Exception):
    """A failed call to the tracking server; `reason` says which kind, `status` the HTTP status if any."""

    reason: ClassVar[Reason]

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class Unreachable(MlflowError):
    reason = Reason.UNREACHABLE


class Unauthorized(MlflowError):
    reason = Reason.UNAUTHORIZED


class NotFound(MlflowError):
    reason = Reason.NOT_FOUND


class BadResponse(MlflowError):
    reason = Reason.BAD_RESPONSE


__all__ = ["BadResponse", "MlflowError", "NotFound", "Reason", "Unauthorized", "Unreachable"]
