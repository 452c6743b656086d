"""Configuration sources: a polled file, and a ConfigMap watched through a (fake) Kubernetes API."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from modelfleet.router.configsource import ConfigMapSource, FileSource, KubeAPI


def test_a_file_is_read_at_once_and_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    path.write_text("one")
    seen: list[str] = []
    source = FileSource(str(path), lambda text: seen.append(text) or None)
    source.poll()
    source.poll()
    assert seen == ["one"]
    path.write_text("two!")
    source.poll()
    assert seen == ["one", "two!"]
    # Same size, new modification time: still a change.
    path.write_text("three")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    source.poll()
    assert seen[-1] == "three"


def test_a_missing_or_refused_file_is_logged_and_read_when_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later.json"
    seen: list[str] = []

    def refuse_bad(text: str) -> str | None:
        seen.append(text)
        return "bad config" if text == "bad" else None

    source = FileSource(str(path), refuse_bad)
    source.poll()
    source.poll()
    assert seen == []
    assert sum("cannot be read" in r.message for r in caplog.records) == 1  # once, not every poll
    path.write_text("bad")
    source.poll()
    assert any("refused, keeping the previous configuration: bad config" in r.message for r in caplog.records)
    path.write_text("good")
    source.poll()
    assert seen == ["bad", "good"]


class FakeAPI(BaseHTTPRequestHandler):
    """Answers list and watch of one ConfigMap from a script of responses."""

    script: list[tuple[str, Any]]
    requests: list[dict[str, Any]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.requests.append({"path": parts.path, "query": query, "auth": self.headers.get("Authorization")})
        kind, payload = self.script.pop(0) if self.script else ("hang", None)
        if kind == "hang":
            time.sleep(0.5)
            self.send_response(500)
            self.end_headers()
            return
        if kind == "status":
            self.send_response(payload)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"kind": "Status", "code": payload, "message": "too old"}).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        lines = [json.dumps(payload)] if kind == "list" else [json.dumps(event) for event in payload]
        for line in lines:
            data = (line + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: Any) -> None:
        pass


def configmap(text: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": "iris-router", "resourceVersion": version}, "data": {"config.json": text}}


@pytest.fixture
def fake_api() -> Iterator[tuple[type[FakeAPI], str]]:
    handler = type("Handler", (FakeAPI,), {"script": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_configmap_is_listed_watched_from_its_version_and_listed_again_on_410(
    fake_api: tuple[type[FakeAPI], str], tmp_path: Path
) -> None:
    handler, url = fake_api
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    handler.script = [
        ("list", {"metadata": {"resourceVersion": "5"}, "items": [configmap("A", "5")]}),
        (
            "watch",
            [
                {"type": "MODIFIED", "object": configmap("B", "6")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
                {"type": "MODIFIED", "object": configmap("B", "8")},  # same text: not passed on again
            ],
        ),
        ("watch", [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}]),
        ("list", {"metadata": {"resourceVersion": "20"}, "items": [configmap("C", "19")]}),
        ("watch", [{"type": "DELETED", "object": configmap("C", "21")}]),
    ]
    seen: list[str] = []
    source = ConfigMapSource(KubeAPI(url, str(token)), "ml", "iris-router", seen.append, retry_delay=0.05)
    source.start()
    deadline = time.monotonic() + 10
    while len(handler.requests) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    assert seen == ["A", "B", "C"]
    paths = {r["path"] for r in handler.requests}
    assert paths == {"/api/v1/namespaces/ml/configmaps"}
    assert all(r["query"]["fieldSelector"] == "metadata.name=iris-router" for r in handler.requests)
    assert all(r["auth"] == "Bearer s3cret" for r in handler.requests)
    kinds = [(r["query"].get("watch"), r["query"].get("resourceVersion")) for r in handler.requests[:6]]
    assert kinds == [(None, None), ("true", "5"), ("true", "8"), (None, None), ("true", "20"), ("true", "21")]
    assert handler.requests[1]["query"]["allowWatchBookmarks"] == "true"


def test_api_errors_are_retried_with_backoff(fake_api: tuple[type[FakeAPI], str]) -> None:
    handler, url = fake_api
    handler.script = [
        ("status", 403),
        ("list", {"metadata": {"resourceVersion": "1"}, "items": [configmap("A", "1")]}),
    ]
    seen: list[str] = []
    source = ConfigMapSource(KubeAPI(url), "ml", "iris-router", seen.append, retry_delay=0.05)
    source.start()
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    assert seen == ["A"]
    assert handler.requests[0]["auth"] is None


def test_in_cluster_settings_come_from_the_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    api = KubeAPI.in_cluster()
    assert api.url == "https://[fd00::1]:6443"
    assert api.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert api.ca_file == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(RuntimeError, match="not running in a cluster"):
        KubeAPI.in_cluster()
