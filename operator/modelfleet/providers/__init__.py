"""Monitor providers: where a Monitor's metrics come from, each behind one interface.

A provider answers for the metrics it `handles`: it `measure`s one window of one Monitor's target (the
version under judgement, and the version to compare it with) and returns a `Reading`, the part of the
`modelfleet.analysis.Window` it knows. The Monitor controller merges the readings of all its providers
into one Window, which the pure `assess` judges. Providers talk to the outside world (router pods,
object stores, Prometheus, and the ones to come: gateway metrics); the pure layer never imports them.

- `router.RouterMetrics`: errorRate, latency, fallbackRate, predictionDrift, from the router pods'
  /metrics and /predictions (the latter with the Deployment's router admin token), as counter deltas
  between two scrapes; during a rollout also the stable version's traffic in the same window, which
  ratio bounds (minRatioToStable, maxRatioToStable) need.
- `prometheus.Prometheus`: `type: prometheus`, a PromQL query against a real Prometheus.
- `sampled.SampledMetrics`: dataDrift (the router pods' /inputs against the version's reference profile,
  which `reference.ReferenceProfiles` reads from its store and keeps), accuracy and meanAbsoluteError
  (the labels the router pods' /feedback counts add between two reads); `sampled` for the target
  version and, during a rollout, `stable_sampled` for the metrics with a ratio bound, or a
  `ProviderError` per metric it could not measure.

`routeradmin` is how both router-based providers reach the router pods' admin port: running pods, the
admin token, timeouts, and refusals of the token.

`mlflow` is the other adapter here, and no Monitor provider: the client of an MLflow tracking server, the
registry of record the Model controller mirrors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from modelfleet.analysis import ProviderError, SampledValue, VersionTraffic, Window
from modelfleet.api.monitor import Metric

Key = tuple[str, str]


@dataclass(frozen=True)
class Target:
    """What one Monitor measures in one window."""

    monitor: Key
    """(namespace, name) of the Monitor: the key of what a provider keeps between windows."""
    namespace: str
    deployment: str
    version: str
    """The version under judgement: the canary during a rollout, else the stable version."""
    reference: str | None = None
    """The version to compare it with (the stable version during a rollout), else None."""
    uid: str = ""
    """The Deployment's uid: with its namespace and name, what its routers' admin token is derived from."""

    @classmethod
    def of(cls, monitor: Key, deployment: str, stable: str, canary: str, uid: str = "") -> Target | None:
        """What a Monitor of `deployment` measures now: the canary during a rollout, compared with the
        stable version; else the stable version alone. None while no version serves."""
        version = canary or stable
        if not version:
            return None
        return cls(monitor, monitor[0], deployment, version, stable if canary and stable else None, uid)


@dataclass(frozen=True)
class Reading:
    """One provider's part of a window; fields it does not know stay at their defaults."""

    traffic: VersionTraffic | None = None
    traffic_error: str = ""
    traffic_pending: str = ""
    partial: str = ""
    predictions: Sequence[Any] = ()
    reference_predictions: Sequence[Any] | None = None
    prometheus: Mapping[str, float | ProviderError] = field(default_factory=dict)
    stable_traffic: VersionTraffic | None = None
    """The traffic of the target's `reference` (stable) in the same window, for ratio bounds."""
    sampled: Mapping[str, SampledValue | ProviderError] = field(default_factory=dict)
    """Sampled metrics (dataDrift, accuracy, meanAbsoluteError) of the target version, by name."""
    stable_sampled: Mapping[str, SampledValue | ProviderError] = field(default_factory=dict)
    """The same metrics of the target's `reference` (stable) in the same window, for ratio bounds."""
    baseline: bool = False
    """This window only set the provider's baseline (its first scrape): nothing to judge yet."""


class Provider(Protocol):
    """Where some of a Monitor's metrics come from."""

    def handles(self, metric: Metric) -> bool:
        """Does this provider measure `metric`?"""
        ...

    async def measure(self, target: Target, metrics: Sequence[Metric], now: datetime) -> Reading:
        """One window of `metrics` (those it handles) for `target`."""
        ...

    def forget(self, monitor: Key) -> None:
        """Drop what it keeps for a Monitor (deleted, or with nothing to measure)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def window(version: str, readings: Sequence[Reading], stable: str = "") -> Window:
    """The window of `version` that the readings of all providers make together; `stable` names the
    version it is compared with during a rollout (empty in steady state)."""
    merged: dict[str, Any] = {}
    prometheus: dict[str, float | ProviderError] = {}
    sampled: dict[str, SampledValue | ProviderError] = {}
    stable_sampled: dict[str, SampledValue | ProviderError] = {}
    for reading in readings:
        prometheus.update(reading.prometheus)
        sampled.update(reading.sampled)
        stable_sampled.update(reading.stable_sampled)
        for name in ("traffic", "traffic_error", "traffic_pending", "partial", "predictions"):
            value = getattr(reading, name)
            if value:
                merged[name] = value
        if reading.reference_predictions is not None:
            merged["reference_predictions"] = reading.reference_predictions
        if stable and reading.stable_traffic is not None:
            merged["stable_traffic"] = reading.stable_traffic
    return Window(
        version=version,
        prometheus=prometheus,
        stable_version=stable,
        sampled=sampled,
        stable_sampled=stable_sampled if stable else {},
        **merged,
    )


__all__ = ["Key", "Provider", "Reading", "Target", "window"]
