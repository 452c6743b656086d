"""Judge one measurement window of one version against a Monitor's metrics.

The controller gathers the inputs (router scrapes, prediction samples, Prometheus query results,
sampled metric values) and passes them in a `Window`; `assess` turns them into a `Measurement` with a
verdict per metric, and `overall_verdict` combines those: a Fail anywhere wins (a provider that works
has seen a real problem), then Error (something could not be measured), then Inconclusive (too little
traffic or too few samples), else Pass.

A metric with a ratio bound (`minRatioToStable`, `maxRatioToStable`) is also judged, during a rollout,
on the canary's value divided by the stable version's value in the same window (`Window.stable_version`,
`stable_traffic`, `stable_sampled`): beyond the bound is a Fail, within it a Pass; a stable value that
is missing, has too few requests or samples, or is 0 (while the canary's is not) makes it Inconclusive.
In steady state there is no stable version to compare with: the ratio bound is skipped and said so,
like predictionDrift without a version to compare with.

A sampled metric (dataDrift, accuracy, meanAbsoluteError) is judged on the `SampledValue` its provider
computed: fewer than `minSamples` samples make it Inconclusive, a `ProviderError` an Error, and what the
provider says of the value (`detail`: the features that drifted, the span of the labels) is in the
metric's message whatever the verdict, after the bound a Fail crossed.
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
    SAMPLED_METRICS,
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
class SampledValue:
    """A metric's value computed from samples, by a provider: for dataDrift the drift of the sampled
    request inputs from the version's reference profile (by the metric's `drift_method`, over its
    `features`); for accuracy and meanAbsoluteError, of the predictions joined with the ground truth
    clients sent back. `samples` is how many it was computed from (inputs, or labelled predictions)."""

    value: float
    samples: int
    detail: str = ""
    """What the provider says about the value, carried into the metric's message whatever its verdict:
    for dataDrift the features that decide it (`petal_width psi 0.41 > 0.2 (n=250); ...`), for accuracy
    and meanAbsoluteError the span of the labels (`over the last 1m20s`)."""


Sampled = Mapping[str, SampledValue | ProviderError]
"""Values of the sampled metrics (dataDrift, accuracy, meanAbsoluteError) by metric name; a metric
absent from it was not measured in the window."""


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
    stable_version: str = ""
    """The stable version the canary (`version`) is compared with during a rollout; empty in steady
    state, when `version` is the stable version itself and ratio bounds do not apply."""
    stable_traffic: VersionTraffic | None = None
    """The stable version's router traffic in the same window, for ratio bounds; None in steady state
    or when it could not be read."""
    sampled: Sampled = field(default_factory=dict)
    """Values of this version's sampled metrics (dataDrift, accuracy, meanAbsoluteError), by name."""
    stable_sampled: Sampled = field(default_factory=dict)
    """The stable version's values of the same sampled metrics in the same window, for ratio bounds."""


def _number(value: float) -> str:
    return f"{value:.3g}"


def _unit(metric: Metric) -> str:
    return " s" if metric.type == MetricType.LATENCY else ""


def _judge(metric: Metric, value: float, detail: str = "", why: str = "") -> MetricResult:
    """Pass or Fail on min and max; a Pass says `detail`, a Fail the bound crossed and then `why`."""
    threshold = metric.threshold()
    if metric.max is not None and value > metric.max:
        message = f"{metric.name} {_number(value)} > {metric.max:g}"
    elif metric.min is not None and value < metric.min:
        message = f"{metric.name} {_number(value)} < {metric.min:g}"
    else:
        return MetricResult(
            name=metric.name, value=value, threshold=threshold, verdict=Verdict.PASS, message=detail[:1024]
        )
    if why:
        message = f"{message}: {why}"
    return MetricResult(
        name=metric.name, value=value, threshold=threshold, verdict=Verdict.FAIL, message=message[:1024]
    )


def _result(metric: Metric, verdict: Verdict, message: str) -> MetricResult:
    return MetricResult(
        name=metric.name, threshold=metric.threshold(), verdict=verdict, message=message[:1024]
    )


