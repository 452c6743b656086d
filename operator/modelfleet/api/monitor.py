"""`Monitor`: what "healthy" means for a Deployment, measured every interval."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Self

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


class PrometheusQuery(ApiModel):
    """A PromQL query against a Prometheus server's HTTP API."""

    address: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^https?://\S+$")] = (
        DEFAULT_PROMETHEUS_ADDRESS
    )
    """Base URL of the Prometheus server."""
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """PromQL expression that returns one number."""


class Metric(ApiModel):
    """One measured metric and its limits. A value below `min` or above `max` fails."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.min) || has(self.max)", "message": "a metric needs min or max"},
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "min must not exceed max",
                },
                {
                    "rule": "self.type == 'latency' ? has(self.quantile) : !has(self.quantile)",
                    "message": "quantile is required for type latency, and only allowed there",
                },
                {
                    "rule": "self.type == 'prometheus' ? has(self.prometheus) : !has(self.prometheus)",
                    "message": "prometheus.query is required for type prometheus, and only allowed there",
                },
            ]
        }
    )

    name: Label
    """Name of the metric, unique in the Monitor; shown in results and status messages."""
    type: MetricType
    """errorRate, latency, fallbackRate, predictionDrift or prometheus."""
    quantile: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Latency quantile, e.g. 0.99 (type latency only)."""
    min: float | None = None
    """Lowest passing value."""
    max: float | None = None
    """Highest passing value (latencies in seconds)."""
    prometheus: PrometheusQuery | None = None
    """The query (type prometheus only)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError(f"metric {self.name}: a metric needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metric {self.name}: min must not exceed max")
        if (self.type == MetricType.LATENCY) != (self.quantile is not None):
            raise ValueError(
                f"metric {self.name}: quantile is required for type latency, and only allowed there"
            )
        if (self.type == MetricType.PROMETHEUS) != (self.prometheus is not None):
            raise ValueError(
                f"metric {self.name}: prometheus.query is required for type prometheus,"
                " and only allowed there"
            )
        return self

    def threshold(self) -> str:
        """The limits as text, e.g. `<= 0.05`, `>= 1`, `0.1..0.9`."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return f">= {self.min:g}"


class OnDegraded(StrEnum):
    """What to do when a promoted version degrades (steady state, after the rollout)."""

    ROLLBACK = "Rollback"
    """Roll back to the previous version."""
    ALERT = "Alert"
    """Only report it: condition Degraded, events and metrics."""


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
    """After promotion: Rollback to the previous version, or only Alert."""
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
    threshold: Annotated[str, StringConstraints(max_length=128)] = ""
    """The limits it was judged against, e.g. `<= 0.05`."""
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
