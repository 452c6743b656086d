"""Relative gates: a metric with minRatioToStable or maxRatioToStable judges the canary's value against
the stable version's value in the same window."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfleet.analysis.assessment import (
    ProviderError,
    SampledValue,
    Window,
    assess,
    overall_verdict,
    summarize,
)
from modelfleet.analysis.traffic import VersionTraffic
from modelfleet.api.monitor import MetricResult, MonitorSpec, Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CANARY, STABLE = "iris-v2", "iris-v1"


def monitor(*metrics: dict[str, Any], min_requests: int = 20) -> MonitorSpec:
    return MonitorSpec.model_validate(
        {"deployment": "iris", "minRequests": min_requests, "metrics": list(metrics)}
    )


def traffic(
    version: str = CANARY, requests: float = 100, errors: float = 0, p99: float = 0.1
) -> VersionTraffic:
    """`requests` answered, `errors` of them 5xx, and a histogram whose 0.99 quantile is `p99`."""
    return VersionTraffic(
        version=version,
        seconds=10,
        requests=requests,
        errors=errors,
        latency_buckets=((p99 / 0.99, requests), (math.inf, requests)),
    )


def rollout(canary: VersionTraffic | None, stable: VersionTraffic | None, **fields: Any) -> Window:
    """A window of the canary during a rollout, with stable's traffic of the same window."""
    return Window(CANARY, canary, stable_version=STABLE, stable_traffic=stable, **fields)


def judge(metric: dict[str, Any], window: Window, min_requests: int = 20) -> MetricResult:
    (result,) = assess(monitor(metric, min_requests=min_requests), window, NOW).results
    return result


P99_VS_STABLE = {"name": "p99", "type": "latency", "quantile": 0.99, "maxRatioToStable": 1.2}
ERRORS_VS_STABLE = {"name": "errors", "type": "errorRate", "maxRatioToStable": 1.5}
ACCURACY_VS_STABLE = {"name": "accuracy", "type": "accuracy", "minRatioToStable": 0.95}


# --- beyond the bound fails, within it passes ---------------------------------------------------------


def test_a_canary_slower_than_allowed_relative_to_stable_fails_and_says_by_how_much() -> None:
    window = rollout(traffic(p99=0.31), traffic(STABLE, p99=0.22))

    result = judge(P99_VS_STABLE, window)

    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.31 s is 1.41x stable's 0.22 s > 1.2x"
    assert result.value == pytest.approx(0.31)
    assert result.stable_value == pytest.approx(0.22)
    assert result.ratio_to_stable == pytest.approx(0.31 / 0.22)
    assert result.threshold == "<= 1.2x stable"


def test_a_canary_within_the_ratio_passes_and_says_its_ratio() -> None:
    result = judge(P99_VS_STABLE, rollout(traffic(p99=0.24), traffic(STABLE, p99=0.22)))

    assert result.verdict == Verdict.PASS
    assert result.message == "100 requests; 1.09x stable's 0.22 s"
    assert result.ratio_to_stable == pytest.approx(0.24 / 0.22)


def test_exactly_at_the_bound_passes() -> None:
    result = judge(ERRORS_VS_STABLE, rollout(traffic(errors=3), traffic(STABLE, errors=2)))

    assert result.verdict == Verdict.PASS
    assert result.ratio_to_stable == pytest.approx(1.5)


def test_a_canary_less_accurate_than_allowed_relative_to_stable_fails() -> None:
    window = Window(
        CANARY,
        stable_version=STABLE,
        sampled={"accuracy": SampledValue(0.85, samples=200)},
        stable_sampled={"accuracy": SampledValue(0.94, samples=900)},
    )

    result = judge(ACCURACY_VS_STABLE, window)

    assert result.verdict == Verdict.FAIL
    assert result.message == "accuracy 0.85 is 0.904x stable's 0.94 < 0.95x"
    assert (result.value, result.stable_value) == (0.85, 0.94)


def test_a_canary_drifting_further_than_stable_fails_naming_its_features() -> None:
    metric = {"name": "input-drift", "type": "dataDrift", "maxRatioToStable": 2.0}
    window = Window(
        CANARY,
        stable_version=STABLE,
        sampled={"input-drift": SampledValue(0.3, samples=400, detail="petal_width psi 0.3 (n=400)")},
        stable_sampled={"input-drift": SampledValue(0.1, samples=900, detail="petal_width psi 0.1 (n=900)")},
    )

    result = judge(metric, window)

    assert result.verdict == Verdict.FAIL
    assert result.message == "input-drift 0.3 is 3x stable's 0.1 > 2x: petal_width psi 0.3 (n=400)"


def test_a_canary_more_accurate_than_stable_passes_a_min_ratio() -> None:
    window = Window(
        CANARY,
        stable_version=STABLE,
        sampled={"accuracy": SampledValue(0.96, samples=200)},
        stable_sampled={"accuracy": SampledValue(0.94, samples=900)},
    )

    result = judge(ACCURACY_VS_STABLE, window)

    assert result.verdict == Verdict.PASS
    assert result.message == "200 samples; 1.02x stable's 0.94"


