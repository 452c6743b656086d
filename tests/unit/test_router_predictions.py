"""Prediction samples the operator computes drift from."""

from __future__ import annotations

import json

import pytest

from modelfleet.router.predictions import MAX_VALUES_PER_RESPONSE, PredictionSample, extract


def v2(data: object) -> bytes:
    return json.dumps({"model_name": "iris", "outputs": [{"name": "label", "data": data}]}).encode()


@pytest.mark.parametrize(
    ("body", "protocol", "values"),
    [
        (v2([0, 2, 1]), "v2", [0, 2, 1]),
        (v2([[0.1, 0.9], [0.7, 0.3]]), "v2", [0.1, 0.9, 0.7, 0.3]),
        (b'{"predictions": [1, 1, 0]}', "v1", [1, 1, 0]),
        (b'{"predictions": [["a"], ["b"]]}', "v1", ["a", "b"]),
        (v2([2]), "http", [2]),
        (b'{"predictions": [0.5]}', "http", [0.5]),
        (b'{"predictions": [1, {"x": 1}, null, 2]}', "v1", [1, 2]),
    ],
)
def test_values_are_read_from_v2_outputs_and_v1_predictions(
    body: bytes, protocol: str, values: list[object]
) -> None:
    assert extract(body, protocol) == values


@pytest.mark.parametrize(
    ("body", "protocol"),
    [
        (b'{"predictions": [1]}', "v2"),  # v1 shape on a v2 version
        (v2([1]), "v1"),
        (b"not json", "v2"),
        (b"{broken", "v2"),
        (b"[1, 2]", "v1"),
        (b'{"outputs": []}', "v2"),
        (b'{"outputs": [{"data": 3}]}', "v2"),
        (b'{"outputs": ["x"]}', "v2"),
        (b"", "http"),
    ],
)
def test_anything_else_gives_no_values(body: bytes, protocol: str) -> None:
    assert extract(body, protocol) == []


def test_one_response_contributes_at_most_the_cap() -> None:
    assert len(extract(v2(list(range(5000))), "v2")) == MAX_VALUES_PER_RESPONSE


def test_the_sample_keeps_the_newest_values_up_to_its_size() -> None:
    sample = PredictionSample("v2", size=5)
    for start in range(0, 12, 3):
        sample.offer(v2([start, start + 1, start + 2]))
    assert sample.snapshot() == [7, 8, 9, 10, 11]


def test_reads_are_limited_per_second_with_a_burst_of_the_same_size() -> None:
    sample = PredictionSample("v2", per_second=10)
    assert sum(sample.wants(100.0) for _ in range(50)) == 10  # the burst
    assert sum(sample.wants(100.5) for _ in range(50)) == 5  # half a second refills half
    assert sum(sample.wants(160.0) for _ in range(50)) == 10  # never more than one burst
    unlimited = PredictionSample("v2", per_second=0)
    assert all(unlimited.wants(1.0) for _ in range(1000))
