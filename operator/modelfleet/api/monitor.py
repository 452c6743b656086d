"""`Monitor`: what "healthy" means for a Deployment, measured every interval."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, NoReturn, Self

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from modelfleet.api.common import (
    ApiModel,
    Condition,
    Duration,
    Generation,
    Label,
    Name,
    Resource,
    StatusModel,
    Text,
    Time,
    condition_list,
    parse_duration,
)

DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus.monitoring:9090"
MEASUREMENT_HISTORY_LIMIT = 10
"""How many recent measurements a Monitor keeps in its status."""


class MetricType(StrEnum):
    ERROR_RATE = "errorRate"
    """Share of requests answered by the version with a 5xx (or not at all)."""
    LATENCY = "latency"
    """A latency quantile of the version's answers, in seconds (needs `quantile`)."""
    FALLBACK_RATE = "fallbackRate"
    """Share of the version's requests that the router had to answer some other way."""
    PREDICTION_DRIFT = "predictionDrift"
    """Population stability index of the canary's predictions against the stable version's."""
    PROMETHEUS = "prometheus"
    """The value of a PromQL query (needs `prometheus.query`)."""
    DATA_DRIFT = "dataDrift"
    """How far the request inputs the routers sample have moved from the version's reference profile
    (ModelVersion spec.reference), by `method`."""
    ACCURACY = "accuracy"
    """Share of predictions that match the ground-truth labels clients send back (feedback)."""
    MEAN_ABSOLUTE_ERROR = "meanAbsoluteError"
    """Mean absolute difference between predictions and the ground-truth values clients send back
    (regression)."""


SAMPLED_METRICS = frozenset({MetricType.DATA_DRIFT, MetricType.ACCURACY, MetricType.MEAN_ABSOLUTE_ERROR})
"""Metrics computed from samples (sampled inputs, predictions joined with ground truth), judged only
with at least `minSamples` of them."""
DEFAULT_MIN_SAMPLES: dict[MetricType, int] = {
    MetricType.DATA_DRIFT: 100,
    MetricType.ACCURACY: 50,
    MetricType.MEAN_ABSOLUTE_ERROR: 50,
}
"""`minSamples` when a metric does not set it."""
NO_RATIO_METRICS = frozenset({MetricType.PREDICTION_DRIFT, MetricType.PROMETHEUS})
"""Metrics that take no ratio bound: predictionDrift already compares the canary with stable, and a
prometheus query names no version, so it has no value of stable's."""


class DriftMethod(StrEnum):
    """How dataDrift compares sampled inputs with the reference profile, feature by feature."""

    PSI = "psi"
    """Population stability index (0 = same distribution; above 0.25 a large shift)."""
    KS = "ks"
    """Kolmogorov-Smirnov statistic: the largest gap between the two cumulative distributions (0..1)."""
    JSD = "jsd"
    """Jensen-Shannon divergence of the two distributions (0..1)."""


class PrometheusQuery(ApiModel):
    """A PromQL query against a Prometheus server's HTTP API."""

    address: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^https?://\S+$")] = (
        DEFAULT_PROMETHEUS_ADDRESS
    )
    """Base URL of the Prometheus server."""
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """PromQL expression that returns one number."""


FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=256)]

_NEEDS_A_BOUND = "a metric needs min, max, minRatioToStable or maxRatioToStable"
_RATIO_ORDER = "minRatioToStable must not exceed maxRatioToStable"
_DRIFT_ONLY = "method and features are only allowed for type dataDrift"
_SAMPLED_ONLY = "minSamples is only allowed for types dataDrift, accuracy and meanAbsoluteError"
_NO_RATIO = (
    "minRatioToStable and maxRatioToStable do not apply to type predictionDrift (it already compares"
    " with stable) nor prometheus (its query names no version)"
)
_ACCURACY_SHARE = "accuracy is a share: its min and max must lie in 0..1"


