"""The Monitor providers' HTTP reads, against an aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from modelfleet.providers.http import MAX_RESPONSE_BYTES, Http


async def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/metrics"


def _streamed(parts: int, size: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(parts):
            await response.write(bytes([65 + i % 26]) * size)
            await asyncio.sleep(0)  # each part its own chunk on the wire
        await response.write_eof()
        return response

    return handler


def test_a_page_sent_in_many_chunks_is_read_whole() -> None:
    async def scenario() -> bytes:
        runner, url = await _serve(_streamed(parts=200, size=4096))
        http = Http()
        try:
            return await http.get_bytes(url, 10)
        finally:
            await http.close()
            await runner.cleanup()

    body = asyncio.run(scenario())

    assert len(body) == 200 * 4096
    assert body[:4096] == b"A" * 4096
    assert body[-4096:] == bytes([65 + 199 % 26]) * 4096


def test_a_page_over_the_limit_is_refused() -> None:
    async def scenario() -> None:
        runner, url = await _serve(_streamed(parts=MAX_RESPONSE_BYTES // 65536 + 2, size=65536))
        http = Http()
        try:
            await http.get_bytes(url, 10)
        finally:
            await http.close()
            await runner.cleanup()

    with pytest.raises(RuntimeError, match="answer too large"):
        asyncio.run(scenario())
