"""What the rollout state machine reads (an `Observation`) and what it asks for (`Action`s).

Actions are plain data; the controller carries them out. Versions are desired level by level:
every decision lists with `EnsureVersion` each version that should run, and `SetTraffic` the whole
split. `RemoveVersion` names a version that has just left play; the controller may also remove any
owned version no `EnsureVersion` names.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Literal, TypeVar

from modelfleet.api.deployment import DeploymentSpec, DeploymentStatus
from modelfleet.api.monitor import Measurement, MonitorSpec, OnDegraded


@dataclass(frozen=True)
class Servability:
    """Whether spec.version may take traffic: it exists, is approved if approval is required, and its
    image is allowed. `reason` says why not, e.g. `ModelVersion iris-v3 is not approved`."""

    servable: bool
    reason: str = ""
    pending: bool = False
    """Not servable yet but not refused (its artifact is being checked): a first version waits for it
    instead of failing."""


SERVABLE = Servability(True)


@dataclass(frozen=True)
class Target:
    """The version the spec asks for: spec.version as named, or the version spec.versionFrom resolves
    to (`modelfleet.rollout.observe.resolve_target`). The rollout decides on a spec whose `version` is
    this version (`resolved`), so following an alias behaves exactly like naming its version."""

    version: str = ""
    """The ModelVersion to serve; empty when versionFrom resolves to none."""
    reason: str = ""
    """Why it resolves to none, e.g. `alias champion of Model iris points at no version`."""
    pending: bool = False
    """It may resolve on its own (the Model, or its first sync with MLflow, is not there yet): a first
    version waits instead of failing."""

    def resolved(self, spec: DeploymentSpec) -> DeploymentSpec:
        """`spec` as the rollout reads it: `version` is this version (None when there is none);
        versionFrom is kept, so the rollout can say which alias moved."""
        return spec.model_copy(update={"version": self.version or None})


@dataclass(frozen=True)
class MonitorObservation:
    """The Monitor that gates the rollout and judges the serving version, with its new measurements."""

    name: str
    failure_limit: int = 2
    error_limit: int = 4
    on_degraded: OnDegraded = OnDegraded.ROLLBACK
    measurements: Sequence[Measurement] = ()
    """Measurements, any order. Those of other versions, or not newer than
    status.analysis.lastMeasuredAt, are ignored, so passing the same ones again is harmless."""

    @classmethod
    def of(cls, name: str, spec: MonitorSpec, measurements: Sequence[Measurement] = ()) -> MonitorObservation:
        return cls(
            name=name,
            failure_limit=spec.failure_limit,
            error_limit=spec.error_limit,
            on_degraded=spec.on_degraded,
            measurements=tuple(measurements),
        )


@dataclass(frozen=True)
class Observation:
    """Everything the decision needs besides spec, status and the clock."""

    generation: int
    """metadata.generation of the Deployment."""
    servability: Servability = SERVABLE
    """Of spec.version; while versionFrom resolves to none, of the canary a rollout under way holds."""
    fallback: Servability = SERVABLE
    """Of spec.fallback.version, when the spec names one: only a servable one is kept warm."""
    target: Target | None = None
    """How spec.version was found: None when the spec names it; else what versionFrom resolved to, and
    why not when it resolved to none (spec.version is then None)."""
    ready_replicas: Mapping[str, int] = field(default_factory=dict)
    """Ready pods of each version in play (stable, canary, previous, fallback); a missing version has
    none."""
    annotations: Collection[str] = frozenset()
    """Manual-control annotations set to "true" on the Deployment (modelfleet.io/promote, abort, retry)."""
    monitor: MonitorObservation | None = None
    """The Monitor of this Deployment, or None when it has none (or the named one does not exist)."""
    endpoint: str = ""
    """Where clients send requests; copied into status when given."""


@dataclass(frozen=True)
class EnsureVersion:
    """Run this version with this many pods (its Deployment and Service exist and match)."""

    version: str
    replicas: int


@dataclass(frozen=True)
class RemoveVersion:
    """This version has left play: remove its pods and Service."""

    version: str


@dataclass(frozen=True)
class SetTraffic:
    """The router's split: `canary_weight` percent to the canary, the rest to stable; `mirror_percent`
    of stable traffic copied to the canary. `canary` is empty when no rollout is under way. `previous`
    is the last stable version while it is still warm and ready after a promotion: it takes no traffic
    but answers when stable cannot (empty otherwise). `fallback` is spec.fallback.version while it has
    ready pods (and is neither stable nor the canary): the chain's last version. `fallback_active`: the
    stable version fails its Monitor (onDegraded: Fallback), so what would go to it goes to `fallback`,
    or without one to spec.fallback.response."""

    stable: str
    canary: str
    canary_weight: int
    mirror_percent: int
    previous: str = ""
    fallback: str = ""
    fallback_active: bool = False


@dataclass(frozen=True)
class ConsumeAnnotation:
    """Remove this annotation from the Deployment: it has been acted on."""

    name: str


class EventReason(StrEnum):
    """The reason of every Event the rollout posts on a Deployment."""

    ROLLOUT_STARTED = "RolloutStarted"
    """A new spec.version began rolling out over the stable version."""
    STEP_STARTED = "StepStarted"
    """The canary entered its next step."""
    PROMOTED = "Promoted"
    """A version became stable (after its steps, by hand, or as the first version)."""
    ROLLED_BACK = "RolledBack"
    """A canary, or a degraded stable version, was replaced by the version before it."""
    ABORTED = "Aborted"
    """A rollout was aborted by hand (modelfleet.io/abort)."""
    SUPERSEDED = "Superseded"
    """A rollout gave way to a newer spec.version."""
    RETRY = "Retry"
    """modelfleet.io/retry let a rolled-back version be rolled out again."""
    PROMOTE_IGNORED = "PromoteIgnored"
    """modelfleet.io/promote with no rollout under way."""
    ABORT_IGNORED = "AbortIgnored"
    """modelfleet.io/abort with no rollout under way."""
    RETRY_IGNORED = "RetryIgnored"
    """modelfleet.io/retry with no rolled-back version."""
    MONITOR_ERRORS = "MonitorErrors"
    """The Monitor could not measure errorLimit times in a row."""
    VERSION_NOT_SERVABLE = "VersionNotServable"
    """spec.version may not take traffic (its Model's rules); the stable version keeps serving."""
    VERSION_UNRESOLVED = "VersionUnresolved"
    """spec.versionFrom resolves to no version; the stable version keeps serving, a rollout under way
    holds."""
    DEGRADED = "Degraded"
    """The phase became Degraded: the serving version fails its Monitor or has no ready pods."""
    FALLBACK_ENGAGED = "FallbackEngaged"
    """The stable version failed its Monitor (onDegraded: Fallback): the fallback serves its traffic."""
    FALLBACK_RELEASED = "FallbackReleased"
    """The stable version serves its traffic again: it passed its Monitor failureLimit times in a row,
    a new version was promoted, or the Monitor no longer asks for the fallback."""
    FALLBACK_UNAVAILABLE = "FallbackUnavailable"
    """spec.fallback.version may not be served (missing, not approved, image not allowed): it is not
    kept warm."""
    FAILED = "Failed"
    """The phase became Failed: nothing can serve."""


class ConditionReason(StrEnum):
    """The reasons of a Deployment's Ready, Progressing and Degraded conditions, besides its phases."""

    HEALTHY = "Healthy"
    """Ready: every request is served by ready pods of spec.version."""
    PODS_NOT_READY = "PodsNotReady"
    """The serving version lacks ready pods."""
    VERSION_NOT_SERVABLE = "VersionNotServable"
    """spec.version may not take traffic."""
    VERSION_UNRESOLVED = "VersionUnresolved"
    """spec.versionFrom resolves to no version: the Model is missing, has no MLflow source, or the alias
    points at no version."""
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    """Progressing: a rollout is under way."""
    ROLLOUT_PAUSED = "RolloutPaused"
    """Progressing: a rollout holds its weight (spec.paused, or a pause step without duration)."""
    ROLLOUT_COMPLETE = "RolloutComplete"
    """Progressing is False: the last rollout finished."""
    MONITOR_FAILING = "MonitorFailing"
    """Degraded: the serving version fails its Monitor."""
    FALLBACK_ENGAGED = "FallbackEngaged"
    """Degraded: the stable version fails its Monitor and the fallback serves its traffic."""
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    """Degraded: a version's pods were not ready within progressDeadline."""
    AS_EXPECTED = "AsExpected"
    """Degraded is False."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the Deployment."""

    type: Literal["Normal", "Warning"]
    reason: EventReason
    message: str


T = TypeVar("T")

Action = EnsureVersion | RemoveVersion | SetTraffic | ConsumeAnnotation | Event


@dataclass(frozen=True)
class Decision:
    """The complete new status, what to do, and when to decide again if nothing else happens."""

    status: DeploymentStatus
    actions: tuple[Action, ...]
    requeue_after: timedelta | None = None
    """Time until a pause ends, a deadline passes or a warm version expires; None when only a change
    (of spec, pods, annotations or measurements) can move the rollout."""

    def of_type(self, kind: type[T]) -> list[T]:
        """The actions of one type, in order."""
        return [action for action in self.actions if isinstance(action, kind)]