@dataclass(frozen=True)
class _Value:
    """A metric's value in the window, what it was measured on (e.g. `100 requests`), and what its provider
    said of it (`why`, also on a Fail: the features that drifted)."""

    value: float
    detail: str = ""
    why: str = ""


@dataclass(frozen=True)
class _Unjudged:
    """Why a metric has no value to judge in the window: Inconclusive or Error, and the reason."""

    verdict: Verdict
    message: str


def _too_little(traffic: VersionTraffic, min_requests: int) -> _Unjudged | None:
    """Why a version's traffic is too little to judge (fewer than minRequests, or none), if it is."""
    if traffic.requests < min_requests:
        return _Unjudged(Verdict.INCONCLUSIVE, f"{traffic.requests:g} requests < minRequests {min_requests}")
    if traffic.requests <= 0:
        return _Unjudged(Verdict.INCONCLUSIVE, "no requests")
    return None


def _no_traffic(window: Window) -> _Unjudged:
    """Why the window has no router traffic: routers still starting, or not answering."""
    if window.traffic_pending and not window.traffic_error:
        return _Unjudged(Verdict.INCONCLUSIVE, window.traffic_pending)
    return _Unjudged(Verdict.ERROR, window.traffic_error or "no router metrics for this window")


def _without_traffic(window: Window, min_requests: int) -> _Unjudged | None:
    """Why the router traffic of the version under judgement cannot be judged, if it cannot."""
    if window.traffic is None:
        return _no_traffic(window)
    return _too_little(window.traffic, min_requests)


def _traffic_value(metric: Metric, traffic: VersionTraffic, min_requests: int) -> _Value | _Unjudged:
    """errorRate, fallbackRate or latency of one version's traffic."""
    unjudged = _too_little(traffic, min_requests)
    if unjudged is not None:
        return unjudged
    count = f"{traffic.requests:g} requests"
    if metric.type in {MetricType.ERROR_RATE, MetricType.FALLBACK_RATE}:
        rate = traffic.error_rate if metric.type == MetricType.ERROR_RATE else traffic.fallback_rate
        return _Value(rate or 0.0, count)
    quantile = traffic.latency_quantile(metric.quantile or 0.5)
    if quantile is None:
        return _Unjudged(Verdict.ERROR, "no latency histogram for this version")
    return _Value(quantile, count)


def _sampled_value(metric: Metric, found: SampledValue | ProviderError | None) -> _Value | _Unjudged:
    """dataDrift, accuracy or meanAbsoluteError as a provider computed it."""
    if found is None:
        return _Unjudged(Verdict.INCONCLUSIVE, f"{metric.type.value} not measured yet")
    if isinstance(found, ProviderError):
        return _Unjudged(Verdict.ERROR, found.message)
    count = f"{found.samples} samples"
    if found.samples < metric.samples_needed:
        return _Unjudged(
            Verdict.INCONCLUSIVE, _joined(f"{count} < minSamples {metric.samples_needed}", found.detail)
        )
    if math.isnan(found.value):
        return _Unjudged(Verdict.INCONCLUSIVE, _joined(f"no value ({count})", found.detail))
    return _Value(found.value, _joined(count, found.detail), found.detail)


def _value(metric: Metric, window: Window, min_requests: int) -> _Value | _Unjudged:
    """The value of `metric` for the version under judgement (not for predictionDrift)."""
    if metric.type == MetricType.PROMETHEUS:
        answer = window.prometheus.get(metric.name)
        if answer is None:
            return _Unjudged(Verdict.ERROR, "no query result")
        if isinstance(answer, ProviderError):
            return _Unjudged(Verdict.ERROR, answer.message)
        if math.isnan(answer):
            return _Unjudged(Verdict.INCONCLUSIVE, "query returned NaN (no data)")
        return _Value(answer)
    if metric.type in SAMPLED_METRICS:
        return _sampled_value(metric, window.sampled.get(metric.name))
    if window.traffic is None:
        return _no_traffic(window)
    return _traffic_value(metric, window.traffic, min_requests)