@pytest.mark.parametrize(
    ("canary_errors", "verdict", "message"),
    [
        (1, Verdict.FAIL, "errors 0.01 is 0.25x stable's 0.04 < 0.5x"),
        (4, Verdict.PASS, "100 requests; 1x stable's 0.04"),
        (9, Verdict.FAIL, "errors 0.09 is 2.25x stable's 0.04 > 2x"),
    ],
)
def test_both_ratio_bounds_are_checked(canary_errors: float, verdict: Verdict, message: str) -> None:
    metric = {"name": "errors", "type": "errorRate", "minRatioToStable": 0.5, "maxRatioToStable": 2}

    result = judge(metric, rollout(traffic(errors=canary_errors), traffic(STABLE, errors=4)))

    assert (result.verdict, result.message) == (verdict, message)
    assert result.threshold == "0.5x..2x stable"


def test_the_fallback_rate_compares_with_stable_too() -> None:
    metric = {"name": "fallbacks", "type": "fallbackRate", "maxRatioToStable": 1.5}
    canary = VersionTraffic(CANARY, 10, requests=100, fallbacks={"retry_on_stable": 10})
    stable = VersionTraffic(STABLE, 10, requests=400, fallbacks={"circuit_open": 20})

    result = judge(metric, rollout(canary, stable))

    assert result.verdict == Verdict.FAIL
    assert result.message == "fallbacks 0.1 is 2x stable's 0.05 > 1.5x"


# --- absolute and ratio bounds together ----------------------------------------------------------------

P99_BOTH = {"name": "p99", "type": "latency", "quantile": 0.99, "max": 0.5, "maxRatioToStable": 1.2}


def test_absolute_and_ratio_bounds_both_failing_name_both() -> None:
    result = judge(P99_BOTH, rollout(traffic(p99=0.8), traffic(STABLE, p99=0.4)))

    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.8 > 0.5; p99 0.8 s is 2x stable's 0.4 s > 1.2x"
    assert result.threshold == "<= 0.5, <= 1.2x stable"


def test_an_absolute_failure_fails_even_when_the_canary_is_no_worse_than_stable() -> None:
    result = judge(P99_BOTH, rollout(traffic(p99=0.8), traffic(STABLE, p99=0.8)))

    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.8 > 0.5"
    assert result.ratio_to_stable == pytest.approx(1.0)


def test_a_ratio_failure_fails_within_the_absolute_bound() -> None:
    result = judge(P99_BOTH, rollout(traffic(p99=0.3), traffic(STABLE, p99=0.1)))

    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.3 s is 3x stable's 0.1 s > 1.2x"


def test_an_absolute_failure_fails_whatever_stable_has() -> None:
    result = judge(P99_BOTH, rollout(traffic(p99=0.8), traffic(STABLE, requests=3)))

    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.8 > 0.5"
    assert result.stable_value is None


# --- no ratio to judge: Inconclusive, saying why ---------------------------------------------------------


def test_too_few_stable_requests_is_inconclusive() -> None:
    result = judge(P99_VS_STABLE, rollout(traffic(p99=0.9), traffic(STABLE, requests=5, p99=0.1)))

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "stable iris-v1: 5 requests < minRequests 20"
    assert result.value == pytest.approx(0.9)
    assert result.stable_value is None


def test_stable_without_traffic_in_the_window_is_inconclusive() -> None:
    result = judge(P99_VS_STABLE, rollout(traffic(), None))

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "stable iris-v1: no router metrics"


def test_stable_without_requests_is_inconclusive_even_with_min_requests_0() -> None:
    result = judge(P99_VS_STABLE, rollout(traffic(), traffic(STABLE, requests=0)), min_requests=0)

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "stable iris-v1: no requests"


def test_a_stable_value_of_zero_gives_no_ratio_to_judge() -> None:
    result = judge(ERRORS_VS_STABLE, rollout(traffic(errors=2), traffic(STABLE, errors=0)))

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "errors 0.02 vs stable's 0: no ratio to judge"
    assert (result.stable_value, result.ratio_to_stable) == (0.0, None)


def test_zero_against_stable_zero_is_the_same_value_and_passes() -> None:
    result = judge(ERRORS_VS_STABLE, rollout(traffic(errors=0), traffic(STABLE, errors=0)))

    assert result.verdict == Verdict.PASS
    assert result.message == "100 requests; the same as stable's 0"
    assert result.ratio_to_stable == 1.0


def test_stable_without_a_latency_histogram_is_an_error() -> None:
    stable = VersionTraffic(STABLE, 10, requests=100)

    result = judge(P99_VS_STABLE, rollout(traffic(), stable))

    assert result.verdict == Verdict.ERROR
    assert result.message == "stable iris-v1: no latency histogram for this version"


