"""Helpers for process-level tests: real `modelfleet router` and `modelfleet model-server` processes on
loopback, a small keep-alive HTTP client to load them, and a fake Kubernetes API for ConfigMap mode."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request as UrlRequest
from urllib.request import urlopen

LISTENING = re.compile(r"listening on http://[^:]+:(\d+)(?: \(admin http://[^:]+:(\d+)\))?")

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
INFER_PATH = "/v2/models/iris/infer"
INFER_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [SETOSA, VIRGINICA]}]}
).encode()


class Process:
    """A `modelfleet` subcommand in its own process; `port` (and `admin_port`) once it listens."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, wait: float = 30.0) -> None:
        self.args = list(args)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelfleet.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._listening = threading.Event()
        self.port = 0
        self.admin_port = 0
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(wait):
            self.stop()
            raise RuntimeError(f"{args[0]} did not start listening in {wait}s:\n{self.log}")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            match = LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(1))
                self.admin_port = int(match.group(2) or 0)
                self._listening.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def model_server(version: str, *flags: str, env: dict[str, str] | None = None) -> Process:
    return Process(
        ["model-server", "--host", "127.0.0.1", "--port", "0", *flags],
        {"MODELFLEET_MODEL_VERSION": version, **(env or {})},
    )


def router(*flags: str) -> Process:
    return Process(["router", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", *flags])


def write_config(path: Path, versions: Sequence[tuple[str, Process, int, str]], **extra: Any) -> None:
    """Write a router config atomically: versions are (name, model server, weight, role)."""
    document = {
        "deployment": "iris",
        "versions": [
            {"name": name, "url": server.url, "weight": weight, "role": role}
            for name, server, weight, role in versions
        ],
        **extra,
    }
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(document))
    scratch.replace(path)


def get_json(port: int, path: str, token: str | None = None) -> Any:
    """The JSON answer to GET `path` (with `Authorization: Bearer <token>` when given)."""
    with urlopen(_get(port, path, token), timeout=5) as response:
        return json.loads(response.read())


def get_text(port: int, path: str, token: str | None = None) -> str:
    with urlopen(_get(port, path, token), timeout=5) as response:
        return str(response.read().decode())


def get_status(port: int, path: str, token: str | None = None) -> int:
    """The status of the answer to GET `path`, 4xx and 5xx included."""
    try:
        with urlopen(_get(port, path, token), timeout=5) as response:
            return int(response.status)
    except HTTPError as error:
        return int(error.code)


def _get(port: int, path: str, token: str | None) -> UrlRequest:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return UrlRequest(f"http://127.0.0.1:{port}{path}", headers=headers)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> float:
    """Seconds until `predicate()` held; raises AssertionError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Tally:
    """What a load run saw."""

    replies: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def add(self, reply: Reply) -> None:
        self.replies += 1
        self.statuses[reply.status] += 1
        self.served_by[reply.headers.get("x-modelfleet-served-by", "?")] += 1
        if "x-modelfleet-fallback" in reply.headers:
            self.fallbacks[reply.headers["x-modelfleet-fallback"]] += 1


async def send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes, headers: str = ""
) -> Reply:
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\n{headers}"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    data = await reader.readexactly(int(fields.get("content-length", "0")))
    return Reply(status, fields, data)


async def load(
    port: int,
    requests: int | None = None,
    concurrency: int = 16,
    seconds: float | None = None,
    path: str = INFER_PATH,
    body: bytes = INFER_BODY,
    tally: Tally | None = None,
    stop: asyncio.Event | None = None,
) -> Tally:
    """Send `requests` requests (or keep going for `seconds`, or until `stop`) over keep-alive connections."""
    tally = tally or Tally()
    remaining = [requests if requests is not None else 1 << 60]
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining[0] > 0 and time.monotonic() < deadline and not (stop and stop.is_set()):
                remaining[0] -= 1
                try:
                    reply = await send(reader, writer, path, body)
                    tally.add(reply)
                    if reply.headers.get("connection", "").lower() == "close":  # as any HTTP client does
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except (OSError, asyncio.IncompleteReadError) as error:
                    tally.failures.append(repr(error))
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


class FakeKubeAPI:
    """Serves list and watch of one ConfigMap on loopback; `update(text)` sends a MODIFIED event."""

    def __init__(self, namespace: str, name: str, text: str) -> None:
        self.namespace, self.name = namespace, name
        self.version = 1
        self.text = text
        self.changed = threading.Condition()
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                api.requests.append(self.path)
                if f"/api/v1/namespaces/{api.namespace}/configmaps" not in self.path:
                    self.send_error(404)
                    return
                if "watch=true" not in self.path:
                    body = json.dumps(
                        {"metadata": {"resourceVersion": str(api.version)}, "items": [api.object()]}
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                since = int(re.search(r"resourceVersion=(\d+)", self.path).group(1))  # type: ignore[union-attr]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + 5
                with api.changed:
                    while api.version <= since and time.monotonic() < deadline:
                        api.changed.wait(0.1)
                    event = {"type": "MODIFIED", "object": api.object()} if api.version > since else None
                if event is not None:
                    data = (json.dumps(event) + "\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def object(self) -> dict[str, Any]:
        return {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": str(self.version),
            },
            "data": {"config.json": self.text},
        }

    def update(self, text: str) -> None:
        with self.changed:
            self.text = text
            self.version += 1
            self.changed.notify_all()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
