"""Properties of the rollout state machine under random sequences of events.

Pods come and go, time jumps, measurements pass or fail, annotations are set, the spec changes
(version, steps, strategy, paused), the spec follows an MLflow alias that moves or points nowhere, the
fallback version comes and goes: whatever happens, the invariants below hold after every decision.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from rollout_world import ABORT, PROMOTE, RETRY, World, deployment_spec

from modelfleet.api.deployment import (
    DeploymentPhase,
    DeploymentStatus,
    RolloutResult,
    StrategyType,
    rollout_hash,
)
from modelfleet.api.monitor import OnDegraded, Verdict
from modelfleet.rollout import (
    EnsureVersion,
    RemoveVersion,
    Servability,
    SetTraffic,
    resolve_target,
    step_weight,
)

VERSIONS = ("v1", "v2", "v3", "v4")
FALLBACKS: list[dict[str, Any]] = [
    {},
    {"version": "rules"},
    {"response": {"body": "{}"}},
    {"version": "rules", "response": {"body": "{}"}},
]
STEP_LISTS: list[list[dict[str, Any]]] = [
    [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}],
    [{"setWeight": 5}, {"setWeight": 20}, {"setWeight": 60}],
    [{"pause": {"duration": "10s"}}, {"setWeight": 30}, {"pause": {}}, {"setWeight": 80}],
    [{"setWeight": 50}, {"setWeight": 20}, {"pause": {"duration": "2m"}}],
]


class RolloutMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()

    @initialize(
        monitor=st.booleans(),
        on_degraded=st.sampled_from(list(OnDegraded)),
        steps=st.sampled_from(STEP_LISTS),
        replicas=st.integers(1, 2),
        fallback=st.sampled_from(FALLBACKS),
    )
    def start(
        self,
        monitor: bool,
        on_degraded: OnDegraded,
        steps: list[dict[str, Any]],
        replicas: int,
        fallback: dict[str, Any],
    ) -> None:
        self.world = World(
            deployment_spec(
                "v1", replicas=replicas, strategy={"canary": {"steps": steps}}, fallback=fallback
            ),
            monitor="iris-quality" if monitor else None,
            on_degraded=on_degraded,
        )
        self.step()

    # --- events -----------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0, 1, 5, 30, 61, 300, 601]))
    def time_passes(self, seconds: int) -> None:
        self.world.tick(seconds)
        self.step()

    @rule(version=st.sampled_from(VERSIONS), replicas=st.integers(0, 2))
    def pods_change(self, version: str, replicas: int) -> None:
        self.world.ready(version, replicas)
        self.step()

    @rule(version=st.sampled_from(VERSIONS))
    def all_pods_ready(self, version: str) -> None:
        self.world.ready(version)
        self.step()

    @rule(name=st.sampled_from([PROMOTE, ABORT, RETRY]))
    def annotated(self, name: str) -> None:
        self.world.annotate(name)
        self.step()

    @rule(version=st.sampled_from(VERSIONS))
    def version_changes(self, version: str) -> None:
        self.world.change(version=version)
        self.step()

    @rule(version=st.sampled_from([*VERSIONS, None]))
    def alias_moves(self, version: str | None) -> None:
        """The spec follows alias champion (from now on), which the MLflow sync saw at `version`."""
        self.world.alias("champion", version)
        if self.world.spec.alias != "champion":
            self.world.change(versionFrom={"mlflowAlias": "champion"})
        self.step()

    @rule(steps=st.sampled_from(STEP_LISTS), immediate=st.booleans())
    def strategy_changes(self, steps: list[dict[str, Any]], immediate: bool) -> None:
        kind = "Immediate" if immediate else "Canary"
        self.world.change(strategy={"type": kind, "canary": {"steps": steps}})
        self.step()

    @rule(paused=st.booleans())
    def pause_changes(self, paused: bool) -> None:
        self.world.change(paused=paused)
        self.step()

    @rule(
        verdict=st.sampled_from(list(Verdict)),
        which=st.sampled_from(["canary", "stable", "other"]),
        count=st.integers(1, 3),
    )
    def measured(self, verdict: Verdict, which: str, count: int) -> None:
        version = {
            "canary": self.world.status.canary_version,
            "stable": self.world.status.stable_version,
            "other": "v4",
        }[which] or "v4"
        for _ in range(count):
            self.world.measure(verdict, version=version)
        self.step()

    @rule(verdict=st.sampled_from([Verdict.FAIL, Verdict.PASS]))
    def stable_measured_twice(self, verdict: Verdict) -> None:
        """failureLimit measurements of stable in a row: what degrades it, engages or releases a fallback."""
        for _ in range(2):
            self.world.measure(verdict, version=self.world.status.stable_version or "v4")
        self.step()

    @rule(replicas=st.integers(0, 2))
    def fallback_pods_change(self, replicas: int) -> None:
        self.world.ready("rules", replicas)
        self.step()

    @rule(servable=st.booleans())
    def fallback_servability_changes(self, servable: bool) -> None:
        self.world.fallback = Servability(True) if servable else Servability(False, "not approved")
        self.step()

    @rule(fallback=st.sampled_from(FALLBACKS))
    def fallback_changes(self, fallback: dict[str, Any]) -> None:
        self.world.change(fallback=fallback)
        self.step()

    @rule(on_degraded=st.sampled_from(list(OnDegraded)))
    def on_degraded_changes(self, on_degraded: OnDegraded) -> None:
        self.world.on_degraded = on_degraded
        self.step()

    @rule(servable=st.booleans())
    def servability_changes(self, servable: bool) -> None:
        if servable:
            self.world.servability = self.world.servability.__class__(True)
        else:
            self.world.not_servable("not approved")
        self.step()

    # --- one decision, checked against the one before -------------------------------------------

    def step(self) -> None:
        world = self.world
        old: DeploymentStatus = world.status
        retry_pending = RETRY in world.annotations
        abort_pending = ABORT in world.annotations
        decision = world.decide()
        new = decision.status
        spec = resolve_target(world.spec, world.model).resolved(world.spec)  # as decide() saw it
        steps = spec.strategy.canary.steps
        new_entries = (
            new.history[: max(0, len(new.history) - len(old.history))] if old.history else new.history
        )
        if len(old.history) == 20:
            new_entries = tuple(h for h in new.history if h.finished_at == world.now)

        # Weights: bounded by the current step, and raised only by entering the next step.
        if (
            not new.canary_version
            or new.step_started_at is None
            or spec.strategy.type == StrategyType.IMMEDIATE
        ):
            assert new.canary_weight == 0
        else:
            assert new.canary_weight <= step_weight(steps, new.current_step)
        ended = any(h.version == old.canary_version for h in new_entries)
        same_rollout = bool(old.canary_version) and old.canary_version == new.canary_version and not ended
        if same_rollout and new.canary_weight > old.canary_weight:
            entered_first = old.step_started_at is None and new.current_step == old.current_step
            assert entered_first or new.current_step == old.current_step + 1
            assert new.canary_weight == steps[new.current_step].set_weight
        if new.canary_version and not same_rollout:
            assert new.current_step == 0
            assert new.canary_weight <= step_weight(steps, 0)

        # A rolled-back version is neither promoted nor rolled out again until spec.version moves
        # or retry is asked.
        blocked = old.rolled_back_version
        if blocked and spec.version == blocked and not retry_pending:
            assert new.canary_version != blocked
            assert not any(h.version == blocked and h.result == RolloutResult.PROMOTED for h in new_entries)
            if old.stable_version != blocked:
                assert new.stable_version != blocked

        # A spec change mid-rollout ends that rollout, and any new one starts from stable at step 0.
        if (
            old.canary_version
            and spec.version is not None
            and (rollout_hash(spec) != old.rollout_hash or spec.version == old.stable_version)
        ):
            assert any(h.version == old.canary_version for h in new_entries)
            if spec.version == old.stable_version:
                assert new.canary_version == ""
            if new.canary_version:
                assert new.current_step == 0
                assert new.stable_version == old.stable_version
        # An alias that points nowhere rolls nothing out and moves no rollout forward.
        assert new.target_version == (spec.version or "")
        if spec.version is None:
            if not old.canary_version:
                assert new.canary_version == ""
            elif same_rollout:  # held where it was
                assert (new.current_step, new.canary_weight) == (old.current_step, old.canary_weight)
            elif new.canary_version:  # restarted by a spec change while held: at step 0, held there
                assert (new.current_step, new.canary_weight, new.step_started_at) == (0, 0, None)
            if not old.stable_version:
                assert not decision.of_type(EnsureVersion)
        if abort_pending and old.canary_version and old.stable_version:
            assert any(h.result == RolloutResult.ABORTED for h in new_entries)
            assert new.canary_version != old.canary_version or new.rollout_started_at == world.now

        # Versions: a stable one stays, a canary differs from it.
        if old.stable_version:
            assert new.stable_version
        if new.canary_version:
            assert new.canary_version != new.stable_version
            assert new.stable_version

        # Phase and conditions agree.
        ready = next(c for c in new.conditions if c.type == "Ready")
        if ready.status.value == "True":
            assert new.phase == DeploymentPhase.HEALTHY
            assert ready.observed_generation == world.generation == new.observed_generation
            assert spec.version == new.stable_version
        if new.phase == DeploymentPhase.HEALTHY:
            assert new.canary_version == ""
        progressing = next(c for c in new.conditions if c.type == "Progressing")
        assert (progressing.status.value == "True") == (
            new.phase in {DeploymentPhase.PROGRESSING, DeploymentPhase.PAUSED}
        )

        # Actions agree with the status.
        traffic = decision.of_type(SetTraffic)
        if new.stable_version:
            assert traffic == [
                SetTraffic(
                    new.stable_version,
                    new.canary_version,
                    new.canary_weight,
                    traffic[0].mirror_percent,
                    traffic[0].previous,
                    traffic[0].fallback,
                    traffic[0].fallback_active,
                )
            ]
        else:
            assert traffic == []
        ensured = {a.version for a in decision.of_type(EnsureVersion)}
        removed = {a.version for a in decision.of_type(RemoveVersion)}
        assert not ensured & removed
        assert {v for v in (new.stable_version, new.canary_version) if v} <= ensured
        if traffic and traffic[0].previous:  # the router falls back only to a warm, ready former stable
            assert traffic[0].previous == new.previous_stable_version
            assert traffic[0].previous in ensured
            assert traffic[0].previous not in {new.stable_version, new.canary_version}

        # The fallback version is kept warm whenever it may be served, and the router is sent to it only
        # while it has a ready pod and is neither stable nor the canary; the fallback is active only while a
        # Monitor asks for it and the spec has something to fall back to, and never while Healthy.
        named = spec.fallback.version or ""
        if named and world.fallback.servable and ensured - {named}:
            assert named in ensured
        if traffic and traffic[0].fallback:
            assert traffic[0].fallback == named
            assert named not in {new.stable_version, new.canary_version}
            assert world.ready_replicas.get(named, 0) > 0
        if traffic and traffic[0].fallback_active:
            assert new.fallback.active
            assert traffic[0].fallback or spec.fallback.response is not None
        if new.fallback.active:
            assert world.monitor_name is not None
            assert world.on_degraded == OnDegraded.FALLBACK
            assert named or spec.fallback.response is not None
            assert new.phase != DeploymentPhase.HEALTHY
            assert new.fallback.since is not None
            assert next(c for c in new.conditions if c.type == "Degraded").reason == "FallbackEngaged"
        else:
            assert new.fallback.since is None
            assert new.fallback.version == ""
        if old.fallback.active and not new.fallback.active:
            assert new.fallback.reason.startswith("released: ")

        # History is bounded and newest first; the status survives a trip through JSON.
        assert len(new.history) <= 20
        finished = [h.finished_at for h in new.history]
        assert all(a is not None and b is not None and a >= b for a, b in itertools.pairwise(finished))
        assert DeploymentStatus.model_validate(new.to_k8s()) == new

        # Deciding again on the same inputs counts no measurement twice.
        again = world.decide()
        if again.status.analysis.last_measured_at != world.now:
            assert again.status.analysis.failures == world.status.analysis.failures
            assert again.status.analysis.errors == world.status.analysis.errors
        world.status = new  # the repeat is a probe only

    @invariant()
    def message_is_set(self) -> None:
        if self.world.last is not None:
            assert self.world.status.message


TestRolloutMachine = RolloutMachine.TestCase
TestRolloutMachine.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.sampled_from(STEP_LISTS),
    ticks=st.lists(st.sampled_from([0, 10, 30, 60]), min_size=0, max_size=5),
)
def test_a_healthy_canary_without_monitor_is_always_promoted(
    steps: list[dict[str, Any]], ticks: list[int]
) -> None:
    world = World(deployment_spec("v1", strategy={"canary": {"steps": steps}})).serving("v1")
    world.change(version="v2").ready("v2")
    for seconds in ticks:
        world.tick(seconds).decide()

    for _ in range(2 * len(steps) + 2):
        if PROMOTE not in world.annotations and world.phase() == DeploymentPhase.PAUSED:
            world.annotate(PROMOTE)
        world.tick(120).decide()

    assert world.status.stable_version == "v2"
    assert world.phase() == DeploymentPhase.HEALTHY
    assert world.status.history[0].result == RolloutResult.PROMOTED


@settings(max_examples=100, deadline=None)
@given(verdicts=st.lists(st.sampled_from(list(Verdict)), min_size=1, max_size=12))
def test_the_canary_is_rolled_back_exactly_when_the_fails_run_out(verdicts: list[Verdict]) -> None:
    steps = [{"setWeight": 10}, {"pause": {}}]
    world = World(deployment_spec("v1", strategy={"canary": {"steps": steps}}), monitor="iris-quality")
    world.serving("v1").rolling_out("v2")

    failures = errors = 0
    expected_rollback = False
    for verdict in verdicts:
        world.measure(verdict).decide()
        failures = 0 if verdict == Verdict.PASS else failures + (verdict == Verdict.FAIL)
        errors = errors + 1 if verdict == Verdict.ERROR else 0
        if failures >= 2 or errors >= 4:
            expected_rollback = True
            break

    assert (world.phase() == DeploymentPhase.ROLLED_BACK) == expected_rollback
    assert (world.status.canary_weight == 0) == expected_rollback
    if not expected_rollback:
        assert world.status.analysis.failures == failures
        assert world.status.analysis.errors == errors
