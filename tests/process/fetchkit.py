"""Helpers for the fetcher's process tests: a real S3 server (versitygw on loopback, with its POSIX
backend and its access log to count requests), a small HTTP file server, and `modelfleet fetch` run as
a process, as the init container runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from support.cluster import VERSIONS

VERSITYGW_VERSION = VERSIONS.get("VERSITYGW_VERSION", "v1.8.0")


def versitygw_binary() -> Path:
    """The pinned versitygw that `make components` (cluster/build.sh versitygw) builds into the cache."""
    cache = Path(os.environ.get("MODELFLEET_CACHE", Path.home() / ".cache" / "modelfleet"))
    path = cache / "bin" / f"versitygw-{VERSITYGW_VERSION}" / "versitygw"
    if not path.exists():
        pytest.fail(
            f"versitygw {VERSITYGW_VERSION} is not built at {path}: run `make components` "
            "(cluster/build.sh versitygw)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class S3Store:
    """versitygw serving a fresh directory on 127.0.0.1, with root credentials made up for the test."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "gateway"
        self.root.mkdir(parents=True)
        self.access_log = workdir / "access.log"
        self.access_key = "fetchtest"
        self.secret_key = f"store-secret-{uuid.uuid4().hex}"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.output = workdir / "versitygw.out"
        env = {
            "ROOT_ACCESS_KEY_ID": self.access_key,
            "ROOT_SECRET_ACCESS_KEY": self.secret_key,
            "PATH": "/usr/bin:/bin",
        }
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(versitygw_binary()),
                    "--port",
                    f"127.0.0.1:{self.port}",
                    "--access-log",
                    str(self.access_log),
                    "posix",
                    str(self.root),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"versitygw exited {self.proc.returncode}:\n{self.output.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"versitygw did not listen on {self.port} in 30s:\n{self.output.read_text()}")
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def bucket(self, objects: Mapping[str, bytes] | None = None) -> str:
        """A new bucket holding `objects` (key -> bytes)."""
        name = f"models-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        for key, data in (objects or {}).items():
            self.client.put_object(Bucket=name, Key=key, Body=data)
        return name

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a model pod gets from its credentials Secret."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            **extra,
        }

    def requests(self, bucket: str) -> Counter[str]:
        """Requests the store logged for `bucket`, by operation (s3_GetObject, s3_ListObjectsV2, ...)."""
        counts: Counter[str] = Counter()
        if self.access_log.exists():
            for line in self.access_log.read_text().splitlines():
                fields = line.split()
                if len(fields) > 7 and fields[1] == bucket:
                    counts[fields[7]] += 1
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class FileServer:
    """A loopback HTTP server for the fetcher: `files` by path; `token`, when set, is the Authorization
    header value it wants (a wrong one gets 403 with the header echoed in the body, as careless servers
    do); `/slow/NAME` sends NAME a chunk every 0.2 s; `/stall` sends 1000 bytes of 10 MiB and stops;
    `/endless` streams without a length, forever."""

    files: dict[str, bytes] = field(default_factory=dict)
    token: str | None = None
    hits: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                if server.token is not None and self.headers.get("Authorization") != server.token:
                    self._send(403, f"forbidden: {self.headers.get('Authorization')}".encode())
                    return
                if self.path == "/stall":  # headers, a little, then nothing
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * 1024 * 1024))
                    self.end_headers()
                    self.wfile.write(b"x" * 1000)
                    self.wfile.flush()
                    time.sleep(30)
                    return
                if self.path == "/endless":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"x" * 65536
                    try:
                        while True:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    except OSError:
                        return
                slow = self.path.startswith("/slow/")
                data = server.files.get(self.path.removeprefix("/slow") if slow else self.path)
                if data is None:
                    self._send(404, b"no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for at in range(0, len(data), 16384):
                        self.wfile.write(data[at : at + 16384])
                        if slow:
                            self.wfile.flush()
                            time.sleep(0.2)
                except OSError:
                    return

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class FetchRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    seconds: float

    @property
    def output(self) -> str:
        """Everything the fetch said, anywhere: for checking that no secret is in it."""
        return self.stdout + self.stderr + json.dumps(self.report)


def run_fetch(args: Sequence[str], env: Mapping[str, str], workdir: Path, timeout: float = 120) -> FetchRun:
    """`modelfleet fetch ARGS --report FILE` in a process, with only the given credentials."""
    report = workdir / f"report-{uuid.uuid4().hex[:8]}.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELFLEET_HTTP_"))}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli", "fetch", *args, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **env},
        check=False,
    )
    seconds = time.monotonic() - started
    data = json.loads(report.read_text()) if report.exists() else {}
    return FetchRun(result.returncode, result.stdout, result.stderr, data, seconds)
