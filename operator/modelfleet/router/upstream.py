"""A pooled keep-alive HTTP/1.1 client on raw asyncio transports and httptools, one pool per version.

`Pool.send` takes a callback instead of returning an awaitable: the response (or the failure) is handed
over from inside the connection's own `data_received`, so a proxied request needs no task, no future
and no extra turn of the event loop. `Pool.request` wraps it for code that prefers to await.

Each attempt has one deadline covering connect, send and the whole response. Failures are typed so the
router can tell them apart: `UpstreamTimeout` (deadline passed), `UpstreamRefused` (nothing listening,
or the connection could not be made), `UpstreamError` (broken or malformed response). A pooled connection
that the server closed while idle is retried on another one, since no response byte was seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import httptools

log = logging.getLogger(__name__)

# Response headers that describe one hop only; the router drops them and sets its own.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
    }
)


class UpstreamError(Exception):
    """The version could not give a usable response."""


class UpstreamTimeout(UpstreamError):
    """No complete response within the attempt's deadline."""


class UpstreamRefused(UpstreamError):
    """No connection could be made (refused, unreachable, or the name did not resolve)."""


class UpstreamResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


Result = UpstreamResponse | UpstreamError
Callback = Callable[[Result], None]


class _Pending:
    """One request on its way: what to send, until when, and whom to tell."""

    __slots__ = ("body", "callback", "data", "deadline", "head")

    def __init__(self, head: bytes, body: bytes, deadline: float, callback: Callback) -> None:
        self.head = head
        self.body = body
        self.data = head + body if len(body) < 16384 else None
        self.deadline = deadline
        self.callback = callback


class Pool:
    """Keep-alive connections to one upstream `host:port`."""

    def __init__(self, host: str, port: int, max_idle: int = 512, max_response_bytes: int = 64 << 20) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self.closed = False
        self.open_connections = 0
        self._idle: list[_UpstreamConnection] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, head: bytes, body: bytes, seconds: float, callback: Callback) -> None:
        """Send one request (`head`: request line and headers, ending with the blank line); `callback`
        gets the complete response or an `UpstreamError`, exactly once and never before this returns."""
        loop = self._loop
        if loop is None:  # looked up once: asyncio.get_running_loop() costs a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        self._send(loop, _Pending(head, body, loop.time() + seconds, callback))

    def _send(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                connection.send(pending, reused=True)
                return
        task = loop.create_task(self._connect_and_send(loop, pending))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        remaining = pending.deadline - loop.time()
        try:
            if remaining <= 0:
                raise UpstreamTimeout(f"no connection to {self.host}:{self.port} in time")
            try:
                async with asyncio.timeout(remaining):
                    _, protocol = await loop.create_connection(
                        lambda: _UpstreamConnection(self), self.host, self.port
                    )
            except TimeoutError as error:
                raise UpstreamTimeout(f"no connection to {self.host}:{self.port} in time") from error
            except OSError as error:
                raise UpstreamRefused(
                    f"cannot connect to {self.host}:{self.port}: {error.strerror or error}"
                ) from error
        except UpstreamError as error:
            _tell(pending.callback, error)
            return
        protocol.send(pending, reused=False)

    def retry(self, pending: _Pending) -> None:
        """Send again a request whose reused connection turned out to be closed."""
        assert self._loop is not None
        self._send(self._loop, pending)

    async def request(self, head: bytes, body: bytes, seconds: float) -> UpstreamResponse:
        """`send`, awaited: the response, or the `UpstreamError` raised."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def done(result: Result) -> None:
            if not future.done():
                future.set_result(result)

        self.send(head, body, seconds, done)
        result = await future
        if isinstance(result, UpstreamError):
            raise result
        return result

    def release(self, connection: _UpstreamConnection) -> None:
        if self.closed or len(self._idle) >= self.max_idle:
            connection.close()
        else:
            self._idle.append(connection)

    def discard(self, connection: _UpstreamConnection) -> None:
        """Forget an idle connection the server has closed."""
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        """Close idle connections now; busy ones close when their response is complete."""
        self.closed = True
        while self._idle:
            self._idle.pop().close()


def _tell(callback: Callback, result: Result) -> None:
    try:
        callback(result)
    except Exception:
        log.exception("upstream response callback failed")


class _UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_got_bytes",
        "_headers",
        "_loop",
        "_pending",
        "_reused",
        "_timer",
        "parser",
        "pool",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._pending: _Pending | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._got_bytes = False
        self._reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's don't subclass it
        self.pool.open_connections += 1

    def send(self, pending: _Pending, reused: bool) -> None:
        assert self.transport is not None
        self._pending = pending
        self._reused = reused
        self._headers = []
        self._body = []
        self._body_size = 0
        self._got_bytes = False
        self._timer = self._loop.call_at(pending.deadline, self._on_timeout)
        if pending.data is not None:
            self.transport.write(pending.data)
        else:
            self.transport.writelines((pending.head, pending.body))

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._pending is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"malformed response from {self.pool.host}:{self.pool.port}: {error}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.pool.max_response_bytes:
            self._fail(UpstreamError(f"response over {self.pool.max_response_bytes} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = UpstreamResponse(self.parser.get_status_code(), self._headers, body)
        # Back to the pool first: the callback may send the next request on this very connection.
        if self.parser.should_keep_alive():
            self.pool.release(self)
        else:
            self.close()
        _tell(pending.callback, response)

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeout("no complete response in time"))

    def _fail(self, error: UpstreamError) -> None:
        pending = self._pending
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.close()
        if pending is not None:
            _tell(pending.callback, error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.open_connections -= 1
        self.transport = None
        pending = self._pending
        if pending is None:
            self.pool.discard(self)
            return
        if not self._got_bytes and self._reused:
            self._pending = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.pool.retry(pending)  # closed while idle, before our request: not seen by the server
            return
        self._fail(UpstreamError(f"{self.pool.host}:{self.pool.port} closed the connection before answering"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
