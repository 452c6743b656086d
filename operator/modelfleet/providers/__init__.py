"""Monitor providers: where a Monitor's metrics come from, each behind one interface.

A provider answers for the metrics it `handles`: it `measure`s one window of one Monitor's target (the
version under judgement, and the version to compare it with) and returns a `Reading`, the part of the
`modelfleet.analysis.Window` it knows. The Monitor controller merges the readings of all its providers
into one Window, which the pure `assess` judges. Providers talk to the outside world (router pods,
Prometheus, and the ones to come: gateway metrics, ground truth); the pure layer never imports them.

- `router.RouterMetrics`: errorRate, latency, fallbackRate, predictionDrift, from the router pods'
  /metrics and /predictions, as counter deltas between two scrapes.
- `prometheus.Prometheus`: `type: prometheus`, a PromQL query against a real Prometheus.

`mlflow` is the other adapter here, and no Monitor provider: the client of an MLflow tracking server, the
registry of record the Model controller mirrors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from modelfleet.analysis import ProviderError, VersionTraffic, Window
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


def window(version: str, readings: Sequence[Reading]) -> Window:
    """The window of `version` that the readings of all providers make together."""
    merged: dict[str, Any] = {}
    prometheus: dict[str, float | ProviderError] = {}
    for reading in readings:
        prometheus.update(reading.prometheus)
        for name in ("traffic", "traffic_error", "traffic_pending", "partial", "predictions"):
            value = getattr(reading, name)
            if value:
                merged[name] = value
        if reading.reference_predictions is not None:
            merged["reference_predictions"] = reading.reference_predictions
    return Window(version=version, prometheus=prometheus, **merged)


__all__ = ["Key", "Provider", "Reading", "Target", "window"]
