"""Parsing the router's /metrics text into samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


def test_counters_keep_their_names_as_written() -> None:
    text = """
# HELP modelfleet_requests_total Requests answered.
# TYPE modelfleet_requests_total counter
modelfleet_requests_total{code="200"} 4
# TYPE jobs counter
jobs 2
# TYPE modelfleet_fallbacks_total counter
modelfleet_fallbacks_total{reason="static"} 1
"""
    assert [(s.name, s.value) for s in parse_exposition(text)] == [
        ("modelfleet_requests_total", 4.0),
        ("jobs", 2.0),
        ("modelfleet_fallbacks_total", 1.0),
    ]


def test_histogram_buckets_keep_their_le_labels_and_the_family_its_order() -> None:
    text = """
# HELP d Duration.
# TYPE d histogram
d_bucket{version="v1",le="0.1"} 3
d_bucket{version="v1",le="1.0"} 5
d_bucket{version="v1",le="+Inf"} 6
d_sum{version="v1"} 2.5
d_count{version="v1"} 6
untyped_after 7
"""
    samples = parse_exposition(text)

    assert [(s.name, s.label("le"), s.value) for s in samples] == [
        ("d_bucket", "0.1", 3.0),
        ("d_bucket", "1.0", 5.0),
        ("d_bucket", "+Inf", 6.0),
        ("d_sum", "", 2.5),
        ("d_count", "", 6.0),
        ("untyped_after", "", 7.0),
    ]
    assert samples[0].labels == (("le", "0.1"), ("version", "v1"))
    assert all(isinstance(s.value, float) for s in samples)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("m{a=1} 2", 1),
        ('ok 1\nm{a="1" 2', 2),
        ('m{a="1} 2', 1),
        ("m abc", 1),
        ("m 1 abc", 1),
        ("m", 1),
        ('m{a="1"}', 1),
        ('m{a="1",a="2"} 1', 1),
        ('m{a="1" b="2"} 1', 1),
        ('{a="1"} 1', 1),
        ("9m 1", 1),
        ("ok 1\n\n# TYPE m bogus\nm 1", 3),
        ("# TYPE m", 1),
        ("m 1 " + "9" * 400, 1),
    ],
)
def test_bad_lines_are_named_in_the_error(text: str, line: int) -> None:
    bad = text.splitlines()[line - 1]
    with pytest.raises(ExpositionError, match=f"^line {line}: ") as raised:
        parse_exposition(text)
    assert str(raised.value).endswith(repr(bad[:120]))  # long lines are cut


def test_values_too_large_for_a_float_are_infinite() -> None:
    big = "9" * 400
    assert [s.value for s in parse_exposition(f"m {big}\nm -{big}\nm 1e999")] == [
        math.inf,
        -math.inf,
        math.inf,
    ]


def test_an_exposition_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_exposition("m abc")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["m", "_total", "{", "}", 'a="', '\\"', "\\", ",", "=", " ", "1", "+Inf", "NaN", "\n", "9" * 400]
        )
        | st.sampled_from(["# TYPE m counter\n", "# TYPE m histogram\n", "# HELP m x\n", "#"])
        | st.text(max_size=3),
        max_size=30,
    ).map("".join)
)
def test_any_text_gives_samples_or_an_exposition_error(text: str) -> None:
    outcome: list[Sample] | ExpositionError
    try:
        outcome = parse_exposition(text)
    except ExpositionError as error:
        outcome = error
    if isinstance(outcome, ExpositionError):
        assert str(outcome).startswith("line ")
    else:
        assert all(isinstance(s, Sample) and isinstance(s.value, float) for s in outcome)


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
