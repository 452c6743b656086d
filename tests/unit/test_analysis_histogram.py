"""histogram_quantile, checked against hand-computed Prometheus answers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfleet.analysis.histogram import histogram_quantile

INF = math.inf
BUCKETS = [(0.1, 10.0), (0.5, 20.0), (INF, 20.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.1),  # rank 10 ends the first bucket exactly
        (0.25, 0.05),  # rank 5: halfway through [0, 0.1]
        (0.75, 0.3),  # rank 15: halfway through (0.1, 0.5]
        (1.0, 0.5),
        (0.0, 0.0),
    ],
)
def test_linear_interpolation_inside_the_bucket(q: float, expected: float) -> None:
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)


def test_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.9, [(0.1, 10.0), (INF, 20.0)]) == 0.1


def test_first_bucket_with_a_negative_bound_is_its_own_answer() -> None:
    assert histogram_quantile(0.1, [(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)]) == -1.0


def test_order_and_duplicate_bounds_do_not_matter() -> None:
    shuffled = [(INF, 12.0), (0.5, 12.0), (0.1, 6.0), (INF, 8.0), (0.5, 8.0), (0.1, 4.0)]
    assert histogram_quantile(0.75, shuffled) == pytest.approx(0.3)


def test_non_monotonic_counts_are_clamped() -> None:
    assert histogram_quantile(0.5, [(0.1, 10.0), (0.5, 8.0), (INF, 20.0)]) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [(INF, 5.0)],
        [(0.1, 5.0), (0.5, 5.0)],  # no +Inf bucket
        [(0.1, 0.0), (INF, 0.0)],  # no observation
    ],
)
def test_no_answer_without_a_usable_histogram(buckets: list[tuple[float, float]]) -> None:
    assert histogram_quantile(0.5, buckets) is None


@pytest.mark.parametrize("q", [-0.1, 1.5])
def test_quantile_outside_0_1_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(q, BUCKETS)


@given(
    counts=st.lists(st.integers(min_value=0, max_value=1000), min_size=2, max_size=8),
    q1=st.floats(min_value=0, max_value=1),
    q2=st.floats(min_value=0, max_value=1),
)
def test_quantiles_are_monotonic_and_within_the_finite_bounds(
    counts: list[int], q1: float, q2: float
) -> None:
    bounds = [0.01 * 2**i for i in range(len(counts) - 1)] + [INF]
    cumulative = [float(sum(counts[: i + 1])) for i in range(len(counts))]
    buckets = list(zip(bounds, cumulative, strict=True))
    low, high = sorted((q1, q2))

    a, b = histogram_quantile(low, buckets), histogram_quantile(high, buckets)

    if cumulative[-1] == 0:
        assert a is None
        assert b is None
    else:
        assert a is not None
        assert b is not None
        assert 0.0 <= a <= b <= bounds[-2]
