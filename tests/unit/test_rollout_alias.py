"""Rollout scenarios of a Deployment that follows an MLflow alias (spec.versionFrom.mlflowAlias) instead
of naming its version: the alias moving is a spec.version changing, with the same rules (steps, the
rollout hash, a rolled-back version held back until retry, the stable version ending a rollout); an
alias that points nowhere rolls nothing out and touches nothing serving."""

from __future__ import annotations

from rollout_world import RETRY, World, deployment_spec, mlflow_model

from modelfleet.api.deployment import DeploymentPhase, RolloutResult
from modelfleet.api.monitor import Verdict
from modelfleet.rollout import SetTraffic


def champion_at_v3(monitor: str | None = None) -> World:
    """Given a Deployment following alias champion, which points at iris-v3, serving it."""
    world = World(deployment_spec(alias="champion"), monitor=monitor)
    return world.following("champion", "iris-v3")


# --- the alias moves ---------------------------------------------------------------------------------


def test_the_version_the_alias_points_at_is_served_and_named_in_the_status() -> None:
    world = champion_at_v3()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.target_version == "iris-v3"
    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)
    assert world.condition("Ready") == ("True", "Healthy")


def test_when_the_alias_moves_a_rollout_of_its_new_version_starts() -> None:
    world = champion_at_v3()

    world.alias("champion", "iris-v4").ready("iris-v4").decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.status.target_version == "iris-v4"
    assert (world.status.stable_version, world.status.canary_version) == ("iris-v3", "iris-v4")
    assert world.traffic() == SetTraffic("iris-v3", "iris-v4", 10, 0)
    started = [e.message for e in world.decision.actions if getattr(e, "reason", "") == "RolloutStarted"]
    assert started == ["rolling out iris-v4 over iris-v3 (alias champion, 4 steps)"]


def test_a_rollout_that_follows_an_alias_walks_its_steps_and_promotes() -> None:
    world = champion_at_v3()
    world.alias("champion", "iris-v4").ready("iris-v4").decide()

    world.decide()  # pause 30s
    world.tick(30).decide()  # setWeight 50
    world.decide()  # pause 1m
    world.tick(60).decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "iris-v4"
    assert world.status.history[0].version == "iris-v4"
    assert world.status.history[0].result == RolloutResult.PROMOTED
    assert world.condition("Ready") == ("True", "Healthy")


def test_when_the_alias_moves_back_to_the_stable_version_the_rollout_ends() -> None:
    world = champion_at_v3()
    world.alias("champion", "iris-v4").ready("iris-v4").decide()
    assert world.status.canary_weight == 10

    world.alias("champion", "iris-v3").decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.canary_version == ""
    assert world.status.target_version == "iris-v3"
    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)
    assert world.removed() == ["iris-v4"]
    entry = world.status.history[0]
    assert (entry.version, entry.result) == ("iris-v4", RolloutResult.SUPERSEDED)
    assert entry.reason == "alias champion set back to iris-v3"
    assert world.status.rolled_back_version == ""


def test_when_the_alias_moves_on_mid_rollout_the_rollout_restarts_with_its_new_version() -> None:
    world = champion_at_v3()
    world.alias("champion", "iris-v4").ready("iris-v4").decide()

    world.alias("champion", "iris-v5").decide()

    assert (world.status.canary_version, world.status.canary_weight) == ("iris-v5", 0)
    assert world.removed() == ["iris-v4"]
    assert world.status.history[0].reason == "alias champion moved to iris-v5"


def test_following_the_alias_of_the_version_already_named_restarts_nothing() -> None:
    world = World(deployment_spec("iris-v3")).serving("iris-v3")
    world.rolling_out("iris-v4")
    before = world.status

    world.alias("champion", "iris-v4")
    world.spec = deployment_spec(alias="champion")  # the same version, now through the alias
    world.generation += 1
    world.decide()

    assert world.status.rollout_hash == before.rollout_hash
    assert world.status.canary_version == "iris-v4"
    assert world.status.rollout_started_at == before.rollout_started_at  # the same rollout, going on
    assert world.status.history == before.history
    assert world.removed() == []


