"""The id of each inference request: the router puts it in `X-Modelfleet-Request-Id` on every answer, and a
label sent to the feedback endpoint names the prediction it is for by it.

The client's own id is kept when it is sane (1 to 128 characters of letters, digits and `._:/+=@-`): the
`X-Request-Id` header, else the Open Inference Protocol request `id` when it is the first field of the body
(`{"id": "42", "inputs": [...]}`, the order tritonclient, KServe and MLServer clients write). The body is
only matched at its start, never parsed, so a request costs no JSON parse for its id. Otherwise the router
makes one: a tag drawn at random when the process starts and a counter, `<12 hex digits>-<hex counter>`;
unique across routers and restarts in practice, and one string format per request.
"""

from __future__ import annotations

import os
import re

from modelfleet.httpcore import Request

REQUEST_ID_HEADER = b"x-modelfleet-request-id"
CLIENT_ID_HEADER = b"x-request-id"
MAX_ID_LENGTH = 128
_ID = rb"[A-Za-z0-9._:/+=@-]{1,%d}" % MAX_ID_LENGTH
_SANE = re.compile(_ID)
_SPACE = rb"[ \t\r\n]*"
_BODY_ID = re.compile(rb'%s\{%s"id"%s:%s"(%s)"%s[,}]' % (_SPACE, _SPACE, _SPACE, _SPACE, _ID, _SPACE))


def sane(request_id: bytes) -> bool:
    """Whether `request_id` may be an id: what a client sends is kept, and echoed in a header, only then."""
    return _SANE.fullmatch(request_id) is not None


def client_id(request: Request) -> bytes | None:
    """The client's own id for `request`, when it gave a sane one."""
    given = request.header(CLIENT_ID_HEADER)
    if given is not None:
        given = given.strip()
        if _SANE.fullmatch(given) is not None:
            return given
    match = _BODY_ID.match(request.body)
    return match.group(1) if match is not None else None


class RequestIds:
    """Gives each request its id: the client's own (`client_id`), or a new one of this process."""

    __slots__ = ("_count", "tag")

    def __init__(self, tag: bytes | None = None) -> None:
        self.tag = tag if tag is not None else os.urandom(6).hex().encode()
        self._count = 0

    def issue(self) -> bytes:
        """A new id, never given before by this process."""
        count = self._count
        self._count = count + 1
        return b"%s-%x" % (self.tag, count)

    def of(self, request: Request) -> bytes:
        """The id of `request`."""
        given = client_id(request)
        return given if given is not None else self.issue()


def id_header(request_id: bytes) -> bytes:
    """The response header line that carries `request_id`."""
    return b"x-modelfleet-request-id: %s\r\n" % request_id
