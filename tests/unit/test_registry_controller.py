"""The registry controller as an object: built with its clock, its state its own (no module-level state,
nothing monkeypatched), its timers cancelled when it stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from modelfleet.api import ClusterRuntime, Runtime
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.registry import RegistryController, Views

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

    def __init__(self) -> None:
        empty: dict[str, Any] = {}
        super().__init__(
            models=empty,  # type: ignore[arg-type]
            versions=empty,  # type: ignore[arg-type]
            version_models=empty,  # type: ignore[arg-type]
            serving=empty,  # type: ignore[arg-type]
            served_by=empty,  # type: ignore[arg-type]
            cache=Cache({name: {} for name in INDEXES}),
        )


def test_what_a_deployment_served_is_remembered_per_controller() -> None:
    spec, serving = {"model": "iris"}, {"stableVersion": "iris-v1"}
    first, second = RegistryController(), RegistryController()
    assert first.serving_changed("ADDED", "ns", "iris", spec, serving)
    asyncio.run(first.on_serving_changed(EmptyViews(), "ADDED", "ns", "iris", spec, serving))
    assert first.served_seen == {("ns", "iris"): ("iris", frozenset({"iris-v1"}))}
    assert not first.serving_changed("MODIFIED", "ns", "iris", spec, serving)
    assert first.serving_changed("MODIFIED", "ns", "iris", spec, {"stableVersion": "iris-v2"})
    assert first.serving_changed("DELETED", "ns", "iris", spec, serving)
    # a second controller (a restarted operator) has seen nothing
    assert second.serving_changed("MODIFIED", "ns", "iris", spec, serving)
    assert second.served_seen == {}


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
