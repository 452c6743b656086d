"""What wakes a Deployment's loop from its owned apps/v1 Deployments: only what a reconcile reads of them
(the version they run and their ready pods), so status churn of 1,000 owned objects costs no reconciles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from modelfleet.builders import VERSION_ANNOTATION
from modelfleet.controllers import deployment

Key = tuple[str, str]
# the kopf handler, called as kopf calls it (with only the arguments it uses)
on_owned_event = cast(Callable[..., Coroutine[Any, Any, None]], deployment._owned_deployment_event)


class Loops:
    """Records wake-ups instead of running loops."""

    def __init__(self, running: set[Key] | None = None) -> None:
        self.running = running or set()
        self.woken: list[Key] = []

    def __contains__(self, key: Key) -> bool:
        return key in self.running

    def wake(self, namespace: str, name: str) -> None:
        self.woken.append((namespace, name))


def apps(version: str = "iris-v1", ready: int = 0, generation: int = 1, **status: Any) -> dict[str, Any]:
    annotations = {VERSION_ANNOTATION: version} if version else {}
    return {
        "metadata": {
            "name": f"iris-{version or 'router'}",
            "generation": generation,
            "annotations": annotations,
            "ownerReferences": [
                {"apiVersion": "modelfleet.io/v1alpha1", "kind": "Deployment", "name": "iris"}
            ],
        },
        "status": {
            "observedGeneration": generation,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            **status,
        },
    }


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> Loops:
    recorder = Loops()
    monkeypatch.setattr(deployment, "LOOPS", recorder)
    monkeypatch.setattr(deployment, "_owned_seen", {})
    monkeypatch.setattr(deployment, "_applied", {})
    return recorder


def event(type: str, body: dict[str, Any]) -> None:
    asyncio.run(on_owned_event(type=type, body=body, namespace="ml", name=body["metadata"]["name"]))


def test_a_new_owned_deployment_wakes_its_owner(loops: Loops) -> None:
    event("ADDED", apps())
    assert loops.woken == [("ml", "iris")]


def test_status_churn_that_changes_no_ready_pods_wakes_nobody(loops: Loops) -> None:
    event("ADDED", apps())
    event("MODIFIED", apps(conditions=[{"type": "ReplicaFailure", "status": "True"}]))
    event("MODIFIED", apps(unavailableReplicas=1, conditions=[{"type": "Progressing", "status": "True"}]))
    assert loops.woken == [("ml", "iris")]


def test_pods_getting_ready_wake_the_owner_each_time(loops: Loops) -> None:
    event("ADDED", apps(ready=0))
    event("MODIFIED", apps(ready=1))
    event("MODIFIED", apps(ready=2))
    event("MODIFIED", apps(ready=2))
    assert loops.woken == [("ml", "iris")] * 3


def test_a_new_template_not_yet_rolled_out_counts_as_a_change(loops: Loops) -> None:
    event("ADDED", apps(ready=2))
    # generation 2 observed, but the updated pods are not ready: ready_replicas drops to 0
    event("MODIFIED", apps(ready=2, generation=2, updatedReplicas=0))
    assert len(loops.woken) == 2


def test_deletion_wakes_the_owner_and_is_forgotten(loops: Loops) -> None:
    event("ADDED", apps())
    event("DELETED", apps())
    event("ADDED", apps())  # recreated with the same name and state: seen again as new
    assert loops.woken == [("ml", "iris")] * 3


def test_the_initial_listing_wakes_only_loops_already_running(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Loops(running={("ml", "iris")})
    monkeypatch.setattr(deployment, "LOOPS", recorder)
    monkeypatch.setattr(deployment, "_owned_seen", {})
    event("", apps())
    other = apps()
    other["metadata"]["ownerReferences"][0]["name"] = "other"
    other["metadata"]["name"] = "other-iris-v1"
    event("", other)
    assert recorder.woken == [("ml", "iris")]


# --- self-healing: changes this controller did not make ---------------------------------------------


def applied(api_version: str, kind: str, name: str, mark: str) -> None:
    """As if the controller had just applied this object and the API server answered with `mark`."""
    deployment._applied[("ml", f"{api_version}/{kind}", name)] = ("digest", mark)


def service(name: str = "iris-iris-v1", resource_version: str = "10") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": resource_version,
            "ownerReferences": [
                {"apiVersion": "modelfleet.io/v1alpha1", "kind": "Deployment", "name": "iris"}
            ],
        }
    }


on_service_event = cast(
    Callable[..., Coroutine[Any, Any, None]],
    deployment._owned_object_event("v1", "Service"),
)


def service_event(type: str, body: dict[str, Any]) -> None:
    asyncio.run(on_service_event(type=type, body=body, namespace="ml"))


def test_an_owned_object_deleted_by_hand_wakes_its_owner_and_is_applied_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Loops(running={("ml", "iris")})
    monkeypatch.setattr(deployment, "LOOPS", recorder)
    monkeypatch.setattr(deployment, "_applied", {})
    applied("v1", "Service", "iris-iris-v1", "r10")

    service_event("DELETED", service())

    assert recorder.woken == [("ml", "iris")]
    assert ("ml", "v1/Service", "iris-iris-v1") not in deployment._applied  # the next apply is sent


def test_an_owned_object_edited_by_hand_wakes_its_owner_but_its_own_write_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Loops(running={("ml", "iris")})
    monkeypatch.setattr(deployment, "LOOPS", recorder)
    monkeypatch.setattr(deployment, "_applied", {})
    applied("v1", "Service", "iris-iris-v1", "r10")

    service_event("ADDED", service(resource_version="10"))  # the apply's own result
    assert recorder.woken == []

    service_event("MODIFIED", service(resource_version="11"))  # somebody else changed it
    assert recorder.woken == [("ml", "iris")]
    assert ("ml", "v1/Service", "iris-iris-v1") not in deployment._applied


def test_an_edited_owned_deployment_wakes_its_owner_though_its_pods_did_not_change(loops: Loops) -> None:
    applied("apps/v1", "Deployment", "iris-iris-v1", "g1")
    event("ADDED", apps(ready=1, generation=1))
    assert loops.woken == [("ml", "iris")]
    event("MODIFIED", apps(ready=1, generation=1, conditions=[]))  # status churn: nobody
    assert loops.woken == [("ml", "iris")]

    event("MODIFIED", apps(ready=1, generation=2))  # `kubectl scale` or `edit` by hand

    assert loops.woken == [("ml", "iris")] * 2
    assert ("ml", "apps/v1/Deployment", "iris-iris-v1") not in deployment._applied


def test_objects_of_an_owner_without_a_loop_wake_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Loops()
    monkeypatch.setattr(deployment, "LOOPS", recorder)
    monkeypatch.setattr(deployment, "_applied", {})
    service_event("DELETED", service())
    assert recorder.woken == []
