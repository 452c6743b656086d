"""Rollout scenarios: manual control with the promote, abort and retry annotations."""

from __future__ import annotations

from rollout_world import ABORT, PROMOTE, RETRY, World, deployment_spec

from modelfleet.api.deployment import DeploymentPhase, RolloutResult
from modelfleet.api.monitor import Verdict
from modelfleet.rollout import ConsumeAnnotation, SetTraffic, addressed_versions


def serving_v1(monitor: str | None = None) -> World:
    return World(deployment_spec("v1"), monitor=monitor).serving("v1")


def rolled_back_v2() -> World:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")
    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    assert world.phase() == DeploymentPhase.ROLLED_BACK
    return world


def test_promote_skips_the_remaining_steps() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    world.annotate(PROMOTE).decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "v2"
    assert world.traffic() == SetTraffic("v2", "", 0, 0, previous="v1")
    assert world.decision.of_type(ConsumeAnnotation) == [ConsumeAnnotation(PROMOTE)]
    assert world.status.history[0].result == RolloutResult.PROMOTED
    assert world.status.history[0].reason == "promoted by hand (modelfleet.io/promote)"


def test_promote_waits_for_ready_canary_pods_and_stays_pending() -> None:
    world = serving_v1()
    world.change(version="v2").annotate(PROMOTE).decide()

    assert world.status.canary_version == "v2"
    assert world.decision.of_type(ConsumeAnnotation) == []
    assert world.annotations == {PROMOTE}
    assert "promotion waits for the canary pods" in world.status.message

    world.ready("v2").decide()

    assert world.status.stable_version == "v2"
    assert world.annotations == set()


def test_abort_rolls_back_now_and_records_aborted() -> None:
    world = serving_v1()
    world.rolling_out("v2")

    world.annotate(ABORT).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.canary_weight == 0
    assert world.status.rolled_back_version == "v2"
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.removed() == ["v2"]
    entry = world.status.history[0]
    assert (entry.version, entry.result) == ("v2", RolloutResult.ABORTED)
    assert entry.reason == "aborted by hand (modelfleet.io/abort)"
    assert ("Warning", "Aborted") in world.events()
    assert world.annotations == set()


def test_abort_wins_over_promote_set_at_the_same_time() -> None:
    world = serving_v1()
    world.rolling_out("v2")

    world.annotate(ABORT).annotate(PROMOTE).decide()

    assert world.status.stable_version == "v1"
    assert world.status.rolled_back_version == "v2"
    assert world.annotations == set()


def test_a_rolled_back_version_is_not_tried_again_nor_promoted() -> None:
    world = rolled_back_v2()

    for _ in range(3):
        world.tick(600).decide()
    world.annotate(PROMOTE).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.stable_version == "v1"
    assert world.status.canary_version == ""
    assert world.annotations == set()
    assert ("Normal", "PromoteIgnored") in world.events()
    assert all(h.result != RolloutResult.PROMOTED for h in world.status.history if h.version == "v2")


def test_retry_starts_the_rolled_back_version_again() -> None:
    world = rolled_back_v2()

    world.annotate(RETRY).decide()

    assert world.status.rolled_back_version == ""
    assert world.status.canary_version == "v2"
    assert world.status.canary_weight == 10  # its pods are still ready
    assert world.phase() == DeploymentPhase.PROGRESSING
    assert ("Normal", "Retry") in world.events()


def test_a_rolled_back_version_keeps_its_address_for_a_retry() -> None:
    world = rolled_back_v2()
    assert world.removed() == ["v2"]  # its pods go
    assert addressed_versions(world.spec, world.status) == {"v1", "v2"}  # its Service stays

    world.annotate(RETRY).decide()
    assert addressed_versions(world.spec, world.status) == {"v1", "v2"}

    world.change(version="v1").decide()  # the Deployment gives v2 up, but its history still names it
    assert "v2" in addressed_versions(world.spec, world.status)


def test_a_new_spec_version_clears_the_rolled_back_one() -> None:
    world = rolled_back_v2()

    world.change(version="v3").decide()
    assert world.status.canary_version == "v3"
    assert world.status.rolled_back_version == ""

    world.change(version="v2").decide()
    assert world.status.canary_version == "v2"


def test_going_back_to_the_stable_version_after_a_rollback_is_healthy() -> None:
    world = rolled_back_v2()

    world.change(version="v1").decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.rolled_back_version == ""
    assert world.condition("Ready") == ("True", "Healthy")


def test_annotations_without_a_rollout_are_consumed_and_ignored() -> None:
    world = serving_v1()

    world.annotate(ABORT).decide()
    assert ("Normal", "AbortIgnored") in world.events()
    world.annotate(RETRY).decide()
    assert ("Normal", "RetryIgnored") in world.events()
    world.annotate(PROMOTE).decide()
    assert ("Normal", "PromoteIgnored") in world.events()

    assert world.annotations == set()
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.history[0].version == "v1"
    assert len(world.status.history) == 1
