"""Population stability index of canary predictions against stable ones."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelfleet.analysis.drift import population_stability_index


def test_same_class_mix_has_no_drift() -> None:
    stable = [0, 1, 2] * 30
    canary = [2, 1, 0] * 10

    assert population_stability_index(stable, canary) == pytest.approx(0.0, abs=1e-9)


def test_class_shift_matches_the_psi_formula() -> None:
    stable = [0] * 50 + [1] * 30 + [2] * 20
    canary = [0] * 20 + [1] * 30 + [2] * 50

    expected = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.5 - 0.2) * math.log(0.5 / 0.2)
    assert population_stability_index(stable, canary) == pytest.approx(expected, rel=1e-3)


def test_a_class_missing_on_one_side_stays_finite_thanks_to_smoothing() -> None:
    psi = population_stability_index([0] * 100, [1] * 100)

    assert math.isfinite(psi)
    assert psi > 5.0


def test_string_labels_and_numbers_as_floats_are_categories() -> None:
    assert population_stability_index(["setosa", "virginica"], ["setosa", "virginica"]) == pytest.approx(0.0)
    assert population_stability_index([0, 1], [0.0, 1.0]) == pytest.approx(0.0)


def test_continuous_values_binned_by_stable_quantiles() -> None:
    rng = random.Random(7)
    stable = [rng.gauss(0.0, 1.0) for _ in range(2000)]
    same = [rng.gauss(0.0, 1.0) for _ in range(2000)]
    shifted = [rng.gauss(1.0, 1.0) for _ in range(2000)]

    assert population_stability_index(stable, same) < 0.05
    assert population_stability_index(stable, shifted) > 0.25


def test_constant_stable_sample_is_handled() -> None:
    stable = [0.5] * 100
    assert population_stability_index(stable, [0.5] * 10, kind="continuous") == pytest.approx(0.0)
    assert population_stability_index(stable, [0.7] * 10, kind="continuous") > 1.0


def test_many_distinct_integers_are_continuous() -> None:
    stable = list(range(100))
    # As categories, no value would be shared; as quantile bins the two samples match.
    assert population_stability_index(stable, list(range(1, 101))) < 0.05


@pytest.mark.parametrize(
    ("stable", "canary", "kind", "message"),
    [
        ([], [1], "auto", "both versions"),
        ([1], [], "auto", "both versions"),
        (["a"], ["b"], "continuous", "numeric"),
        ([1.0, math.nan], [1.0], "continuous", "NaN"),
    ],
)
def test_bad_samples_are_refused(stable: list[object], canary: list[object], kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        population_stability_index(stable, canary, kind=kind)  # type: ignore[arg-type]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([1.0], [1.0], bins=1)
    with pytest.raises(ValueError, match="epsilon"):
        population_stability_index([1.0], [1.0], epsilon=0)


@given(
    stable=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    canary=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
)
def test_psi_is_finite_non_negative_and_zero_against_itself(stable: list[float], canary: list[float]) -> None:
    psi = population_stability_index(stable, canary)

    assert math.isfinite(psi)
    assert psi >= -1e-12
    assert population_stability_index(stable, stable) == pytest.approx(0.0, abs=1e-9)