class Metric(ApiModel):
    """One measured metric and its limits. A value below `min` or above `max` fails; during a rollout,
    so does a canary's value below `minRatioToStable` or above `maxRatioToStable` times the stable
    version's value in the same window."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.min) || has(self.max)"
                    " || has(self.minRatioToStable) || has(self.maxRatioToStable)",
                    "message": _NEEDS_A_BOUND,
                },
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "min must not exceed max",
                },
                {
                    "rule": "!has(self.minRatioToStable) || !has(self.maxRatioToStable)"
                    " || self.minRatioToStable <= self.maxRatioToStable",
                    "message": _RATIO_ORDER,
                },
                {
                    "rule": "self.type == 'latency' ? has(self.quantile) : !has(self.quantile)",
                    "message": "quantile is required for type latency, and only allowed there",
                },
                {
                    "rule": "self.type == 'prometheus' ? has(self.prometheus) : !has(self.prometheus)",
                    "message": "prometheus.query is required for type prometheus, and only allowed there",
                },
                {
                    "rule": "self.type == 'dataDrift' || (!has(self.method) && !has(self.features))",
                    "message": _DRIFT_ONLY,
                },
                {
                    "rule": "self.type in ['dataDrift', 'accuracy', 'meanAbsoluteError']"
                    " || !has(self.minSamples)",
                    "message": _SAMPLED_ONLY,
                },
                {
                    "rule": "!(self.type in ['predictionDrift', 'prometheus'])"
                    " || (!has(self.minRatioToStable) && !has(self.maxRatioToStable))",
                    "message": _NO_RATIO,
                },
                {
                    "rule": "self.type != 'accuracy'"
                    " || ((!has(self.min) || (self.min >= 0.0 && self.min <= 1.0))"
                    " && (!has(self.max) || (self.max >= 0.0 && self.max <= 1.0)))",
                    "message": _ACCURACY_SHARE,
                },
            ]
        }
    )

    name: Label
    """Name of the metric, unique in the Monitor; shown in results and status messages."""
    type: MetricType
    """errorRate, latency, fallbackRate, predictionDrift, prometheus, dataDrift, accuracy or
    meanAbsoluteError."""
    quantile: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Latency quantile, e.g. 0.99 (type latency only)."""
    min: float | None = None
    """Lowest passing value."""
    max: float | None = None
    """Highest passing value (latencies in seconds)."""
    prometheus: PrometheusQuery | None = None
    """The query (type prometheus only)."""
    method: DriftMethod | None = None
    """How dataDrift compares the inputs with the reference profile: psi (default), ks or jsd (type
    dataDrift only)."""
    features: tuple[FeatureName, ...] | None = Field(
        default=None, min_length=1, max_length=128, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """The input features dataDrift compares, by name; default every feature of the reference profile
    (type dataDrift only)."""
    min_samples: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """Fewer samples in a window make the metric Inconclusive, not Fail: sampled inputs for dataDrift
    (default 100), predictions with ground truth for accuracy and meanAbsoluteError (default 50). Those
    types only."""
    min_ratio_to_stable: Annotated[float, Field(gt=0)] | None = None
    """During a rollout, the lowest passing ratio of the canary's value to the stable version's in the
    same window, e.g. 0.98 for accuracy. Not for predictionDrift and prometheus."""
    max_ratio_to_stable: Annotated[float, Field(gt=0)] | None = None
    """During a rollout, the highest passing ratio of the canary's value to the stable version's in the
    same window, e.g. 1.2 for a latency. Not for predictionDrift and prometheus."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        def refuse(message: str) -> NoReturn:
            raise ValueError(f"metric {self.name}: {message}")

        bounds = (self.min, self.max, self.min_ratio_to_stable, self.max_ratio_to_stable)
        if all(bound is None for bound in bounds):
            refuse(_NEEDS_A_BOUND)
        if self.min is not None and self.max is not None and self.min > self.max:
            refuse("min must not exceed max")
        low, high = self.min_ratio_to_stable, self.max_ratio_to_stable
        if low is not None and high is not None and low > high:
            refuse(_RATIO_ORDER)
        if (self.type == MetricType.LATENCY) != (self.quantile is not None):
            raise ValueError(
                f"metric {self.name}: quantile is required for type latency, and only allowed there"
            )
        if (self.type == MetricType.PROMETHEUS) != (self.prometheus is not None):
            raise ValueError(
                f"metric {self.name}: prometheus.query is required for type prometheus,"
                " and only allowed there"
            )
        if self.type != MetricType.DATA_DRIFT and (self.method is not None or self.features is not None):
            refuse(_DRIFT_ONLY)
        if self.type not in SAMPLED_METRICS and self.min_samples is not None:
            refuse(_SAMPLED_ONLY)
        if self.type in NO_RATIO_METRICS and self.has_ratio:
            refuse(_NO_RATIO)
        if self.type == MetricType.ACCURACY and any(
            bound is not None and not 0 <= bound <= 1 for bound in (self.min, self.max)
        ):
            refuse(_ACCURACY_SHARE)
        if self.features is not None and len(set(self.features)) < len(self.features):
            repeated = sorted({f for f in self.features if self.features.count(f) > 1})
            refuse(f"features must be unique: {', '.join(repeated)} repeated")
        return self

    @property
    def has_ratio(self) -> bool:
        """Does the metric compare the canary with stable (minRatioToStable or maxRatioToStable)?"""
        return self.min_ratio_to_stable is not None or self.max_ratio_to_stable is not None

    @property
    def drift_method(self) -> DriftMethod:
        """`method`, psi unless set."""
        return self.method or DriftMethod.PSI

    @property
    def samples_needed(self) -> int:
        """`minSamples`, or the type's default (0 for the metrics that are not sampled)."""
        if self.min_samples is not None:
            return self.min_samples
        return DEFAULT_MIN_SAMPLES.get(self.type, 0)

    def threshold(self) -> str:
        """The limits as text, e.g. `<= 0.05`, `>= 1`, `0.1..0.9`, `<= 0.5, <= 1.2x stable`,
        `0.98x..1.5x stable`."""
        parts = []
        if self.min is not None and self.max is not None:
            parts.append(f"{self.min:g}..{self.max:g}")
        elif self.max is not None:
            parts.append(f"<= {self.max:g}")
        elif self.min is not None:
            parts.append(f">= {self.min:g}")
        low, high = self.min_ratio_to_stable, self.max_ratio_to_stable
        if low is not None and high is not None:
            parts.append(f"{low:g}x..{high:g}x stable")
        elif high is not None:
            parts.append(f"<= {high:g}x stable")
        elif low is not None:
            parts.append(f">= {low:g}x stable")
        return ", ".join(parts)


class OnDegraded(StrEnum):
    """What to do when a promoted version degrades (steady state, after the rollout)."""

    ROLLBACK = "Rollback"
    """Roll back to the previous version."""
    ALERT = "Alert"
    """Only report it: condition Degraded, events and metrics."""
    FALLBACK = "Fallback"
    """Send its traffic to the Deployment's fallback (fallback.version, else fallback.response) while
    it fails, and back when it passes again."""


class MonitorSpec(ApiModel):
    """What "healthy" means for a Deployment's versions, and how often to measure it."""

    deployment: Name
    """The Deployment (modelfleet.io, same namespace) whose versions are measured."""
    interval: Duration = parse_duration("10s")
    """How often to measure, e.g. 10s."""
    failure_limit: Annotated[int, Field(ge=1, le=100)] = 2
    """Consecutive failing measurements that make a Fail verdict (and roll back)."""
    error_limit: Annotated[int, Field(ge=1, le=100)] = 4
    """Consecutive measurements that could not be taken (e.g. Prometheus unreachable) before the
    rollout aborts to stable."""
    min_requests: Annotated[int, Field(ge=0, le=1_000_000_000)] = 20
    """Fewer requests to a version in a measurement window make it Inconclusive, not Fail."""
    on_degraded: OnDegraded = OnDegraded.ROLLBACK
    """After promotion: Rollback to the previous version, only Alert, or send traffic to the
    Deployment's Fallback while the version fails."""
    metrics: tuple[Metric, ...] = Field(
        min_length=1,
        max_length=20,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(m, self.exists_one(n, n.name == m.name))",
                    "message": "metric names must be unique",
                }
            ]
        },
    )
    """The metrics measured each interval; all must pass."""

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique: {', '.join(duplicates)} repeated")
        return self


