"""A small, fast HTTP/1.1 server on asyncio Protocols and httptools, for the router and the model server.

Requests are read whole (headers and body, within limits) and handed to one handler function, which returns
a `Response`, an awaitable of one, or None after arranging to call `request.respond(...)` itself. What the
server guarantees, whatever a client sends:

- a request whose headers exceed `max_header_bytes` gets 431, a body over `max_body_bytes` gets 413 (read
  no further), anything httptools cannot parse gets 400; each of these closes the connection;
- a client that is too slow with its headers (`header_timeout`) or its body (`body_timeout`) gets 408 and is
  disconnected; an idle keep-alive connection is closed after `idle_timeout`; a client that does not read
  its responses is disconnected after `send_timeout`;
- over `max_concurrency` requests in the handler at once, further requests get 503 with `Retry-After`; over
  `max_connections` open connections, new ones get 503 and are closed;
- a handler that raises produces a 500 with a JSON body, never a crash.

Timeouts are enforced by one sweep per server every quarter second, not a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.25


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


STATUS_LINES: dict[int, bytes] = {code: _status_line(code) for code in range(100, 600)}
JSON = b"content-type: application/json\r\n"


@dataclass(frozen=True)
class Limits:
    """What a server accepts from its clients; see the module docstring for what happens past each."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    send_timeout: float = 30.0
    max_concurrency: int = 1024
    max_connections: int = 8192
    retry_after_seconds: int = 1

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"limit {name} must be above 0, got {value}")


class Request:
    """One complete request. Header names are lower-case bytes; `path` is the raw target with its query."""

    __slots__ = ("_connection", "body", "headers", "http_version", "keep_alive", "method", "path")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool = True,
        http_version: str = "1.1",
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http_version = http_version
        self._connection: _Connection | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def respond(self, response: Response) -> bool:
        """Answer a request whose handler returned None (see `Handler`). Only the first call counts;
        returns whether this call was it."""
        connection = self._connection
        if connection is None:
            return False
        self._connection = None
        connection.finish(self, response)
        return True


