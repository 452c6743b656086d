"""Parsing the router's /metrics text into samples."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from modelfleet.analysis.exposition import ExpositionError, Sample, parse_exposition


def test_counters_and_histograms_with_labels_are_read() -> None:
    text = """
# HELP modelfleet_requests_total Requests answered.
# TYPE modelfleet_requests_total counter
modelfleet_requests_total{deployment="iris",version="iris-v1",code="200"} 42
modelfleet_requests_total{code="503",deployment="iris",version="iris-v1",} 3 1712345678000
# TYPE modelfleet_request_duration_seconds histogram
modelfleet_request_duration_seconds_bucket{version="iris-v1",le="0.005"} 1.0
modelfleet_request_duration_seconds_bucket{version="iris-v1",le="+Inf"} 4.5e1
process_start_time_seconds 1.7e9
"""
    samples = parse_exposition(text)

    assert samples[0] == Sample(
        "modelfleet_requests_total", (("code", "200"), ("deployment", "iris"), ("version", "iris-v1")), 42.0
    )
    assert samples[1].label("code") == "503"
    assert samples[1].value == 3.0
    assert samples[2].label("le") == "0.005"
    assert samples[3].label("le") == "+Inf"
    assert samples[3].value == 45.0
    assert samples[4] == Sample("process_start_time_seconds", (), 1.7e9)
    assert len(samples) == 5


def test_escaped_label_values_and_special_values() -> None:
    text = 'm{path="a\\"b\\\\c\\nd"} NaN\nm{x="1"} +Inf\nm{x="2"} -Inf\n'
    first, second, third = parse_exposition(text)

    assert first.label("path") == 'a"b\\c\nd'
    assert math.isnan(first.value)
    assert second.value == math.inf
    assert third.value == -math.inf


def test_missing_label_returns_the_default() -> None:
    (sample,) = parse_exposition('m{a="1"} 1')
    assert sample.label("b") == ""
    assert sample.label("b", "none") == "none"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m{a=1} 2", 'line 1: expected =" after label'),
        ('ok 1\nm{a="1" 2', "line 2: expected , or } after label 'a'"),
        ('m{a="1} 2', "unterminated value of label 'a'"),
        ("m 1 2 3", "expected a value and an optional timestamp"),
        ("m abc", "value 'abc' is not a number"),
        ('m{a="1",a="2"} 1', "label 'a' repeated"),
        ('m{a="\\q"} 1', "bad escape"),
        ('{a="1"} 1', "expected a metric name"),
    ],
)
def test_bad_lines_are_named_in_the_error(text: str, expected: str) -> None:
    with pytest.raises(ExpositionError, match="line") as raised:
        parse_exposition(text)
    assert expected in str(raised.value)


def test_reads_what_prometheus_client_writes() -> None:
    registry = CollectorRegistry()
    requests = Counter(
        "modelfleet_requests", "Requests.", ["deployment", "version", "code"], registry=registry
    )
    duration = Histogram(
        "modelfleet_request_duration_seconds",
        "Duration.",
        ["deployment", "version"],
        buckets=(0.01, 0.1),
        registry=registry,
    )
    requests.labels("iris", "iris-v2", "200").inc(7)
    duration.labels("iris", "iris-v2").observe(0.05)

    samples = parse_exposition(generate_latest(registry).decode())

    by_name = {(s.name, s.label("le")): s.value for s in samples}
    assert by_name[("modelfleet_requests_total", "")] == 7.0
    assert by_name[("modelfleet_request_duration_seconds_bucket", "0.01")] == 0.0
    assert by_name[("modelfleet_request_duration_seconds_bucket", "0.1")] == 1.0
    assert by_name[("modelfleet_request_duration_seconds_bucket", "+Inf")] == 1.0
    assert by_name[("modelfleet_request_duration_seconds_count", "")] == 1.0
