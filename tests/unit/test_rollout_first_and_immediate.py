"""Rollout scenarios: the first version of a Deployment, and the Immediate strategy."""

from __future__ import annotations

from datetime import timedelta

from rollout_world import T0, World, deployment_spec

from modelfleet.api.deployment import DeploymentPhase, DeploymentStatus, RolloutResult
from modelfleet.rollout import SetTraffic


def test_first_version_waits_for_its_pods_then_becomes_stable_without_a_canary() -> None:
    world = World(deployment_spec("v1", replicas=2))

    world.ready("v1", 1).decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.status.stable_version == ""
    assert world.status.canary_version == ""
    assert world.ensured() == {"v1": 2}
    assert world.decision.of_type(SetTraffic) == []
    assert world.status.message == "waiting for v1 pods (1/2 ready)"
    assert world.decision.requeue_after == timedelta(minutes=10)
    assert world.condition("Ready") == ("False", "Progressing")
    assert world.condition("Progressing") == ("True", "RolloutInProgress")

    world.tick(20).ready("v1").decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "v1"
    assert world.status.canary_version == ""
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.status.history[0].version == "v1"
    assert world.status.history[0].result == RolloutResult.PROMOTED
    assert world.status.history[0].started_at == T0
    assert world.status.history[0].finished_at == T0 + timedelta(seconds=20)
    assert world.condition("Ready") == ("True", "Healthy")
    assert world.condition("Progressing") == ("False", "RolloutComplete")
    assert world.condition("Degraded") == ("False", "AsExpected")
    assert ("Normal", "Promoted") in world.events()


def test_first_version_not_ready_by_the_progress_deadline_fails_then_recovers() -> None:
    world = World(deployment_spec("v1"))
    world.decide()

    world.tick(600).decide()

    assert world.phase() == DeploymentPhase.FAILED
    assert world.status.message == "v1: pods not ready within 10m (0/1 ready)"
    assert world.condition("Degraded") == ("True", "ProgressDeadlineExceeded")
    assert ("Warning", "Failed") in world.events()
    assert world.ensured() == {"v1": 1}  # still trying

    world.tick(30).ready("v1").decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "v1"


def test_first_version_that_is_not_servable_fails_and_runs_nothing() -> None:
    world = World(deployment_spec("v1")).not_servable("ModelVersion v1 is not approved")

    world.decide()

    assert world.phase() == DeploymentPhase.FAILED
    assert world.status.message == "v1 is not servable: ModelVersion v1 is not approved"
    assert world.ensured() == {}
    assert world.condition("Degraded") == ("True", "VersionNotServable")


def test_changing_the_first_version_before_it_is_ready_restarts_its_deadline() -> None:
    world = World(deployment_spec("v1"))
    world.decide()
    world.tick(500).change(version="v2").decide()

    world.tick(200).decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.ensured() == {"v2": 1}
    assert world.status.rollout_started_at == T0 + timedelta(seconds=500)


def immediate_world() -> World:
    return World(deployment_spec("v1", strategy={"type": "Immediate"}, replicas=2)).serving("v1")


def test_immediate_switches_only_once_the_new_pods_are_ready() -> None:
    world = immediate_world()

    world.change(version="v2").ready("v2", 1).decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.status.canary_version == "v2"
    assert world.status.canary_weight == 0
    assert world.traffic() == SetTraffic("v1", "v2", 0, 0)
    assert world.ensured() == {"v1": 2, "v2": 2}
    assert world.status.message == "rolling out v2 (Immediate), waiting for canary pods (1/2 ready)"

    world.tick(5).ready("v2").decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "v2"
    assert world.status.canary_version == ""
    assert world.traffic() == SetTraffic("v2", "", 0, 0, previous="v1")
    assert world.status.previous_stable_version == "v1"
    assert world.status.previous_warm_until == world.now + timedelta(minutes=10)
    assert world.ensured() == {"v2": 2, "v1": 2}
    assert world.status.history[0].result == RolloutResult.PROMOTED
    assert world.status.history[0].version == "v2"


def test_immediate_rolls_back_when_the_new_pods_miss_the_deadline() -> None:
    world = immediate_world()
    world.change(version="v2").decide()

    world.tick(599).decide()
    assert world.status.canary_version == "v2"
    world.tick(1).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.stable_version == "v1"
    assert world.status.rolled_back_version == "v2"
    assert world.status.history[0].reason == "canary pods not ready within 10m (0/2 ready)"
    assert world.removed() == ["v2"]


def test_immediate_while_paused_holds_the_switch() -> None:
    world = immediate_world()

    world.change(version="v2", paused=True).ready("v2").decide()

    assert world.phase() == DeploymentPhase.PAUSED
    assert world.status.stable_version == "v1"
    assert world.traffic().canary_weight == 0

    world.change(paused=False).decide()

    assert world.status.stable_version == "v2"


def test_status_round_trips_through_kubernetes_json() -> None:
    world = immediate_world()
    world.change(version="v2").ready("v2").decide()

    again = DeploymentStatus.model_validate(world.status.to_k8s())

    assert again == world.status
