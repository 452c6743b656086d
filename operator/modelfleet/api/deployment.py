"""`Deployment` (modelfleet.io): serve a Model and roll its versions out progressively.

The status holds the whole rollout state machine, so a restarted operator resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from modelfleet.api.common import (
    ZERO_DURATION_PATTERN,
    ApiModel,
    Condition,
    Duration,
    Generation,
    Name,
    Percent,
    Resource,
    StatusModel,
    Text,
    Time,
    condition_list,
    parse_duration,
)
from modelfleet.api.model import AliasName
from modelfleet.api.modelversion import ArtifactCredentials, ResourceRequirements
from modelfleet.api.monitor import MetricResult, Verdict

HISTORY_LIMIT = 20

# Annotations for manual control; each is consumed (removed) once acted on.
PROMOTE_ANNOTATION = "modelfleet.io/promote"
ABORT_ANNOTATION = "modelfleet.io/abort"
RETRY_ANNOTATION = "modelfleet.io/retry"


def _positive_rules(*fields: str) -> list[JsonDict]:
    """CEL rules that refuse a zero duration in each of `fields` (present ones only)."""
    return [
        {
            "rule": f"!has(self.{f}) || !self.{f}.matches('{ZERO_DURATION_PATTERN}')",
            "message": f"{f} must be greater than zero",
        }
        for f in fields
    ]


def _positive(*fields: str) -> JsonDict:
    """The schema extra with `_positive_rules`."""
    return {"x-kubernetes-validations": list(_positive_rules(*fields))}


def _check_positive(model: ApiModel, *fields: str) -> None:
    for f in fields:
        if getattr(model, f) <= 0:
            raise ValueError(f"{to_camel(f)} must be greater than zero")


class Pause(ApiModel):
    """Hold the current weight."""

    duration: Duration | None = None
    """How long to hold, e.g. 30s. Without it the rollout waits for promotion (modelfleet.io/promote)."""


class CanaryStep(ApiModel):
    """One step of a canary rollout: exactly one of setWeight or pause."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.setWeight) != has(self.pause)",
                    "message": "a step has exactly one of setWeight or pause",
                }
            ]
        }
    )

    set_weight: Percent | None = None
    """Send this percent of live traffic to the canary."""
    pause: Pause | None = None
    """Hold the current weight, for a duration or until promoted."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("a step has exactly one of setWeight or pause")
        return self


DEFAULT_STEPS = (
    CanaryStep(set_weight=20),
    CanaryStep(pause=Pause(duration=30)),
    CanaryStep(set_weight=50),
    CanaryStep(pause=Pause(duration=30)),
)


class CanaryStrategy(ApiModel):
    """How a new version takes traffic, step by step."""

    steps: tuple[CanaryStep, ...] = Field(default=DEFAULT_STEPS, min_length=1, max_length=32)
    """The steps, in order. After the last one the canary is promoted to stable."""
    monitor: Name | None = None
    """A Monitor (same namespace) whose verdict gates every step; a Fail rolls back."""
    mirror_percent: Percent = 0
    """Copy this percent of stable traffic to the canary as well; its answers are discarded."""


class StrategyType(StrEnum):
    CANARY = "Canary"
    """Shift traffic step by step, gated by the monitor."""
    IMMEDIATE = "Immediate"
    """Send all traffic to the new version as soon as it is ready."""


class Strategy(ApiModel):
    """How a change of the version to serve (spec.version, or where versionFrom points) is rolled out."""

    model_config = ConfigDict(json_schema_extra=_positive("rollbackWindow"))

    type: StrategyType = StrategyType.CANARY
    """Canary (step by step) or Immediate."""
    canary: CanaryStrategy = Field(default_factory=CanaryStrategy)
    """Steps, gate and mirroring of a Canary rollout."""
    rollback_window: Duration = parse_duration("10m")
    """After a promotion the previous version stays warm this long, so a rollback is instant."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_positive(self, "rollback_window")
        return self


