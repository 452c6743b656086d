"""The Deployment controller with spec.fallback: it keeps the fallback version's pods and Service, names
it in the router's configuration, and, when the stable version fails a Monitor with onDegraded:
Fallback, tells the router to send its traffic there, says so in status and events, and sets
modelfleet_deployment_fallback_active. The API server is replaced by recorders: what the controller
sends is what the tests look at."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelfleet import metrics
from modelfleet.api.routerconfig import RouterConfig
from modelfleet.builders import COMPONENT_MODEL, VERSION_ANNOTATION
from modelfleet.controllers import events, kube
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.deployment import Applier, DeploymentController

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
Obj = dict[str, Any]


class Loops:
    def __init__(self) -> None:
        self.running = {("ml", "iris")}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.running

    def keys(self) -> list[tuple[str, str]]:
        return sorted(self.running)

    def wake(self, namespace: str, name: str) -> None:
        pass

    def stop(self, namespace: str, name: str) -> None:
        self.running.discard((namespace, name))

    async def stop_all(self) -> None:
        self.running.clear()


def model(require_approval: bool = False) -> Obj:
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"governance": {"requireApproval": require_approval}},
    }


def model_version(name: str, version: str) -> Obj:
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"model": "iris", "version": version, "image": f"localhost/iris-server:{version}"},
    }


def iris(status: Obj | None = None, resource_version: str = "1") -> Obj:
    """Deployment iris serving iris-v1, with iris-rules as its fallback version."""
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": resource_version,
        },
        "spec": {"model": "iris", "version": "iris-v1", "fallback": {"version": "iris-rules"}},
        "status": status or {},
    }


def quality(*verdicts: str) -> Obj:
    """Monitor iris-quality, onDegraded: Fallback, with a measurement of iris-v1 per verdict, a second
    apart from NOW on, newest first."""
    measurements = [
        {
            "time": (NOW + timedelta(seconds=i + 1)).isoformat(),
            "version": "iris-v1",
            "results": [
                {
                    "name": "errors",
                    "value": 0.31 if v == "Fail" else 0.0,
                    "threshold": "<= 0.05",
                    "verdict": v,
                    "message": "errors 0.31 > 0.05" if v == "Fail" else "",
                }
            ],
        }
        for i, v in enumerate(verdicts)
    ]
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Monitor",
        "metadata": {"name": "iris-quality", "namespace": "ml"},
        "spec": {
            "deployment": "iris",
            "onDegraded": "Fallback",
            "metrics": [{"name": "errors", "type": "errorRate", "max": 0.05}],
        },
        "status": {"measurements": list(reversed(measurements))},
    }


def ready_pods(version: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"iris-{version}",
            "namespace": "ml",
            "generation": 1,
            "labels": {"app.kubernetes.io/component": COMPONENT_MODEL},
            "annotations": {VERSION_ANNOTATION: version},
        },
        "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }


class ApiServer:
    """Records the controller's writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[Obj] = []
        self.statuses: list[Obj] = []
        self.events: list[tuple[str, str, str]] = []
        monkeypatch.setattr(kube, "replace_status", self.replace_status)
        monkeypatch.setattr(kube, "remove_annotations", lambda *args: None)
        monkeypatch.setattr(kube, "delete", lambda *args: True)
        monkeypatch.setattr(events, "post", self.post)

    def apply(self, manifest: Obj) -> Obj:
        self.applied.append(manifest)
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "7", "generation": 1}}

    def replace_status(self, kind: str, namespace: str, name: str, status: Obj, resource_version: str) -> Obj:
        self.statuses.append(status)
        return {}

    def post(self, body: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def applied_versions(self, kind: str) -> set[str]:
        return {
            m["metadata"]["annotations"][VERSION_ANNOTATION]
            for m in self.applied
            if m["kind"] == kind and VERSION_ANNOTATION in (m["metadata"].get("annotations") or {})
        }

    def router_config(self) -> RouterConfig:
        (last, *_) = [m for m in reversed(self.applied) if m["kind"] == "ConfigMap"]
        return RouterConfig.model_validate(json.loads(last["data"]["config.json"]))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    return ApiServer(monkeypatch)


def cache(
    deployment: Obj,
    owned: list[Obj] | None = None,
    monitor: Obj | None = None,
    governed: Obj | None = None,
) -> Cache:
    indexes: dict[str, Any] = {index: {} for index in INDEXES}
    indexes["cached_deployments"] = {("ml", "iris"): [deployment]}
    indexes["cached_models"] = {("ml", "iris"): [governed or model()]}
    indexes["cached_model_versions"] = {
        ("ml", "iris-v1"): [model_version("iris-v1", "1")],
        ("ml", "iris-rules"): [model_version("iris-rules", "0")],
    }
    indexes["cached_owned_deployments"] = {("ml", "iris"): owned or []}
    if monitor is not None:
        indexes["cached_monitors_by_deployment"] = {("ml", "iris"): [monitor]}
    return Cache(indexes)


def controller(cached: Cache, api: ApiServer) -> DeploymentController:
    subject = DeploymentController(
        cached, router_image="localhost/modelfleet:test", clock=lambda: NOW, loops=Loops()
    )
    subject.applier = Applier(send=api.apply)
    return subject


def serving(api: ApiServer, monitor: Obj | None = None) -> DeploymentController:
    """Given iris-v1 stable and iris-rules warm, both with ready pods."""
    subject = controller(cache(iris()), api)
    subject.reconcile_sync("ml", "iris")
    subject.cache = cache(
        iris(api.statuses[-1], "2"), [ready_pods("iris-v1"), ready_pods("iris-rules")], monitor
    )
    subject.reconcile_sync("ml", "iris")
    assert api.statuses[-1]["stableVersion"] == "iris-v1"
    return subject


def gauge(namespace: str, name: str) -> float:
    value = metrics.FALLBACK_ACTIVE.labels(namespace, name)._value.get()
    return float(value)


def test_the_fallback_versions_pods_and_service_are_applied_with_the_stable_versions(api: ApiServer) -> None:
    subject = controller(cache(iris()), api)

    subject.reconcile_sync("ml", "iris")

    assert api.applied_versions("Deployment") == {"iris-v1", "iris-rules"}
    assert api.applied_versions("Service") == {"iris-v1", "iris-rules"}
    assert subject.interest[("ml", "iris")] == frozenset({"iris-v1", "iris-rules", "model:iris"})


def test_the_router_configuration_names_the_ready_fallback_version(api: ApiServer) -> None:
    serving(api)

    config = api.router_config()
    assert [(v.name, v.weight, v.role) for v in config.versions] == [
        ("iris-v1", 100, "stable"),
        ("iris-rules", 0, "fallback"),
    ]
    assert config.versions[1].url == "http://iris-iris-rules.ml.svc:8080"
    assert config.fallback.active is False
    assert gauge("ml", "iris") == 0.0


def test_a_stable_version_failing_its_monitor_sends_its_traffic_to_the_fallback(api: ApiServer) -> None:
    subject = serving(api)

    subject.cache = cache(
        iris(api.statuses[-1], "3"),
        [ready_pods("iris-v1"), ready_pods("iris-rules")],
        quality("Fail", "Fail"),
    )
    subject.clock = lambda: NOW + timedelta(seconds=10)
    subject.reconcile_sync("ml", "iris")

    status = api.statuses[-1]
    assert status["phase"] == "Degraded"
    assert status["fallback"] == {
        "active": True,
        "version": "iris-rules",
        "since": "2024-05-01T12:00:10Z",
        "reason": "iris-v1 fails monitor iris-quality: errors 0.31 > 0.05",
    }
    assert api.router_config().fallback.active is True
    assert (
        "Warning",
        "FallbackEngaged",
        "iris-v1 fails monitor iris-quality: errors 0.31 > 0.05; fallback iris-rules serves its traffic",
    ) in api.events
    assert gauge("ml", "iris") == 1.0

    subject.on_deployment("DELETED", iris(), "ml", "iris")
    assert ("ml", "iris") not in {
        tuple(sample.labels.values())
        for family in metrics.FALLBACK_ACTIVE.collect()
        for sample in family.samples
    }


def test_a_fallback_version_the_model_does_not_allow_is_not_kept_warm(api: ApiServer) -> None:
    governed = model(require_approval=True)
    approved = model_version("iris-v1", "1")
    approved["spec"]["approval"] = {"approved": True, "by": "alice"}

    def cached(deployment: Obj, owned: list[Obj] | None = None) -> Cache:
        found = cache(deployment, owned, governed=governed)
        found._indexes["cached_model_versions"][("ml", "iris-v1")] = [approved]
        return found

    subject = controller(cached(iris()), api)
    subject.reconcile_sync("ml", "iris")
    subject.cache = cached(iris(api.statuses[-1], "2"), [ready_pods("iris-v1")])
    subject.reconcile_sync("ml", "iris")

    assert api.statuses[-1]["stableVersion"] == "iris-v1"
    assert api.applied_versions("Deployment") == {"iris-v1"}
    assert [v.role for v in api.router_config().versions] == ["stable"]
    (warning,) = [e for e in api.events if e[1] == "FallbackUnavailable"]
    assert warning[0] == "Warning"
    assert warning[2].startswith("fallback iris-rules not kept warm: ")
    assert "approv" in warning[2]