# --- a rolled-back version is held back while the alias points at it --------------------------------


def rolled_back_v4() -> World:
    """Given champion moved to iris-v4, whose canary failed its Monitor and was rolled back."""
    world = champion_at_v3(monitor="iris-quality")
    world.alias("champion", "iris-v4").ready("iris-v4").decide()
    world.measure(Verdict.FAIL).decide()
    world.measure(Verdict.FAIL).decide()
    assert world.phase() == DeploymentPhase.ROLLED_BACK
    assert world.status.rolled_back_version == "iris-v4"
    return world


def test_a_rolled_back_version_is_not_tried_again_while_the_alias_points_at_it() -> None:
    world = rolled_back_v4()

    world.tick(60).decide()  # the next sync: champion still at iris-v4

    assert world.status.canary_version == ""
    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)
    assert world.status.message.startswith("iris-v4 rolled back: errors 0.31 > 0.05, serving iris-v3")


def test_an_alias_gone_for_a_while_and_back_at_the_rolled_back_version_does_not_release_it() -> None:
    world = rolled_back_v4()

    world.alias("champion", None).decide()
    world.alias("champion", "iris-v4").decide()

    assert world.status.rolled_back_version == "iris-v4"
    assert world.status.canary_version == ""


def test_retry_rolls_the_version_the_alias_points_at_out_again() -> None:
    world = rolled_back_v4()

    world.annotate(RETRY).decide()

    assert world.status.canary_version == "iris-v4"
    assert world.status.rolled_back_version == ""


def test_an_alias_that_moves_on_releases_the_rolled_back_version() -> None:
    world = rolled_back_v4()

    world.alias("champion", "iris-v5").ready("iris-v5").decide()

    assert world.status.canary_version == "iris-v5"
    assert world.status.rolled_back_version == ""


# --- an alias that points nowhere ----------------------------------------------------------------------


def test_an_alias_that_points_nowhere_keeps_the_stable_version_serving_and_says_why() -> None:
    world = champion_at_v3()

    world.alias("champion", None).decide()

    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "iris-v3"
    assert world.status.target_version == ""
    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)
    assert world.ensured() == {"iris-v3": 1}
    assert world.removed() == []
    assert world.status.message == (
        "nothing rolled out: alias champion of Model iris points at no version, serving iris-v3"
    )
    assert world.condition("Ready") == ("False", "VersionUnresolved")
    assert world.condition("Progressing") == ("False", "VersionUnresolved")
    assert world.condition("Degraded") == ("False", "AsExpected")
    assert ("Warning", "VersionUnresolved") in world.events()

    world.tick(30).decide()  # said once, not at every decision
    assert ("Warning", "VersionUnresolved") not in world.events()

    world.alias("champion", "iris-v3").decide()  # back where it was: all is well again
    assert world.condition("Ready") == ("True", "Healthy")
    assert world.status.target_version == "iris-v3"


def test_a_missing_model_keeps_the_stable_version_serving() -> None:
    world = champion_at_v3()
    world.model = None

    world.decide()

    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)
    assert (
        world.status.message
        == "nothing rolled out: alias champion unknown: Model iris not found, serving iris-v3"
    )


def test_a_rollout_under_way_holds_its_step_and_weight_while_the_alias_points_nowhere() -> None:
    world = champion_at_v3()
    world.alias("champion", "iris-v4").ready("iris-v4").decide()
    world.decide()  # step 2: pause 30s at weight 10
    assert (world.status.current_step, world.status.canary_weight) == (1, 10)

    world.alias("champion", None).tick(31).decide()

    assert world.phase() == DeploymentPhase.PAUSED
    assert (world.status.current_step, world.status.canary_weight) == (1, 10)
    assert world.traffic() == SetTraffic("iris-v3", "iris-v4", 10, 0)
    assert world.removed() == []
    assert world.status.message.startswith(
        "rollout held: alias champion of Model iris points at no version, step 2/4: weight 10%"
    )
    assert world.condition("Progressing") == ("True", "VersionUnresolved")
    assert ("Warning", "VersionUnresolved") in world.events()

    world.not_ready("iris-v4").tick(3600).decide()  # no progress deadline while held
    assert (world.status.canary_version, world.status.canary_weight) == ("iris-v4", 10)

    world.ready("iris-v4").alias("champion", "iris-v4").decide()  # back: the rollout goes on
    assert world.phase() == DeploymentPhase.PROGRESSING
    assert (world.status.current_step, world.status.canary_weight) == (2, 50)


