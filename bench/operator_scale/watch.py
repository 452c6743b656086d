"""Watches of the benchmark's objects: which are reconciled, their phases, and how often they change."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.operator_scale.cluster import BenchCluster
from bench.operator_scale.objects import GROUP, NAMESPACE, VERSION

Counts = Callable[[], tuple[int, int, Counter[str]]]


def is_reconciled(obj: dict[str, Any]) -> bool:
    """The operator has written a status for the object's current spec."""
    generation = obj.get("metadata", {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is not None and observed == generation


class StatusWatch:
    """Generation, observedGeneration and phase of every object of one kind, kept by a watch."""

    def __init__(
        self, cluster: BenchCluster, plural: str, group: str = GROUP, version: str = VERSION
    ) -> None:
        self.cluster = cluster
        self.plural = plural
        self.api = (group, version)
        self.name = f"{plural}.{group}"
        self.events = 0
        """Changes seen (added, modified, deleted), the initial listing not counted."""
        self.objects: dict[str, tuple[bool, str]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)
        self.thread.start()

    def _record(self, obj: dict[str, Any]) -> None:
        phase = str((obj.get("status") or {}).get("phase", ""))
        self.objects[obj["metadata"]["name"]] = (is_reconciled(obj), phase)

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    listing: dict[str, Any] = self.cluster.custom.list_namespaced_custom_object(
                        *self.api, NAMESPACE, self.plural
                    )
                    with self.lock:
                        self.objects.clear()
                        for obj in listing["items"]:
                            self._record(obj)
                    version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch()  # type: ignore[no-untyped-call]
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self.cluster.custom.list_namespaced_custom_object,
                    *self.api,
                    NAMESPACE,
                    self.plural,
                    resource_version=version,
                    timeout_seconds=30,
                ):
                    if self.stopped.is_set():
                        stream.stop()  # type: ignore[no-untyped-call]
                        break
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    with self.lock:
                        self.events += 1
                        if event["type"] == "DELETED":
                            self.objects.pop(obj["metadata"]["name"], None)
                        else:
                            self._record(obj)
            except ApiException as error:
                version = None
                if error.status != 410:
                    time.sleep(1)
            except Exception:  # a dropped connection: list again
                version = None
                time.sleep(1)

    def counts(self) -> tuple[int, int, Counter[str]]:
        """(objects, reconciled objects, objects per phase)."""
        with self.lock:
            values = list(self.objects.values())
        return len(values), sum(ok for ok, _ in values), Counter(phase for _, phase in values)

    def stop(self) -> None:
        self.stopped.set()


def combined(*watches: StatusWatch) -> Counts:
    """The counts of several watches, added up."""

    def counts() -> tuple[int, int, Counter[str]]:
        parts = [w.counts() for w in watches]
        return sum(p[0] for p in parts), sum(p[1] for p in parts), sum((p[2] for p in parts), Counter())

    return counts
