"""Rollout scenarios of the Deployment's fallback: spec.fallback.version kept warm as the chain's last
version, and onDegraded: Fallback, which sends the stable version's traffic to the fallback while it
fails its Monitor and back once it passes failureLimit times in a row."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollout_world import T0, World, deployment_spec

from modelfleet.api.deployment import DeploymentPhase, FallbackStatus
from modelfleet.api.monitor import OnDegraded, Verdict
from modelfleet.rollout import Servability, SetTraffic, addressed_versions

RESPONSE = {"statusCode": 200, "body": '{"outputs": [{"name": "label", "data": [0]}]}'}


def world_with(fallback: dict[str, Any], on_degraded: OnDegraded = OnDegraded.FALLBACK) -> World:
    """Given v1 stable and healthy, judged by Monitor iris-quality (failureLimit 2), with `fallback` as
    spec.fallback and its fallback version's pods ready."""
    world = World(deployment_spec("v1", fallback=fallback), monitor="iris-quality", on_degraded=on_degraded)
    if "version" in fallback:
        world.ready(fallback["version"])
    return world.serving("v1")


def engaged(fallback: dict[str, Any] | None = None) -> World:
    """Given v1 failing its Monitor twice with onDegraded: Fallback: the fallback engaged."""
    world = world_with(fallback or {"version": "rules"})
    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    assert world.status.fallback.active, world.status.message
    return world


# --- the fallback version, kept warm ---------------------------------------------------------------


def test_the_fallback_version_is_kept_warm_and_joins_the_chain_once_it_has_ready_pods() -> None:
    world = World(deployment_spec("v1", fallback={"version": "rules"})).serving("v1")

    assert world.ensured() == {"v1": 1, "rules": 1}
    assert world.traffic() == SetTraffic("v1", "", 0, 0)  # no ready pod yet: not in the chain

    world.ready("rules").decide()

    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules")
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.message == "serving v1"
    assert "rules" in addressed_versions(world.spec, world.status)


def test_the_fallback_version_outlives_rollouts_and_rollback_windows() -> None:
    """Given the fallback version warm, when v2 is rolled out, promoted and v1's rollback window ends,
    then the fallback version's pods were never removed and it stays in the chain."""
    world = World(deployment_spec("v1", fallback={"version": "rules"})).ready("rules").serving("v1")
    world.rolling_out("v2")
    assert world.ensured() == {"v1": 1, "v2": 1, "rules": 1}
    assert world.traffic().fallback == "rules"

    world.annotate("modelfleet.io/promote").decide()
    assert world.ensured() == {"v2": 1, "v1": 1, "rules": 1}
    world.tick(600).decide()

    assert world.ensured() == {"v2": 1, "rules": 1}
    assert world.removed() == ["v1"]
    assert world.traffic() == SetTraffic("v2", "", 0, 0, fallback="rules")


def test_a_fallback_version_that_is_also_the_rolled_back_canary_keeps_its_pods() -> None:
    world = World(deployment_spec("v1", fallback={"version": "rules"})).ready("rules").serving("v1")
    world.change(fallback={"version": "v3"})
    world.rolling_out("v2")

    world.annotate("modelfleet.io/abort").decide()

    assert world.ensured() == {"v1": 1, "v3": 1}
    assert "v2" in world.removed()


def test_a_fallback_version_that_cannot_be_served_is_not_kept_warm_and_says_so_once() -> None:
    world = World(deployment_spec("v1", fallback={"version": "rules"}))
    world.fallback = Servability(False, "ModelVersion rules is not approved")
    world.serving("v1")

    assert world.ensured() == {"v1": 1}
    assert world.traffic().fallback == ""
    assert (
        world.status.message == "serving v1, fallback rules not kept warm: ModelVersion rules is not approved"
    )
    assert ("Warning", "FallbackUnavailable") in world.events()

    world.tick(10).decide()
    assert ("Warning", "FallbackUnavailable") not in world.events()

    world.fallback = Servability(True)
    world.decide()
    assert world.ensured() == {"v1": 1, "rules": 1}
    assert world.status.message == "serving v1"


# --- onDegraded: Fallback ----------------------------------------------------------------------------


