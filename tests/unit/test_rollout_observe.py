"""What the Deployment controller reads of the cluster, in the rollout's terms: the version the spec asks
for, ready pods, the gating Monitor, and which changes wake a Deployment."""

from __future__ import annotations

from typing import Any

import pytest
from rollout_world import deployment_spec, mlflow_model

from modelfleet.api import Model, Monitor
from modelfleet.rollout import Target
from modelfleet.rollout.observe import (
    deployment_signature,
    gating_monitor,
    object_mark,
    owned_signature,
    ready_replicas,
    resolve_target,
)

MEASURED = {"time": "2024-05-01T12:00:00Z", "version": "iris-v2", "results": []}


def monitor(name: str, deployment: str = "iris", measured: bool = True) -> Monitor:
    return Monitor.from_k8s(
        {
            "apiVersion": "modelfleet.io/v1alpha1",
            "kind": "Monitor",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {
                "deployment": deployment,
                "metrics": [{"name": "errors", "type": "errorRate", "max": 0.05}],
            },
            "status": {"measurements": [MEASURED]} if measured else {},
        }
    )


def apps(ready: int, updated: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation, "annotations": {"modelfleet.io/version": "iris-v1"}},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated},
    }


def test_a_spec_that_names_its_version_asks_for_it_whatever_the_model_says() -> None:
    assert resolve_target(deployment_spec("iris-v2"), None) == Target("iris-v2")
    assert resolve_target(deployment_spec("iris-v2"), mlflow_model({"champion": "iris-v7"})) == Target(
        "iris-v2"
    )


def test_an_alias_resolves_to_the_model_version_the_models_mlflow_sync_saw_it_point_at() -> None:
    model = mlflow_model({"champion": "iris-v7", "challenger": "iris-v8"})

    target = resolve_target(deployment_spec(alias="champion"), model)

    assert target == Target("iris-v7")
    resolved = target.resolved(deployment_spec(alias="champion"))
    assert (resolved.version, resolved.alias) == ("iris-v7", "champion")


@pytest.mark.parametrize(
    ("model", "reason", "pending"),
    [
        (None, "alias champion unknown: Model iris not found", True),
        (mlflow_model({}, source=False), "alias champion unknown: Model iris has no MLflow source", False),
        (
            mlflow_model({}, synced=False),
            "alias champion unknown: Model iris has not synced with MLflow yet",
            True,
        ),
        (mlflow_model({"challenger": "iris-v8"}), "alias champion of Model iris points at no version", False),
    ],
)
def test_an_alias_that_resolves_to_no_version_says_why(
    model: Model | None, reason: str, pending: bool
) -> None:
    target = resolve_target(deployment_spec(alias="champion"), model)

    assert target == Target(reason=reason, pending=pending)
    assert target.resolved(deployment_spec(alias="champion")).version is None


def test_only_pods_of_the_current_template_count_as_ready() -> None:
    assert ready_replicas(apps(ready=2, updated=2)) == 2
    assert ready_replicas(apps(ready=2, updated=1, generation=2, observed=2)) == 1  # a rolling update
    assert ready_replicas(apps(ready=2, updated=0, generation=2, observed=1)) == 2  # not yet seen
    assert ready_replicas({"metadata": {}}) == 0


def test_the_monitor_the_strategy_names_gates_the_rollout() -> None:
    gate = gating_monitor("iris", "iris-quality", [monitor("a-first"), monitor("iris-quality")])
    assert gate is not None
    assert gate.name == "iris-quality"
    assert len(gate.measurements) == 1


def test_without_a_name_the_first_monitor_by_name_watching_the_deployment_gates_it() -> None:
    monitors = [monitor("zeta"), monitor("alpha"), monitor("other", deployment="fraud")]
    gate = gating_monitor("iris", "", monitors)
    assert gate is not None
    assert gate.name == "alpha"
    assert gating_monitor("iris", "", [monitor("other", deployment="fraud")]) is None


def test_a_named_monitor_of_another_deployment_never_lets_the_rollout_pass() -> None:
    gate = gating_monitor("iris", "fraud-quality", [monitor("fraud-quality", deployment="fraud")])
    assert gate is not None
    assert gate.measurements == ()  # nothing to pass on: the rollout holds


def test_a_named_monitor_that_does_not_exist_gates_nothing() -> None:
    assert gating_monitor("iris", "missing", [monitor("alpha")]) is None


def test_status_writes_do_not_change_a_deployments_signature_but_spec_and_annotations_do() -> None:
    body: dict[str, Any] = {
        "metadata": {"uid": "u", "generation": 3, "annotations": {}},
        "status": {"phase": "A"},
    }
    before = deployment_signature(body)
    assert deployment_signature({**body, "status": {"phase": "B"}}) == before
    assert deployment_signature({**body, "metadata": {**body["metadata"], "generation": 4}}) != before
    annotated = {**body["metadata"], "annotations": {"modelfleet.io/abort": "true"}}
    assert deployment_signature({**body, "metadata": annotated}) != before
    other = {**body["metadata"], "annotations": {"example.com/note": "x"}}
    assert deployment_signature({**body, "metadata": other}) == before


def test_an_owned_deployment_signature_is_its_version_and_ready_pods() -> None:
    assert owned_signature(apps(ready=1, updated=1)) == ("iris-v1", 1)


def test_the_mark_follows_the_generation_where_there_is_one_else_the_resource_version() -> None:
    assert object_mark({"metadata": {"generation": 2, "resourceVersion": "9"}}) == "g2"
    assert object_mark({"metadata": {"resourceVersion": "9"}}) == "r9"
