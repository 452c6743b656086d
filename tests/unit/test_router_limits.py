"""Hard limits of the HTTP server core (`modelfleet.httpcore`) that the router and model server share.

Raw sockets on loopback: each test sends what a careless or hostile client would, and checks the status
line, that the connection was closed when it must be, and that the server still serves afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelfleet.httpcore import HTTPServer, Limits, Request, Response

FAST = Limits(
    max_body_bytes=1024,
    max_header_bytes=2048,
    max_headers=20,
    header_timeout=0.3,
    body_timeout=0.3,
    idle_timeout=0.6,
    max_concurrency=2,
    max_connections=50,
)


class App:
    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.rejected: list[int] = []
        self.waiting = 0
        self.both_waiting = asyncio.Event()
        self.server: HTTPServer | None = None

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        self.calls += 1
        if request.path == b"/boom":
            raise RuntimeError("handler bug")
        if request.path == b"/wait":
            return self._wait(request)
        return Response.json(200, {"path": request.path.decode(), "size": len(request.body)})

    async def _wait(self, request: Request) -> Response:
        assert self.gate is not None
        self.waiting += 1
        if self.waiting == 2:
            self.both_waiting.set()
        await self.gate.wait()
        return Response.json(200, {"waited": True})


@asynccontextmanager
async def serving(limits: Limits = FAST) -> Any:
    app = App()
    server = HTTPServer(
        app.handle, limits, "test", extra_headers=b"x-made-by: server\r\n", on_reject=app.rejected.append
    )
    _, port = await server.listen("127.0.0.1", 0)
    app.server = server
    try:
        yield app, port
    finally:
        await server.close(0.2)


async def exchange(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send `data`, then read until the server closes the connection (or `wait` passes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        received += b"<still open>"
    writer.close()
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1].split(b"<still open>")[0])


class Raw(asyncio.Protocol):
    """A client that keeps whatever the server sent, even after the server hung up on it."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = asyncio.Event()
        self.transport: asyncio.WriteTransport | None = None

    @classmethod
    async def connect(cls, port: int) -> Raw:
        _, client = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(scenario())


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\n%scontent-length: %d\r\n\r\n%s" % (path, extra, len(body), body)


def test_a_body_over_the_limit_gets_413_before_it_is_read_and_the_connection_closes() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            head = b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
            response = await exchange(port, head)  # the body is never sent: no need to wait for it
            assert status_of(response) == 413
            assert "over the limit of 1024 bytes" in body_of(response)["error"]
            assert b"x-made-by: server" in response
            assert not response.endswith(b"<still open>")
            assert app.calls == 0
            assert app.rejected == [413]

    run(scenario)


def test_a_chunked_body_over_the_limit_gets_413() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            chunk = b"x" * 600
            data = b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            data += b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n"
            response = await exchange(port, data)
            assert status_of(response) == 413
            assert app.calls == 0

    run(scenario)


def test_a_body_within_the_limit_is_served_whole() -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            response = await exchange(port, post(b"/x", b"y" * 1024, b"connection: close\r\n"))
            assert status_of(response) == 200
            assert body_of(response) == {"path": "/x", "size": 1024}

    run(scenario)


def test_headers_over_the_limit_get_431() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            response = await exchange(
                port, b"GET /x HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4000 + b"\r\n\r\n"
            )
            assert status_of(response) == 431
            too_many = b"".join(b"x-h%d: v\r\n" % i for i in range(30))
            response = await exchange(port, b"GET /x HTTP/1.1\r\n" + too_many + b"\r\n")
            assert status_of(response) == 431
            assert "more than 20 request headers" in body_of(response)["error"]
            assert app.calls == 0

    run(scenario)


def test_a_header_line_that_never_ends_is_cut_off_at_the_limit() -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            client = await Raw.connect(port)
            client.send(b"GET /x HTTP/1.1\r\nx-endless: ")
            for _ in range(10):
                client.send(b"a" * 512)
                await asyncio.sleep(0.01)
            await asyncio.wait_for(client.closed.wait(), 2)
            assert status_of(client.received) == 431

    run(scenario)


def test_malformed_requests_get_400_and_garbage_never_stops_the_server() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            for data in (
                b"NOT-HTTP\r\n\r\n",
                b"GET / HTTP/9.9\r\n\r\n",
                b"POST /x HTTP/1.1\r\ncontent-length: abc\r\n\r\n",
                b"POST /x HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
                b"GET http://elsewhere/ HTTP/1.1\r\nhost: x\r\n\r\n",
                b"\x00\x01\x02\xff\r\n\r\n",
            ):
                response = await exchange(port, data)
                assert status_of(response) == 400, data
                assert "error" in body_of(response)
            assert app.calls == 0
            assert status_of(await exchange(port, post(b"/ok", b"", b"connection: close\r\n"))) == 200

    run(scenario)


