"""Windowed per-version traffic from two scrapes of several router pods."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from modelfleet.analysis.exposition import Sample, parse_exposition
from modelfleet.analysis.traffic import Scrape, counter_increase, window_traffic

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=10)


def router_metrics(
    version_counts: dict[tuple[str, str], float],
    *,
    buckets: dict[str, list[tuple[str, float]]] | None = None,
    fallbacks: dict[tuple[str, str], float] | None = None,
    started: float | None = None,
    deployment: str = "iris",
) -> Sequence[Sample]:
    """Samples a router pod would expose: requests by (version, code), buckets by version."""
    lines = []
    for (version, code), value in version_counts.items():
        labels = f'deployment="{deployment}",version="{version}",code="{code}"'
        lines.append(f"modelfleet_requests_total{{{labels}}} {value}")
    for version, pairs in (buckets or {}).items():
        for le, value in pairs:
            lines.append(
                f"modelfleet_request_duration_seconds_bucket"
                f'{{deployment="{deployment}",version="{version}",le="{le}"}} {value}'
            )
    for (version, reason), value in (fallbacks or {}).items():
        labels = f'deployment="{deployment}",version="{version}",reason="{reason}"'
        lines.append(f"modelfleet_fallbacks_total{{{labels}}} {value}")
    if started is not None:
        lines.append(f"process_start_time_seconds {started}")
    return parse_exposition("\n".join(lines))


def test_error_rate_is_the_5xx_share_of_the_window_not_of_the_totals() -> None:
    before = Scrape(T0, {"router-a": router_metrics({("v2", "200"): 100, ("v2", "503"): 50})})
    after = Scrape(T1, {"router-a": router_metrics({("v2", "200"): 190, ("v2", "503"): 60})})

    traffic = window_traffic(before, after, "iris")["v2"]

    assert traffic.requests == 100
    assert traffic.errors == 10
    assert traffic.error_rate == pytest.approx(0.1)
    assert traffic.request_rate == pytest.approx(10.0)
    assert traffic.seconds == 10.0


def test_increases_are_summed_over_router_pods() -> None:
    before = Scrape(
        T0,
        {
            "router-a": router_metrics({("v1", "200"): 10, ("v2", "500"): 1}),
            "router-b": router_metrics({("v1", "200"): 1000}),
        },
    )
    after = Scrape(
        T1,
        {
            "router-a": router_metrics({("v1", "200"): 30, ("v2", "500"): 4, ("v2", "200"): 6}),
            "router-b": router_metrics({("v1", "200"): 1020, ("v2", "200"): 1}),
        },
    )

    traffic = window_traffic(before, after, "iris")

    assert traffic["v1"].requests == 40
    assert traffic["v1"].error_rate == 0.0
    assert traffic["v2"].requests == 10  # 3 errors + 6 ok on a, 1 new series on b
    assert traffic["v2"].errors == 3


def test_a_restarted_pod_counts_its_new_values_in_full() -> None:
    before = Scrape(T0, {"router-a": router_metrics({("v1", "200"): 500, ("v1", "500"): 5}, started=100)})
    after = Scrape(T1, {"router-a": router_metrics({("v1", "200"): 700, ("v1", "500"): 7}, started=100)})
    restarted = Scrape(T1, {"router-a": router_metrics({("v1", "200"): 20, ("v1", "500"): 1})})

    assert window_traffic(before, after, "iris")["v1"].requests == 202
    traffic = window_traffic(before, restarted, "iris")["v1"]
    assert traffic.requests == 21
    assert traffic.errors == 1


def test_a_reset_seen_on_one_series_resets_the_whole_pod() -> None:
    # The 200 series grew past its old value after the restart; the 500 series shows the reset.
    before = Scrape(T0, {"router-a": router_metrics({("v1", "200"): 10, ("v1", "500"): 5})})
    after = Scrape(T1, {"router-a": router_metrics({("v1", "200"): 15, ("v1", "500"): 1})})

    assert window_traffic(before, after, "iris")["v1"].requests == 16


def test_a_changed_process_start_time_means_a_restart() -> None:
    before = Scrape(T0, {"router-a": router_metrics({("v1", "200"): 10}, started=100)})
    after = Scrape(T1, {"router-a": router_metrics({("v1", "200"): 12}, started=T0.timestamp() + 5)})

    assert window_traffic(before, after, "iris")["v1"].requests == 12


def test_a_new_pod_counts_only_when_it_started_inside_the_window() -> None:
    before = Scrape(T0, {"router-a": router_metrics({("v1", "200"): 10})})
    new_pod = router_metrics({("v1", "200"): 7}, started=T0.timestamp() + 3)
    old_pod = router_metrics({("v1", "200"): 5000}, started=T0.timestamp() - 3600)
    unknown_start = router_metrics({("v1", "200"): 9000})
    after = Scrape(
        T1,
        {
            "router-a": router_metrics({("v1", "200"): 11}),
            "router-new": new_pod,
            "router-old": old_pod,
            "router-unknown": unknown_start,
        },
    )

    assert window_traffic(before, after, "iris")["v1"].requests == 1 + 7


def test_a_vanished_pod_is_ignored() -> None:
    before = Scrape(
        T0,
        {"router-a": router_metrics({("v1", "200"): 10}), "router-b": router_metrics({("v1", "200"): 99})},
    )
    after = Scrape(T1, {"router-a": router_metrics({("v1", "200"): 14})})

    assert window_traffic(before, after, "iris")["v1"].requests == 4


def test_other_deployments_and_unlabelled_series_are_ignored() -> None:
    before = Scrape(T0, {"r": [*router_metrics({("v1", "200"): 1}, deployment="other")]})
    after = Scrape(
        T1,
        {
            "r": [
                *router_metrics({("v1", "200"): 50}, deployment="other"),
                *parse_exposition('modelfleet_requests_total{deployment="iris",code="200"} 5'),
            ]
        },
    )
    # "r" was known before, so the unlabelled iris series counts as new but has no version.
    assert window_traffic(before, after, "iris") == {}


def test_latency_quantile_from_bucket_deltas() -> None:
    before = Scrape(
        T0,
        {
            "r": router_metrics(
                {("v2", "200"): 1000}, buckets={"v2": [("0.1", 900), ("0.5", 1000), ("+Inf", 1000)]}
            )
        },
    )
    # In the window: 10 fast requests, 10 between 0.1 s and 0.5 s.
    after = Scrape(
        T1,
        {
            "r": router_metrics(
                {("v2", "200"): 1020}, buckets={"v2": [("0.1", 910), ("0.5", 1020), ("+Inf", 1020)]}
            )
        },
    )

    traffic = window_traffic(before, after, "iris")["v2"]

    assert traffic.latency_buckets == ((0.1, 10.0), (0.5, 20.0), (float("inf"), 20.0))
    assert traffic.latency_quantile(0.75) == pytest.approx(0.3)
    assert traffic.latency_quantile(0.5) == pytest.approx(0.1)


def test_fallback_share_sums_reasons_over_requests() -> None:
    before = Scrape(T0, {"r": router_metrics({("v2", "200"): 0}, fallbacks={("v2", "retry_on_stable"): 0})})
    after = Scrape(
        T1,
        {
            "r": router_metrics(
                {("v2", "200"): 40},
                fallbacks={("v2", "retry_on_stable"): 3, ("v2", "circuit_open"): 1},
            )
        },
    )

    traffic = window_traffic(before, after, "iris")["v2"]

    assert traffic.fallbacks == {"retry_on_stable": 3.0, "circuit_open": 1.0}
    assert traffic.fallback_rate == pytest.approx(0.1)


def test_requests_sent_to_an_active_fallback_are_no_fallbacks_of_the_version() -> None:
    """Given stable covered by an active fallback (every live request counted `degraded` against it, 50
    copies measured on it) and 5 copies that fell back, then its fallback rate is 5/50, not 55/50."""
    before = Scrape(T0, {"r": router_metrics({("v1", "200"): 0})})
    after = Scrape(
        T1,
        {
            "r": router_metrics(
                {("v1", "200"): 45, ("v1", "500"): 5},
                fallbacks={("v1", "degraded"): 50, ("v1", "retry_on_fallback"): 5},
            )
        },
    )

    traffic = window_traffic(before, after, "iris")["v1"]

    assert traffic.fallbacks == {"degraded": 50.0, "retry_on_fallback": 5.0}
    assert traffic.fallback_rate == pytest.approx(0.1)


def test_no_requests_gives_no_rates() -> None:
    before = Scrape(T0, {"r": router_metrics({("v2", "200"): 5})})
    after = Scrape(T1, {"r": router_metrics({("v2", "200"): 5})})

    traffic = window_traffic(before, after, "iris")["v2"]

    assert traffic.requests == 0
    assert traffic.error_rate is None
    assert traffic.fallback_rate is None
    assert traffic.latency_quantile(0.99) is None


def test_scrapes_out_of_order_are_refused() -> None:
    scrape = Scrape(T0, {})
    with pytest.raises(ValueError, match="is not after"):
        counter_increase(scrape, scrape)


def test_gauges_are_not_taken_for_counter_resets() -> None:
    series = 'modelfleet_requests_total{deployment="iris",version="v1",code="200"}'
    gauge_up = parse_exposition(f"process_resident_memory_bytes 9000\n{series} 10")
    gauge_down = parse_exposition(f"process_resident_memory_bytes 10\n{series} 12")

    increase = counter_increase(Scrape(T0, {"r": gauge_up}), Scrape(T1, {"r": gauge_down}))

    assert list(increase.values()) == [2.0]


def test_the_routers_own_metrics_give_windowed_rates() -> None:
    """The router's rendering and this analysis agree on names, labels and bucket bounds."""
    from modelfleet.router.metrics import RouterMetrics

    metrics = RouterMetrics()
    ok = metrics.requests.labels("iris", "iris-v2", "200")
    failed = metrics.requests.labels("iris", "iris-v2", "502")
    duration = metrics.duration.labels("iris", "iris-v2")
    ok.inc(50)
    before = Scrape(T0, {"router-0": parse_exposition(metrics.render().decode())})
    ok.inc(90)
    failed.inc(10)
    metrics.fallbacks.labels("iris", "iris-v2", "retry_on_stable").inc(10)
    for _ in range(99):
        duration.observe(0.004)
    duration.observe(2.5)
    after = Scrape(T1, {"router-0": parse_exposition(metrics.render().decode())})

    traffic = window_traffic(before, after, "iris")["iris-v2"]

    assert traffic.requests == 100
    assert traffic.error_rate == pytest.approx(0.1)
    assert traffic.fallback_rate == pytest.approx(0.1)
    p50 = traffic.latency_quantile(0.5)
    assert p50 is not None
    assert 0.003 < p50 <= 0.004
    p999 = traffic.latency_quantile(0.999)
    assert p999 is not None
    assert 2.0 < p999 <= 3.0
