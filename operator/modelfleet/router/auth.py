"""Bearer tokens kept in files: what the feedback endpoint and the admin port ask callers for.

A token lives in a file (a Secret key mounted into the router pod), never in the configuration: the
configuration is a ConfigMap, and /config shows it. The file is read again at most once a second, so a
Secret changed in place (the kubelet updates mounted Secrets) takes effect without a restart. Tokens
are compared as SHA-256 digests, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Literal

from modelfleet.httpcore import Request

log = logging.getLogger(__name__)

TOKEN_REREAD = 1.0
MAX_TOKEN_FILE = 64 * 1024

Verdict = Literal["ok", "unauthorized", "forbidden", "unavailable"]
"""What a request's credentials are worth: `ok`; `unauthorized` (no `Authorization: Bearer <token>`);
`forbidden` (another token); `unavailable` (the token file cannot be read: nobody is let in)."""


class TokenFile:
    """The bearer token in a file, re-read at most every `reread` seconds; None while it cannot be read or
    is empty (then nobody is let in). `what` names the token in the log."""

    def __init__(
        self,
        path: str,
        clock: Callable[[], float] = time.monotonic,
        reread: float = TOKEN_REREAD,
        what: str = "feedback token",
    ) -> None:
        self.path = path
        self.reread = reread
        self.what = what
        self._clock = clock
        self._read_at: float | None = None
        self._digest: bytes | None = None
        self._problem = ""

    def digest(self) -> bytes | None:
        """The SHA-256 of the token (what is compared), or None."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.reread:
            self._read_at = now
            self._digest = self._read()
        return self._digest

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as file:
                token = file.read(MAX_TOKEN_FILE).strip()
        except OSError as error:
            return self._unusable(f"cannot be read: {error.strerror or error}")
        if not token:
            return self._unusable("is empty")
        if self._problem:
            log.info("%s file %s can be read again", self.what, self.path)
            self._problem = ""
        return hashlib.sha256(token).digest()

    def _unusable(self, problem: str) -> bytes | None:
        if problem != self._problem:
            log.error("%s file %s %s: nobody is let in until it can be read", self.what, self.path, problem)
            self._problem = problem
        return None


def bearer(request: Request) -> bytes | None:
    """The credentials of the request's `Authorization: Bearer <credentials>`, or None without them."""
    value = request.header(b"authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(b" ")
    credentials = credentials.strip()
    if scheme.lower() != b"bearer" or not credentials:
        return None
    return credentials


def check(request: Request, token: TokenFile) -> Verdict:
    """Does the request carry the token of `token`'s file? A request without credentials is told so
    before the file is read, so a missing file shows only to callers who sent a token."""
    credentials = bearer(request)
    if credentials is None:
        return "unauthorized"
    expected = token.digest()
    if expected is None:
        return "unavailable"
    if not hmac.compare_digest(hashlib.sha256(credentials).digest(), expected):
        return "forbidden"
    return "ok"