def test_stable_failing_its_monitor_sends_its_traffic_to_the_fallback_version() -> None:
    """Given v1 stable with onDegraded: Fallback and the fallback version ready, when v1 fails twice,
    then the router sends all of its traffic to the fallback version, and status, events and conditions
    say so."""
    world = world_with({"version": "rules"})

    world.measure(Verdict.FAIL).decide()
    assert world.status.fallback == FallbackStatus()
    world.measure(Verdict.FAIL).decide()

    assert world.status.fallback == FallbackStatus(
        active=True,
        version="rules",
        since=world.now,
        reason="v1 fails monitor iris-quality: errors 0.31 > 0.05",
    )
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules", fallback_active=True)
    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.status.stable_version == "v1"
    assert world.status.message == (
        "v1 fails monitor iris-quality: errors 0.31 > 0.05; fallback rules serves its traffic until monitor"
        " iris-quality passes 2 times in a row (0/2)"
    )
    assert world.condition("Degraded") == ("True", "FallbackEngaged")
    assert world.condition("Ready") == ("False", "Degraded")
    assert ("Warning", "FallbackEngaged") in world.events()
    (engage,) = [e for e in world.decision.actions if getattr(e, "reason", "") == "FallbackEngaged"]
    assert engage.message == (  # type: ignore[attr-defined]
        "v1 fails monitor iris-quality: errors 0.31 > 0.05; fallback rules serves its traffic"
    )
    assert world.ensured() == {"v1": 1, "rules": 1}  # stable stays warm: it is measured on copies


def test_the_fallback_holds_until_failure_limit_passes_in_a_row() -> None:
    """Given the fallback engaged, when stable passes once, then fails, then is inconclusive and passes
    twice, then only the second run of two passes releases it: a Fail starts the count again and an
    Inconclusive does not count."""
    world = engaged()
    since = world.status.fallback.since

    world.measure(Verdict.PASS).decide()
    assert world.status.fallback.active
    assert world.status.analysis.passes == 1
    assert world.status.message.endswith("passes 2 times in a row (1/2)")
    assert world.traffic().fallback_active

    world.measure(Verdict.FAIL).decide()
    assert world.status.analysis.passes == 0
    world.measure(Verdict.PASS).measure(Verdict.INCONCLUSIVE).decide()
    assert world.status.fallback.active
    assert world.status.fallback.since == since
    assert world.status.analysis.passes == 1
    assert world.events() == []

    world.measure(Verdict.PASS).decide()

    assert world.status.fallback == FallbackStatus(
        active=False, reason="released: v1 passed monitor iris-quality 2 times in a row"
    )
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules", fallback_active=False)
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.condition("Degraded") == ("False", "AsExpected")
    assert ("Normal", "FallbackReleased") in world.events()
    assert world.status.message == "serving v1, monitor iris-quality passing"


def test_a_released_fallback_engages_again_when_stable_fails_again() -> None:
    world = engaged()
    world.measure(Verdict.PASS).measure(Verdict.PASS).decide()
    assert not world.status.fallback.active

    world.measure(Verdict.FAIL).decide()
    assert not world.status.fallback.active
    world.measure(Verdict.FAIL).decide()

    assert world.status.fallback.active
    assert world.status.fallback.since == world.now
    assert ("Warning", "FallbackEngaged") in world.events()


def test_without_a_fallback_version_the_static_response_answers_stables_traffic() -> None:
    world = engaged({"response": RESPONSE})

    assert world.status.fallback.version == ""
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="", fallback_active=True)
    assert world.status.message.startswith(
        "v1 fails monitor iris-quality: errors 0.31 > 0.05; fallback.response answers its traffic until"
    )


def test_a_fallback_version_without_ready_pods_leaves_the_static_response_or_alert() -> None:
    """Given onDegraded: Fallback and a fallback version with no ready pod, when stable fails, then the
    static response stands in if there is one; without one the Deployment is Degraded as with Alert,
    saying why, and the fallback engages once the fallback version's pods are ready."""
    world = world_with({"version": "rules", "response": RESPONSE}).not_ready("rules")
    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="", fallback_active=True)
    assert world.status.fallback.version == ""

    world = world_with({"version": "rules"}).not_ready("rules")
    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    assert world.status.fallback.active is False
    assert world.traffic().fallback_active is False
    assert world.phase() == DeploymentPhase.DEGRADED
    assert world.condition("Degraded") == ("True", "MonitorFailing")
    assert world.status.message == (
        "v1 degraded: errors 0.31 > 0.05 (onDegraded: Fallback, but fallback rules has no ready pods"
        " (0/1 ready))"
    )

    world.ready("rules").decide()

    assert world.status.fallback.active
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules", fallback_active=True)


def test_an_engaged_fallback_version_that_loses_its_pods_leaves_stable_serving_meanwhile() -> None:
    world = engaged()

    world.not_ready("rules").decide()

    assert world.status.fallback.active  # stable still fails: the fallback is only unavailable
    assert world.status.fallback.version == ""
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert world.status.message == (
        "v1 fails monitor iris-quality: errors 0.31 > 0.05; fallback rules has no ready pods (0/1 ready): v1"
        " serves meanwhile, until monitor iris-quality passes 2 times in a row (0/2)"
    )

    world.ready("rules").decide()
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules", fallback_active=True)


