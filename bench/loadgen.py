"""Load generator for the router benchmark: an asyncio (uvloop) HTTP/1.1 client on raw transports.

Two modes, each bounded in time:

- open loop (`--rate R`): sends R requests per second on schedule, whether or not earlier ones have
  answered (new keep-alive connections are opened as needed, up to `--max-connections`), so a slow
  server cannot slow the offered load down;
- closed loop (`--connections C`): C connections each send their next request as soon as the previous
  response is complete, for maximum throughput.

Latency is taken per request from just before the write to the parser's message-complete callback.
Requests begun during `--warmup` are not counted. Prints one JSON summary on stdout.

    python -m bench.loadgen --url http://127.0.0.1:8080/v2/models/iris/infer --body-file b.json --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}
        self.errors = 0
        self.overflow = 0
        self.sent = 0
        self.completed_all = 0  # warm-up included: for CPU per request
        self.max_lag = 0.0


class Client(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.counted = False
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, counted: bool) -> None:
        assert self.transport is not None
        self.busy = True
        self.counted = counted
        self.started = time.perf_counter()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail()

    def on_message_complete(self) -> None:
        elapsed = time.perf_counter() - self.started
        self.busy = False
        self.gen.stats.completed_all += 1
        if self.counted:
            stats = self.gen.stats
            stats.latencies.append(elapsed)
            code = self.parser.get_status_code()
            stats.codes[code] = stats.codes.get(code, 0) + 1
        self.gen.done(self)

    def fail(self) -> None:
        if self.busy and self.counted:
            self.gen.stats.errors += 1
        self.busy = False
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.gen.lost(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport = None
            if self.busy and self.counted:
                self.gen.stats.errors += 1
            self.busy = False
            self.gen.lost(self)


class Generator:
    def __init__(self, url: str, body: bytes, max_connections: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise SystemExit(f"--url must be http://host:port/path, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        method = "POST" if body else "GET"
        self.request = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.max_connections = max_connections
        self.idle: list[Client] = []
        self.all: set[Client] = set()
        self.stats = Stats()
        self.counting = False
        self.closed_loop = False
        self.stopping = False
        self.connecting = 0
        self.backlog = 0

    async def connect(self) -> Client:
        loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            _, client = await loop.create_connection(lambda: Client(self), self.host, self.port)
        finally:
            self.connecting -= 1
        self.all.add(client)
        return client

    def done(self, client: Client) -> None:
        if self.closed_loop and not self.stopping:
            self.stats.sent += self.counting
            client.send(self.counting)
            return
        if self.backlog and not self.stopping:
            self.backlog -= 1
            self.stats.sent += self.counting
            client.send(self.counting)
            return
        self.idle.append(client)

    def lost(self, client: Client) -> None:
        self.all.discard(client)
        if client in self.idle:
            self.idle.remove(client)

    def fire(self) -> None:
        """Send one request now (open loop): on an idle connection, or a new one."""
        if self.idle:
            self.stats.sent += self.counting
            self.idle.pop().send(self.counting)
        elif len(self.all) + self.connecting < self.max_connections:
            asyncio.get_running_loop().create_task(self._fire_new())
        else:
            self.backlog += 1
            if self.counting:
                self.stats.overflow += 1

    async def _fire_new(self) -> None:
        try:
            client = await self.connect()
        except OSError:
            if self.counting:
                self.stats.errors += 1
            return
        self.stats.sent += self.counting
        client.send(self.counting)

    async def open_loop(self, rate: float, duration: float, warmup: float) -> float:
        loop = asyncio.get_running_loop()
        for _ in range(min(16, self.max_connections)):
            self.idle.append(await self.connect())
        start = time.perf_counter()
        fired = 0
        measured_from = start + warmup
        end = measured_from + duration
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if not self.counting and now >= measured_from:
                self.counting = True
            due = int((now - start) * rate)
            if due - fired > 1:
                lag = (due - fired - 1) / rate
                if self.counting and lag > self.stats.max_lag:
                    self.stats.max_lag = lag
            while fired < due:
                fired += 1
                self.fire()
            next_at = start + (fired + 1) / rate
            # At least 1 ms: shorter sleeps round to 0 in the event loop and would spin; requests that
            # fall due meanwhile go out together on the next wake-up.
            await asyncio.sleep(max(0.001, next_at - time.perf_counter()))
        self.stopping = True
        self.counting = False
        await self._drain(loop)
        return duration

    async def closed_loop_run(self, connections: int, duration: float, warmup: float) -> float:
        loop = asyncio.get_running_loop()
        self.closed_loop = True
        clients = [await self.connect() for _ in range(connections)]
        for client in clients:
            client.send(False)
        await asyncio.sleep(warmup)
        self.counting = True
        started = time.perf_counter()
        await asyncio.sleep(duration)
        self.counting = False
        elapsed = time.perf_counter() - started
        self.stopping = True
        await self._drain(loop)
        return elapsed

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(500):  # up to 5 s for answers still on their way
            if not any(client.busy for client in self.all):
                break
            await asyncio.sleep(0.01)
        for client in list(self.all):
            if client.transport is not None:
                client.transport.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def summarize(gen: Generator, elapsed: float) -> dict[str, Any]:
    values = sorted(gen.stats.latencies)
    count = len(values)
    return {
        "requests": count,
        "sent": gen.stats.sent,
        "completed_including_warmup": gen.stats.completed_all,
        "errors": gen.stats.errors,
        "non_2xx": sum(n for code, n in gen.stats.codes.items() if not 200 <= code < 300),
        "codes": {str(code): n for code, n in sorted(gen.stats.codes.items())},
        "overflow": gen.stats.overflow,
        "seconds": elapsed,
        "throughput": count / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {
            name: percentile(values, q) * 1000
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))
        }
        | {"mean": (sum(values) / count * 1000) if count else float("nan")},
        "max_schedule_lag_ms": gen.stats.max_lag * 1000,
        "connections": len(gen.all),
    }


async def run(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    gen = Generator(args.url, body, args.max_connections)
    if args.rate:
        elapsed = await gen.open_loop(args.rate, args.duration, args.warmup)
    else:
        elapsed = await gen.closed_loop_run(args.connections, args.duration, args.warmup)
    return summarize(gen, elapsed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", help="request body (POST); without it, GET")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--connections", type=int, help="closed loop: concurrent connections")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (max 120)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 120 or args.warmup < 0:
        parser.error("--duration must be in (0, 120] seconds and --warmup not negative")
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as file:
            body = file.read()
    try:
        import uvloop

        result = uvloop.run(run(args, body))
    except ImportError:
        result = asyncio.run(run(args, body))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
