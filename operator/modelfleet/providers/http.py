"""The HTTP client the providers share: one aiohttp session, bounded answers, short timeouts."""

from __future__ import annotations

from typing import Any

import aiohttp

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class HttpStatusError(RuntimeError):
    """An answer other than 200; `status` is its HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Http:
    """A lazily opened aiohttp session; `close` releases it (it opens again on the next call)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, force_close=True),
                headers={"User-Agent": "modelfleet-operator"},
            )
        return self._session

    async def get_bytes(self, url: str, seconds: float, headers: dict[str, str] | None = None) -> bytes:
        """The body of a 200 answer; HttpStatusError (a RuntimeError) for another status, RuntimeError for
        an answer over 8 MiB."""
        async with self.session().get(
            url, timeout=aiohttp.ClientTimeout(total=seconds), headers=headers
        ) as response:
            if response.status != 200:
                raise HttpStatusError(response.status)
            # read(n) returns what has arrived, up to n bytes: read to the end, chunk by chunk
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise RuntimeError("answer too large")
                chunks.append(chunk)
            return b"".join(chunks)

    async def get_json(self, url: str, params: dict[str, str], seconds: float) -> Any:
        async with self.session().get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            return await response.json(content_type=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