class CircuitBreaker(ApiModel):
    """Stops sending requests to a version whose error rate is too high, for a while."""

    model_config = ConfigDict(json_schema_extra=_positive("window", "openFor"))

    error_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Share of failed requests in the window that opens the circuit (0 < errorRate <= 1)."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """The circuit does not open on fewer requests than this in the window."""
    window: Duration = parse_duration("10s")
    """The sliding window the error rate is taken over."""
    open_for: Duration = parse_duration("30s")
    """How long an open circuit stays open before a trial request is let through."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_positive(self, "window", "open_for")
        return self


class FallbackResponse(ApiModel):
    """A static answer of last resort, when no version can answer."""

    status_code: Annotated[int, Field(ge=200, le=599)] = 200
    """HTTP status of the answer."""
    content_type: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "application/json"
    """Content-Type of the answer."""
    body: Annotated[str, StringConstraints(max_length=65536)] = ""
    """Body of the answer."""


class Fallback(ApiModel):
    """What the router does when the chosen version fails."""

    model_config = ConfigDict(json_schema_extra=_positive("timeout"))

    timeout: Duration = parse_duration("2s")
    """Per-attempt upstream timeout."""
    retry_on_stable: bool = True
    """A failed or timed-out canary request is answered by the stable version instead."""
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    """Per-version circuit breaker."""
    version: Name | None = None
    """A ModelVersion (same namespace), e.g. a heuristic model, kept warm to answer when the stable
    version cannot, and all traffic while the stable version fails its Monitor with onDegraded:
    Fallback. The chain per request: chosen, stable, this version, response, a JSON error."""
    response: FallbackResponse | None = None
    """Heuristic answer of last resort. Without it, clients get a JSON error when nothing can answer."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_positive(self, "timeout")
        return self


#: The key of a Secret's data: letters, digits, `-`, `_` and `.`, as the API server allows.
SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class SecretKeySelector(ApiModel):
    """One key of a Secret in the Deployment's namespace."""

    name: Name
    """The Secret's name."""
    key: SecretKey
    """The key in the Secret's data."""


class Feedback(ApiModel):
    """Ground truth from clients: `POST /v2/models/<name>/feedback` to the router with the id of an
    answer (`X-Modelfleet-Request-Id`) and its true label, for the accuracy and meanAbsoluteError
    metrics. Without spec.feedback the endpoint answers 404."""

    token_secret: SecretKeySelector
    """The Secret key holding the token clients send as `Authorization: Bearer <token>`; feedback
    without it is refused. That key alone is mounted read-only into the router pods, so a new value
    takes effect without a restart; while the Secret or key is missing the routers serve as usual and
    answer feedback 503."""


#: Where captured payloads may be written: an S3 prefix or a path on a PersistentVolumeClaim.
CAPTURE_URI_MESSAGE = "uri must be s3://BUCKET/PREFIX or pvc://CLAIM/PATH"
CAPTURE_URI_PARENT_MESSAGE = "uri must not have a '..' segment"
_PARENT_SEGMENT_RE = re.compile(r"/\.\.(/|$)")
_CAPTURE_URI_RE = re.compile(
    r"^(s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/\S*)?|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/\S*)?)$"
)


def _capture_uri(value: str) -> str:
    if not _CAPTURE_URI_RE.match(value):
        raise ValueError(CAPTURE_URI_MESSAGE)
    if _PARENT_SEGMENT_RE.search(value):  # a path on a claim stays on the claim
        raise ValueError(CAPTURE_URI_PARENT_MESSAGE)
    return value


CaptureUri = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(_capture_uri),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.matches('" + _CAPTURE_URI_RE.pattern.replace("\\", "\\\\") + "')",
                    "message": CAPTURE_URI_MESSAGE,
                },
                {
                    "rule": "!self.matches('" + _PARENT_SEGMENT_RE.pattern.replace("\\", "\\\\") + "')",
                    "message": CAPTURE_URI_PARENT_MESSAGE,
                },
            ]
        }
    ),
]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class CaptureDestination(ApiModel):
    """Where captured requests and answers are written."""

    uri: CaptureUri
    """s3://BUCKET/PREFIX or pvc://CLAIM/PATH; batches are written under it, one object (or file) each:
    `<deployment>/<YYYY>/<MM>/<DD>/<HH>/<router pod>-<unix ms>-<seq>.jsonl.gz`. The claim of a pvc://
    URI is mounted read-write into the router pods."""
    credentials: ArtifactCredentials | None = None
    """The Secret holding the store's credentials, with the keys of a ModelVersion's
    artifact.credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    AWS_ENDPOINT_URL, AWS_REGION), given to the router pods as environment, each key optional: the
    operator never reads it, and new values reach the routers when their pods restart. None for a PVC
    or a store that needs none."""


