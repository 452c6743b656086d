"""The Deployment controller with a spec that follows an MLflow alias: it resolves the alias from the
Model in the watch cache before deciding, writes status.targetVersion, and a change of the Model's
aliases (its status, written by the MLflow sync) wakes the Deployments of that Model. The API server is
replaced by recorders: what the controller sends is what the tests look at."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from modelfleet.builders import COMPONENT_MODEL, VERSION_ANNOTATION
from modelfleet.controllers import deployment as controller_module
from modelfleet.controllers import events, kube
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.deployment import Applier, DeploymentController

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
Obj = dict[str, Any]


class Loops:
    def __init__(self, running: set[tuple[str, str]]) -> None:
        self.running = running
        self.woken: list[tuple[str, str]] = []

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.running

    def keys(self) -> list[tuple[str, str]]:
        return sorted(self.running)

    def wake(self, namespace: str, name: str) -> None:
        self.woken.append((namespace, name))

    def stop(self, namespace: str, name: str) -> None:
        self.running.discard((namespace, name))

    async def stop_all(self) -> None:
        self.running.clear()


def model(aliases: dict[str, str]) -> Obj:
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "iris", "namespace": "ml", "resourceVersion": "5"},
        "spec": {
            "source": {"mlflow": {"trackingUri": "http://mlflow.mlflow.svc:5000", "registeredModel": "iris"}}
        },
        "status": {"source": {"lastSyncTime": "2024-05-01T11:59:00Z", "aliases": aliases}},
    }


def model_version(name: str) -> Obj:
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "model": "iris",
            "version": name.rsplit("v", 1)[1],
            "image": f"localhost/iris-server:{name}",
        },
    }


def following_champion(status: Obj | None = None, resource_version: str = "1") -> Obj:
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
        "spec": {"model": "iris", "versionFrom": {"mlflowAlias": "champion"}},
        "status": status or {},
    }


def ready_pods(version: str) -> Obj:
    """An owned apps/v1 Deployment of `version` with its one pod ready."""
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

    def applied_versions(self) -> set[str]:
        return {
            m["metadata"]["annotations"][VERSION_ANNOTATION]
            for m in self.applied
            if m["kind"] == "Deployment" and VERSION_ANNOTATION in (m["metadata"].get("annotations") or {})
        }


def cache(deployment: Obj, aliases: dict[str, str], owned: list[Obj] | None = None) -> Cache:
    indexes: dict[str, Any] = {index: {} for index in INDEXES}
    indexes["cached_deployments"] = {("ml", "iris"): [deployment]}
    indexes["cached_models"] = {("ml", "iris"): [model(aliases)]}
    indexes["cached_model_versions"] = {("ml", v): [model_version(v)] for v in ("iris-v1", "iris-v2")}
    indexes["cached_owned_deployments"] = {("ml", "iris"): owned or []}
    return Cache(indexes)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    return ApiServer(monkeypatch)


def controller(cached: Cache, api: ApiServer) -> tuple[DeploymentController, Loops]:
    loops = Loops({("ml", "iris")})
    subject = DeploymentController(
        cached, router_image="localhost/modelfleet:test", clock=lambda: NOW, loops=loops
    )
    subject.applier = Applier(send=api.apply)
    return subject, loops


def test_a_reconcile_rolls_out_the_version_the_alias_points_at_and_names_it_in_the_status(
    api: ApiServer,
) -> None:
    subject, _ = controller(cache(following_champion(), {"champion": "iris-v1"}), api)

    subject.reconcile_sync("ml", "iris")

    assert api.applied_versions() == {"iris-v1"}
    (status,) = api.statuses
    assert status["targetVersion"] == "iris-v1"
    assert status["message"] == "waiting for iris-v1 pods (0/1 ready)"
    assert subject.interest[("ml", "iris")] == frozenset({"iris-v1", "model:iris"})


def test_when_the_alias_moves_the_deployment_wakes_and_rolls_the_new_version_out(api: ApiServer) -> None:
    subject, loops = controller(cache(following_champion(), {"champion": "iris-v1"}), api)
    subject.reconcile_sync("ml", "iris")
    serving = {**api.statuses[-1]}
    subject.cache = cache(following_champion(serving, "2"), {"champion": "iris-v1"}, [ready_pods("iris-v1")])
    subject.reconcile_sync("ml", "iris")
    assert api.statuses[-1]["stableVersion"] == "iris-v1"

    # the MLflow sync writes the Model's status: an event of the Model, which wakes its Deployments
    asyncio.run(
        controller_module._model_event(type="MODIFIED", namespace="ml", name="iris", memo=Memo(subject))
    )
    assert loops.woken == [("ml", "iris")]

    stable = {**api.statuses[-1]}
    subject.cache = cache(following_champion(stable, "3"), {"champion": "iris-v2"}, [ready_pods("iris-v1")])
    subject.reconcile_sync("ml", "iris")

    status = api.statuses[-1]
    assert (status["targetVersion"], status["stableVersion"], status["canaryVersion"]) == (
        "iris-v2",
        "iris-v1",
        "iris-v2",
    )
    assert "iris-v2" in api.applied_versions()
    assert (
        "Normal",
        "RolloutStarted",
        "rolling out iris-v2 over iris-v1 (alias champion, 4 steps)",
    ) in api.events


def test_an_alias_that_points_nowhere_leaves_what_serves_alone(api: ApiServer) -> None:
    subject, _ = controller(cache(following_champion(), {"champion": "iris-v1"}), api)
    subject.reconcile_sync("ml", "iris")
    subject.cache = cache(
        following_champion(api.statuses[-1], "2"), {"champion": "iris-v1"}, [ready_pods("iris-v1")]
    )
    subject.reconcile_sync("ml", "iris")
    api.applied.clear()

    subject.cache = cache(following_champion(api.statuses[-1], "3"), {}, [ready_pods("iris-v1")])
    subject.reconcile_sync("ml", "iris")

    status = api.statuses[-1]
    assert (status["targetVersion"], status["stableVersion"]) == ("", "iris-v1")
    assert (
        status["message"]
        == "nothing rolled out: alias champion of Model iris points at no version, serving iris-v1"
    )
    assert api.applied == []  # nothing changed in what serves: nothing sent again
    assert ("Warning", "VersionUnresolved", "alias champion of Model iris points at no version") in api.events


class Memo:
    def __init__(self, deployments: DeploymentController) -> None:
        self.deployments = deployments
