"""Judge one measurement window of one version against a Monitor's metrics.

The controller gathers the inputs (router scrapes, prediction samples, Prometheus query results) and
passes them in a `Window`; `assess` turns them into a `Measurement` with a verdict per metric, and
`overall_verdict` combines those: a Fail anywhere wins (a provider that works has seen a real problem),
then Error (something could not be measured), then Inconclusive (too little traffic), else Pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from modelfleet.analysis.drift import Prediction, population_stability_index
from modelfleet.analysis.traffic import VersionTraffic
from modelfleet.api import Monitor, set_condition
from modelfleet.api.monitor import (
    MEASUREMENT_HISTORY_LIMIT,
    Measurement,
    Metric,
    MetricResult,
    MetricType,
    MonitorPhase,
    MonitorSpec,
    MonitorStatus,
    Verdict,
)

TRAFFIC_METRICS = frozenset(
    {MetricType.ERROR_RATE, MetricType.LATENCY, MetricType.FALLBACK_RATE, MetricType.PREDICTION_DRIFT}
)
"""Metrics judged on the router's traffic, Inconclusive below minRequests."""

_SEVERITY = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.ERROR: 2, Verdict.FAIL: 3}


@dataclass(frozen=True)
class ProviderError:
    """A metric provider could not answer (scrape failed, Prometheus unreachable, bad query)."""

    message: str


@dataclass(frozen=True)
class Window:
    """Everything measured about one version in one window."""

    version: str
    traffic: VersionTraffic | None = None
    """The version's router traffic in the window; None when the routers could not be scraped."""
    traffic_error: str = ""
    """Why `traffic` is missing: the router metrics could not be read (an Error verdict)."""
    traffic_pending: str = ""
    """Why `traffic` is missing when there was nothing to read yet, e.g. no router pod running (an
    Inconclusive verdict, which never counts toward a failure or error limit)."""
    partial: str = ""
    """Why the traffic sample is partial (router pods that did not answer); empty when it is whole."""
    predictions: Sequence[Prediction] = ()
    """Sampled predictions of this version."""
    reference_predictions: Sequence[Prediction] | None = None
    """Sampled predictions of the stable version, for drift; None when there is nothing to compare."""
    prometheus: Mapping[str, float | ProviderError] = field(default_factory=dict)
    """Result of each `prometheus` metric's query, by metric name."""


def _number(value: float) -> str:
    return f"{value:.3g}"


def _judge(metric: Metric, value: float, detail: str = "") -> MetricResult:
    threshold = metric.threshold()
    if metric.max is not None and value > metric.max:
        message = f"{metric.name} {_number(value)} > {metric.max:g}"
    elif metric.min is not None and value < metric.min:
        message = f"{metric.name} {_number(value)} < {metric.min:g}"
    else:
        return MetricResult(
            name=metric.name, value=value, threshold=threshold, verdict=Verdict.PASS, message=detail
        )
    return MetricResult(
        name=metric.name, value=value, threshold=threshold, verdict=Verdict.FAIL, message=message
    )


def _result(metric: Metric, verdict: Verdict, message: str) -> MetricResult:
    return MetricResult(
        name=metric.name, threshold=metric.threshold(), verdict=verdict, message=message[:1024]
    )


def _assess_traffic(metric: Metric, window: Window, min_requests: int) -> MetricResult:
    traffic = window.traffic
    if traffic is None:
        if window.traffic_pending and not window.traffic_error:
            return _result(metric, Verdict.INCONCLUSIVE, window.traffic_pending)
        return _result(metric, Verdict.ERROR, window.traffic_error or "no router metrics for this window")
    count = f"{traffic.requests:g} requests"
    if traffic.requests < min_requests:
        return _result(metric, Verdict.INCONCLUSIVE, f"{count} < minRequests {min_requests}")
    if traffic.requests <= 0:
        return _result(metric, Verdict.INCONCLUSIVE, "no requests")
    if metric.type in {MetricType.ERROR_RATE, MetricType.FALLBACK_RATE}:
        rate = traffic.error_rate if metric.type == MetricType.ERROR_RATE else traffic.fallback_rate
        return _judge(metric, rate or 0.0, count)
    if metric.type == MetricType.LATENCY:
        quantile = traffic.latency_quantile(metric.quantile or 0.5)
        if quantile is None:
            return _result(metric, Verdict.ERROR, "no latency histogram for this version")
        return _judge(metric, quantile, count)
    # predictionDrift
    if window.reference_predictions is None:
        return _result(metric, Verdict.PASS, "no other version to compare with")
    if not window.predictions or not window.reference_predictions:
        return _result(metric, Verdict.INCONCLUSIVE, "no prediction samples to compare")
    try:
        psi = population_stability_index(window.reference_predictions, window.predictions)
    except ValueError as error:
        return _result(metric, Verdict.ERROR, f"drift: {error}")
    return _judge(
        metric, psi, f"{len(window.predictions)} vs {len(window.reference_predictions)} predictions"
    )