class Response:
    """A complete response. `headers` is a pre-encoded block of `name: value\\r\\n` lines (may be empty);
    the server adds Content-Length, Date and Connection itself."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: bytes = b"") -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @classmethod
    def json(cls, status: int, value: Any, headers: bytes = b"") -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode(), JSON + headers)

    @classmethod
    def error(cls, status: int, message: str, headers: bytes = b"") -> Response:
        """The JSON error shape used everywhere: {"error": message}."""
        return cls.json(status, {"error": message}, headers)


Handler = Callable[[Request], "Response | Awaitable[Response] | None"]
"""Answers a request: with a `Response` now, with an awaitable of one, or with None, promising to call
`request.respond(response)` later (from a callback: no task per request; the router does this)."""


class HTTPServer:
    """Serves one handler on one or more listening sockets, with `Limits` applied to every client."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits | None = None,
        name: str = "http",
        extra_headers: bytes = b"",
        on_reject: Callable[[int], None] | None = None,
    ) -> None:
        """`extra_headers` go on every response the server makes itself (400, 408, 413, 431, 503);
        `on_reject` is told the status code of each."""
        self.handler = handler
        self.limits = limits or Limits()
        self.name = name
        self.extra_headers = extra_headers
        self.on_reject = on_reject
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.shutting_down = False
        self.draining = False
        """Set while a server about to stop still serves (its address not yet out of every load
        balancer): each answer closes its connection, so a keep-alive client opens a new one, which
        goes elsewhere, instead of finding this one closed under it later."""
        self.date_header = b""
        self.overloaded = Response.error(
            503,
            "overloaded: too many concurrent requests, retry later",
            f"retry-after: {self.limits.retry_after_seconds}\r\n".encode() + extra_headers,
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._drained = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def rejected(self, status: int) -> None:
        if self.on_reject is not None:
            self.on_reject(status)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start accepting on host:port (port 0 picks a free one); returns the bound address."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=4096, reuse_address=True
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweep()
        bound = server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.date_header = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"
        for connection in [c for c in self.connections if 0 < c.deadline < now]:
            connection.timed_out()
        self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in the handler finish (up to `grace` seconds), then disconnect all."""
        self.shutting_down = True
        for server in self._servers:
            server.close()
        if self.in_flight:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        for connection in list(self.connections):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


# Read-side phases of a connection; each has its own deadline.
_IDLE, _HEADERS, _BODY = 0, 1, 2


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_busy",
        "_eof",
        "_expect_continue",
        "_header_bytes",
        "_headers",
        "_in_next",
        "_loop",
        "_paused_reading",
        "_paused_writing",
        "_phase",
        "_queue",
        "_url",
        "deadline",
        "parser",
        "server",
        "transport",
    )

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self._phase = _IDLE
        self.deadline = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._header_bytes = 0
        self._expect_continue = False
        self._busy = False
        self._in_next = False
        self._eof = False
        self._queue: deque[Request] = deque()
        self._paused_reading = False
        self._paused_writing = False

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's don't subclass it
        server = self.server
        if len(server.connections) >= server.limits.max_connections or server.shutting_down:
            server.rejected(503)
            self._send(server.overloaded, head=False, keep_alive=False)
            return
        server.connections.add(self)
        self.deadline = self._loop.time() + server.limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.deadline = 0.0
        self._queue.clear()
        self.transport = None

    def eof_received(self) -> bool:
        # A client may half-close after its last request: answer what is pending, then close.
        self._eof = True
        return self._busy or bool(self._queue)

    def pause_writing(self) -> None:
        self._paused_writing = True
        self.deadline = self._loop.time() + self.server.limits.send_timeout

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._set_read_deadline()
        self._next()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._phase == _HEADERS:
            # Headers still incomplete from an earlier read: count the raw bytes, since httptools buffers a
            # header line until it ends. (Complete headers are counted precisely by the callbacks.)
            self._count_header_bytes(len(data))
            if self.transport.is_closing():
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrade is not supported")
        except httptools.HttpParserError as error:
            self._reject(400, f"malformed request: {error}")
        except _Rejected:
            pass

    # -- httptools callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _HEADERS
        self._header_bytes = 0
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0
        self._expect_continue = False
        self._set_read_deadline()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if not self._count_header_bytes(len(url)):
            raise _Rejected

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= self.server.limits.max_headers:
            self._reject(431, f"more than {self.server.limits.max_headers} request headers")
            raise _Rejected
        if not self._count_header_bytes(len(name) + len(value) + 4):
            raise _Rejected
        self._headers.append((name.lower(), value))

    def _count_header_bytes(self, size: int) -> bool:
        self._header_bytes += size
        if self._header_bytes > self.server.limits.max_header_bytes:
            self._reject(
                431, f"request headers over the limit of {self.server.limits.max_header_bytes} bytes"
            )
            return False
        return True

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._header_bytes = 0
        length = 0
        for name, value in self._headers:
            if name == b"content-length":
                length = int(value)  # httptools has validated it
            elif name == b"expect" and value.lower() == b"100-continue":
                self._expect_continue = True
        if length > self.server.limits.max_body_bytes:
            self._reject(413, f"request body over the limit of {self.server.limits.max_body_bytes} bytes")
            raise _Rejected
        if self._expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._set_read_deadline()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.limits.max_body_bytes:
            self._reject(413, f"request body over the limit of {self.server.limits.max_body_bytes} bytes")
            raise _Rejected
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url
        if not url.startswith(b"/") and url != b"*":
            self._reject(400, "request target must be a path")
            raise _Rejected
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        parser = self.parser
        request = Request(
            parser.get_method(),
            url,
            self._headers,
            body,
            parser.should_keep_alive(),
            parser.get_http_version(),
        )
        self._phase = _IDLE
        self._header_bytes = 0
        self._set_read_deadline()
        if self._busy or self._paused_writing or self._queue:
            self._queue.append(request)
            self._pause_reading()
        else:
            self._dispatch(request)

    # -- request handling ------------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> None:
        server = self.server
        if server.in_flight >= server.limits.max_concurrency:
            server.rejected(503)
            self._send(server.overloaded, request.method == b"HEAD", request.keep_alive, request)
            return
        server.in_flight += 1
        self._busy = True
        self.deadline = 0.0  # the handler's own timeouts apply
        request._connection = self
        try:
            result = server.handler(request)
        except Exception:
            log.exception("%s: handler failed for %s %s", server.name, request.method, request.path)
            result = Response.error(500, "internal error", server.extra_headers)
        if result is None:
            return  # the handler answers through request.respond(), maybe already has
        if isinstance(result, Response):
            request.respond(result)
        else:
            self._loop.create_task(self._await(result, request))

    async def _await(self, pending: Awaitable[Response], request: Request) -> None:
        try:
            response = await pending
        except Exception:
            log.exception("%s: handler failed for %s %s", self.server.name, request.method, request.path)
            response = Response.error(500, "internal error", self.server.extra_headers)
        request.respond(response)

    def finish(self, request: Request, response: Response) -> None:
        """Send the answer to `request` (called once per dispatched request) and go on with the next."""
        server = self.server
        server.in_flight -= 1
        self._busy = False
        if server.shutting_down and not server.in_flight:
            server._drained.set()
        self._send(response, request.method == b"HEAD", request.keep_alive, request)
        self._set_read_deadline()
        self._next()
        if self._eof and not self._busy and not self._queue:
            self.close()

    def _next(self) -> None:
        if self._in_next:
            return  # an answer given synchronously from inside this loop: the loop goes on
        self._in_next = True
        try:
            while self._queue and not self._busy and not self._paused_writing and self.transport is not None:
                self._dispatch(self._queue.popleft())
        finally:
            self._in_next = False
        if not self._queue and self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    def _send(self, response: Response, head: bool, keep_alive: bool, request: Request | None = None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        server = self.server
        keep_alive = keep_alive and not server.shutting_down and not server.draining
        if keep_alive:
            connection = b"connection: keep-alive\r\n" if request and request.http_version == "1.0" else b""
        else:
            connection = b"connection: close\r\n"
        body = response.body
        transport.write(
            b"".join(
                (
                    STATUS_LINES.get(response.status) or _status_line(response.status),
                    response.headers,
                    b"content-length: %d\r\n" % len(body),
                    server.date_header,
                    connection,
                    b"\r\n",
                    b"" if head else body,
                )
            )
        )
        if not keep_alive:
            self.close()

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be read any further and close the connection."""
        if self.transport is None or self.transport.is_closing():
            return  # already answered (httptools re-raises a callback's exception as a parser error)
        self.server.rejected(status)
        self._send(Response.error(status, message, self.server.extra_headers), head=False, keep_alive=False)
        self.close()

    def timed_out(self) -> None:
        if self._paused_writing:
            log.info("%s: client is not reading its responses; disconnecting", self.server.name)
            self.close()
        elif self._phase == _IDLE:
            self.close()
        else:
            what = "headers" if self._phase == _HEADERS else "body"
            self._reject(408, f"request {what} not received in time")

    def close(self) -> None:
        self.deadline = 0.0
        self._queue.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.server.connections.discard(self)

    def _set_read_deadline(self) -> None:
        limits = self.server.limits
        if self._busy or self._queue:
            self.deadline = 0.0  # the handler's own timeouts apply
        elif self._phase == _HEADERS:
            self.deadline = self._loop.time() + limits.header_timeout
        elif self._phase == _BODY:
            self.deadline = self._loop.time() + limits.body_timeout
        else:
            self.deadline = self._loop.time() + limits.idle_timeout

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request that has already been answered."""
