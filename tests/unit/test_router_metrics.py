"""Router metrics: the contract's names and labels, and a valid Prometheus text exposition."""

from __future__ import annotations

import itertools

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.router.metrics import DURATION_BUCKETS, Counter, Histogram, Registry, RouterMetrics


def families(text: bytes) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def test_the_contract_families_are_exposed_with_deployment_and_version_labels() -> None:
    metrics = RouterMetrics(in_flight=lambda: 3)
    metrics.requests.labels("iris", "iris-v2", "500").inc()
    metrics.duration.labels("iris", "iris-v2").observe(0.012)
    metrics.fallbacks.labels("iris", "iris-v2", "retry_on_stable").inc(2)
    metrics.mirrored.labels("iris", "iris-v2").inc()
    parsed = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    # prometheus_client names counter families without the _total suffix.
    requests = parsed["modelfleet_requests"]
    assert requests.type == "counter"
    [sample] = requests.samples
    assert sample.name == "modelfleet_requests_total"
    assert sample.labels == {"deployment": "iris", "version": "iris-v2", "code": "500"}
    assert sample.value == 1
    [fallback] = parsed["modelfleet_fallbacks"].samples
    assert fallback.labels == {"deployment": "iris", "version": "iris-v2", "reason": "retry_on_stable"}
    assert fallback.value == 2
    [mirrored] = parsed["modelfleet_mirrored_requests"].samples
    assert mirrored.labels == {"deployment": "iris", "version": "iris-v2"}
    duration = parsed["modelfleet_request_duration_seconds"]
    assert duration.type == "histogram"
    count = next(s for s in duration.samples if s.name.endswith("_count"))
    assert count.labels == {"deployment": "iris", "version": "iris-v2"}
    assert count.value == 1
    [in_flight] = parsed["modelfleet_router_in_flight_requests"].samples
    assert in_flight.value == 3
    assert "process_start_time_seconds" in parsed


def test_the_capture_families_are_exposed_with_their_labels() -> None:
    metrics = RouterMetrics()
    metrics.capture_records.labels("iris", "iris-v2").inc(7)
    metrics.capture_dropped.labels("iris", "store_error").inc(3)
    metrics.capture_batches.labels("iris", "failed").inc()
    metrics.capture_written_records.labels("iris").inc(4)
    metrics.capture_written_bytes.labels("iris").inc(512)
    metrics.capture_buffered_records.labels("iris").set(2)
    metrics.capture_buffered_bytes.labels("iris").set(900)
    parsed = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}

    expected = {
        "modelfleet_capture_records": ({"deployment": "iris", "version": "iris-v2"}, 7, "counter"),
        "modelfleet_capture_dropped": ({"deployment": "iris", "reason": "store_error"}, 3, "counter"),
        "modelfleet_capture_batches": ({"deployment": "iris", "outcome": "failed"}, 1, "counter"),
        "modelfleet_capture_written_records": ({"deployment": "iris"}, 4, "counter"),
        "modelfleet_capture_written_bytes": ({"deployment": "iris"}, 512, "counter"),
        "modelfleet_capture_buffered_records": ({"deployment": "iris"}, 2, "gauge"),
        "modelfleet_capture_buffered_bytes": ({"deployment": "iris"}, 900, "gauge"),
    }
    for name, (labels, value, kind) in expected.items():
        [sample] = parsed[name].samples
        assert (sample.labels, sample.value, parsed[name].type) == (labels, value, kind)


def test_histogram_buckets_are_cumulative_and_end_in_inf() -> None:
    registry = Registry()
    histogram = Histogram("x_seconds", "x", ("version",), buckets=(0.001, 0.01, 0.1))
    registry.register(histogram)
    child = histogram.labels("a")
    for value in (0.0005, 0.001, 0.005, 0.05, 5.0):
        child.observe(value)
    [family] = text_string_to_metric_families(registry.render().decode())
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.001": 2, "0.01": 3, "0.1": 4, "+Inf": 5}
    total = next(s.value for s in family.samples if s.name == "x_seconds_sum")
    assert total == pytest.approx(5.0565)


def test_duration_buckets_resolve_p50_to_p99_between_1ms_and_10s() -> None:
    assert DURATION_BUCKETS[0] <= 0.001
    assert DURATION_BUCKETS[-1] >= 10.0
    ratios = [b / a for a, b in itertools.pairwise(DURATION_BUCKETS) if a >= 0.001]
    assert max(ratios) <= 1.5


def test_label_values_are_escaped() -> None:
    registry = Registry()
    counter = Counter("odd_total", "odd", ("version",))
    registry.register(counter)
    counter.labels('a"b\\c\nd').inc()
    [family] = text_string_to_metric_families(registry.render().decode())
    assert family.samples[0].labels == {"version": 'a"b\\c\nd'}


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="must end in _total"):
        Counter("requests", "x")
    counter = Counter("a_total", "x", ("one", "two"))
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("only-one")
    registry = Registry()
    registry.register(counter)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Counter("a_total", "again"))
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram("h", "h", buckets=(0.1, 0.01))
