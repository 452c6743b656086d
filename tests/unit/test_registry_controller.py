"""The registry controller as an object: built with its clock, its state its own (no module-level state,
nothing monkeypatched), its timers cancelled when it stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from modelfleet.api import ClusterRuntime, ProductionResult, Runtime
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.registry import RegistryController, Views, registry_records
from modelfleet.registry import Observed
from modelfleet.registry.history import DeploymentRecord, Outcome

NOON = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)


def runtime_body(kind: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "mlserver-sklearn", "generation": 3, "uid": "u1", "resourceVersion": "7"}
    if kind == "Runtime":
        meta["namespace"] = "team-a"
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": kind,
        "metadata": meta,
        "spec": {"formats": ["sklearn"], "image": "localhost/modelfleet-mlserver:dev"},
        "status": status or {},
    }


def test_a_runtime_is_ready_at_the_controllers_clock_and_not_written_twice() -> None:
    controller = RegistryController(clock=lambda: NOON)
    for kind, model in (("Runtime", Runtime), ("ClusterRuntime", ClusterRuntime)):
        new = controller.runtime_status(model, runtime_body(kind))
        assert new is not None
        (ready,) = new.conditions
        assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "Accepted")
        assert ready.message == "serves sklearn with localhost/modelfleet-mlserver:dev"
        assert ready.last_transition_time == NOON.replace(microsecond=0)
        assert new.observed_generation == 3
        # the same status again is no write
        assert controller.runtime_status(model, runtime_body(kind, new.to_k8s())) is None


class EmptyViews(Views):
    """Watch caches with nothing in them: a Deployment that names a Model nobody registered (so its
    reconcile reads nothing and writes nothing)."""

    def __init__(self, deployments: dict[tuple[str, str], list[Any]] | None = None) -> None:
        empty: dict[str, Any] = {}
        caches: dict[str, Any] = {name: {} for name in INDEXES}
        caches["cached_deployments"] = deployments or {}
        super().__init__(
            models=empty,  # type: ignore[arg-type]
            versions=empty,  # type: ignore[arg-type]
            version_models=empty,  # type: ignore[arg-type]
            serving=empty,  # type: ignore[arg-type]
            served_by=empty,  # type: ignore[arg-type]
            records=empty,  # type: ignore[arg-type]
            cache=Cache(caches),
        )


def test_what_a_deployment_served_is_remembered_per_controller() -> None:
    spec, serving = {"model": "iris"}, {"stableVersion": "iris-v1"}
    first, second = RegistryController(), RegistryController()
    assert first.deployment_changed("ADDED", "ns", "iris", spec, serving)
    asyncio.run(first.on_deployment_changed(EmptyViews(), "ADDED", "ns", "iris", spec, serving))
    assert first.seen == {
        ("ns", "iris"): Observed("iris", frozenset({"iris-v1"}), {"iris-v1": (True, None, None)})
    }
    assert not first.deployment_changed("MODIFIED", "ns", "iris", spec, serving)
    assert first.deployment_changed("MODIFIED", "ns", "iris", spec, {"stableVersion": "iris-v2"})
    assert first.deployment_changed("DELETED", "ns", "iris", spec, serving)
    # a second controller (a restarted operator) has seen nothing
    assert second.deployment_changed("MODIFIED", "ns", "iris", spec, serving)
    assert second.seen == {}


PROMOTED_AT, REPLACED_AT = "2026-12-02T11:00:00Z", "2026-12-02T12:00:00Z"
ROLLED_OUT = {
    "stableVersion": "iris-v2",
    "history": [
        {
            "version": "iris-v2",
            "result": "Promoted",
            "reason": "all 4 steps passed",
            "finishedAt": REPLACED_AT,
        },
        {"version": "iris-v1", "result": "Promoted", "reason": "first version", "finishedAt": PROMOTED_AT},
    ],
}


def test_a_deployment_status_change_that_adds_a_history_entry_wakes_the_registry() -> None:
    spec = {"model": "iris"}
    at_step = {"stableVersion": "iris-v1", "canaryVersion": "iris-v2", "canaryWeight": 10, "history": []}
    measured = {**at_step, "analysis": {"failures": 1}}
    rolled_back = {
        "stableVersion": "iris-v1",
        "history": [{"version": "iris-v2", "result": "RolledBack", "reason": "errors 0.31 > 0.05"}],
    }
    never_served = {**rolled_back, "canaryWeight": 0}
    controller = RegistryController()
    asyncio.run(controller.on_deployment_changed(EmptyViews(), "ADDED", "ns", "iris", spec, at_step))

    assert not controller.deployment_changed("MODIFIED", "ns", "iris", spec, measured)
    assert controller.deployment_changed("MODIFIED", "ns", "iris", spec, rolled_back)
    # the same entry at weight 0 (a canary that never served) still wakes it: the history changed
    at_zero = {**at_step, "canaryWeight": 0}
    asyncio.run(controller.on_deployment_changed(EmptyViews(), "MODIFIED", "ns", "iris", spec, at_zero))
    assert controller.deployment_changed("MODIFIED", "ns", "iris", spec, never_served)


def test_the_records_index_says_per_version_what_the_deployment_status_says() -> None:
    index = registry_records(namespace="ml", name="iris", status=ROLLED_OUT)  # type: ignore[arg-type]
    assert set(index) == {("ml", "iris-v1"), ("ml", "iris-v2")}
    v1, v2 = index[("ml", "iris-v1")], index[("ml", "iris-v2")]
    assert isinstance(v1, DeploymentRecord)
    assert (v1.deployment, v1.stable, v2.stable) == ("iris", False, True)
    retired, promoted = v1.outcomes
    assert isinstance(retired, Outcome)
    assert (retired.result, retired.reason) == (ProductionResult.RETIRED, "replaced by iris-v2")
    assert (retired.started_at, retired.finished_at) == (
        NOON.replace(hour=11, microsecond=0),
        NOON.replace(microsecond=0),
    )
    assert promoted.result == ProductionResult.PROMOTED
    # a status this operator cannot read is no record (the API server validates; an older CRD may not)
    assert registry_records(namespace="ml", name="iris", status={"history": "x"}) == {}  # type: ignore[arg-type]


def test_the_views_read_the_records_and_which_deployments_exist_from_the_indexes() -> None:
    index = registry_records(namespace="ml", name="iris", status=ROLLED_OUT)  # type: ignore[arg-type]
    views = EmptyViews(deployments={("ml", "iris"): [{"metadata": {"name": "iris"}}]})
    views = Views(**{**views.__dict__, "records": {k: [v] for k, v in index.items()}})
    assert [r.deployment for r in views.records_of("ml", "iris-v1")] == ["iris"]
    assert views.records_of("ml", "iris-v9") == []
    assert views.existing_deployments("ml", ["iris", "gone"]) == {"iris"}
    alone = Views(**{**views.__dict__, "cache": None})
    assert alone.existing_deployments("ml", ["iris"]) is None  # not known


def test_stopping_cancels_the_scheduled_checks() -> None:
    async def scenario() -> tuple[int, bool]:
        controller = RegistryController()
        controller.schedule(EmptyViews(), "ns", "iris", "iris-v1", delay=60)
        controller.schedule(EmptyViews(), "ns", "iris", "iris-v1", delay=30)  # replaces the first
        scheduled = len(controller.timers)
        timer = controller.timers[("ns", "iris-v1")]
        await controller.stop()
        return scheduled, timer.cancelled() and not controller.timers

    assert asyncio.run(scenario()) == (1, True)