def _stable_value(metric: Metric, window: Window, min_requests: int) -> _Value | _Unjudged:
    """The value of `metric` for the stable version in the same window."""
    if metric.type in SAMPLED_METRICS:
        found = _sampled_value(metric, window.stable_sampled.get(metric.name))
    elif window.stable_traffic is None:
        found = _Unjudged(Verdict.INCONCLUSIVE, "no router metrics")
    else:
        found = _traffic_value(metric, window.stable_traffic, min_requests)
    if isinstance(found, _Unjudged):
        return _Unjudged(found.verdict, f"stable {window.stable_version}: {found.message}")
    return found


def _assess_prediction_drift(metric: Metric, window: Window, min_requests: int) -> MetricResult:
    unjudged = _without_traffic(window, min_requests)
    if unjudged is not None:
        return _result(metric, unjudged.verdict, unjudged.message)
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


def _joined(*parts: str) -> str:
    return "; ".join(part for part in parts if part)[:1024]


def _assess_ratio(
    metric: Metric, window: Window, canary: _Value, absolute: MetricResult, min_requests: int
) -> MetricResult:
    """`absolute` (the min/max verdict on the canary's value) combined with the ratio bound's verdict
    on the canary's value over stable's: a Fail of either is a Fail; else a ratio that cannot be taken
    makes it Inconclusive (or Error, when stable's value could not be measured)."""
    if not window.stable_version:
        if absolute.verdict == Verdict.FAIL:
            return absolute
        skipped = "no stable version to compare with: ratio bound skipped"
        return absolute.model_copy(update={"message": _joined(absolute.message, skipped)})
    stable = _stable_value(metric, window, min_requests)
    if isinstance(stable, _Unjudged):
        if absolute.verdict == Verdict.FAIL:
            return absolute
        return absolute.model_copy(update={"verdict": stable.verdict, "message": stable.message})
    unit = _unit(metric)
    value, base = canary.value, stable.value
    mine, theirs = f"{metric.name} {_number(value)}{unit}", f"stable's {_number(base)}{unit}"
    if base <= 0 and not (base == 0 and value == 0):
        if absolute.verdict == Verdict.FAIL:
            return absolute.model_copy(update={"stable_value": base})
        message = f"{mine} vs {theirs}: no ratio to judge"
        return absolute.model_copy(
            update={"verdict": Verdict.INCONCLUSIVE, "stable_value": base, "message": message}
        )
    # 0 against stable's 0 is the same value: the ratio is 1
    ratio = value / base if base else 1.0
    high, low = metric.max_ratio_to_stable, metric.min_ratio_to_stable
    compared = f"{mine} is {ratio:.3g}x {theirs}"
    beyond = ""
    if high is not None and ratio > high:
        beyond = f"{compared} > {high:g}x"
    elif low is not None and ratio < low:
        beyond = f"{compared} < {low:g}x"
    if absolute.verdict == Verdict.FAIL or beyond:
        failed = absolute.message if absolute.verdict == Verdict.FAIL else ""
        if beyond and not failed and canary.why:
            beyond = f"{beyond}: {canary.why}"
        verdict, message = Verdict.FAIL, _joined(failed, beyond)
    else:
        same = f"the same as {theirs}" if base == 0 else f"{ratio:.3g}x {theirs}"
        verdict, message = Verdict.PASS, _joined(canary.detail, same)
    return absolute.model_copy(
        update={"verdict": verdict, "stable_value": base, "ratio_to_stable": ratio, "message": message}
    )


def _assess_metric(metric: Metric, window: Window, min_requests: int) -> MetricResult:
    if metric.type == MetricType.PREDICTION_DRIFT:
        return _assess_prediction_drift(metric, window, min_requests)
    canary = _value(metric, window, min_requests)
    if isinstance(canary, _Unjudged):
        return _result(metric, canary.verdict, canary.message)
    absolute = _judge(metric, canary.value, canary.detail, canary.why)
    if not metric.has_ratio:
        return absolute
    return _assess_ratio(metric, window, canary, absolute, min_requests)


def assess(spec: MonitorSpec, window: Window, now: datetime) -> Measurement:
    """Measure every metric of `spec` on `window`; the results keep the order of spec.metrics."""
    results = [_assess_metric(metric, window, spec.min_requests) for metric in spec.metrics]
    uses_routers = any(metric.type in TRAFFIC_METRICS for metric in spec.metrics)
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