class Capture(ApiModel):
    """Payload capture: a share of the requests and the answers versions gave them, written to storage
    as JSON Lines in batches, off the request path. Bounded in memory: when the store is slow, down or
    refuses, records are dropped and counted (modelfleet_capture_dropped_total), never a request
    slowed or failed."""

    percent: Annotated[float, Field(gt=0, le=100)]
    """Share of answers captured, in percent, e.g. 5 (more than 0, at most 100)."""
    destination: CaptureDestination
    """Where the batches are written."""
    redact: tuple[FieldName, ...] = Field(
        default=(), max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Names of request and answer fields whose values are never written: object keys at any depth,
    Open Inference Protocol inputs and outputs by name (their data left out), and tensor columns named
    by parameters.names. A body that is not JSON is then left out whole."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        repeated = sorted({f for f in self.redact if self.redact.count(f) > 1})
        if repeated:
            raise ValueError(f"redact names must be unique: {', '.join(repeated)} repeated")
        return self


class RouterSpec(ApiModel):
    """The inference router pods in front of the versions."""

    replicas: Annotated[int, Field(ge=1, le=100)] = 1
    """Number of router pods."""
    resources: ResourceRequirements | None = None
    """CPU and memory of a router pod (core/v1 ResourceRequirements)."""


class VersionFrom(ApiModel):
    """Where the version to serve is looked up, instead of naming it in spec.version."""

    mlflow_alias: AliasName
    """An alias of the Model's MLflow registered model (spec.source.mlflow), e.g. `champion`: the
    Deployment serves the ModelVersion the alias points at (Model status.source.aliases), and moving
    the alias starts a rollout."""


_OWN_FALLBACK = "fallback.version must differ from version"


class DeploymentSpec(ApiModel):
    """Serve a Model, and roll a new version out progressively when spec.version (or the version
    versionFrom resolves to) changes."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *_positive_rules("progressDeadline"),
                {
                    "rule": "has(self.version) != has(self.versionFrom)",
                    "message": "exactly one of version and versionFrom must be set",
                },
                {
                    "rule": "!has(self.fallback) || !has(self.fallback.version) || !has(self.version)"
                    " || self.fallback.version != self.version",
                    "message": _OWN_FALLBACK,
                },
            ]
        }
    )

    model: Name
    """The Model (same namespace) to serve."""
    version: Name | None = None
    """The ModelVersion (same namespace) to serve. Changing it starts a rollout. Exactly one of version
    and versionFrom."""
    version_from: VersionFrom | None = None
    """Follow a registry alias instead of naming the version: the version it resolves to is served, and
    status.targetVersion names it. Exactly one of version and versionFrom."""
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    """Pods per version."""
    paused: bool = False
    """A paused rollout holds its current weight."""
    strategy: Strategy = Field(default_factory=Strategy)
    """How a new version is rolled out."""
    progress_deadline: Duration = parse_duration("10m")
    """A canary whose pods are not ready by then fails and is rolled back."""
    fallback: Fallback = Field(default_factory=Fallback)
    """What the router does when the chosen version fails."""
    router: RouterSpec = Field(default_factory=RouterSpec)
    """The inference router pods."""
    feedback: Feedback | None = None
    """Accept ground truth from clients at the router's feedback endpoint, with a token. Without it the
    endpoint answers 404."""
    capture: Capture | None = None
    """Write a share of the requests and their answers to storage."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_positive(self, "progress_deadline")
        if (self.version is None) == (self.version_from is None):
            raise ValueError("exactly one of version and versionFrom must be set")
        if self.version is not None and self.fallback.version == self.version:
            raise ValueError(f"{_OWN_FALLBACK}: {self.version}")
        return self

    @property
    def alias(self) -> str:
        """The MLflow alias the Deployment follows (versionFrom.mlflowAlias); empty for spec.version."""
        return self.version_from.mlflow_alias if self.version_from is not None else ""


def rollout_hash(spec: DeploymentSpec) -> str:
    """A short, stable hex hash of the parts of the spec that define a rollout.

    Those are the model, the version, the strategy type and the canary steps: changing any of them
    mid-rollout restarts it. Replicas, pause, monitor, mirroring, fallback, feedback, capture and router
    settings are left out: they apply to a rollout under way without restarting it. Durations are hashed
    normalised, so `60s` and `1m` hash the same. The version is spec.version as the rollout sees it,
    already resolved from versionFrom: following an alias hashes the same as naming the version it
    points at.
    """
    relevant = {
        "model": spec.model,
        "version": spec.version,
        "strategy": spec.strategy.type.value,
        "steps": [step.to_k8s() for step in spec.strategy.canary.steps]
        if spec.strategy.type == StrategyType.CANARY
        else [],
    }
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class DeploymentPhase(StrEnum):
    PROGRESSING = "Progressing"
    """A rollout is under way."""
    PAUSED = "Paused"
    """A rollout holds its weight: spec.paused, a pause step without duration, or an alias
    (spec.versionFrom) that points at no version for now."""
    HEALTHY = "Healthy"
    """One version serves all traffic and is healthy."""
    ROLLED_BACK = "RolledBack"
    """The last rollout failed; the stable version serves all traffic."""
    DEGRADED = "Degraded"
    """The serving version fails its monitor (steady state, onDegraded: Alert, or Fallback: then
    status.fallback says what serves instead) or is not ready."""
    FAILED = "Failed"
    """Nothing can serve: e.g. the version does not exist or is rejected, or the alias followed points
    at no version, and there is no stable one."""


class AnalysisStatus(StatusModel):
    """The monitor's verdicts on the version under analysis, counted across measurements."""

    failures: Annotated[int, Field(ge=0)] = 0
    """Consecutive failing measurements (only a Pass resets it)."""
    passes: Annotated[int, Field(ge=0)] = 0
    """Consecutive passing measurements (only a Fail resets it): an engaged fallback is released after
    failureLimit of them."""
    inconclusive: Annotated[int, Field(ge=0)] = 0
    """Consecutive inconclusive measurements."""
    errors: Annotated[int, Field(ge=0)] = 0
    """Consecutive measurements that could not be taken."""
    last_verdict: Verdict | None = None
    """Verdict of the latest measurement."""
    last_measured_at: Time | None = None
    """When the latest measurement was taken."""
    last_results: tuple[MetricResult, ...] = Field(default=(), max_length=20)
    """Per-metric results of the latest measurement."""


class RolloutResult(StrEnum):
    PROMOTED = "Promoted"
    """The canary became stable."""
    ROLLED_BACK = "RolledBack"
    """The canary failed its analysis or deadline and was rolled back automatically."""
    ABORTED = "Aborted"
    """Stopped by hand (modelfleet.io/abort)."""
    SUPERSEDED = "Superseded"
    """spec.version (or the version its alias points at) changed before the rollout ended."""


class HistoryEntry(StatusModel):
    """One finished rollout."""

    version: Annotated[str, StringConstraints(max_length=253)]
    """The version that was rolled out."""
    result: RolloutResult
    """Promoted, RolledBack, Aborted or Superseded."""
    reason: Text = ""
    """Why it ended so, e.g. `error-rate 0.31 > 0.05`."""
    started_at: Time | None = None
    """When the rollout started."""
    finished_at: Time | None = None
    """When it ended."""


class FallbackStatus(StatusModel):
    """Whether the router sends all live traffic to the fallback because the stable version fails its
    Monitor (onDegraded: Fallback)."""

    active: bool = False
    """True while the fallback serves the traffic that would go to the stable version."""
    version: Annotated[str, StringConstraints(max_length=253)] = ""
    """The fallback version answering (spec.fallback.version); empty when fallback.response answers, or
    while inactive."""
    since: Time | None = None
    """When the fallback was engaged; empty while inactive."""
    reason: Text = ""
    """Why it was engaged, e.g. `iris-v2 fails monitor iris-quality: errors 0.31 > 0.05`, or, once
    released, why it was released."""


class DeploymentStatus(StatusModel):
    """The rollout state machine. The operator reads its state from here, never from memory."""

    observed_generation: Generation | None = None
    """The metadata.generation this status was computed from."""
    phase: DeploymentPhase | None = None
    """Progressing, Paused, Healthy, RolledBack, Degraded or Failed."""
    target_version: Annotated[str, StringConstraints(max_length=253)] = ""
    """The ModelVersion the spec asks for: spec.version, or the one versionFrom resolved to; empty while
    versionFrom resolves to none (the message says why)."""
    stable_version: Annotated[str, StringConstraints(max_length=253)] = ""
    """The version that serves the traffic not sent to the canary."""
    canary_version: Annotated[str, StringConstraints(max_length=253)] = ""
    """The version being rolled out; empty when no rollout is under way."""
    canary_weight: Percent = 0
    """Percent of live traffic on the canary."""
    current_step: Annotated[int, Field(ge=0, le=32)] = 0
    """Index into strategy.canary.steps of the step under way (equal to their count when all are done)."""
    step_started_at: Time | None = None
    """When the current step started."""
    rollout_hash: Annotated[str, StringConstraints(max_length=64)] = ""
    """Hash of the spec being rolled out (model, version, strategy); a change restarts the rollout."""
    rolled_back_version: Annotated[str, StringConstraints(max_length=253)] = ""
    """The version last rolled back, by hand (modelfleet.io/abort) or automatically (a failing canary,
    a degraded promotion): held back until spec.version (or the version its alias points at) changes
    or modelfleet.io/retry is set."""
    aborted_version: Annotated[str, StringConstraints(max_length=253)] | None = None
    """Deprecated: the former name of rolledBackVersion. Read once, into rolledBackVersion, and never
    written again."""
    previous_stable_version: Annotated[str, StringConstraints(max_length=253)] = ""
    """After a promotion, the version that was stable before; kept warm until previousWarmUntil."""
    previous_warm_until: Time | None = None
    """When the previous stable version's pods may be removed."""
    rollout_started_at: Time | None = None
    """When the rollout under way started."""
    analysis: AnalysisStatus = Field(default_factory=AnalysisStatus)
    """The monitor's verdicts on the version under analysis."""
    fallback: FallbackStatus = Field(default_factory=FallbackStatus)
    """Whether the fallback serves all traffic instead of the stable version (onDegraded: Fallback)."""
    endpoint: Annotated[str, StringConstraints(max_length=512)] = ""
    """Where clients send inference requests, e.g. http://iris.ml.svc:80."""
    message: Text = ""
    """A one-line summary, e.g. `step 2/4: weight 10%, monitor iris-quality passing`."""
    history: tuple[HistoryEntry, ...] = Field(default=(), max_length=HISTORY_LIMIT)
    """Finished rollouts, newest first (at most 20)."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready (all traffic served by ready pods), Progressing (a rollout is under way),
    Degraded (the serving version fails its monitor or is not ready)."""

    @model_validator(mode="after")
    def _read_the_former_name(self) -> Self:
        if self.aborted_version is not None:
            if not self.rolled_back_version:
                object.__setattr__(self, "rolled_back_version", self.aborted_version)
            object.__setattr__(self, "aborted_version", None)
        return self

    @field_validator("history", mode="before")
    @classmethod
    def _bound_history(cls, value: object) -> object:
        # A status written by an operator with a larger bound still parses: keep the newest entries.
        if isinstance(value, list | tuple) and len(value) > HISTORY_LIMIT:
            return value[:HISTORY_LIMIT]
        return value

    def with_history(self, entry: HistoryEntry) -> tuple[HistoryEntry, ...]:
        """History with `entry` prepended, bounded to the newest 20."""
        return (entry, *self.history)[:HISTORY_LIMIT]


class Deployment(Resource[DeploymentSpec, DeploymentStatus]):
    """Serve a Model and roll versions out progressively."""

    KIND: ClassVar[str] = "Deployment"
    kind: str = "Deployment"
    """Deployment."""
