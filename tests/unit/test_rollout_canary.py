"""Rollout scenarios: a Canary walking its steps, gated by its Monitor, rolled back on failure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rollout_world import STEPS, T0, World, deployment_spec

from modelfleet.api.deployment import DeploymentPhase, RolloutResult
from modelfleet.api.monitor import Verdict
from modelfleet.rollout import SetTraffic


def serving_v1(monitor: str | None = None, **spec: object) -> World:
    world = World(deployment_spec("v1", replicas=2, **spec), monitor=monitor)
    return world.serving("v1")


# --- steps without a monitor -----------------------------------------------------------------------


def test_canary_pods_come_up_at_weight_0_and_the_first_step_waits_for_them() -> None:
    world = serving_v1()

    world.change(version="v2").ready("v2", 1).decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.status.canary_version == "v2"
    assert world.status.canary_weight == 0
    assert world.status.step_started_at is None
    assert world.traffic() == SetTraffic("v1", "v2", 0, 0)
    assert world.ensured() == {"v1": 2, "v2": 2}
    assert world.status.message == "rolling out v2, waiting for canary pods (1/2 ready)"
    assert ("Normal", "RolloutStarted") in world.events()
    assert world.condition("Ready") == ("False", "Progressing")

    world.tick(3).ready("v2").decide()

    assert world.status.current_step == 0
    assert world.status.canary_weight == 10
    assert world.status.step_started_at == world.now
    assert world.traffic() == SetTraffic("v1", "v2", 10, 0)
    assert world.status.message == "step 1/4: weight 10%"


def test_steps_set_weights_and_pauses_hold_them_for_their_duration() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    assert world.decision.requeue_after == timedelta(0)  # nothing gates setWeight 10

    world.decide()  # -> pause 30s
    assert (world.status.current_step, world.status.canary_weight) == (1, 10)
    assert world.decision.requeue_after == timedelta(seconds=30)
    assert world.status.message == "step 2/4: weight 10%, pause 30s until 2024-05-01T12:00:30Z"

    world.tick(29).decide()
    assert (world.status.current_step, world.status.canary_weight) == (1, 10)
    assert world.decision.requeue_after == timedelta(seconds=1)

    world.tick(1).decide()  # -> setWeight 50
    assert (world.status.current_step, world.status.canary_weight) == (2, 50)
    world.decide()  # -> pause 1m
    assert (world.status.current_step, world.status.canary_weight) == (3, 50)

    world.tick(60).decide()  # -> promote

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "v2"
    assert world.status.canary_version == ""
    assert world.status.canary_weight == 0
    assert world.status.current_step == 4
    assert world.traffic() == SetTraffic("v2", "", 0, 0, previous="v1")
    assert world.status.previous_stable_version == "v1"
    assert world.status.previous_warm_until == world.now + timedelta(minutes=10)
    assert world.ensured() == {"v2": 2, "v1": 2}
    entry = world.status.history[0]
    assert (entry.version, entry.result, entry.reason) == ("v2", RolloutResult.PROMOTED, "all 4 steps passed")
    assert entry.started_at == T0
    assert world.status.message == "serving v2, v1 warm until 2024-05-01T12:11:30Z"


def test_each_decision_moves_at_most_one_step() -> None:
    world = World(
        deployment_spec("v1", strategy={"canary": {"steps": [{"setWeight": w} for w in (5, 20, 60)]}})
    )
    world.serving("v1").rolling_out("v2")

    seen = [world.status.canary_weight]
    for _ in range(3):
        seen.append(world.decide().status.canary_weight)

    assert seen == [5, 20, 60, 0]
    assert world.status.stable_version == "v2"


def test_pause_without_duration_waits_for_promote() -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
    world = World(deployment_spec("v1", strategy={"canary": {"steps": steps}})).serving("v1")
    world.rolling_out("v2")
    world.decide()

    world.tick(3600).decide()

    assert world.phase() == DeploymentPhase.PAUSED
    assert (world.status.current_step, world.status.canary_weight) == (1, 20)
    assert world.status.message == "step 2/3: weight 20%, paused until promoted (modelfleet.io/promote)"
    assert world.decision.requeue_after is None
    assert world.condition("Progressing") == ("True", "RolloutPaused")

    world.annotate("modelfleet.io/promote").decide()

    assert world.status.stable_version == "v2"
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.history[0].reason == "promoted by hand (modelfleet.io/promote)"
    assert world.annotations == set()


def test_mirroring_starts_once_the_canary_has_entered_a_step() -> None:
    world = World(deployment_spec("v1", strategy={"canary": {"steps": STEPS, "mirrorPercent": 25}}))
    world.serving("v1")
    assert world.traffic().mirror_percent == 0

    world.change(version="v2").decide()
    assert world.traffic().mirror_percent == 0

    world.ready("v2").decide()
    assert world.traffic() == SetTraffic("v1", "v2", 10, 25)


def test_canary_pods_not_ready_by_the_progress_deadline_roll_back() -> None:
    world = serving_v1()
    world.change(version="v2").ready("v2", 1).decide()

    world.tick(599).decide()
    assert world.status.canary_version == "v2"
    assert world.decision.requeue_after == timedelta(seconds=1)

    world.tick(1).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.canary_version == ""
    assert world.status.canary_weight == 0
    assert world.status.rolled_back_version == "v2"
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.removed() == ["v2"]
    assert world.status.history[0].reason == "canary pods not ready within 10m (1/2 ready)"
    assert world.status.message == "v2 rolled back: canary pods not ready within 10m (1/2 ready), serving v1"
    assert ("Warning", "RolledBack") in world.events()


def test_canary_pods_lost_mid_rollout_hold_the_next_step_until_the_deadline() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    world.decide()  # pause 30s from T0
    world.not_ready("v2")

    world.tick(60).decide()
    assert (world.status.current_step, world.status.canary_weight) == (1, 10)
    assert "waiting for canary pods (0/2 ready)" in world.status.message
    # The pause ended at 30s: the deadline runs from there.
    assert world.decision.requeue_after == timedelta(seconds=570)

    world.tick(570).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.rolled_back_version == "v2"


def test_canary_pods_back_in_time_let_the_rollout_go_on() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    world.decide()
    world.not_ready("v2").tick(60).decide()

    world.ready("v2").tick(60).decide()

    assert (world.status.current_step, world.status.canary_weight) == (2, 50)


# --- the monitor gates every step --------------------------------------------------------------------


def test_a_step_waits_for_a_pass_measured_since_it_started() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")
    assert world.decision.requeue_after is None  # new measurements will wake the rollout

    world.tick(30).decide()
    assert (world.status.current_step, world.status.canary_weight) == (0, 10)
    assert world.status.message == "step 1/4: weight 10%, monitor iris-quality waiting for a measurement"

    world.measure(Verdict.PASS).decide()

    assert (world.status.current_step, world.status.canary_weight) == (1, 10)
    assert world.status.analysis.last_verdict == Verdict.PASS

    world.tick(30).decide()  # pause over, but no Pass since the pause started
    assert world.status.current_step == 1
    assert world.status.message == (
        "step 2/4: weight 10%, pause 30s until 2024-05-01T12:01:01Z, monitor iris-quality passing"
    )

    world.measure(Verdict.PASS).decide()
    assert (world.status.current_step, world.status.canary_weight) == (2, 50)


def test_a_pass_measured_before_the_step_started_does_not_count() -> None:
    world = serving_v1(monitor="iris-quality")
    world.change(version="v2").decide()
    world.measure(Verdict.PASS, version="v2")  # canary at weight 0, before the first step
    world.tick(5).ready("v2").decide()
    assert world.status.current_step == 0

    world.decide()

    assert world.status.current_step == 0


def test_inconclusive_holds_the_step() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    for _ in range(5):
        world.measure(Verdict.INCONCLUSIVE, after=10).decide()

    assert (world.status.current_step, world.status.canary_weight) == (0, 10)
    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.status.analysis.inconclusive == 5
    assert world.status.message == (
        "step 1/4: weight 10%, monitor iris-quality inconclusive: errors: 3 requests < minRequests 20"
    )


def test_failure_limit_consecutive_fails_roll_back_to_stable() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")
    world.measure(Verdict.PASS).decide()  # step 2: pause at weight 10

    world.measure(Verdict.FAIL).decide()
    assert world.status.canary_weight == 10
    assert world.status.analysis.failures == 1
    assert "monitor iris-quality failing (1/2): errors 0.31 > 0.05" in world.status.message

    world.measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.canary_weight == 0
    assert world.status.canary_version == ""
    assert world.status.stable_version == "v1"
    assert world.status.rolled_back_version == "v2"
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.removed() == ["v2"]
    assert world.ensured() == {"v1": 2}
    entry = world.status.history[0]
    assert (entry.version, entry.result, entry.reason) == (
        "v2",
        RolloutResult.ROLLED_BACK,
        "errors 0.31 > 0.05",
    )
    assert world.status.message == (
        "v2 rolled back: errors 0.31 > 0.05, serving v1, monitor iris-quality waiting for a measurement"
    )
    assert world.condition("Ready") == ("False", "RolledBack")
    assert world.condition("Progressing") == ("False", "RolledBack")
    assert ("Warning", "RolledBack") in world.events()


def test_a_pass_between_fails_resets_the_count() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    for verdict in (Verdict.FAIL, Verdict.PASS, Verdict.FAIL):
        world.measure(verdict, after=10).decide()

    assert world.status.canary_version == "v2"
    assert world.status.analysis.failures == 1


def test_inconclusive_and_errors_do_not_break_a_run_of_fails() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.ERROR, Verdict.FAIL):
        world.measure(verdict, after=10).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK


def test_fails_arriving_together_roll_back_even_if_a_pass_follows() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).measure(Verdict.PASS).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.history[0].reason == "errors 0.31 > 0.05"


def test_error_limit_consecutive_errors_abort_to_stable_saying_why() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    for _ in range(3):
        world.measure(Verdict.ERROR, after=10).decide()
    assert world.status.canary_version == "v2"
    assert "monitor iris-quality erroring (3/4): errors: router scrape failed" in world.status.message

    world.measure(Verdict.ERROR, after=10).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.canary_weight == 0
    assert world.status.rolled_back_version == "v2"
    assert world.status.history[0].reason == (
        "monitor iris-quality could not measure 4 times in a row: errors: router scrape failed"
    )


def test_measurements_are_counted_once_even_when_passed_again() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")
    world.measure(Verdict.FAIL).decide()

    for _ in range(3):
        world.decide()  # the same measurement is still in the observation

    assert world.status.analysis.failures == 1
    assert world.status.canary_version == "v2"


def test_measurements_of_the_stable_version_do_not_judge_the_canary() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")

    world.measure(Verdict.FAIL, version="v1").measure(Verdict.FAIL, version="v1").decide()

    assert world.status.canary_version == "v2"
    assert world.status.analysis.failures == 0


def test_a_named_monitor_that_does_not_exist_holds_the_rollout() -> None:
    world = serving_v1(strategy={"canary": {"steps": STEPS, "monitor": "iris-quality"}})
    world.rolling_out("v2")

    world.tick(600).decide()

    assert (world.status.current_step, world.status.canary_weight) == (0, 10)
    assert world.status.message == "step 1/4: weight 10%, Monitor iris-quality not found"


# --- paused ------------------------------------------------------------------------------------------


def test_paused_holds_the_current_weight() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    world.decide()

    world.change(paused=True).tick(3600).decide()

    assert world.phase() == DeploymentPhase.PAUSED
    assert (world.status.current_step, world.status.canary_weight) == (1, 10)
    assert world.status.message.startswith("paused (spec.paused), step 2/4: weight 10%")
    assert world.condition("Progressing") == ("True", "RolloutPaused")

    world.change(paused=False).decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert (world.status.current_step, world.status.canary_weight) == (2, 50)


def test_paused_does_not_stop_a_failing_canary_from_rolling_back() -> None:
    world = serving_v1(monitor="iris-quality")
    world.rolling_out("v2")
    world.change(paused=True)

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK


def test_paused_before_the_first_step_keeps_weight_0() -> None:
    world = serving_v1()

    world.change(version="v2", paused=True).ready("v2").decide()

    assert world.phase() == DeploymentPhase.PAUSED
    assert world.status.canary_weight == 0
    assert world.status.step_started_at is None


# --- spec changes ------------------------------------------------------------------------------------


def test_a_new_version_mid_rollout_restarts_from_stable_at_step_0() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    world.decide()
    world.tick(30).decide()
    assert world.status.canary_weight == 50

    world.change(version="v3").decide()

    assert world.status.canary_version == "v3"
    assert world.status.canary_weight == 0
    assert world.status.current_step == 0
    assert world.status.stable_version == "v1"
    assert world.traffic() == SetTraffic("v1", "v3", 0, 0)
    assert world.removed() == ["v2"]
    entry = world.status.history[0]
    assert (entry.version, entry.result, entry.reason) == ("v2", RolloutResult.SUPERSEDED, "superseded by v3")


def test_new_steps_mid_rollout_restart_the_same_version_and_keep_its_pods() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    world.decide()
    world.tick(30).decide()
    assert world.status.canary_weight == 50

    world.change(strategy={"canary": {"steps": [{"setWeight": 5}, {"pause": {}}]}}).decide()

    assert world.status.canary_version == "v2"
    assert (world.status.current_step, world.status.canary_weight) == (0, 5)
    assert world.removed() == []
    assert world.status.history[0].result == RolloutResult.SUPERSEDED
    assert world.status.history[0].reason == "spec changed mid-rollout"


def test_asking_for_the_stable_version_ends_the_rollout_at_once() -> None:
    world = serving_v1()
    world.rolling_out("v2")

    world.change(version="v1").decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.canary_version == ""
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.removed() == ["v2"]
    assert world.status.history[0].result == RolloutResult.SUPERSEDED
    assert world.status.history[0].reason == "spec.version set back to v1"
    assert world.status.rolled_back_version == ""


def test_replicas_and_pause_changes_do_not_restart_the_rollout() -> None:
    world = serving_v1()
    world.rolling_out("v2")
    world.decide()

    world.change(replicas=3).ready("v2", 3).ready("v1", 3).tick(30).decide()

    assert (world.status.current_step, world.status.canary_weight) == (2, 50)
    assert world.ensured() == {"v1": 3, "v2": 3}


def test_a_canary_that_stops_being_servable_is_taken_out() -> None:
    world = serving_v1()
    world.rolling_out("v2")

    world.not_servable("ModelVersion v2 approval was withdrawn").decide()

    assert world.status.canary_version == ""
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.status.history[0].reason == "no longer servable: ModelVersion v2 approval was withdrawn"
    assert world.status.rolled_back_version == ""  # tried again once servable
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.condition("Ready") == ("False", "VersionNotServable")

    world.servability = world.servability.__class__(True)
    world.decide()

    assert world.status.canary_version == "v2"


@pytest.mark.parametrize("index", range(len(STEPS)))
def test_weight_never_exceeds_the_current_steps_weight(index: int) -> None:
    world = serving_v1()
    world.rolling_out("v2")
    for _ in range(index):
        world.tick(60).decide()

    expected = [10, 10, 50, 50][world.status.current_step]
    assert world.status.canary_weight == expected


def test_the_readiness_deadline_is_not_checked_while_paused() -> None:
    world = serving_v1()
    world.change(version="v2", paused=True).decide()

    world.tick(1200).decide()
    assert world.status.canary_version == "v2"
    assert world.phase() == DeploymentPhase.PAUSED

    world.change(paused=False).decide()

    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.history[0].reason == "canary pods not ready within 10m (0/2 ready)"
