"""Assessing one window against a Monitor: per-metric verdicts and the overall verdict."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from modelfleet.analysis.assessment import (
    ProviderError,
    SampledValue,
    Window,
    assess,
    overall_verdict,
    summarize,
)
from modelfleet.analysis.traffic import VersionTraffic
from modelfleet.api.monitor import Measurement, MetricResult, MonitorSpec, Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INF = math.inf


def monitor(*metrics: dict[str, Any], min_requests: int = 20) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {"deployment": "iris", "minRequests": min_requests, "metrics": list(metrics)}
    )


def traffic(
    requests: float = 100,
    errors: float = 0,
    fallbacks: float = 0,
    buckets: tuple[tuple[float, float], ...] = ((0.1, 100.0), (INF, 100.0)),
) -> VersionTraffic:
    return VersionTraffic(
        version="iris-v2",
        seconds=10,
        requests=requests,
        errors=errors,
        fallbacks={"retry_on_stable": fallbacks},
        latency_buckets=buckets,
    )


ERRORS = {"name": "errors", "type": "errorRate", "max": 0.05}
P99 = {"name": "p99", "type": "latency", "quantile": 0.99, "max": 0.5}
FALLBACKS = {"name": "fallbacks", "type": "fallbackRate", "max": 0.1}
DRIFT = {"name": "drift", "type": "predictionDrift", "max": 0.25}
KPI = {"name": "business-kpi", "type": "prometheus", "prometheus": {"query": "sum(x)"}, "min": 1.0}


def only(measurement: Measurement) -> MetricResult:
    (result,) = measurement.results
    return result


def test_error_rate_above_max_fails_with_a_readable_reason() -> None:
    measurement = assess(monitor(ERRORS), Window("iris-v2", traffic(requests=100, errors=31)), NOW)

    result = only(measurement)
    assert result.verdict == Verdict.FAIL
    assert result.value == pytest.approx(0.31)
    assert result.threshold == "<= 0.05"
    assert result.message == "errors 0.31 > 0.05"
    assert overall_verdict(measurement) == Verdict.FAIL
    assert summarize(measurement) == "errors 0.31 > 0.05"
    assert measurement.time == NOW
    assert measurement.version == "iris-v2"


def test_healthy_window_passes_every_metric() -> None:
    window = Window(
        "iris-v2",
        traffic(requests=100, errors=1, fallbacks=2),
        predictions=[0, 1, 2] * 10,
        reference_predictions=[0, 1, 2] * 20,
        prometheus={"business-kpi": 3.5},
    )

    measurement = assess(monitor(ERRORS, P99, FALLBACKS, DRIFT, KPI), window, NOW)

    assert [r.verdict for r in measurement.results] == [Verdict.PASS] * 5
    assert [r.name for r in measurement.results] == ["errors", "p99", "fallbacks", "drift", "business-kpi"]
    assert measurement.results[0].value == pytest.approx(0.01)
    assert measurement.results[1].value == pytest.approx(0.099)
    assert measurement.results[2].value == pytest.approx(0.02)
    assert measurement.results[3].value == pytest.approx(0.0, abs=1e-9)
    assert measurement.results[4].value == 3.5
    assert overall_verdict(measurement) == Verdict.PASS
    assert summarize(measurement) == "all metrics pass"


def test_latency_quantile_above_max_fails() -> None:
    slow = traffic(buckets=((0.1, 10.0), (1.0, 100.0), (INF, 100.0)))

    result = only(assess(monitor(P99), Window("iris-v2", slow), NOW))

    assert result.verdict == Verdict.FAIL
    assert result.value == pytest.approx(0.99)
    assert result.message == "p99 0.99 > 0.5"


def test_fallback_share_above_max_fails() -> None:
    result = only(assess(monitor(FALLBACKS), Window("iris-v2", traffic(fallbacks=30)), NOW))

    assert result.verdict == Verdict.FAIL
    assert result.message == "fallbacks 0.3 > 0.1"


def test_prediction_drift_above_max_fails() -> None:
    window = Window("iris-v2", traffic(), predictions=[2] * 50, reference_predictions=[0, 1, 2] * 20)

    result = only(assess(monitor(DRIFT), window, NOW))

    assert result.verdict == Verdict.FAIL
    assert result.value is not None
    assert result.value > 0.25


def test_prometheus_value_below_min_fails() -> None:
    result = only(assess(monitor(KPI), Window("iris-v2", prometheus={"business-kpi": 0.2}), NOW))

    assert result.verdict == Verdict.FAIL
    assert result.threshold == ">= 1"
    assert result.message == "business-kpi 0.2 < 1"


def test_both_limits_are_checked() -> None:
    metric = {"name": "score", "type": "prometheus", "prometheus": {"query": "x"}, "min": 0.1, "max": 0.9}
    spec = monitor(metric)

    low = only(assess(spec, Window("v", prometheus={"score": 0.05}), NOW))
    high = only(assess(spec, Window("v", prometheus={"score": 0.95}), NOW))
    inside = only(assess(spec, Window("v", prometheus={"score": 0.5}), NOW))

    assert (low.verdict, low.threshold) == (Verdict.FAIL, "0.1..0.9")
    assert high.verdict == Verdict.FAIL
    assert inside.verdict == Verdict.PASS


@pytest.mark.parametrize("metric", [ERRORS, P99, FALLBACKS, DRIFT])
def test_too_few_requests_is_inconclusive_never_pass_nor_fail(metric: dict[str, Any]) -> None:
    window = Window(
        "iris-v2",
        traffic(requests=5, errors=5, fallbacks=5),
        predictions=[2] * 5,
        reference_predictions=[0] * 5,
    )

    measurement = assess(monitor(metric, min_requests=20), window, NOW)

    result = only(measurement)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.value is None
    assert result.message == "5 requests < minRequests 20"
    assert overall_verdict(measurement) == Verdict.INCONCLUSIVE


def test_prometheus_metrics_ignore_min_requests() -> None:
    window = Window("iris-v2", traffic(requests=0), prometheus={"business-kpi": 2.0})

    assert only(assess(monitor(KPI, min_requests=20), window, NOW)).verdict == Verdict.PASS


def test_failed_scrape_is_an_error_for_router_metrics() -> None:
    window = Window("iris-v2", traffic=None, traffic_error="router iris-router-0: connection refused")

    measurement = assess(monitor(ERRORS, P99), window, NOW)

    assert [r.verdict for r in measurement.results] == [Verdict.ERROR, Verdict.ERROR]
    assert measurement.results[0].message == "router iris-router-0: connection refused"
    assert overall_verdict(measurement) == Verdict.ERROR
    assert summarize(measurement) == (
        "errors: router iris-router-0: connection refused; p99: router iris-router-0: connection refused"
    )


def test_routers_still_starting_are_inconclusive_not_an_error() -> None:
    window = Window(
        "iris-v2", traffic=None, traffic_pending="no router pod is running yet: nothing to measure"
    )

    measurement = assess(monitor(ERRORS, P99), window, NOW)

    assert [r.verdict for r in measurement.results] == [Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE]
    assert measurement.results[0].message == "no router pod is running yet: nothing to measure"
    assert overall_verdict(measurement) == Verdict.INCONCLUSIVE


def test_a_scrape_error_wins_over_pending_routers() -> None:
    window = Window("iris-v2", traffic=None, traffic_error="refused", traffic_pending="starting")

    assert only(assess(monitor(ERRORS), window, NOW)).verdict == Verdict.ERROR


def test_a_partial_sample_is_judged_on_the_pods_that_answered_and_says_so() -> None:
    why = "1 of 2 router pods answered; scrape of router pod iris-router-b (10.0.0.7:9090) failed: timeout"
    window = Window("iris-v2", traffic(requests=100, errors=1), partial=why)

    measurement = assess(monitor(ERRORS), window, NOW)

    assert only(measurement).verdict == Verdict.PASS
    assert measurement.partial == why
    # a Monitor of Prometheus queries alone has no router sample to be partial
    kpi_only = assess(
        monitor(KPI), Window("iris-v2", traffic(), partial=why, prometheus={"business-kpi": 2}), NOW
    )
    assert kpi_only.partial == ""


def test_unreachable_prometheus_is_an_error() -> None:
    window = Window("iris-v2", prometheus={"business-kpi": ProviderError("prometheus: timed out")})

    result = only(assess(monitor(KPI), window, NOW))

    assert result.verdict == Verdict.ERROR
    assert result.message == "prometheus: timed out"


def test_missing_prometheus_value_is_an_error_and_nan_is_inconclusive() -> None:
    assert only(assess(monitor(KPI), Window("v"), NOW)).verdict == Verdict.ERROR
    nan = only(assess(monitor(KPI), Window("v", prometheus={"business-kpi": math.nan}), NOW))
    assert nan.verdict == Verdict.INCONCLUSIVE


def test_latency_without_histogram_is_an_error() -> None:
    result = only(assess(monitor(P99), Window("iris-v2", traffic(buckets=())), NOW))

    assert result.verdict == Verdict.ERROR
    assert "histogram" in result.message


def test_drift_without_a_reference_version_is_neutral() -> None:
    result = only(assess(monitor(DRIFT), Window("iris-v2", traffic(), predictions=[1, 2]), NOW))

    assert result.verdict == Verdict.PASS
    assert result.value is None


def test_drift_without_samples_is_inconclusive() -> None:
    window = Window("iris-v2", traffic(), predictions=[], reference_predictions=[0, 1])

    assert only(assess(monitor(DRIFT), window, NOW)).verdict == Verdict.INCONCLUSIVE


def test_a_fail_outranks_an_error_which_outranks_inconclusive() -> None:
    fail_and_error = Window(
        "iris-v2", traffic(errors=50), prometheus={"business-kpi": ProviderError("unreachable")}
    )
    error_and_inconclusive = Window(
        "iris-v2", traffic(requests=3), prometheus={"business-kpi": ProviderError("unreachable")}
    )

    first = assess(monitor(ERRORS, KPI), fail_and_error, NOW)
    second = assess(monitor(ERRORS, KPI), error_and_inconclusive, NOW)

    assert overall_verdict(first) == Verdict.FAIL
    assert summarize(first) == "errors 0.5 > 0.05"
    assert overall_verdict(second) == Verdict.ERROR
    assert summarize(second) == "business-kpi: unreachable"


def test_empty_measurement_is_inconclusive() -> None:
    empty = Measurement(time=NOW, version="v")
    assert overall_verdict(empty) == Verdict.INCONCLUSIVE
    assert summarize(empty) == "no metrics measured"


def test_no_requests_is_inconclusive_even_with_min_requests_0() -> None:
    window = Window("iris-v2", traffic(requests=0))

    result = only(assess(monitor(ERRORS, min_requests=0), window, NOW))

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "no requests"


# --- sampled metrics: dataDrift, accuracy, meanAbsoluteError ---------------------------------------------

INPUT_DRIFT = {"name": "input-drift", "type": "dataDrift", "max": 0.2, "features": ["petal_length"]}
ACCURACY = {"name": "accuracy", "type": "accuracy", "min": 0.9}
MAE = {"name": "mae", "type": "meanAbsoluteError", "max": 0.5, "minSamples": 10}


def test_sampled_metrics_are_judged_on_the_values_their_providers_computed() -> None:
    window = Window(
        "iris-v2",
        sampled={
            "input-drift": SampledValue(0.31, samples=400),
            "accuracy": SampledValue(0.85, samples=120),
            "mae": SampledValue(0.2, samples=10),
        },
    )

    measurement = assess(monitor(INPUT_DRIFT, ACCURACY, MAE), window, NOW)

    assert [(r.verdict, r.message) for r in measurement.results] == [
        (Verdict.FAIL, "input-drift 0.31 > 0.2"),
        (Verdict.FAIL, "accuracy 0.85 < 0.9"),
        (Verdict.PASS, "10 samples"),
    ]
    assert [r.value for r in measurement.results] == [0.31, 0.85, 0.2]


@pytest.mark.parametrize(
    ("metric", "samples", "message"),
    [
        (INPUT_DRIFT, 99, "99 samples < minSamples 100"),  # dataDrift's default
        (ACCURACY, 49, "49 samples < minSamples 50"),  # accuracy's default
        (MAE, 9, "9 samples < minSamples 10"),  # set on the metric
    ],
)
def test_too_few_samples_is_inconclusive_never_pass_nor_fail(
    metric: dict[str, Any], samples: int, message: str
) -> None:
    window = Window("iris-v2", sampled={metric["name"]: SampledValue(99.0, samples=samples)})

    result = only(assess(monitor(metric), window, NOW))

    assert (result.verdict, result.value, result.message) == (Verdict.INCONCLUSIVE, None, message)


@pytest.mark.parametrize("metric", [INPUT_DRIFT, ACCURACY, MAE])
def test_a_sampled_metric_no_provider_measured_is_inconclusive_not_measured_yet(
    metric: dict[str, Any],
) -> None:
    result = only(assess(monitor(metric), Window("iris-v2", traffic()), NOW))

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == f"{metric['type']} not measured yet"
    assert result.value is None


def test_a_sampled_metric_whose_provider_failed_is_an_error() -> None:
    window = Window("iris-v2", sampled={"accuracy": ProviderError("feedback store unreachable")})

    result = only(assess(monitor(ACCURACY), window, NOW))

    assert (result.verdict, result.message) == (Verdict.ERROR, "feedback store unreachable")


def test_a_sampled_value_that_is_nan_is_inconclusive() -> None:
    window = Window("iris-v2", sampled={"accuracy": SampledValue(math.nan, samples=80)})

    assert only(assess(monitor(ACCURACY), window, NOW)).message == "no value (80 samples)"


def test_what_the_provider_says_of_a_sampled_value_is_in_the_message_whatever_the_verdict() -> None:
    drifted = "petal_width psi 0.41 > 0.2 (n=250); petal_length psi 0.33 > 0.2 (n=250)"
    window = Window(
        "iris-v2",
        sampled={
            "input-drift": SampledValue(0.41, samples=250, detail=drifted),
            "accuracy": SampledValue(0.95, samples=62, detail="over the last 1m40s"),
            "mae": SampledValue(0.2, samples=4, detail="over the last 10s"),
        },
    )

    measurement = assess(monitor(INPUT_DRIFT, ACCURACY, MAE), window, NOW)

    assert [(r.verdict, r.message) for r in measurement.results] == [
        (Verdict.FAIL, f"input-drift 0.41 > 0.2: {drifted}"),
        (Verdict.PASS, "62 samples; over the last 1m40s"),
        (Verdict.INCONCLUSIVE, "4 samples < minSamples 10; over the last 10s"),
    ]
    assert summarize(measurement) == f"input-drift 0.41 > 0.2: {drifted}"


def test_too_few_samples_is_said_before_there_being_no_value() -> None:
    window = Window("iris-v2", sampled={"accuracy": SampledValue(math.nan, samples=0, detail="no labels")})

    assert only(assess(monitor(ACCURACY), window, NOW)).message == "0 samples < minSamples 50; no labels"


def test_a_long_detail_is_cut_to_what_a_status_message_holds() -> None:
    window = Window("iris-v2", sampled={"input-drift": SampledValue(0.5, samples=400, detail="x" * 2000)})

    result = only(assess(monitor(INPUT_DRIFT), window, NOW))

    assert result.verdict == Verdict.FAIL
    assert len(result.message) == 1024


def test_sampled_metrics_need_no_router_traffic_and_leave_the_window_whole() -> None:
    why = "1 of 2 router pods answered"
    window = Window(
        "iris-v2",
        traffic=traffic(requests=0),
        partial=why,
        sampled={"accuracy": SampledValue(0.95, samples=60)},
    )

    measurement = assess(monitor(ACCURACY, min_requests=20), window, NOW)

    assert only(measurement).verdict == Verdict.PASS
    assert measurement.partial == ""  # no router metric was judged