def test_a_slow_client_gets_408_for_headers_and_for_the_body() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            response = await exchange(port, b"GET /x HTTP/1.1\r\nhost: x\r\n")  # headers never finish
            assert status_of(response) == 408
            assert body_of(response) == {"error": "request headers not received in time"}
            response = await exchange(port, b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            assert status_of(response) == 408
            assert body_of(response) == {"error": "request body not received in time"}
            assert app.calls == 0
            assert sorted(app.rejected) == [408, 408]

    run(scenario)


def test_a_trickling_client_is_cut_off_by_the_header_deadline_not_kept_alive_by_each_byte() -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            loop = asyncio.get_running_loop()
            started = loop.time()
            client = await Raw.connect(port)
            client.send(b"GET /x HTTP/1.1\r\n")
            for _ in range(40):
                if client.closed.is_set():
                    break
                client.send(b"x")  # one byte every 50 ms, forever
                await asyncio.sleep(0.05)
            assert client.closed.is_set()
            assert status_of(client.received) == 408
            assert loop.time() - started < 1.0

    run(scenario)


def test_an_idle_keep_alive_connection_is_closed() -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post(b"/x", b""))
            first = await reader.read(4096)
            assert status_of(first) == 200
            rest = await asyncio.wait_for(reader.read(4096), 2.0)
            assert rest == b""  # closed by the server after idle_timeout, without a response
            writer.close()

    run(scenario)


def test_over_the_concurrency_limit_requests_get_503_with_retry_after() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            app.gate = asyncio.Event()
            waiting = [
                asyncio.ensure_future(exchange(port, post(b"/wait", b"", b"connection: close\r\n")))
                for _ in range(2)
            ]
            await asyncio.wait_for(app.both_waiting.wait(), 5)
            response = await exchange(port, post(b"/x", b"", b"connection: close\r\n"))
            assert status_of(response) == 503
            assert b"retry-after: 1\r\n" in response
            assert "overloaded" in body_of(response)["error"]
            app.gate.set()
            for done in await asyncio.gather(*waiting):
                assert status_of(done) == 200
            assert status_of(await exchange(port, post(b"/x", b"", b"connection: close\r\n"))) == 200
            assert app.rejected == [503]

    run(scenario)


def test_over_the_connection_limit_new_connections_get_503_and_are_closed() -> None:
    async def scenario() -> None:
        limits = Limits(max_connections=2, header_timeout=5, idle_timeout=5)
        async with serving(limits) as (_, port):
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await asyncio.sleep(0.05)
            response = await exchange(port, b"")
            assert status_of(response) == 503
            assert not response.endswith(b"<still open>")
            for _, writer in held:
                writer.close()

    run(scenario)


def test_keep_alive_pipelining_and_http_1_0() -> None:
    async def scenario() -> None:
        async with serving() as (app, port):
            # Two pipelined requests in one write: two responses, in order, on one connection.
            both = post(b"/one", b"1") + post(b"/two", b"22", b"connection: close\r\n")
            response = await exchange(port, both)
            parts = response.split(b"HTTP/1.1 ")[1:]
            assert len(parts) == 2
            assert b'"path":"/one"' in parts[0]
            assert b'"path":"/two"' in parts[1]
            assert b"connection: close" in parts[1]
            # HTTP/1.0 closes unless it asks for keep-alive.
            response = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
            assert status_of(response) == 200
            assert not response.endswith(b"<still open>")
            response = await exchange(port, b"GET /old HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", wait=0.2)
            assert b"connection: keep-alive" in response
            assert response.endswith(b"<still open>")
            assert app.calls == 4

    run(scenario)


def test_expect_100_continue_head_and_handler_errors() -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /x HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n")
            assert (
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
            )
            writer.write(b"abc")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert status_of(head) == 200
            writer.close()
            response = await exchange(port, b"HEAD /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert status_of(response) == 200
            assert b"content-length: 22\r\n" in response
            assert response.endswith(b"\r\n\r\n")  # no body after a HEAD
            response = await exchange(port, post(b"/boom", b"", b"connection: close\r\n"))
            assert status_of(response) == 500
            assert body_of(response) == {"error": "internal error"}
            assert status_of(await exchange(port, post(b"/x", b"", b"connection: close\r\n"))) == 200

    run(scenario)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit max_body_bytes must be above 0"):
        Limits(max_body_bytes=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4))
def test_nothing_a_client_sends_stops_the_server(chunks: list[bytes]) -> None:
    async def scenario() -> None:
        async with serving() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for chunk in chunks:
                writer.write(chunk)
            writer.write_eof()
            try:
                async with asyncio.timeout(1.0):
                    while await reader.read(65536):
                        pass
            except (TimeoutError, ConnectionError):
                pass
            writer.close()
            response = await exchange(port, post(b"/after", b"", b"connection: close\r\n"))
            assert status_of(response) == 200

    run(scenario)


def test_a_draining_server_still_answers_but_closes_each_connection_after_its_answer() -> None:
    """Between SIGTERM and closing, the router serves on while its endpoint leaves the load balancers;
    each answer then says `connection: close` and closes, so a keep-alive client's next request opens
    a new connection (which goes to another pod) rather than meet this one closed under it."""

    async def scenario() -> None:
        async with serving() as (app, port):
            server = app.server
            assert server is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post(b"/x", b""))
            before = await reader.read(4096)
            assert status_of(before) == 200
            assert b"connection: close" not in before  # kept alive

            server.draining = True
            writer.write(post(b"/x", b""))
            during = await asyncio.wait_for(reader.read(4096), 2.0)
            assert status_of(during) == 200
            assert b"connection: close\r\n" in during
            assert await asyncio.wait_for(reader.read(4096), 2.0) == b""  # and it was closed
            writer.close()
            # new connections are still served while draining
            assert status_of(await exchange(port, post(b"/x", b"", b"connection: close\r\n"))) == 200

    run(scenario)
