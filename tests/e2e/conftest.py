"""The e2e `fleet`: a Model, ModelVersions and a Deployment serving iris-v1 through its router, with the
operator running and a load generator sending real traffic to the router's ClusterIP Service."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import helpers
import pytest

from support.cluster import Cluster


@dataclass
class Fleet:
    cluster: Cluster
    namespace: str
    operator: Any
    load: helpers.Load | None = None
    serving_since: float = 0.0
    """When the router first answered steadily: client errors are counted from then on."""
    timeline: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.cluster.apply(list(objects), self.namespace)

    def status(self, name: str = "iris") -> dict[str, Any]:
        out: dict[str, Any] = helpers.status(self.cluster, self.namespace, name)
        self.timeline.append((time.time(), out))
        return out

    def monitor_status(self, name: str = "iris-quality") -> dict[str, Any]:
        out: dict[str, Any] = helpers.status(self.cluster, self.namespace, name, "monitors.modelfleet.io")
        return out

    def set_version(self, version: str, name: str = "iris") -> None:
        self.patch(name, {"spec": {"version": version}})

    def patch(self, name: str, patch: dict[str, Any], kind: str = "deployments.modelfleet.io") -> None:
        self.cluster.kubectl(
            "patch", kind, name, "-n", self.namespace, "--type=merge", "-p", json.dumps(patch)
        )

    def wait_status(
        self, what: str, predicate: Any, timeout: float = 120, interval: float = 0.25
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            current = self.status()
            return current if predicate(current) else None

        try:
            out: dict[str, Any] = self.cluster.wait_for(what, check, timeout=timeout, interval=interval)
        except TimeoutError as error:
            raise AssertionError(f"{error}; status now: {self.status()}") from None
        return out

    def serve_v1(self, *objects: dict[str, Any], rate: float = 40.0, **deployment: Any) -> helpers.Load:
        """Apply the objects and a Deployment of iris-v1; wait until it serves; start the load."""
        self.apply(helpers.model(), *objects)
        self.apply(helpers.deployment(version="iris-v1", **deployment))
        self.wait_status(
            "iris-v1 Healthy", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "iris-v1"
        )
        ip = helpers.service_ip(self.cluster, self.namespace, "iris")
        self.load = helpers.Load(ip, rate=rate)
        self.load.start()
        self.serving_since = helpers.wait_until_serving(self.load, "iris-v1")
        return self.load

    def client_errors(self) -> list[helpers.Response]:
        assert self.load is not None
        return self.load.errors(since=self.serving_since)

    def weights_seen(self, canary: str) -> list[int]:
        """canaryWeight values while `canary` was the canary, in the order seen (repeats collapsed)."""
        out: list[int] = []
        for _, s in self.timeline:
            if s.get("canaryVersion") != canary:
                continue
            weight = int(s.get("canaryWeight", 0))
            if not out or out[-1] != weight:
                out.append(weight)
        return out


@pytest.fixture
def fleet(cluster: Cluster, namespace: str, operator: Any) -> Iterator[Fleet]:
    fleet = Fleet(cluster, namespace, operator)
    try:
        yield fleet
    finally:
        if fleet.load is not None:
            fleet.load.stop()
