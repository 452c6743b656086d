"""A local copy of some modelfleet.io objects in one namespace, kept current by the watch API.

One thread per kind lists once, then watches from the list's resourceVersion (with bookmarks); it
watches again from the last version seen when the server ends a watch, and lists again on 410 Gone.
Readers take a snapshot and wait on `changed` to redraw: nothing polls the API server.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from modelfleet.kubectl_plugin.kube import Kube, PluginError, explain_api_error, explain_connection_error

WATCH_TIMEOUT = 240
"""Seconds the server keeps one watch open (then the thread watches again from where it was)."""
BACKOFF = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Snapshot:
    """The objects as last seen, by kind and name, and the current trouble (if any) per kind."""

    objects: Mapping[str, Mapping[str, dict[str, Any]]]
    errors: Mapping[str, str] = field(default_factory=dict)
    synced: frozenset[str] = frozenset()
    """Kinds whose first list has completed."""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return list(self.objects.get(kind, {}).values())

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(kind, {}).get(name)


class Watcher:
    """Watches `kinds` in the Kube's namespace; `fields` optionally narrows a kind with a field selector
    (e.g. {"Deployment": "metadata.name=iris"})."""

    def __init__(self, kube: Kube, kinds: tuple[str, ...], fields: Mapping[str, str] | None = None) -> None:
        self.kube = kube
        self.kinds = kinds
        self.fields = dict(fields or {})
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in kinds}
        self._errors: dict[str, str] = {}
        self._synced: set[str] = set()
        self._version = 0
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for kind in self.kinds:
            thread = threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Ask the threads to end; they are daemons, so a blocked read does not hold the process."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                objects={kind: dict(objs) for kind, objs in self._objects.items()},
                errors=dict(self._errors),
                synced=frozenset(self._synced),
            )

    def wait(self, seen: int, timeout: float) -> int:
        """Block until something changed after version `seen` (or `timeout`); return the new version."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self._stop.is_set(), timeout)
            return self._version

    def wait_synced(self, timeout: float) -> bool:
        """Block until every kind has been listed once (or an error was recorded)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            return self._changed.wait_for(
                lambda: all(k in self._synced or k in self._errors for k in self.kinds),
                max(0.0, deadline - time.monotonic()),
            )

    # --- the threads -------------------------------------------------------------------------------

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()

    def _replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._changed:
            self._objects[kind] = {item["metadata"]["name"]: item for item in items}
            self._errors.pop(kind, None)
            self._synced.add(kind)
            self._bump()

    def _apply(self, kind: str, event: Mapping[str, Any]) -> str:
        """Apply one watch event; return the resourceVersion it carries."""
        obj = copy.deepcopy(event.get("object") or {})
        meta = obj.get("metadata") or {}
        version = str(meta.get("resourceVersion", ""))
        if event.get("type") == "BOOKMARK":
            return version
        name = meta.get("name", "")
        with self._changed:
            if event.get("type") == "DELETED":
                self._objects[kind].pop(name, None)
            else:
                self._objects[kind][name] = obj
            self._bump()
        return version

    def _trouble(self, kind: str, text: str) -> None:
        with self._changed:
            if self._errors.get(kind) != text:
                self._errors[kind] = text
                self._bump()

    def _run(self, kind: str) -> None:
        attempt = 0
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    items, resource_version = self.kube.list(kind, self.fields.get(kind))
                    self._replace(kind, items)
                for event in self.kube.watch(kind, resource_version, self.fields.get(kind), WATCH_TIMEOUT):
                    if self._stop.is_set():
                        return
                    resource_version = self._apply(kind, event) or resource_version
                    attempt = 0
                with self._changed:
                    if self._errors.pop(kind, None) is not None:
                        self._bump()
                continue
            except PluginError as error:
                self._trouble(kind, str(error))
            except ApiException as error:
                if error.status == 410:  # too old: list again
                    resource_version = ""
                    continue
                if error.status in (0, None):
                    self._trouble(kind, explain_connection_error(error, self.kube.server))
                else:
                    self._trouble(kind, explain_api_error(error, kind, None, self.kube.namespace, "watch"))
                resource_version = ""
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                self._trouble(kind, explain_connection_error(error, self.kube.server))
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            attempt += 1
            self._stop.wait(delay)