@pytest.mark.parametrize(
    ("stable_sampled", "verdict", "message"),
    [
        ({}, Verdict.INCONCLUSIVE, "stable iris-v1: accuracy not measured yet"),
        (
            {"accuracy": SampledValue(0.9, samples=10)},
            Verdict.INCONCLUSIVE,
            "stable iris-v1: 10 samples < minSamples 50",
        ),
        (
            {"accuracy": SampledValue(math.nan, samples=60)},
            Verdict.INCONCLUSIVE,
            "stable iris-v1: no value (60 samples)",
        ),
        (
            {"accuracy": ProviderError("feedback: store unreachable")},
            Verdict.ERROR,
            "stable iris-v1: feedback",
        ),
    ],
)
def test_a_stable_sampled_value_missing_or_too_thin_gives_no_ratio(
    stable_sampled: dict[str, Any], verdict: Verdict, message: str
) -> None:
    window = Window(
        CANARY,
        stable_version=STABLE,
        sampled={"accuracy": SampledValue(0.9, samples=100)},
        stable_sampled=stable_sampled,
    )

    result = judge(ACCURACY_VS_STABLE, window)

    assert result.verdict == verdict
    assert result.message.startswith(message)


def test_too_few_canary_requests_is_inconclusive_before_stable_is_looked_at() -> None:
    result = judge(P99_VS_STABLE, rollout(traffic(requests=5, p99=9), traffic(STABLE)))

    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "5 requests < minRequests 20"


# --- steady state: no stable version to compare with -----------------------------------------------------


def test_in_steady_state_a_ratio_bound_is_skipped_and_says_so() -> None:
    window = Window(STABLE, traffic(STABLE, p99=0.9))

    result = judge(P99_VS_STABLE, window)

    assert result.verdict == Verdict.PASS
    assert result.message == "100 requests; no stable version to compare with: ratio bound skipped"
    assert result.value == pytest.approx(0.9)
    assert (result.stable_value, result.ratio_to_stable) == (None, None)


def test_in_steady_state_the_absolute_bounds_still_apply() -> None:
    result = judge(P99_BOTH, Window(STABLE, traffic(STABLE, p99=0.9)))

    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.9 > 0.5"


def test_stable_traffic_without_a_stable_version_named_is_steady_state() -> None:
    # only stable_version says a rollout is under way
    window = Window(STABLE, traffic(STABLE), stable_traffic=traffic(STABLE, p99=0.01))

    assert "ratio bound skipped" in judge(P99_VS_STABLE, window).message


# --- the measurement as a whole ----------------------------------------------------------------------------


def test_the_ratio_failure_is_the_reason_of_the_measurement() -> None:
    errors = {"name": "errors", "type": "errorRate", "max": 0.05}
    window = rollout(traffic(p99=0.31), traffic(STABLE, p99=0.22))

    measurement = assess(monitor(errors, P99_VS_STABLE), window, NOW)

    assert [r.verdict for r in measurement.results] == [Verdict.PASS, Verdict.FAIL]
    assert overall_verdict(measurement) == Verdict.FAIL
    assert summarize(measurement) == "p99 0.31 s is 1.41x stable's 0.22 s > 1.2x"
    # the results survive the status round trip with their stable value and ratio
    dumped = measurement.to_k8s()["results"][1]
    assert dumped["stableValue"] == pytest.approx(0.22)
    assert dumped["ratioToStable"] == pytest.approx(0.31 / 0.22)


def test_an_inconclusive_stable_holds_the_measurement_inconclusive() -> None:
    measurement = assess(monitor(P99_VS_STABLE), rollout(traffic(), traffic(STABLE, requests=1)), NOW)

    assert overall_verdict(measurement) == Verdict.INCONCLUSIVE
    assert summarize(measurement) == "p99: stable iris-v1: 1 requests < minRequests 20"


@settings(max_examples=200, deadline=None)
@given(
    canary=st.floats(min_value=0.001, max_value=100),
    stable=st.floats(min_value=0.001, max_value=100),
    bound=st.floats(min_value=0.01, max_value=10),
    upper=st.booleans(),
)
def test_the_verdict_is_the_ratio_against_the_bound(
    canary: float, stable: float, bound: float, upper: bool
) -> None:
    metric = {
        "name": "mae",
        "type": "meanAbsoluteError",
        ("maxRatioToStable" if upper else "minRatioToStable"): bound,
    }
    window = Window(
        CANARY,
        stable_version=STABLE,
        sampled={"mae": SampledValue(canary, samples=50)},
        stable_sampled={"mae": SampledValue(stable, samples=50)},
    )

    result = judge(metric, window)

    ratio = canary / stable
    beyond = ratio > bound if upper else ratio < bound
    assert result.verdict == (Verdict.FAIL if beyond else Verdict.PASS)
    assert result.ratio_to_stable == pytest.approx(ratio)
    assert (result.value, result.stable_value) == (canary, stable)
