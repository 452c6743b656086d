"""Where the router's configuration comes from: a file (polled) or a ConfigMap (watched through the API).

Both hand the raw `config.json` text to a callback; the router parses and applies it, or keeps the
previous configuration and logs why the new one was refused.

The ConfigMap watch runs in its own thread with the standard library's HTTP client, so the event loop
never blocks on it: list the one ConfigMap (by field selector), then watch from the list's
resourceVersion with bookmarks, re-watching from the last seen resourceVersion when a watch ends, and
re-listing when the API server says that version is gone (410). It authenticates with the pod's
service-account token (re-read on every connection, as tokens rotate) and trusts the service-account CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from modelfleet.api.routerconfig import CONFIG_KEY

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class FileSource:
    """Re-reads a file whenever its modification time, size or inode changes, polling every `interval`."""

    def __init__(self, path: str, on_config: Callable[[str], str | None], interval: float = 0.2) -> None:
        self.path = path
        self.on_config = on_config
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._missing_logged = False

    def poll(self) -> None:
        """Read the file if it changed since the last poll."""
        try:
            stat = os.stat(self.path)
        except OSError as error:
            if not self._missing_logged:
                log.warning("config file %s cannot be read: %s", self.path, error.strerror)
                self._missing_logged = True
            self._seen = None
            return
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key == self._seen:
            return
        self._seen = key  # taken before reading: a write during the read shows as a change next time
        self._missing_logged = False
        try:
            with open(self.path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            log.warning("config file %s cannot be read: %s", self.path, error)
            return
        problem = self.on_config(text)
        if problem is not None:
            log.error("config file %s refused, keeping the previous configuration: %s", self.path, problem)

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)


@dataclass(frozen=True)
class KubeAPI:
    """How to reach the Kubernetes API: base URL, bearer token file and CA bundle (None: system CAs)."""

    url: str
    token_file: str | None = None
    ca_file: str | None = None

    @classmethod
    def in_cluster(cls) -> KubeAPI:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError(
                "not running in a cluster (KUBERNETES_SERVICE_HOST is unset); pass --kube-api or use --config"
            )
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", f"{SERVICE_ACCOUNT}/token", f"{SERVICE_ACCOUNT}/ca.crt")

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.hostname is None:
            raise ValueError(f"Kubernetes API URL {self.url!r} has no host")
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file)
            return http.client.HTTPSConnection(
                parts.hostname, parts.port or 443, timeout=timeout, context=context
            )
        if parts.scheme == "http":
            return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        raise ValueError(f"Kubernetes API URL {self.url!r} must be http:// or https://")

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "modelfleet-router"}
        if self.token_file:
            with open(self.token_file, encoding="utf-8") as file:
                headers["Authorization"] = f"Bearer {file.read().strip()}"
        return headers


class _Gone(Exception):
    """The resourceVersion we watch from is too old: list again."""


class ConfigMapSource:
    """Watches one ConfigMap and passes its `config.json` to `on_config` (called from the watch thread)."""

    def __init__(
        self,
        api: KubeAPI,
        namespace: str,
        name: str,
        on_config: Callable[[str], None],
        watch_seconds: int = 60,
        retry_delay: float = 1.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.on_config = on_config
        self.watch_seconds = watch_seconds
        self.retry_delay = retry_delay
        self.resource_version = ""
        self._last_text: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: http.client.HTTPConnection | None = None

    @property
    def _path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.namespace)}/configmaps"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="configmap-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(2)

    def _run(self) -> None:
        delay = self.retry_delay
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self.list()
                self.watch()
                delay = self.retry_delay
            except _Gone:
                log.info("configmap %s/%s: resourceVersion expired, listing again", self.namespace, self.name)
                self.resource_version = ""
            except Exception as error:
                if self._stop.is_set():
                    return
                log.warning("configmap %s/%s: %s; retrying in %.1fs", self.namespace, self.name, error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _request(self, query: dict[str, str], timeout: float) -> http.client.HTTPResponse:
        connection = self.api.connect(timeout)
        self._connection = connection
        selector = {"fieldSelector": f"metadata.name={self.name}"}
        connection.request(
            "GET", f"{self._path}?{urlencode({**selector, **query})}", headers=self.api.headers()
        )
        response = connection.getresponse()
        if response.status == 410:
            raise _Gone
        if response.status != 200:
            detail = response.read(2048).decode(errors="replace")
            connection.close()
            raise RuntimeError(f"API answered {response.status}: {_status_message(detail)}")
        return response

    def list(self) -> None:
        """Read the ConfigMap once and remember the list's resourceVersion."""
        response = self._request({}, timeout=30.0)
        try:
            document = json.loads(response.read())
        finally:
            response.close()
        for item in document.get("items") or []:
            self._offer(item)
        self.resource_version = document.get("metadata", {}).get("resourceVersion", "")
        if not document.get("items"):
            log.warning("configmap %s/%s does not exist yet; waiting for it", self.namespace, self.name)

    def watch(self) -> None:
        """Follow changes until the server ends the watch; raises _Gone when we must list again."""
        query = {
            "watch": "true",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        response = self._request(query, timeout=self.watch_seconds + 30.0)
        try:
            while not self._stop.is_set():
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    self._event(json.loads(line))
        finally:
            response.close()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        item = event.get("object") or {}
        if kind == "ERROR":
            if item.get("code") == 410:
                raise _Gone
            raise RuntimeError(f"watch error: {item.get('message', item)}")
        version = item.get("metadata", {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if kind in ("ADDED", "MODIFIED"):
            self._offer(item)
        elif kind == "DELETED":
            log.warning(
                "configmap %s/%s was deleted; keeping the last configuration", self.namespace, self.name
            )

    def _offer(self, item: dict[str, Any]) -> None:
        text = (item.get("data") or {}).get(CONFIG_KEY)
        if text is None:
            log.warning("configmap %s/%s has no key %s", self.namespace, self.name, CONFIG_KEY)
            return
        if text != self._last_text:
            self._last_text = text
            self.on_config(text)


def _status_message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body))
    except ValueError:
        return body[:200]
