"""Rollout scenarios without a canary: the Monitor judges the stable version; warm previous versions;
versions that cannot be served; conditions and messages."""

from __future__ import annotations

from datetime import timedelta

from rollout_world import World, deployment_spec

from modelfleet.api.deployment import DeploymentPhase, RolloutResult
from modelfleet.api.monitor import OnDegraded, Verdict
from modelfleet.rollout import SetTraffic


def promoted_v2(on_degraded: OnDegraded = OnDegraded.ROLLBACK) -> World:
    """Given v2 promoted over v1 a moment ago, with a Monitor judging it."""
    world = World(deployment_spec("v1"), monitor="iris-quality", on_degraded=on_degraded).serving("v1")
    world.rolling_out("v2")
    world.annotate("modelfleet.io/promote").decide()
    assert world.status.stable_version == "v2"
    return world


def test_previous_version_stays_warm_for_the_rollback_window_then_goes() -> None:
    world = promoted_v2()
    assert world.ensured() == {"v2": 1, "v1": 1}
    assert world.decision.requeue_after == timedelta(minutes=10)

    world.tick(599).decide()
    assert world.ensured() == {"v2": 1, "v1": 1}

    world.tick(1).decide()

    assert world.ensured() == {"v2": 1}
    assert world.removed() == ["v1"]
    assert world.status.previous_stable_version == "v1"  # still known
    assert world.status.previous_warm_until is None
    assert world.decision.requeue_after is None


def test_the_warm_previous_version_backs_stable_up_in_the_router_while_it_is_ready() -> None:
    world = promoted_v2()
    assert world.traffic() == SetTraffic("v2", "", 0, 0, previous="v1")

    world.not_ready("v1").decide()  # no pod of it can answer: the router is not sent to it
    assert world.traffic() == SetTraffic("v2", "", 0, 0)

    world.ready("v1").decide()
    assert world.traffic() == SetTraffic("v2", "", 0, 0, previous="v1")

    world.tick(600).decide()  # the rollback window is over: it goes, and leaves the chain
    assert world.traffic() == SetTraffic("v2", "", 0, 0)


def test_degraded_stable_rolls_back_to_the_warm_previous_version() -> None:
    world = promoted_v2()
    world.ready("v1")

    world.measure(Verdict.FAIL).decide()
    assert world.status.stable_version == "v2"
    world.measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.stable_version == "v1"
    assert world.status.rolled_back_version == "v2"
    assert world.status.previous_stable_version == ""
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.removed() == ["v2"]
    entry = world.status.history[0]
    assert (entry.version, entry.result) == ("v2", RolloutResult.ROLLED_BACK)
    assert entry.reason == "degraded after promotion: errors 0.31 > 0.05"
    assert ("Warning", "RolledBack") in world.events()

    world.tick(60).decide()  # and it does not come back, as spec.version still asks for v2
    assert world.status.stable_version == "v1"
    assert world.status.canary_version == ""


def test_rollback_to_a_cold_previous_version_waits_for_its_pods() -> None:
    world = promoted_v2()
    world.tick(600).decide()  # v1 no longer warm
    world.not_ready("v1")

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.status.stable_version == "v2"
    assert world.ensured() == {"v2": 1, "v1": 1}
    assert world.status.message == (
        "v2 degraded: errors 0.31 > 0.05; rolling back to v1, waiting for its pods (0/1 ready)"
    )

    world.ready("v1").decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.stable_version == "v1"


def test_degraded_stable_with_alert_is_marked_degraded_and_recovers() -> None:
    world = promoted_v2(on_degraded=OnDegraded.ALERT)
    world.ready("v1")

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.status.stable_version == "v2"
    assert world.status.message == "v2 degraded: errors 0.31 > 0.05 (onDegraded: Alert)"
    assert world.condition("Degraded") == ("True", "MonitorFailing")
    assert world.condition("Ready") == ("False", "Degraded")
    assert ("Warning", "Degraded") in world.events()

    world.measure(Verdict.INCONCLUSIVE).decide()
    assert world.phase() == DeploymentPhase.DEGRADED

    world.measure(Verdict.PASS).decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.condition("Degraded") == ("False", "AsExpected")


