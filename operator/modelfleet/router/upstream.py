"""A pooled keep-alive HTTP/1.1 client on raw asyncio transports and httptools, one pool per version.

Each attempt has one deadline covering connect, send and the whole response. Failures are typed so the
router can tell them apart: `UpstreamTimeout` (deadline passed), `UpstreamRefused` (nothing listening,
or the connection could not be made), `UpstreamError` (broken or malformed response). A pooled connection
that the server closed while idle is retried once on a fresh one, since no response byte was seen.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

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


class _Stale(Exception):
    """A reused connection was closed by the server before any response byte: safe to retry once."""


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


class Pool:
    """Keep-alive connections to one upstream `host:port`."""

    def __init__(self, host: str, port: int, max_idle: int = 512, max_response_bytes: int = 64 << 20) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self.closed = False
        self._idle: list[_UpstreamConnection] = []
        self.open_connections = 0

    async def request(self, head: bytes, body: bytes, seconds: float) -> UpstreamResponse:
        """Send one request (`head` is the request line and headers, ending with the blank line) and
        return the complete response, all within `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        data = head + body if len(body) < 16384 else None
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is None or connection.transport.is_closing():
                continue
            try:
                return await connection.send(head, body, data, deadline)
            except _Stale:
                continue
        connection = await self._connect(loop, deadline)
        try:
            return await connection.send(head, body, data, deadline)
        except _Stale as error:
            raise UpstreamError(
                f"{self.host}:{self.port} closed the connection without a response"
            ) from error

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _UpstreamConnection:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamTimeout(f"no connection to {self.host}:{self.port} in time")
        try:
            async with asyncio.timeout(remaining):
                _, connection = await loop.create_connection(
                    lambda: _UpstreamConnection(self), self.host, self.port
                )
        except TimeoutError as error:
            raise UpstreamTimeout(f"no connection to {self.host}:{self.port} in time") from error
        except OSError as error:
            raise UpstreamRefused(
                f"cannot connect to {self.host}:{self.port}: {error.strerror or error}"
            ) from error
        return connection

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


class _UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_future",
        "_got_bytes",
        "_headers",
        "_loop",
        "_timer",
        "keep_alive",
        "parser",
        "pool",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[UpstreamResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._got_bytes = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's don't subclass it
        self.pool.open_connections += 1

    def send(
        self, head: bytes, body: bytes, data: bytes | None, deadline: float
    ) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        future: asyncio.Future[UpstreamResponse] = self._loop.create_future()
        self._future = future
        self._headers = []
        self._body = []
        self._body_size = 0
        self._got_bytes = False
        self._timer = self._loop.call_at(deadline, self._on_timeout)
        if data is not None:
            self.transport.write(data)
        else:
            self.transport.writelines((head, body))
        return future

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._future is None:
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
        future = self._future
        if future is None:
            return
        self._future = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = UpstreamResponse(self.parser.get_status_code(), self._headers, body)
        if self.parser.should_keep_alive():
            self.pool.release(self)
        else:
            self.close()
        if not future.done():
            future.set_result(response)

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeout("no complete response in time"))

    def _fail(self, error: Exception) -> None:
        future = self._future
        self._future = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.close()
        if future is not None and not future.done():
            future.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.open_connections -= 1
        self.transport = None
        if self._future is None:
            self.pool.discard(self)
        if self._future is None:
            return
        if not self._got_bytes:
            self._fail(_Stale())
        else:
            self._fail(UpstreamError(f"{self.pool.host}:{self.pool.port} closed the connection mid-response"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