class Verdict(StrEnum):
    PASS = "Pass"
    """Within limits."""
    FAIL = "Fail"
    """Outside limits."""
    INCONCLUSIVE = "Inconclusive"
    """Too little traffic to judge."""
    ERROR = "Error"
    """Could not be measured (provider error)."""


class MetricResult(StatusModel):
    """One metric's value and verdict in one measurement."""

    name: Annotated[str, StringConstraints(max_length=63)]
    """The metric's name."""
    value: float | None = None
    """The measured value; null when it could not be measured."""
    stable_value: float | None = None
    """For a metric with a ratio bound, during a rollout: the stable version's value in the same window."""
    ratio_to_stable: float | None = None
    """value / stableValue, the ratio judged against minRatioToStable and maxRatioToStable."""
    threshold: Annotated[str, StringConstraints(max_length=128)] = ""
    """The limits it was judged against, e.g. `<= 0.05` or `<= 1.2x stable`."""
    verdict: Verdict
    """Pass, Fail, Inconclusive or Error."""
    message: Text = ""
    """Details, e.g. the provider error or the request count."""


class Measurement(StatusModel):
    """One measurement of all metrics of a Monitor."""

    time: Time
    """When it was taken."""
    version: Annotated[str, StringConstraints(max_length=253)] = ""
    """The ModelVersion measured."""
    results: tuple[MetricResult, ...] = Field(default=(), max_length=20)
    """Per-metric values and verdicts."""
    partial: Text = ""
    """Set when the router metrics came from only some of the router pods: which did not answer, and
    why. The window is judged on the pods that answered."""


class MonitorPhase(StrEnum):
    PASSING = "Passing"
    FAILING = "Failing"
    INCONCLUSIVE = "Inconclusive"


class MonitorStatus(StatusModel):
    """The last measurement and its verdict."""

    observed_generation: Generation | None = None
    """The metadata.generation this status was computed from."""
    phase: MonitorPhase | None = None
    """Passing, Failing or Inconclusive."""
    last_measurement: Measurement | None = None
    """The latest measurement."""
    measurements: tuple[Measurement, ...] = Field(default=(), max_length=MEASUREMENT_HISTORY_LIMIT)
    """Recent measurements, newest first (bounded), so the Deployment controller misses none between
    two of its reconciles."""
    message: Text = ""
    """A one-line summary of the latest verdict."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready: the Monitor measures and its Deployment exists."""

    @field_validator("measurements", mode="before")
    @classmethod
    def _bound_measurements(cls, value: object) -> object:
        # A status written with a larger bound still parses: keep the newest measurements.
        if isinstance(value, list | tuple) and len(value) > MEASUREMENT_HISTORY_LIMIT:
            return value[:MEASUREMENT_HISTORY_LIMIT]
        return value


class Monitor(Resource[MonitorSpec, MonitorStatus]):
    """What healthy means for a Deployment, measured."""

    KIND: ClassVar[str] = "Monitor"
    kind: str = "Monitor"
    """Monitor."""