def test_alert_or_rollback_never_engage_the_fallback() -> None:
    for setting in (OnDegraded.ALERT, OnDegraded.ROLLBACK):
        world = world_with({"version": "rules"}, on_degraded=setting)
        world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
        assert world.status.fallback.active is False
        assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules")


def test_the_fallback_is_released_when_the_monitor_no_longer_asks_for_it() -> None:
    world = engaged()
    world.on_degraded = OnDegraded.ALERT

    world.decide()

    assert world.status.fallback.active is False
    assert world.status.fallback.reason == "released: monitor iris-quality has onDegraded: Alert"
    assert ("Normal", "FallbackReleased") in world.events()
    assert world.phase() == DeploymentPhase.DEGRADED  # still failing: now only reported, as with Alert

    world = engaged()
    world.monitor_name = None
    world.decide()
    assert world.status.fallback.reason == "released: no Monitor judges the Deployment any more"
    assert world.traffic().fallback_active is False


def test_the_fallback_is_released_when_the_spec_has_nothing_to_fall_back_to() -> None:
    world = engaged()

    world.change(fallback={"timeout": "2s"}).decide()

    assert world.status.fallback.reason == "released: spec.fallback has neither version nor response"
    assert world.traffic() == SetTraffic("v1", "", 0, 0)
    assert "rules" not in world.ensured()


def test_an_engaged_decision_is_stable_when_nothing_changes() -> None:
    world = engaged()
    first = world.status

    world.tick(5).decide()

    assert world.status == first
    assert world.events() == []
    assert world.decision.requeue_after is None


# --- rollouts while the fallback is engaged -----------------------------------------------------------


def test_a_rollout_started_while_engaged_proceeds_and_its_promotion_releases_the_fallback() -> None:
    """Given the fallback engaged for v1, when v2 is rolled out, then its canary walks the steps as
    usual, gated by the Monitor, while stable's share still goes to the fallback; when v2 is promoted,
    then the fallback is released and v2 serves everything."""
    world = engaged()
    world.rolling_out("v2")

    assert world.phase() == DeploymentPhase.PROGRESSING
    assert world.traffic() == SetTraffic("v1", "v2", 10, 0, fallback="rules", fallback_active=True)
    assert world.status.fallback.active
    assert world.condition("Degraded") == ("True", "FallbackEngaged")
    assert world.status.message == (
        "step 1/4: weight 10%, monitor iris-quality waiting for a measurement,"
        " fallback rules serves v1's traffic"
    )

    world.measure(Verdict.PASS).decide()  # the canary's pass
    assert world.status.current_step == 1
    assert world.status.fallback.active  # a canary's pass says nothing of stable

    world.annotate("modelfleet.io/promote").decide()

    assert world.status.stable_version == "v2"
    assert world.status.fallback == FallbackStatus(active=False, reason="released: v2 promoted over v1")
    assert world.traffic() == SetTraffic("v2", "", 0, 0, previous="v1", fallback="rules")
    assert ("Normal", "Promoted") in world.events()
    assert ("Normal", "FallbackReleased") in world.events()
    assert world.phase() == DeploymentPhase.HEALTHY


def test_a_rollout_rolled_back_while_engaged_leaves_the_fallback_engaged_until_stable_passes() -> None:
    world = engaged()
    world.rolling_out("v2")

    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()  # the canary fails: rolled back

    assert world.status.canary_version == ""
    assert world.status.rolled_back_version == "v2"
    assert world.status.fallback.active
    assert world.traffic() == SetTraffic("v1", "", 0, 0, fallback="rules", fallback_active=True)
    assert world.phase() == DeploymentPhase.DEGRADED

    world.measure(Verdict.PASS, version="v1").measure(Verdict.PASS, version="v1").decide()
    assert world.status.fallback.active is False
    assert world.phase() == DeploymentPhase.ROLLED_BACK


def test_the_engagement_time_is_kept_across_decisions_and_cleared_on_release() -> None:
    world = engaged()
    assert world.status.fallback.since == T0 + timedelta(seconds=2)
    world.tick(30).measure(Verdict.FAIL).decide()
    assert world.status.fallback.since == T0 + timedelta(seconds=2)
    world.measure(Verdict.PASS).measure(Verdict.PASS).decide()
    assert world.status.fallback.since is None