def _assess_prometheus(metric: Metric, window: Window) -> MetricResult:
    value = window.prometheus.get(metric.name)
    if value is None:
        return _result(metric, Verdict.ERROR, "no query result")
    if isinstance(value, ProviderError):
        return _result(metric, Verdict.ERROR, value.message)
    if math.isnan(value):
        return _result(metric, Verdict.INCONCLUSIVE, "query returned NaN (no data)")
    return _judge(metric, value)


def assess(spec: MonitorSpec, window: Window, now: datetime) -> Measurement:
    """Measure every metric of `spec` on `window`; the results keep the order of spec.metrics."""
    results = [
        _assess_prometheus(metric, window)
        if metric.type == MetricType.PROMETHEUS
        else _assess_traffic(metric, window, spec.min_requests)
        for metric in spec.metrics
    ]
    uses_routers = any(metric.type != MetricType.PROMETHEUS for metric in spec.metrics)
    partial = window.partial if uses_routers and window.traffic is not None else ""
    return Measurement(time=now, version=window.version, results=tuple(results), partial=partial)


def overall_verdict(measurement: Measurement) -> Verdict:
    """Fail if any metric fails, else Error if any could not be measured, else Inconclusive if any
    lacked traffic, else Pass. A measurement without results is Inconclusive."""
    if not measurement.results:
        return Verdict.INCONCLUSIVE
    return max((r.verdict for r in measurement.results), key=_SEVERITY.__getitem__)


def summarize(measurement: Measurement) -> str:
    """Why the measurement has its overall verdict, e.g. `errors 0.31 > 0.05; p99 0.8 > 0.5`."""
    verdict = overall_verdict(measurement)
    parts = []
    for result in measurement.results:
        if result.verdict != verdict:
            continue
        if verdict == Verdict.FAIL:
            parts.append(result.message)
        elif verdict != Verdict.PASS:
            parts.append(f"{result.name}: {result.message}" if result.message else result.name)
    if not measurement.results:
        return "no metrics measured"
    return "; ".join(parts) if parts else "all metrics pass"


PHASES = {
    Verdict.PASS: MonitorPhase.PASSING,
    Verdict.FAIL: MonitorPhase.FAILING,
    Verdict.INCONCLUSIVE: MonitorPhase.INCONCLUSIVE,
    Verdict.ERROR: MonitorPhase.INCONCLUSIVE,
}
"""The Monitor's phase after a measurement with this overall verdict."""


def monitor_status(
    monitor: Monitor,
    now: datetime,
    *,
    measurement: Measurement | None,
    message: str,
    ready: bool,
    reason: str,
) -> MonitorStatus:
    """The Monitor's whole new status: a new measurement (if any) at the head of the bounded list, the
    phase of its verdict, and the Ready condition with `reason` and `message`."""
    old = monitor.status
    measurements = old.measurements
    phase = old.phase
    if measurement is not None:
        measurements = (measurement, *measurements)[:MEASUREMENT_HISTORY_LIMIT]
        phase = PHASES[overall_verdict(measurement)]
    conditions = set_condition(
        old.conditions,
        "Ready",
        ready,
        reason,
        message,
        now=now,
        observed_generation=monitor.metadata.generation,
    )
    return MonitorStatus(
        observed_generation=monitor.metadata.generation,
        phase=phase,
        last_measurement=measurement or old.last_measurement,
        measurements=measurements,
        message=message[:1024],
        conditions=conditions,
    )