def test_new_steps_while_held_restart_the_rollout_at_step_0_and_it_stays_held() -> None:
    world = champion_at_v3()
    world.alias("champion", "iris-v4").ready("iris-v4").decide()
    world.decide()
    world.alias("champion", None).decide()
    assert world.status.canary_weight == 10

    world.change(strategy={"canary": {"steps": [{"setWeight": 5}, {"pause": {}}]}}).decide()

    assert world.phase() == DeploymentPhase.PAUSED
    assert (world.status.canary_version, world.status.current_step) == ("iris-v4", 0)
    assert world.status.canary_weight == 0
    assert world.removed() == []
    assert world.status.history[0].reason == "spec changed mid-rollout"

    world.alias("champion", "iris-v4").decide()  # back: the new steps from the first
    assert (world.status.current_step, world.status.canary_weight) == (0, 5)
    assert world.status.history[0].reason == "spec changed mid-rollout"  # the same rollout goes on


def test_a_held_rollout_is_still_rolled_back_by_its_monitor() -> None:
    world = champion_at_v3(monitor="iris-quality")
    world.alias("champion", "iris-v4").ready("iris-v4").decide()
    world.alias("champion", None)

    world.measure(Verdict.FAIL).decide()
    world.measure(Verdict.FAIL).decide()

    assert world.status.canary_version == ""
    assert world.status.rolled_back_version == "iris-v4"
    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)


def test_a_held_canary_that_stops_being_servable_is_taken_out() -> None:
    world = champion_at_v3()
    world.alias("champion", "iris-v4").ready("iris-v4").decide()
    world.alias("champion", None)

    world.not_servable("ModelVersion iris-v4 approval was withdrawn").decide()

    assert world.status.canary_version == ""
    assert world.traffic() == SetTraffic("iris-v3", "", 0, 0)
    assert world.status.history[0].reason == "no longer servable: ModelVersion iris-v4 approval was withdrawn"


# --- a first version whose alias is not known --------------------------------------------------------


def test_a_first_version_waits_for_the_models_first_sync_with_mlflow() -> None:
    world = World(deployment_spec(alias="champion"))
    world.model = mlflow_model({}, synced=False)

    world.decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert (
        world.status.message == "waiting: alias champion unknown: Model iris has not synced with MLflow yet"
    )
    assert world.ensured() == {}
    assert world.decision.of_type(SetTraffic) == []


def test_a_first_version_waits_for_its_model() -> None:
    world = World(deployment_spec(alias="champion"))
    world.model = None

    world.decide()

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.status.message == "waiting: alias champion unknown: Model iris not found"


def test_a_first_version_whose_alias_points_nowhere_fails_until_the_alias_is_set() -> None:
    world = World(deployment_spec(alias="champion"))

    world.decide()

    assert world.phase() == DeploymentPhase.FAILED
    assert world.status.message == "alias champion of Model iris points at no version"
    assert world.condition("Degraded") == ("True", "VersionUnresolved")
    assert world.ensured() == {}
    assert ("Warning", "Failed") in world.events()

    world.alias("champion", "iris-v1").decide()
    assert world.ensured() == {"iris-v1": 1}
    world.ready("iris-v1").decide()
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.stable_version == "iris-v1"


def test_a_first_version_of_a_model_without_an_mlflow_source_fails() -> None:
    world = World(deployment_spec(alias="champion"))
    world.model = mlflow_model({}, source=False)

    world.decide()

    assert world.phase() == DeploymentPhase.FAILED
    assert world.status.message == "alias champion unknown: Model iris has no MLflow source"
