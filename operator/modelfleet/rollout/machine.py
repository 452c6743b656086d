"""The rollout state machine: `decide(spec, status, observation, now) -> Decision`.

A pure function: the whole state lives in the Deployment's status, the clock is passed in, and the
answer is the complete new status plus the actions that bring the world in line with it. The rules
(docs/rollout.md tells the same story with a diagram):

- spec.version is the version the spec asks for: named, or resolved from versionFrom's alias by the
  caller (`Target.resolved`), so an alias that moves behaves like a spec.version that changes. An alias
  that resolves to no version (spec.version None, `observation.target` says why) rolls nothing out and
  touches nothing serving: the stable version keeps serving, a rollout under way holds its step and
  weight (its Monitor and the annotations still act), a first version waits or fails.
- No stable version yet: spec.version becomes stable as soon as its pods are ready.
- A new spec.version starts a rollout from the stable version: its pods come up at weight 0, then
  `Immediate` switches all traffic once they are ready, and `Canary` walks the steps. A step is entered
  only when the canary's pods are ready; a setWeight step sets the weight, a pause holds it (for its
  duration, or until promoted). With a Monitor, a step is done only after a Pass measured since it
  started. After the last step the canary is promoted; the old stable stays warm for rollbackWindow.
- failureLimit consecutive Fail (or errorLimit consecutive Error) roll the canary back, as do canary
  pods not ready by progressDeadline; a rolled-back version is not tried again until spec.version
  changes or modelfleet.io/retry is set. modelfleet.io/abort rolls back by hand, modelfleet.io/promote
  promotes at once.
- A spec change mid-rollout (another rollout hash) restarts from stable at step 0; asking for the
  stable version ends the rollout at once.
- Without a canary, the Monitor judges the stable version: failureLimit consecutive Fail roll back to
  the previous version (onDegraded: Rollback, when there is one), engage the fallback (onDegraded:
  Fallback: spec.fallback.version, else spec.fallback.response, serves stable's traffic until
  failureLimit consecutive Pass, or a promotion) or mark the Deployment Degraded.
- spec.fallback.version, when servable, is kept warm whatever the rollout does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from modelfleet.analysis.assessment import overall_verdict, summarize
from modelfleet.api.common import Condition, format_duration, format_time, set_condition
from modelfleet.api.deployment import (
    ABORT_ANNOTATION,
    HISTORY_LIMIT,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    AnalysisStatus,
    CanaryStep,
    DeploymentPhase,
    DeploymentSpec,
    DeploymentStatus,
    FallbackStatus,
    HistoryEntry,
    RolloutResult,
    StrategyType,
    rollout_hash,
)
from modelfleet.api.monitor import Measurement, OnDegraded, Verdict
from modelfleet.rollout.types import (
    Action,
    ConditionReason,
    ConsumeAnnotation,
    Decision,
    EnsureVersion,
    Event,
    EventReason,
    MonitorObservation,
    Observation,
    RemoveVersion,
    SetTraffic,
    Target,
)

MANUAL_ANNOTATIONS = (ABORT_ANNOTATION, RETRY_ANNOTATION, PROMOTE_ANNOTATION)
MESSAGE_LIMIT = 1024


def step_weight(steps: Sequence[CanaryStep], index: int) -> int:
    """The weight in effect during step `index`: the last setWeight at or before it, 0 before any."""
    for step in reversed(steps[: index + 1]):
        if step.set_weight is not None:
            return step.set_weight
    return 0


def addressed_versions(spec: DeploymentSpec, status: DeploymentStatus) -> frozenset[str]:
    """The versions whose Service (their address) is kept: every version the Deployment names in its
    spec (spec.fallback.version too), its status or its bounded history. A version's pods come and go
    (abort, retry, scale, the rollback window), but its Service, and so its cluster IP and DNS answer,
    stays for as long as the Deployment may send it traffic again, so no router or DNS cache can hold a
    stale address."""
    named = {
        spec.version or "",
        status.stable_version,
        status.canary_version,
        status.previous_stable_version,
        status.rolled_back_version,
        spec.fallback.version or "",
        *(entry.version for entry in status.history),
    }
    return frozenset(named - {""})


def decide(
    spec: DeploymentSpec, status: DeploymentStatus, observation: Observation, now: datetime
) -> Decision:
    """The next status of the Deployment and the actions that realise it."""
    return _Rollout(spec, status, observation, now).run()


class _Rollout:
    """One decision: a working copy of the status, changed step by step, then frozen into a Decision."""

    def __init__(
        self, spec: DeploymentSpec, status: DeploymentStatus, obs: Observation, now: datetime
    ) -> None:
        self.spec = spec
        self.old = status
        self.obs = obs
        self.now = now
        self.version = spec.version or ""  # what the spec asks for; "" while versionFrom resolves to none
        self.alias = spec.alias
        target = obs.target or Target(self.version)
        self.unresolved = "" if self.version else target.reason or "spec.versionFrom resolves to no version"
        self.unresolved_pending = target.pending
        self.steps = spec.strategy.canary.steps
        self.hash = rollout_hash(spec)
        self.stable = status.stable_version
        self.canary = status.canary_version
        self.weight = status.canary_weight
        self.step = status.current_step
        self.step_started_at = status.step_started_at
        self.rollout_hash = status.rollout_hash
        self.rolled_back = status.rolled_back_version
        self.previous = status.previous_stable_version
        self.warm_until = status.previous_warm_until
        self.started_at = status.rollout_started_at
        self.analysis = status.analysis
        self.history = status.history
        self.fallback_name = spec.fallback.version or ""  # kept warm; the chain's last version
        self.fallback_active = status.fallback.active
        self.fallback_since = status.fallback.since
        self.fallback_reason = status.fallback.reason
        self.pending = {name for name in MANUAL_ANNOTATIONS if name in obs.annotations}
        self.actions: list[Action] = []
        self.ensured: dict[str, int] = {}
        self.removed: list[str] = []
        self.wake: list[datetime] = []
        # Explanations for the phase and message, set along the way.
        self.failure = ""  # nothing serves (phase Failed)
        self.degraded = ""  # the stable version fails its monitor (phase Degraded)
        self.not_rolled_out = ""  # spec.version is not servable, the stable one keeps serving
        self.waiting: list[str] = []  # what the rollout waits for, e.g. canary pods

    # --- the decision -----------------------------------------------------------------------------

    def run(self) -> Decision:
        self._manual_control()
        self._fallback_still_wanted()
        if self.rolled_back and self.version and self.version != self.rolled_back:
            # spec.version moved on: the rolled-back version may be tried again later (an alias that
            # points nowhere for a while has not moved on)
            self.rolled_back = ""
        if self.canary:
            self._check_rollout_still_wanted()
        if not self.stable:
            self._first_version()
        elif not self.canary:
            self._steady_state()
        if self.canary:
            self._progress()
        if PROMOTE_ANNOTATION in self.pending and not self.canary:
            self._consume(PROMOTE_ANNOTATION)
            hint = "; use modelfleet.io/retry for a rolled-back version" if self.rolled_back else ""
            self._event("Normal", EventReason.PROMOTE_IGNORED, f"no rollout under way to promote{hint}")
        self._keep_previous_warm()
        if self.fallback_active and self.stable and not self.canary and self.obs.monitor is not None:
            self._hold_fallback(self.obs.monitor)
        return self._decision()

    # --- manual control ---------------------------------------------------------------------------

    def _manual_control(self) -> None:
        if ABORT_ANNOTATION in self.pending:
            # Abort wins over anything asked at the same time.
            for name in list(self.pending):
                self._consume(name)
            if self.canary and self.stable:
                self._end(RolloutResult.ABORTED, "aborted by hand (modelfleet.io/abort)", roll_back=True)
            else:
                self._event("Normal", EventReason.ABORT_IGNORED, "no rollout under way to abort")
            return
        if RETRY_ANNOTATION in self.pending:
            self._consume(RETRY_ANNOTATION)
            if self.rolled_back:
                self._event("Normal", EventReason.RETRY, f"{self.rolled_back} may be rolled out again")
                self.rolled_back = ""
            else:
                self._event("Normal", EventReason.RETRY_IGNORED, "no rolled-back version to retry")

    def _consume(self, name: str) -> None:
        self.pending.discard(name)
        self.actions.append(ConsumeAnnotation(name))

    # --- rollout lifecycle ------------------------------------------------------------------------

    def _check_rollout_still_wanted(self) -> None:
        if not self.stable:  # a canary without a stable version: not a state decide() produces
            self.removed.append(self.canary)
            self._reset_rollout()
            return
        if self.version == self.stable:
            what = f"alias {self.alias}" if self.alias else "spec.version"
            self._end(RolloutResult.SUPERSEDED, f"{what} set back to {self.stable}")
        elif self.unresolved:
            # held: the rollout stays where it is, unless the rest of the spec changed meanwhile (steps,
            # strategy): then it restarts at step 0 as it would for its version named, and stays held
            version = self.canary
            held = rollout_hash(self.spec.model_copy(update={"version": version}))
            if self.rollout_hash != held:
                self._end(RolloutResult.SUPERSEDED, "spec changed mid-rollout", keep_pods=True)
                self._start_rollout(version, held)
            elif not self.obs.servability.servable:  # of the canary it holds
                self._end(RolloutResult.ROLLED_BACK, f"no longer servable: {self.obs.servability.reason}")
        elif self.rollout_hash != self.hash:
            same_version = self.version == self.canary
            if same_version:
                reason = "spec changed mid-rollout"
            elif self.alias:
                reason = f"alias {self.alias} moved to {self.version}"
            else:
                reason = f"superseded by {self.version}"
            self._end(RolloutResult.SUPERSEDED, reason, keep_pods=same_version)
        elif not self.obs.servability.servable:
            self._end(RolloutResult.ROLLED_BACK, f"no longer servable: {self.obs.servability.reason}")

    def _start_rollout(self, version: str = "", hash_: str = "") -> None:
        """Start rolling out spec.version (or `version`, whose rollout hash is `hash_`)."""
        self.canary = version or self.version
        self.rollout_hash = hash_ or self.hash
        self.started_at = self.now
        self.weight = 0
        self.step = 0
        self.step_started_at = None
        self.analysis = AnalysisStatus(last_measured_at=self.now)
        how = "all at once when ready" if self._immediate else f"{len(self.steps)} steps"
        if self.alias:
            how = f"alias {self.alias}, {how}"
        self._event(
            "Normal", EventReason.ROLLOUT_STARTED, f"rolling out {self.canary} over {self.stable} ({how})"
        )

    def _progress(self) -> None:
        """Move the rollout under way one transition forward, if it can."""
        monitor = self.obs.monitor
        if monitor is not None:
            tripped = self._judge(self.canary, monitor)
            if tripped:
                self._end(RolloutResult.ROLLED_BACK, tripped, roll_back=True)
                return
        self.ensured[self.canary] = self.spec.replicas
        ready = self._ready(self.canary)
        if PROMOTE_ANNOTATION in self.pending:
            if ready:
                self._consume(PROMOTE_ANNOTATION)
                self._promote("promoted by hand (modelfleet.io/promote)")
                return
            self.waiting.append("promotion waits for the canary pods")
        if self.spec.paused or self.unresolved:
            return  # held: no step entered, nothing promoted by the steps, no deadline
        if self._immediate:
            if ready:
                self._promote("pods ready (Immediate strategy)")
            else:
                self._await_canary_pods(since=self.started_at or self.now)
            return
        if self.step_started_at is None:
            if ready:
                self._enter(self.step)
            else:
                self._await_canary_pods(since=self.started_at or self.now)
            return
        if self.step >= len(self.steps):  # all steps done; only a status edited by hand gets here
            if ready:
                self._promote(f"all {len(self.steps)} steps passed")
            return
        due = self._step_done(self.steps[self.step], self.step_started_at)
        if due is None:
            return
        if not ready:
            self._await_canary_pods(since=due)
        elif self.step + 1 < len(self.steps):
            self._enter(self.step + 1)
        else:
            self._promote(f"all {len(self.steps)} steps passed")

    def _step_done(self, step: CanaryStep, started: datetime) -> datetime | None:
        """When the current step was first allowed to end, or None while it must go on."""
        due = started
        if step.pause is not None:
            if step.pause.duration is None:
                return None  # waits for modelfleet.io/promote
            due = started + timedelta(seconds=step.pause.duration)
            if self.now < due:
                self.wake.append(due)
                return None
        if not self._gate_open(started):
            return None
        return due

    def _gate_open(self, step_started: datetime) -> bool:
        """A step may end only after a Pass measured since it started, when a monitor gates it."""
        if self.obs.monitor is None:
            return self.spec.strategy.canary.monitor is None
        last = self.analysis.last_measured_at
        return self.analysis.last_verdict == Verdict.PASS and last is not None and last > step_started

    def _enter(self, index: int) -> None:
        self.step = index
        self.step_started_at = self.now
        step = self.steps[index]
        if step.set_weight is not None:
            self.weight = step.set_weight
            if self.obs.monitor is None and self.spec.strategy.canary.monitor is None:
                self.wake.append(self.now)  # nothing gates this step: move on at the next decision
        elif step.pause is not None and step.pause.duration is not None:
            self.wake.append(self.now + timedelta(seconds=step.pause.duration))
        self._event("Normal", EventReason.STEP_STARTED, f"{self.canary}: {self._step_text()}")

    def _await_canary_pods(self, since: datetime) -> None:
        deadline = since + timedelta(seconds=self.spec.progress_deadline)
        pods = self._pods_text(self.canary)
        if self.now >= deadline:
            limit = format_duration(self.spec.progress_deadline)
            self._end(
                RolloutResult.ROLLED_BACK, f"canary pods not ready within {limit} ({pods})", roll_back=True
            )
        else:
            self.wake.append(deadline)
            self.waiting.append(f"waiting for canary pods ({pods})")

    def _promote(self, reason: str) -> None:
        version, old = self.canary, self.stable
        self._record(version, RolloutResult.PROMOTED, reason, self.started_at)
        if self.previous and self.previous not in {old, version}:
            self.removed.append(self.previous)
        self.previous = old
        self.warm_until = self.now + timedelta(seconds=self.spec.strategy.rollback_window)
        self.stable = version
        self._reset_rollout()
        self.step = 0 if self._immediate else len(self.steps)
        warm = f"; {old} stays warm until {format_time(self.warm_until)}"
        self._event("Normal", EventReason.PROMOTED, f"{version} is stable ({reason}){warm}")
        if self.fallback_active:
            self._release_fallback(f"{version} promoted over {old}")

    def _end(
        self, result: RolloutResult, reason: str, *, roll_back: bool = False, keep_pods: bool = False
    ) -> None:
        """End the rollout under way: all traffic back on stable, the canary's pods removed."""
        version = self.canary
        self._record(version, result, reason, self.started_at)
        if not keep_pods:
            self.ensured.pop(version, None)
            self.removed.append(version)
        if roll_back:
            self.rolled_back = version
        self._reset_rollout()
        warning = result in {RolloutResult.ROLLED_BACK, RolloutResult.ABORTED}
        self._event("Warning" if warning else "Normal", EventReason(result.value), f"{version}: {reason}")

    def _reset_rollout(self) -> None:
        self.canary = ""
        self.weight = 0
        self.step = 0
        self.step_started_at = None
        self.started_at = None
        self.analysis = AnalysisStatus(last_measured_at=self.now)

    def _record(self, version: str, result: RolloutResult, reason: str, started_at: datetime | None) -> None:
        entry = HistoryEntry(
            version=version,
            result=result,
            reason=reason[:MESSAGE_LIMIT],
            started_at=started_at,
            finished_at=self.now,
        )
        self.history = (entry, *self.history)[:HISTORY_LIMIT]

    # --- no rollout under way ---------------------------------------------------------------------

    def _first_version(self) -> None:
        """No stable version yet: spec.version becomes stable once its pods are ready."""
        version = self.version
        if self.unresolved:
            if self.unresolved_pending:
                self.waiting.append(f"waiting: {self.unresolved}")
            else:
                self.failure = self.unresolved
            return
        if self.obs.servability.pending:
            self.waiting.append(f"waiting for {version}: {self.obs.servability.reason}")
            return
        if not self.obs.servability.servable:
            self.failure = f"{version} is not servable: {self.obs.servability.reason}"
            return
        if self.rollout_hash != self.hash or self.started_at is None:
            self.rollout_hash = self.hash
            self.started_at = self.now
        self.ensured[version] = self.spec.replicas
        if self._ready(version):
            self._record(version, RolloutResult.PROMOTED, "first version", self.started_at)
            self.stable = version
            self._reset_rollout()
            self._event("Normal", EventReason.PROMOTED, f"{version} is stable (first version)")
            return
        deadline = self.started_at + timedelta(seconds=self.spec.progress_deadline)
        if self.now >= deadline:
            limit = format_duration(self.spec.progress_deadline)
            self.failure = f"{version}: pods not ready within {limit} ({self._pods_text(version)})"
        else:
            self.wake.append(deadline)
            self.waiting.append(f"waiting for {version} pods ({self._pods_text(version)})")

    def _steady_state(self) -> None:
        """One version serves everything: judge it, then start a rollout if spec.version differs."""
        monitor = self.obs.monitor
        if monitor is not None:
            self._judge(self.stable, monitor)
            if self.fallback_active:
                self._release_fallback_after_passes(monitor)
            elif self.analysis.failures >= monitor.failure_limit:
                self._stable_degraded(monitor)
        version = self.version
        if self.unresolved:
            pass  # nothing to roll out: the stable version keeps serving, the message says why
        elif version == self.stable:
            self.rollout_hash = self.hash
        elif version == self.rolled_back:
            pass  # rolled back: waits for a new spec.version or modelfleet.io/retry
        elif not self.obs.servability.servable:
            named = f"{version} (alias {self.alias})" if self.alias else version
            self.not_rolled_out = f"{named} not rolled out: {self.obs.servability.reason}"
        else:
            self._start_rollout()

    def _stable_degraded(self, monitor: MonitorObservation) -> None:
        reason = self._last_reason()
        degraded = self.stable
        if monitor.on_degraded == OnDegraded.FALLBACK:
            missing = self._fallback_missing()
            if missing:  # nothing to fall back to: as with Alert, and the message says why
                self.degraded = f"{degraded} degraded: {reason} (onDegraded: Fallback, but {missing})"
            else:
                self._engage_fallback(monitor, reason)
            return
        target = self.previous
        if monitor.on_degraded != OnDegraded.ROLLBACK or not target or target == degraded:
            rollback = monitor.on_degraded == OnDegraded.ROLLBACK
            why = "no previous version" if rollback else f"onDegraded: {monitor.on_degraded.value}"
            self.degraded = f"{degraded} degraded: {reason} ({why})"
            return
        if not self._ready(target):
            self.ensured[target] = self.spec.replicas
            self.degraded = (
                f"{degraded} degraded: {reason}; rolling back to {target}, waiting for its pods"
                f" ({self._pods_text(target)})"
            )
            return
        promoted = next(
            (
                h.finished_at
                for h in self.history
                if h.version == degraded and h.result == RolloutResult.PROMOTED
            ),
            None,
        )
        self._record(degraded, RolloutResult.ROLLED_BACK, f"degraded after promotion: {reason}", promoted)
        self.removed.append(degraded)
        self.stable = target
        self.rolled_back = degraded
        self.previous = ""
        self.warm_until = None
        self.analysis = AnalysisStatus(last_measured_at=self.now)
        self._event(
            "Warning", EventReason.ROLLED_BACK, f"{degraded} degraded ({reason}); {target} serves all traffic"
        )

    def _previous_covers(self) -> bool:
        """Is the previous stable version warm, ready and apart from the split, so that the router may
        fall back to it when stable cannot answer?"""
        return (
            bool(self.previous)
            and self.previous in self.ensured
            and self.previous not in {self.stable, self.canary}
            and self.obs.ready_replicas.get(self.previous, 0) > 0
        )

    def _keep_previous_warm(self) -> None:
        if not self.previous or self.warm_until is None:
            return
        if self.now < self.warm_until:
            self.ensured.setdefault(self.previous, self.spec.replicas)
            self.wake.append(self.warm_until)
        else:
            self.removed.append(self.previous)
            self.warm_until = None

    # --- the fallback (onDegraded: Fallback) -----------------------------------------------------------

    def _fallback_serving(self) -> str:
        """spec.fallback.version when the router may send requests to it: servable, neither stable nor the
        canary, with a ready pod; else ""."""
        name = self.fallback_name
        if not name or name in {self.stable, self.canary} or not self.obs.fallback.servable:
            return ""
        return name if self.obs.ready_replicas.get(name, 0) > 0 else ""

    def _fallback_missing(self) -> str:
        """Why the router cannot fall back right now (no fallback version to send to and no response);
        "" when it can."""
        if self._fallback_serving() or self.spec.fallback.response is not None:
            return ""
        name = self.fallback_name
        if not name:
            return "spec.fallback has neither version nor response"
        if name == self.stable:
            return f"fallback.version {name} is the stable version"
        if name == self.canary:
            return f"fallback.version {name} is the canary"
        if not self.obs.fallback.servable:
            return f"fallback {name} cannot be served: {self.obs.fallback.reason}"
        return f"fallback {name} has no ready pods ({self._pods_text(name)})"

    def _fallback_unavailable(self) -> str:
        """Why spec.fallback.version is not kept warm, when it is not (missing, not servable, or its artifact
        still being checked)."""
        name, served = self.fallback_name, self.obs.fallback
        if not name or served.servable:
            return ""
        return f"fallback {name} not kept warm: {served.reason}"

    def _engage_fallback(self, monitor: MonitorObservation, reason: str) -> None:
        self.fallback_active = True
        self.fallback_since = self.now
        self.fallback_reason = f"{self.stable} fails monitor {monitor.name}: {reason}"[:MESSAGE_LIMIT]
        self._event(
            "Warning", EventReason.FALLBACK_ENGAGED, f"{self.fallback_reason}; {self._fallback_what()}"
        )

    def _release_fallback(self, reason: str) -> None:
        self.fallback_active = False
        self.fallback_since = None
        self.fallback_reason = f"released: {reason}"[:MESSAGE_LIMIT]
        self._event(
            "Normal", EventReason.FALLBACK_RELEASED, f"{reason}: {self.stable} serves its traffic again"
        )

    def _fallback_still_wanted(self) -> None:
        """Release an engaged fallback whose reason is gone: no Monitor asks for it any more, or the spec
        has nothing to fall back to."""
        if not self.fallback_active:
            return
        monitor = self.obs.monitor
        if monitor is None:
            self._release_fallback("no Monitor judges the Deployment any more")
        elif monitor.on_degraded != OnDegraded.FALLBACK:
            self._release_fallback(f"monitor {monitor.name} has onDegraded: {monitor.on_degraded.value}")
        elif not self.fallback_name and self.spec.fallback.response is None:
            self._release_fallback("spec.fallback has neither version nor response")

    def _release_fallback_after_passes(self, monitor: MonitorObservation) -> None:
        """Steady state, fallback engaged: released after failureLimit consecutive Pass of stable (measured
        on the copies the router sends it meanwhile)."""
        passes = self.analysis.passes
        if passes >= monitor.failure_limit:
            self._release_fallback(f"{self.stable} passed monitor {monitor.name} {passes} times in a row")

    def _hold_fallback(self, monitor: MonitorObservation) -> None:
        """No rollout under way, fallback engaged: the Deployment is Degraded, the message says what
        serves and what releases it."""
        passes, needed = self.analysis.passes, monitor.failure_limit
        until = f"until monitor {monitor.name} passes {needed} times in a row ({passes}/{needed})"
        missing = self._fallback_missing()
        if missing:
            self.degraded = f"{self.fallback_reason}; {missing}: {self.stable} serves meanwhile, {until}"
        else:
            self.degraded = f"{self.fallback_reason}; {self._fallback_what()} {until}"

    def _fallback_what(self, whose: str = "its") -> str:
        serving = self._fallback_serving()
        if serving:
            return f"fallback {serving} serves {whose} traffic"
        return f"fallback.response answers {whose} traffic"

    # --- the monitor ------------------------------------------------------------------------------

    def _judge(self, version: str, monitor: MonitorObservation) -> str:
        """Count the new measurements of `version`. Returns why the rollout must end, if it must."""
        last = self.analysis.last_measured_at
        fresh = sorted(
            (m for m in monitor.measurements if m.version == version and (last is None or m.time > last)),
            key=lambda m: m.time,
        )
        failures, passes, errors, inconclusive = (
            self.analysis.failures,
            self.analysis.passes,
            self.analysis.errors,
            self.analysis.inconclusive,
        )
        verdict = self.analysis.last_verdict
        tripped = ""
        for measurement in fresh:
            verdict = overall_verdict(measurement)
            failures = 0 if verdict == Verdict.PASS else failures + (verdict == Verdict.FAIL)
            passes = 0 if verdict == Verdict.FAIL else passes + (verdict == Verdict.PASS)
            errors = errors + 1 if verdict == Verdict.ERROR else 0
            inconclusive = inconclusive + 1 if verdict == Verdict.INCONCLUSIVE else 0
            if tripped:
                continue
            if failures >= monitor.failure_limit:
                tripped = summarize(measurement)
            elif errors >= monitor.error_limit:
                why = summarize(measurement)
                tripped = f"monitor {monitor.name} could not measure {errors} times in a row: {why}"
                if errors == monitor.error_limit and not self.canary:
                    self._event("Warning", EventReason.MONITOR_ERRORS, f"{version}: {tripped}")
        if fresh:
            newest = fresh[-1]
            self.analysis = AnalysisStatus(
                failures=failures,
                passes=passes,
                errors=errors,
                inconclusive=inconclusive,
                last_verdict=verdict,
                last_measured_at=newest.time,
                last_results=newest.results,
            )
        if not self.canary:
            return ""  # without a rollout, only failures matter (handled by the caller)
        return tripped

    def _last_reason(self) -> str:
        a = self.analysis
        if a.last_measured_at is None:
            return ""
        return summarize(Measurement(time=a.last_measured_at, results=a.last_results))

    def _monitor_text(self) -> str:
        monitor = self.obs.monitor
        if monitor is None:
            named = self.spec.strategy.canary.monitor
            return f"Monitor {named} not found" if named and self.canary else ""
        a = self.analysis
        name = f"monitor {monitor.name}"
        if a.last_verdict is None:
            return f"{name} waiting for a measurement"
        if a.last_verdict == Verdict.PASS:
            return f"{name} passing"
        if a.last_verdict == Verdict.FAIL:
            return f"{name} failing ({a.failures}/{monitor.failure_limit}): {self._last_reason()}"
        if a.last_verdict == Verdict.ERROR:
            return f"{name} erroring ({a.errors}/{monitor.error_limit}): {self._last_reason()}"
        return f"{name} inconclusive: {self._last_reason()}"

    # --- helpers ----------------------------------------------------------------------------------

    @property
    def _immediate(self) -> bool:
        return self.spec.strategy.type == StrategyType.IMMEDIATE

    def _ready(self, version: str) -> bool:
        return self.obs.ready_replicas.get(version, 0) >= self.spec.replicas

    def _pods_text(self, version: str) -> str:
        return f"{self.obs.ready_replicas.get(version, 0)}/{self.spec.replicas} ready"

    def _event(self, type_: Literal["Normal", "Warning"], reason: EventReason, message: str) -> None:
        self.actions.append(Event(type_, reason, message[:MESSAGE_LIMIT]))

    def _step_text(self) -> str:
        text = f"step {self.step + 1}/{len(self.steps)}: weight {self.weight}%"
        step = self.steps[self.step] if self.step < len(self.steps) else None
        if step is None or step.pause is None or self.step_started_at is None:
            return text
        if step.pause.duration is None:
            return f"{text}, paused until promoted (modelfleet.io/promote)"
        until = self.step_started_at + timedelta(seconds=step.pause.duration)
        return f"{text}, pause {format_duration(step.pause.duration)} until {format_time(until)}"

    # --- phase, message, conditions ---------------------------------------------------------------

    def _phase(self) -> DeploymentPhase:
        if self.canary:
            indefinite = (
                not self._immediate
                and self.step_started_at is not None
                and self.step < len(self.steps)
                and (pause := self.steps[self.step].pause) is not None
                and pause.duration is None
            )
            held = self.spec.paused or indefinite or bool(self.unresolved)
            return DeploymentPhase.PAUSED if held else DeploymentPhase.PROGRESSING
        if not self.stable:
            return DeploymentPhase.FAILED if self.failure else DeploymentPhase.PROGRESSING
        if self.degraded:
            return DeploymentPhase.DEGRADED
        if self.spec.replicas > 0 and self.obs.ready_replicas.get(self.stable, 0) == 0:
            self.degraded = f"{self.stable} has no ready pods ({self._pods_text(self.stable)})"
            return DeploymentPhase.DEGRADED
        if self.rolled_back and self.version == self.rolled_back:
            return DeploymentPhase.ROLLED_BACK
        return DeploymentPhase.HEALTHY

    def _message(self, phase: DeploymentPhase) -> str:
        parts: list[str]
        if self.canary:
            if self.step_started_at is None:
                strategy = " (Immediate)" if self._immediate else ""
                parts = [f"rolling out {self.canary}{strategy}"]
            else:
                parts = [self._step_text()]
            if self.spec.paused:
                parts.insert(0, "paused (spec.paused)")
            if self.unresolved:
                parts.insert(0, f"rollout held: {self.unresolved}")
            parts += [*self.waiting, self._monitor_text()]
            if self.fallback_active:
                missing = self._fallback_missing()
                parts.append(
                    f"fallback engaged ({missing}: {self.stable} serves meanwhile)"
                    if missing
                    else self._fallback_what(f"{self.stable}'s")
                )
            parts.append(self._fallback_unavailable())
        elif not self.stable:
            parts = [self.failure] if self.failure else self.waiting
        elif phase == DeploymentPhase.DEGRADED:
            parts = [self.degraded, self._not_rolled_out_text(), self._fallback_unavailable()]
        else:
            if phase == DeploymentPhase.ROLLED_BACK:
                reason = next((h.reason for h in self.history if h.version == self.rolled_back), "")
                parts = [
                    f"{self.rolled_back} rolled back: {reason}"
                    if reason
                    else f"{self.rolled_back} rolled back"
                ]
            else:
                parts = [self._not_rolled_out_text()]
            parts.append(f"serving {self.stable}")
            if self.previous and self.warm_until is not None:
                parts.append(f"{self.previous} warm until {format_time(self.warm_until)}")
            parts += [self._fallback_unavailable(), self._monitor_text()]
        return ", ".join(p for p in parts if p)[:MESSAGE_LIMIT]

    def _not_rolled_out_text(self) -> str:
        """Why the version the spec asks for is not rolled out while stable serves, if it is not."""
        return f"nothing rolled out: {self.unresolved}" if self.unresolved else self.not_rolled_out

    def _conditions(self, phase: DeploymentPhase, message: str) -> tuple[Condition, ...]:
        serving_all = self.version == self.stable and self._ready(self.stable)
        not_served = (
            ConditionReason.VERSION_UNRESOLVED
            if self.unresolved
            else ConditionReason.VERSION_NOT_SERVABLE
            if self.not_rolled_out
            else ""
        )
        # a condition's reason is a ConditionReason, or the phase itself (RolledBack, Degraded, Failed)
        ready: tuple[bool, str]
        if phase == DeploymentPhase.HEALTHY and serving_all:
            ready = (True, ConditionReason.HEALTHY)
        elif phase == DeploymentPhase.HEALTHY:
            ready = (False, not_served or ConditionReason.PODS_NOT_READY)
        else:
            ready = (False, phase.value)
        in_progress = phase in {DeploymentPhase.PROGRESSING, DeploymentPhase.PAUSED}
        progressing = (
            in_progress,
            {
                DeploymentPhase.PROGRESSING: ConditionReason.ROLLOUT_IN_PROGRESS,
                DeploymentPhase.PAUSED: ConditionReason.VERSION_UNRESOLVED
                if self.unresolved
                else ConditionReason.ROLLOUT_PAUSED,
                DeploymentPhase.HEALTHY: not_served or ConditionReason.ROLLOUT_COMPLETE,
            }.get(phase, phase.value),
        )
        if phase == DeploymentPhase.DEGRADED:
            degraded = (
                True,
                ConditionReason.FALLBACK_ENGAGED
                if self.fallback_active
                else ConditionReason.MONITOR_FAILING
                if self.obs.monitor and self.analysis.failures
                else ConditionReason.PODS_NOT_READY,
            )
        elif phase == DeploymentPhase.FAILED:
            degraded = (
                True,
                ConditionReason.VERSION_UNRESOLVED
                if self.unresolved
                else ConditionReason.VERSION_NOT_SERVABLE
                if not self.obs.servability.servable
                else ConditionReason.PROGRESS_DEADLINE_EXCEEDED,
            )
        elif self.fallback_active:  # a rollout under way while the fallback serves stable's traffic
            degraded = (True, ConditionReason.FALLBACK_ENGAGED)
        else:
            degraded = (False, ConditionReason.AS_EXPECTED)
        conditions = self.old.conditions
        for type_, (status, reason) in (
            ("Ready", ready),
            ("Progressing", progressing),
            ("Degraded", degraded),
        ):
            conditions = set_condition(
                conditions,
                type_,
                status,
                reason,
                message,
                now=self.now,
                observed_generation=self.obs.generation,
            )
        return conditions

    def _decision(self) -> Decision:
        phase = self._phase()
        message = self._message(phase)
        if phase != self.old.phase and phase in {DeploymentPhase.DEGRADED, DeploymentPhase.FAILED}:
            self._event("Warning", EventReason(phase.value), message)
        if self.not_rolled_out and self.not_rolled_out not in self.old.message:
            self._event("Warning", EventReason.VERSION_NOT_SERVABLE, self.not_rolled_out)
        if self.unresolved and self.stable and self.unresolved not in self.old.message:
            self._event("Warning", EventReason.VERSION_UNRESOLVED, self.unresolved)
        unavailable = self._fallback_unavailable()
        if (
            unavailable
            and self.stable
            and not self.obs.fallback.pending
            and unavailable not in self.old.message
        ):
            self._event("Warning", EventReason.FALLBACK_UNAVAILABLE, unavailable)
        if self.stable:
            self.ensured = {self.stable: self.spec.replicas, **self.ensured}
        if self.fallback_name and self.obs.fallback.servable and self.ensured:
            # kept warm whatever the rollout does, once the Deployment runs a version at all
            self.ensured.setdefault(self.fallback_name, self.spec.replicas)
        versions: list[Action] = [EnsureVersion(v, n) for v, n in self.ensured.items()]
        versions += [RemoveVersion(v) for v in dict.fromkeys(self.removed) if v and v not in self.ensured]
        if self.stable:
            entered = self.canary and self.step_started_at is not None and not self._immediate
            mirror = self.spec.strategy.canary.mirror_percent if entered else 0
            previous = self.previous if self._previous_covers() else ""
            active = self.fallback_active and not self._fallback_missing()
            fallback = self._fallback_serving()
            versions.append(
                SetTraffic(self.stable, self.canary, self.weight, mirror, previous, fallback, active)
            )
        status = DeploymentStatus(
            observed_generation=self.obs.generation,
            phase=phase,
            target_version=self.version,
            stable_version=self.stable,
            canary_version=self.canary,
            canary_weight=self.weight,
            current_step=self.step,
            step_started_at=self.step_started_at,
            rollout_hash=self.rollout_hash,
            rolled_back_version=self.rolled_back,
            previous_stable_version=self.previous,
            previous_warm_until=self.warm_until if self.previous else None,
            rollout_started_at=self.started_at,
            analysis=self.analysis,
            fallback=FallbackStatus(
                active=self.fallback_active,
                version=self._fallback_serving() if self.fallback_active else "",
                since=self.fallback_since if self.fallback_active else None,
                reason=self.fallback_reason,
            ),
            endpoint=self.obs.endpoint or self.old.endpoint,
            message=message,
            history=self.history,
            conditions=self._conditions(phase, message),
        )
        requeue = None
        if self.wake:
            requeue = max(timedelta(0), min(self.wake) - self.now)
        return Decision(status=status, actions=(*versions, *self.actions), requeue_after=requeue)
