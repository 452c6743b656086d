"""What wakes a Deployment's loop (a DeploymentController built with loops that only record): its own spec
and annotations, its owned apps/v1 Deployments (only the version they run and their ready pods, so status
churn of 1,000 owned objects costs no reconciles), the ModelVersions and Model it uses, and changes
somebody else made to an owned object (self-healing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from modelfleet.builders import VERSION_ANNOTATION
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.deployment import DeploymentController

Key = tuple[str, str]


class Loops:
    """Records wake-ups instead of running loops."""

    def __init__(self, running: set[Key] | None = None) -> None:
        self.running = running or set()
        self.woken: list[Key] = []

    def __contains__(self, key: Key) -> bool:
        return key in self.running

    def keys(self) -> list[Key]:
        return sorted(self.running)

    def wake(self, namespace: str, name: str) -> None:
        self.woken.append((namespace, name))

    def stop(self, namespace: str, name: str) -> None:
        self.running.discard((namespace, name))

    async def stop_all(self) -> None:
        self.running.clear()


def controller(running: set[Key] | None = None) -> tuple[DeploymentController, Loops]:
    """A Deployment controller whose loops only record what would wake them."""
    loops = Loops(running)
    empty = Cache({index: {} for index in INDEXES})
    return DeploymentController(empty, router_image="localhost/modelfleet:test", loops=loops), loops


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


Send = Callable[[str, dict[str, Any]], None]


@pytest.fixture
def subject() -> tuple[DeploymentController, Loops]:
    return controller()


@pytest.fixture
def loops(subject: tuple[DeploymentController, Loops]) -> Loops:
    return subject[1]


@pytest.fixture
def event(subject: tuple[DeploymentController, Loops]) -> Send:
    """An event of an owned apps/v1 Deployment, as kopf delivers it."""

    def send(type: str, body: dict[str, Any]) -> None:
        subject[0].on_owned_deployment(type, body, "ml", body["metadata"]["name"])

    return send


def test_a_new_owned_deployment_wakes_its_owner(loops: Loops, event: Send) -> None:
    event("ADDED", apps())
    assert loops.woken == [("ml", "iris")]


def test_status_churn_that_changes_no_ready_pods_wakes_nobody(loops: Loops, event: Send) -> None:
    event("ADDED", apps())
    event("MODIFIED", apps(conditions=[{"type": "ReplicaFailure", "status": "True"}]))
    event("MODIFIED", apps(unavailableReplicas=1, conditions=[{"type": "Progressing", "status": "True"}]))
    assert loops.woken == [("ml", "iris")]


def test_pods_getting_ready_wake_the_owner_each_time(loops: Loops, event: Send) -> None:
    event("ADDED", apps(ready=0))
    event("MODIFIED", apps(ready=1))
    event("MODIFIED", apps(ready=2))
    event("MODIFIED", apps(ready=2))
    assert loops.woken == [("ml", "iris")] * 3


def test_a_new_template_not_yet_rolled_out_counts_as_a_change(loops: Loops, event: Send) -> None:
    event("ADDED", apps(ready=2))
    # generation 2 observed, but the updated pods are not ready: ready_replicas drops to 0
    event("MODIFIED", apps(ready=2, generation=2, updatedReplicas=0))
    assert len(loops.woken) == 2


def test_deletion_wakes_the_owner_and_is_forgotten(loops: Loops, event: Send) -> None:
    event("ADDED", apps())
    event("DELETED", apps())
    event("ADDED", apps())  # recreated with the same name and state: seen again as new
    assert loops.woken == [("ml", "iris")] * 3


def test_the_initial_listing_wakes_only_loops_already_running() -> None:
    subject, loops = controller(running={("ml", "iris")})
    subject.on_owned_deployment("", apps(), "ml", "iris-iris-v1")
    other = apps()
    other["metadata"]["ownerReferences"][0]["name"] = "other"
    other["metadata"]["name"] = "other-iris-v1"
    subject.on_owned_deployment("", other, "ml", "other-iris-v1")
    assert loops.woken == [("ml", "iris")]


def test_a_deployment_wakes_on_spec_and_annotations_not_on_its_own_status_writes() -> None:
    subject, loops = controller()
    body: dict[str, Any] = {"metadata": {"uid": "u", "generation": 1}, "status": {"phase": "Progressing"}}
    subject.on_deployment("ADDED", body, "ml", "iris")
    loops.running.add(("ml", "iris"))
    subject.on_deployment("MODIFIED", {**body, "status": {"phase": "Healthy"}}, "ml", "iris")
    assert loops.woken == [("ml", "iris")]
    subject.on_deployment("MODIFIED", {**body, "metadata": {"uid": "u", "generation": 2}}, "ml", "iris")
    assert loops.woken == [("ml", "iris")] * 2


def test_a_changed_model_version_wakes_the_deployments_that_use_it() -> None:
    subject, loops = controller(running={("ml", "iris"), ("ml", "fraud")})
    subject.interest[("ml", "iris")] = frozenset({"iris-v1", "model:iris"})
    subject.interest[("ml", "fraud")] = frozenset({"fraud-v1", "model:fraud"})
    subject.on_dependency("ml", "iris-v1")
    subject.on_dependency("ml", "model:fraud")
    subject.on_dependency("other", "iris-v1")
    assert loops.woken == [("ml", "iris"), ("ml", "fraud")]


# --- self-healing: changes this controller did not make ---------------------------------------------


def applied(subject: DeploymentController, api_version: str, kind: str, name: str, mark: str) -> None:
    """As if the controller had just applied this object and the API server answered with `mark`."""
    subject.applier.applied[("ml", f"{api_version}/{kind}", name)] = ("digest", mark)


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


def test_an_owned_object_deleted_by_hand_wakes_its_owner_and_is_applied_again() -> None:
    subject, loops = controller(running={("ml", "iris")})
    applied(subject, "v1", "Service", "iris-iris-v1", "r10")
    subject.applier.cluster_ips[("ml", "v1/Service", "iris-iris-v1")] = "10.211.0.42"

    subject.on_owned_object("DELETED", service(), "ml", "v1", "Service")

    assert loops.woken == [("ml", "iris")]
    assert ("ml", "v1/Service", "iris-iris-v1") not in subject.applier.applied  # the next apply is sent
    assert ("ml", "v1/Service", "iris-iris-v1") in subject.applier.lost_services  # at its old address


def test_an_owned_object_edited_by_hand_wakes_its_owner_but_its_own_write_does_not() -> None:
    subject, loops = controller(running={("ml", "iris")})
    applied(subject, "v1", "Service", "iris-iris-v1", "r10")

    subject.on_owned_object("ADDED", service(resource_version="10"), "ml", "v1", "Service")  # the apply's own
    assert loops.woken == []

    subject.on_owned_object(
        "MODIFIED", service(resource_version="11"), "ml", "v1", "Service"
    )  # somebody else
    assert loops.woken == [("ml", "iris")]
    assert ("ml", "v1/Service", "iris-iris-v1") not in subject.applier.applied


def test_an_edited_owned_deployment_wakes_its_owner_though_its_pods_did_not_change(
    subject: tuple[DeploymentController, Loops], loops: Loops, event: Send
) -> None:
    applied(subject[0], "apps/v1", "Deployment", "iris-iris-v1", "g1")
    event("ADDED", apps(ready=1, generation=1))
    assert loops.woken == [("ml", "iris")]
    event("MODIFIED", apps(ready=1, generation=1, conditions=[]))  # status churn: nobody
    assert loops.woken == [("ml", "iris")]

    event("MODIFIED", apps(ready=1, generation=2))  # `kubectl scale` or `edit` by hand

    assert loops.woken == [("ml", "iris")] * 2
    assert ("ml", "apps/v1/Deployment", "iris-iris-v1") not in subject[0].applier.applied


def test_objects_of_an_owner_without_a_loop_wake_nobody() -> None:
    subject, loops = controller()
    subject.on_owned_object("DELETED", service(), "ml", "v1", "Service")
    assert loops.woken == []


# --- its own status write, not yet in the cache ------------------------------------------------------


def cached_deployment(resource_version: str, spec: dict[str, Any] | None = None) -> Cache:
    body = {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "iris", "namespace": "ml", "resourceVersion": resource_version, "uid": "u"},
        "spec": spec if spec is not None else {"model": 7},  # invalid: a reconcile stops right after reading
    }
    return Cache({**{index: {} for index in INDEXES}, "cached_deployments": {("ml", "iris"): [body]}})


def test_a_reconcile_waits_while_the_cache_shows_the_object_from_before_its_own_write() -> None:
    from modelfleet.controllers import deployment

    subject = DeploymentController(
        cached_deployment("41"), router_image="localhost/modelfleet:test", loops=Loops()
    )
    subject.written[("ml", "iris")] = ("41", float("inf"))  # wrote over resourceVersion 41
    assert subject.reconcile_sync("ml", "iris") == deployment.CACHE_WAIT_SECONDS
    assert ("ml", "iris") in subject.written

    subject.cache = cached_deployment("42")  # the write reached the cache: decide on it
    assert subject.reconcile_sync("ml", "iris") is None  # (the invalid spec ends it there)
    assert subject.written == {}


def test_a_write_that_never_shows_in_the_cache_is_waited_for_only_so_long() -> None:
    subject = DeploymentController(
        cached_deployment("41"), router_image="localhost/modelfleet:test", loops=Loops()
    )
    subject.written[("ml", "iris")] = ("41", 0.0)  # the deadline has passed
    assert subject.reconcile_sync("ml", "iris") is None
    assert subject.written == {}