def test_degraded_stable_with_fallback_but_nothing_to_fall_back_to_is_marked_degraded_and_says_why() -> None:
    world = promoted_v2(on_degraded=OnDegraded.FALLBACK)
    world.ready("v1")

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.status.stable_version == "v2"
    assert world.status.message == (
        "v2 degraded: errors 0.31 > 0.05 (onDegraded: Fallback, but spec.fallback has neither version nor"
        " response)"
    )
    assert world.condition("Degraded") == ("True", "MonitorFailing")
    assert world.status.fallback.active is False
    assert world.traffic().fallback_active is False
    assert ("Warning", "FallbackEngaged") not in world.events()


def test_degraded_first_version_has_nothing_to_roll_back_to() -> None:
    world = World(deployment_spec("v1"), monitor="iris-quality").serving("v1")

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.status.message == "v1 degraded: errors 0.31 > 0.05 (no previous version)"


def test_monitor_errors_in_steady_state_are_reported_not_acted_on() -> None:
    world = World(deployment_spec("v1"), monitor="iris-quality").serving("v1")

    for _ in range(4):
        world.measure(Verdict.ERROR, after=10).decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert ("Warning", "MonitorErrors") in world.events()
    assert "monitor iris-quality erroring (4/4)" in world.status.message


def test_stable_without_ready_pods_is_degraded() -> None:
    world = World(deployment_spec("v1", replicas=2)).serving("v1")

    world.ready("v1", 1).decide()
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.condition("Ready") == ("False", "PodsNotReady")

    world.not_ready("v1").decide()
    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.condition("Degraded") == ("True", "PodsNotReady")
    assert world.status.message == "v1 has no ready pods (0/2 ready)"


def test_a_version_that_cannot_be_served_is_not_rolled_out() -> None:
    world = World(deployment_spec("v1")).serving("v1")

    world.change(version="v2").not_servable("ModelVersion v2 is not approved").ready("v2").decide()

    assert world.status.canary_version == ""
    assert world.ensured() == {"v1": 1}
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.message == "v2 not rolled out: ModelVersion v2 is not approved, serving v1"
    assert world.condition("Ready") == ("False", "VersionNotServable")
    assert world.condition("Progressing") == ("False", "VersionNotServable")
    assert ("Warning", "VersionNotServable") in world.events()

    world.decide()
    assert world.events() == []  # said once


def test_ready_is_true_only_when_healthy_and_current() -> None:
    world = World(deployment_spec("v1")).serving("v1")

    (ready,) = [c for c in world.status.conditions if c.type == "Ready"]
    assert ready.status.value == "True"
    assert ready.observed_generation == world.generation == world.status.observed_generation
    transition = ready.last_transition_time

    world.tick(60).decide()
    (again,) = [c for c in world.status.conditions if c.type == "Ready"]
    assert again.last_transition_time == transition  # unchanged status keeps its transition time


def test_endpoint_is_copied_into_status() -> None:
    world = World(deployment_spec("v1")).serving("v1")
    assert world.status.endpoint == "http://iris.ml.svc:80"


def test_a_steady_decision_is_stable_when_nothing_changes() -> None:
    world = World(deployment_spec("v1"), monitor="iris-quality").serving("v1")
    world.measure(Verdict.PASS).decide()
    before = world.status

    world.decide()

    assert world.status == before
    assert world.events() == []


def test_history_keeps_the_newest_20_entries() -> None:
    world = World(deployment_spec("v1")).serving("v1")
    for n in range(2, 25):
        world.change(version=f"v{n}").ready(f"v{n}").annotate("modelfleet.io/promote").decide()

    assert len(world.status.history) == 20
    assert world.status.history[0].version == "v24"
    assert [h.version for h in world.status.history][-1] == "v5"
