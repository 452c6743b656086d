"""Data drift of request inputs against a training data profile.

The statistics are checked against libraries nobody here wrote, on the same data: scipy's two-sample KS
statistic and Jensen-Shannon distance, and the PSI formula written out again with numpy. (evidently's
PSI agreed within 1e-9 on the same bins in a separate venv; it needs pandas < 3, so it is no test
dependency here, and a test that can only skip would prove nothing.)
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, kstest
from sklearn.datasets import load_iris

from modelfleet.analysis.assessment import ProviderError, SampledValue
from modelfleet.analysis.datadrift import (
    OTHER,
    PROFILE_FORMAT,
    SKETCH_QUANTILES,
    CategoricalFeature,
    Method,
    NumericFeature,
    ProfileError,
    as_sampled,
    bin_counts,
    build_profile,
    category,
    data_drift,
    jensen_shannon_distance,
    ks_statistic,
    load_profile,
    psi,
    quantile_sketch,
    render_profile,
)
from modelfleet.api.monitor import Verdict
from modelfleet.cli import main as modelfleet
from modelfleet.cli import usage
from modelfleet.fetch.digest import digest_path

KS_TOLERANCE = 1 / SKETCH_QUANTILES + 1e-12
"""The profile keeps 101 quantiles (0, 1/100, ..., 1) of the training data, and the training CDF is read
off them, linear in between. With the quantile at p taken as the smallest value whose share at or below
it reaches p, the data's own CDF lies between j/100 and (j+1)/100 wherever the sketch reads between
those, ties included: the two CDFs are never more than 1/100 apart, so neither are the two KS
statistics (sup |F - G| moves by at most sup |F - F'|)."""


def gauss(seed: int, n: int, mean: float = 0.0, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


def numpy_psi(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], epsilon: float = 1e-4) -> float:
    """PSI written out independently: shares, epsilon added to each and renormalised, then the sum."""
    p = (expected / expected.sum() + epsilon) / (1 + epsilon * len(expected))
    q = (actual / actual.sum() + epsilon) / (1 + epsilon * len(actual))
    return float(np.sum((q - p) * np.log(q / p)))


def numpy_bins(edges: tuple[float, ...], values: list[float]) -> np.ndarray[Any, Any]:
    """Counts per bin, bin = number of edges strictly below the value (the open-ended bins included)."""
    return np.bincount(
        np.searchsorted(np.array(edges), np.array(values), side="left"), minlength=len(edges) + 1
    )


def profile_of(columns: dict[str, list[Any]], **options: Any) -> Any:
    return load_profile(render_profile(build_profile(columns, **options)).encode())


def numeric(profile: Any, name: str) -> NumericFeature:
    feature = profile.features[name]
    assert isinstance(feature, NumericFeature)
    return feature


# --- the statistics against scipy and numpy ---------------------------------------------------------


def test_ks_matches_scipy_two_sample_statistic_within_the_sketch_resolution() -> None:
    training = gauss(1, 3000)
    for live in (gauss(2, 400), gauss(3, 400, mean=0.3), gauss(4, 400, sd=1.5), gauss(5, 50, mean=2.0)):
        profile = profile_of({"x": training})

        ours = ks_statistic(numeric(profile, "x").quantiles or (), live)

        assert ours == pytest.approx(ks_2samp(training, live, method="asymp").statistic, abs=KS_TOLERANCE)


def test_ks_on_iris_with_its_many_ties_matches_scipy() -> None:
    iris = load_iris()
    petal_length = [float(v) for v in iris.data[:, 2]]  # 1 decimal: 43 distinct values in 150
    versicolor = [float(v) for v, label in zip(iris.data[:, 2], iris.target, strict=True) if label == 1]
    profile = profile_of({"petal_length": petal_length})
    sketch = numeric(profile, "petal_length").quantiles or ()

    for live in (versicolor, petal_length, [v + 0.5 for v in petal_length]):
        assert ks_statistic(sketch, live) == pytest.approx(
            ks_2samp(petal_length, live, method="asymp").statistic, abs=KS_TOLERANCE
        )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's p-value of a sample of 1; unused here
@settings(max_examples=80, deadline=None)
@given(
    training=st.lists(st.integers(-6, 6) | st.floats(-1e6, 1e6), min_size=1, max_size=300),
    live=st.lists(st.integers(-8, 8) | st.floats(-1e6, 1e6), min_size=1, max_size=100),
)
def test_ks_is_within_the_sketch_resolution_of_scipy_for_any_data(
    training: list[float], live: list[float]
) -> None:
    ours = ks_statistic(quantile_sketch([float(v) for v in training]), [float(v) for v in live])

    assert 0.0 <= ours <= 1.0
    assert ours == pytest.approx(ks_2samp(training, live, method="asymp").statistic, abs=KS_TOLERANCE)


UNIFORM_SKETCH = [j / SKETCH_QUANTILES for j in range(SKETCH_QUANTILES + 1)]
"""The sketch of the uniform distribution on [0, 1], whose CDF linear interpolation reads exactly."""


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-0.5, 1.5), min_size=1, max_size=200))
def test_ks_against_a_sketch_of_a_known_cdf_is_scipys_one_sample_statistic(live: list[float]) -> None:
    """Where the sketch is exact, so is the statistic: the interpolation and both sides of every jump
    are checked to rounding, not merely within the sketch's resolution."""
    assert ks_statistic(UNIFORM_SKETCH, live) == pytest.approx(kstest(live, "uniform").statistic, abs=1e-12)


def test_jsd_is_scipys_jensen_shannon_distance_on_the_same_bins() -> None:
    training = gauss(1, 2000)
    profile = profile_of({"x": training})
    feature = numeric(profile, "x")
    for live in (gauss(2, 500), gauss(3, 500, mean=1.0), [10.0] * 200):
        counts = numpy_bins(feature.edges, live)

        result = data_drift(profile, {"x": live}, method="jsd", limit=1.0)

        expected = jensenshannon(np.array(feature.counts), counts, base=2)
        assert result.features[0].value == pytest.approx(expected, abs=1e-12)
        assert jensen_shannon_distance(feature.counts, counts.tolist()) == pytest.approx(expected, abs=1e-12)


def test_psi_is_the_psi_formula_on_the_profiles_bins() -> None:
    training = gauss(1, 2000)
    profile = profile_of({"x": training})
    feature = numeric(profile, "x")
    for live in (gauss(2, 500), gauss(3, 500, mean=0.5), gauss(4, 500, sd=0.3)):
        expected = numpy_psi(np.array(feature.counts), numpy_bins(feature.edges, live))

        result = data_drift(profile, {"x": live}, method="psi", limit=1.0)

        assert result.features[0].value == pytest.approx(expected, rel=1e-12)


def test_the_bins_are_quantile_bins_of_the_training_data() -> None:
    training = gauss(1, 1000)
    feature = numeric(profile_of({"x": training}), "x")

    assert len(feature.edges) == 9
    assert feature.edges == tuple(sorted(training)[(i * 1000) // 10] for i in range(1, 10))
    assert sum(feature.counts) == 1000
    assert all(99 <= count <= 101 for count in feature.counts)


@given(
    st.integers(1, 12).flatmap(
        lambda k: st.tuples(
            st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(any),
            st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(any),
        )
    )
)
def test_psi_is_never_negative_and_jsd_is_a_symmetric_distance_in_0_1(
    counts: tuple[list[int], list[int]],
) -> None:
    p, q = counts

    assert psi(p, q) >= -1e-12
    assert psi(p, p) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= jensen_shannon_distance(p, q) <= 1.0
    assert jensen_shannon_distance(p, q) == pytest.approx(jensen_shannon_distance(q, p), abs=1e-12)
    assert jensen_shannon_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)


def test_disjoint_bins_are_jsd_1() -> None:
    assert jensen_shannon_distance([10, 0], [0, 3]) == pytest.approx(1.0)


# --- verdicts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(Method))
def test_the_training_data_itself_shows_no_drift_and_passes(method: Method) -> None:
    training = gauss(1, 2000)
    profile = profile_of({"x": training, "y": gauss(2, 2000, mean=10.0)})

    result = data_drift(profile, {"x": training, "y": gauss(2, 2000, mean=10.0)}, method=method, limit=0.1)

    assert result.verdict is Verdict.PASS
    assert result.exceeding == ()
    assert result.value is not None
    assert result.value <= (KS_TOLERANCE if method is Method.KS else 1e-12)


LIMITS = [("psi", 0.2), ("ks", 0.2), ("jsd", 0.2)]
"""Limits a sample of 240 inputs of the training distribution stays well within (docs/monitoring.md)."""


@pytest.mark.parametrize(("method", "limit"), LIMITS)
def test_a_fresh_sample_of_the_training_distribution_passes(method: str, limit: float) -> None:
    profile = profile_of({"x": gauss(1, 2000)})

    result = data_drift(profile, {"x": gauss(2, 240)}, method=method, limit=limit)

    assert result.verdict is Verdict.PASS
    assert result.value is not None
    assert result.value <= limit


@pytest.mark.parametrize(("method", "limit"), LIMITS)
def test_inputs_shifted_by_two_sd_fail_and_the_summary_names_the_feature(method: str, limit: float) -> None:
    profile = profile_of({"petal_length": gauss(1, 2000, 4.0, 1.0), "sepal_width": gauss(2, 2000, 3.0, 0.4)})
    live = {"petal_length": gauss(3, 240, 6.0, 1.0), "sepal_width": gauss(4, 240, 3.0, 0.4)}

    result = data_drift(profile, live, method=method, limit=limit)

    assert result.verdict is Verdict.FAIL
    assert result.exceeding == ("petal_length",)
    worst, other = result.features
    assert (worst.feature, worst.verdict, worst.sample_size) == ("petal_length", Verdict.FAIL, 240)
    assert other.verdict is Verdict.PASS
    assert result.value == worst.value
    assert result.summary == f"petal_length {method} {worst.value:.3g} > {limit:g} (n=240)"


def test_features_are_listed_worst_first() -> None:
    profile = profile_of({name: gauss(i, 2000) for i, name in enumerate("abcd")})
    live = {"a": gauss(10, 300, 0.5), "b": gauss(11, 300, 3.0), "c": gauss(12, 300), "d": gauss(13, 20)}

    result = data_drift(profile, live, method="psi", limit=0.2)

    assert [(f.feature, f.verdict) for f in result.features] == [
        ("b", Verdict.FAIL),
        ("a", Verdict.FAIL),
        ("d", Verdict.INCONCLUSIVE),
        ("c", Verdict.PASS),
    ]
    assert result.exceeding == ("b", "a")
    assert result.summary.startswith("b psi ")
    assert "; a psi " in result.summary


def test_a_small_sample_is_inconclusive_even_when_shifted() -> None:
    profile = profile_of({"x": gauss(1, 2000)})

    result = data_drift(profile, {"x": gauss(2, 20, mean=3.0)}, method="psi", limit=0.2, min_samples=50)

    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.exceeding == ()
    assert result.features[0].value is None
    assert result.summary == "x: n=20 < minSamples 50"


def test_the_minimum_counts_usable_inputs_only() -> None:
    profile = profile_of({"x": gauss(1, 500)})
    live: list[object] = [*gauss(2, 60), None, math.nan, "5.1", True, math.inf]

    below = data_drift(profile, {"x": live}, method="psi", limit=0.2, min_samples=61)
    enough = data_drift(profile, {"x": live}, method="psi", limit=5.0, min_samples=60)

    assert below.verdict is Verdict.INCONCLUSIVE
    assert below.summary == "x: n=60 < minSamples 61, 5 unusable"
    (feature,) = enough.features
    assert (feature.verdict, feature.sample_size, feature.unusable) == (Verdict.PASS, 60, 5)
    assert feature.message.endswith("(n=60, 5 unusable)")


def test_a_categorical_shift_fails_and_unseen_values_count_as_other() -> None:
    species = ["setosa"] * 50 + ["versicolor"] * 50 + ["virginica"] * 50
    profile = profile_of({"species": species})
    live = ["setosa"] * 150 + ["versicolor"] * 30 + ["virginica"] * 10 + ["unknown"] * 10

    result = data_drift(profile, {"species": live}, method="psi", limit=0.2)
    distance = data_drift(profile, {"species": live}, method="jsd", limit=0.2)

    expected = numpy_psi(np.array([50, 50, 50, 0]), np.array([150, 30, 10, 10]))
    assert result.features[0].value == pytest.approx(expected, rel=1e-12)
    assert result.verdict is Verdict.FAIL
    assert result.exceeding == ("species",)
    assert distance.features[0].value == pytest.approx(
        jensenshannon([50, 50, 50, 0], [150, 30, 10, 10], base=2), abs=1e-12
    )


def test_the_same_category_mix_passes_whatever_the_value_types() -> None:
    profile = profile_of({"rooms": [1, 2, 2, 3] * 50}, categorical=["rooms"])

    result = data_drift(profile, {"rooms": [1.0, "2", 2, 3] * 30}, method="psi", limit=0.01)

    assert result.verdict is Verdict.PASS
    assert result.value == pytest.approx(0.0, abs=1e-12)


def test_a_feature_missing_from_the_profile_or_the_sample_is_reported_and_the_rest_compared() -> None:
    profile = profile_of({"a": gauss(1, 1000), "b": gauss(2, 1000)})

    result = data_drift(
        profile, {"a": gauss(3, 300, mean=3.0)}, method="psi", limit=0.2, features=["a", "b", "colour"]
    )

    by_name = {f.feature: f for f in result.features}
    assert by_name["a"].verdict is Verdict.FAIL
    assert (by_name["b"].verdict, by_name["b"].message) == (
        Verdict.INCONCLUSIVE,
        "b: not in the sampled inputs",
    )
    assert (by_name["colour"].verdict, by_name["colour"].message) == (
        Verdict.ERROR,
        "colour: not in the profile (a, b)",
    )
    assert result.verdict is Verdict.FAIL


def test_only_the_selected_features_are_compared() -> None:
    profile = profile_of({"a": gauss(1, 1000), "b": gauss(2, 1000)})
    live = {"a": gauss(3, 300), "b": gauss(4, 300, mean=5.0)}

    result = data_drift(profile, live, method="psi", limit=0.2, features=["a"])

    assert [f.feature for f in result.features] == ["a"]
    assert result.verdict is Verdict.PASS


def test_ks_leaves_categorical_features_out_unless_they_are_named() -> None:
    profile = profile_of({"x": gauss(1, 500), "species": ["a", "b"] * 250})
    live = {"x": gauss(2, 200), "species": ["a"] * 200}

    implicit = data_drift(profile, live, method="ks", limit=0.2)
    explicit = data_drift(profile, live, method="ks", limit=0.2, features=["x", "species"])

    assert [f.feature for f in implicit.features] == ["x"]
    assert implicit.not_compared == ("species",)
    assert implicit.verdict is Verdict.PASS
    assert explicit.verdict is Verdict.ERROR
    assert "ks compares numeric features, species is categorical" in explicit.summary


def test_ks_without_a_quantile_sketch_is_an_error_of_that_feature() -> None:
    document = build_profile({"x": gauss(1, 500)})
    del document["features"]["x"]["quantiles"]
    profile = load_profile(document)

    assert data_drift(profile, {"x": gauss(2, 200)}, method="psi", limit=0.2).verdict is Verdict.PASS
    result = data_drift(profile, {"x": gauss(2, 200)}, method="ks", limit=0.2)
    assert result.verdict is Verdict.ERROR
    assert "no quantiles for ks" in result.summary


def test_a_passing_summary_names_the_highest_feature() -> None:
    profile = profile_of({"a": gauss(1, 2000), "b": gauss(2, 2000)})

    result = data_drift(profile, {"a": gauss(3, 500), "b": gauss(4, 500)}, method="jsd", limit=0.3)

    worst = result.features[0]
    assert (
        result.summary == f"{worst.feature} jsd {worst.value:.3g} <= 0.3 (n=500), the highest of 2 features"
    )


# --- the dataDrift metric's value ---------------------------------------------------------------------


def test_a_failing_comparison_is_the_metrics_value_naming_the_features_that_drifted() -> None:
    profile = profile_of({"petal_length": gauss(1, 2000, 4.0, 1.0), "sepal_width": gauss(2, 2000, 3.0, 0.4)})
    live = {"petal_length": gauss(3, 240, 6.0, 1.0), "sepal_width": gauss(4, 300, 3.0, 0.4)}
    drift = data_drift(profile, live, method="psi", limit=0.2)

    value = as_sampled(drift)

    assert isinstance(value, SampledValue)
    assert value.value == drift.value
    assert value.samples == 240  # the fewest inputs any compared feature had
    assert value.detail == drift.summary
    assert value.detail.startswith("petal_length psi ")


def test_a_feature_with_too_few_inputs_makes_the_value_count_them() -> None:
    profile = profile_of({"a": gauss(1, 2000), "b": gauss(2, 2000)})
    drift = data_drift(profile, {"a": gauss(3, 300), "b": gauss(4, 40)}, method="psi", limit=0.2)

    value = as_sampled(drift)

    assert isinstance(value, SampledValue)
    assert value.samples == 40  # below minSamples: the assessment says Inconclusive
    assert value.detail == "b: n=40 < minSamples 100"


def test_a_feature_missing_from_the_inputs_counts_as_none() -> None:
    profile = profile_of({"a": gauss(1, 2000)})

    value = as_sampled(data_drift(profile, {}, method="psi", limit=0.2))

    assert isinstance(value, SampledValue)
    assert (value.samples, value.detail) == (0, "a: not in the sampled inputs")
    assert math.isnan(value.value)


def test_a_feature_that_cannot_be_compared_is_a_provider_error() -> None:
    profile = profile_of({"a": gauss(1, 2000)})

    value = as_sampled(data_drift(profile, {"a": gauss(2, 300)}, method="psi", limit=0.2, features=["z"]))

    assert isinstance(value, ProviderError)
    assert value.message.startswith("dataDrift: z: not in the profile (a)")


def test_without_a_limit_no_feature_fails_and_the_messages_show_no_bound() -> None:
    profile = profile_of({"a": gauss(1, 2000)})

    drift = data_drift(profile, {"a": gauss(2, 300, mean=3.0)}, method="psi", limit=math.inf)

    assert drift.verdict is Verdict.PASS
    assert drift.summary == f"a psi {drift.features[0].value:.3g} (n=300)"


def test_bad_arguments_are_refused() -> None:
    profile = profile_of({"x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="unknown drift method 'chi2'"):
        data_drift(profile, {}, method="chi2", limit=0.2)
    with pytest.raises(ValueError, match="limit"):
        data_drift(profile, {}, method="psi", limit=math.nan)
    with pytest.raises(ValueError, match="min_samples"):
        data_drift(profile, {}, method="psi", limit=0.2, min_samples=0)


# --- profiles --------------------------------------------------------------------------------------------


def test_a_profile_goes_through_its_json_text_unchanged() -> None:
    columns: dict[str, list[Any]] = {
        "sepal_length": gauss(1, 300, 5.8, 0.8),
        "species": ["setosa", "versicolor", "virginica"] * 100,
        "flag": [True, False, None] * 100,
    }
    document = build_profile(columns)
    text = render_profile(document)

    assert json.loads(text) == document
    assert len(text.splitlines()) == 4 + len(columns) + 2  # one line a feature
    profile = load_profile(text.encode())
    assert profile.sample_size == 300
    assert isinstance(profile.features["species"], CategoricalFeature)
    assert profile.features["species"].counts == {"setosa": 100, "versicolor": 100, "virginica": 100}
    assert profile.features["flag"] == CategoricalFeature({"false": 100, "true": 100})
    sepal = numeric(profile, "sepal_length")
    assert sepal.quantiles is not None
    assert len(sepal.quantiles) == SKETCH_QUANTILES + 1
    assert (sepal.quantiles[0], sepal.quantiles[-1]) == (
        min(columns["sepal_length"]),
        max(columns["sepal_length"]),
    )


def test_few_distinct_values_give_fewer_bins() -> None:
    feature = numeric(profile_of({"x": [0.0] * 70 + [1.0] * 20 + [2.0] * 10}), "x")

    assert feature.edges == (0.0, 1.0, 2.0)
    assert feature.counts == (70, 20, 10, 0)  # the last bin, above the training maximum, is empty


def test_a_constant_column_has_one_edge_and_inputs_beside_it_drift() -> None:
    profile = profile_of({"x": [0.5] * 200})

    assert numeric(profile, "x").edges == (0.5,)
    assert data_drift(profile, {"x": [0.5] * 100}, method="psi", limit=0.1).verdict is Verdict.PASS
    assert data_drift(profile, {"x": [0.7] * 100}, method="psi", limit=0.1).verdict is Verdict.FAIL


def test_missing_values_are_left_out_of_the_counts_not_the_sample_size() -> None:
    document = build_profile({"x": [1.0, None, math.nan, 3.0, math.inf, 2.0], "c": ["a", None, "b"] * 2})

    assert document["sampleSize"] == 6
    assert sum(document["features"]["x"]["counts"]) == 3
    assert document["features"]["c"]["counts"] == {"a": 2, "b": 2}


def test_categories_beyond_the_cap_are_counted_as_other() -> None:
    values = [f"v{i}" for i in range(10) for _ in range(10 - i)]  # v0 10 times ... v9 once

    document = build_profile({"c": values}, max_categories=3)

    assert document["features"]["c"]["counts"] == {"v0": 10, "v1": 9, "v2": 8, OTHER: 28}


def test_numbers_named_categorical_are_counted_by_value() -> None:
    document = build_profile({"rooms": [1, 2, 2, 3.0]}, categorical=["rooms"])

    assert document["features"]["rooms"] == {"type": "categorical", "counts": {"2": 2, "1": 1, "3": 1}}


def test_category_keys_are_the_same_whatever_the_source() -> None:
    assert [category(v) for v in (1, 1.0, "1", np.int64(1), True, 0.5, "setosa")] == [
        "1",
        "1",
        "1",
        "1",
        "true",
        "0.5",
        "setosa",
    ]
    with pytest.raises(TypeError, match="list"):
        category([1])


@pytest.mark.parametrize(
    ("columns", "options", "message"),
    [
        ({}, {}, "no columns"),
        ({"x": []}, {}, "no rows"),
        ({"x": [1.0], "y": [1.0, 2.0]}, {}, "columns differ in length"),
        ({"x": [None, math.nan]}, {}, "column 'x' has no values"),
        ({"x": [[1], [2]]}, {}, "column 'x': a value of type list is neither a number nor a category"),
        ({"x": [1.0]}, {"categorical": ["y"]}, "categorical names no such column: y"),
        ({"x": [1.0]}, {"bins": 1}, "bins must be at least 2"),
    ],
)
def test_data_that_cannot_be_profiled_is_refused(
    columns: dict[str, list[Any]], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        build_profile(columns, **options)


def _good() -> dict[str, Any]:
    return {
        "format": PROFILE_FORMAT,
        "sampleSize": 10,
        "features": {
            "x": {"type": "numeric", "edges": [1.0, 2.0], "counts": [3, 4, 3], "quantiles": [0.0, 1.5, 3.0]},
            "c": {"type": "categorical", "counts": {"a": 6, "b": 4}},
        },
    }


def _with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = _good()
    change(document)
    return document


def test_the_good_profile_of_the_error_cases_loads() -> None:
    profile = load_profile(_good())

    assert profile.features["x"] == NumericFeature((1.0, 2.0), (3, 4, 3), (0.0, 1.5, 3.0))
    assert profile.features["c"] == CategoricalFeature({"a": 6, "b": 4})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "profile is not JSON"),
        (b"[1, 2]", "profile must be a JSON object, got list"),
        (
            _with(lambda d: d.update(format="modelfleet.profile/v9")),
            "format is 'modelfleet.profile/v9', expected",
        ),
        (_with(lambda d: d.pop("format")), "format is None, expected 'modelfleet.profile/v1'"),
        (_with(lambda d: d.update(sampleSize=0)), "sampleSize must be a positive integer, got 0"),
        (_with(lambda d: d.update(features={})), "profile has no features"),
        (
            _with(lambda d: d["features"]["x"].update(counts=[3, 7])),
            "feature 'x': 2 counts for 2 edges .*3",
        ),
        (
            _with(lambda d: d["features"]["x"].update(counts=[3, -1, 3])),
            "feature 'x': counts must be non-negative integers, got -1",
        ),
        (
            _with(lambda d: d["features"]["c"]["counts"].update(b=-4)),
            "feature 'c': counts must be non-negative integers, got -4",
        ),
        (_with(lambda d: d["features"]["x"].update(counts=[0, 0, 0])), "feature 'x': counts are all 0"),
        (
            _with(lambda d: d["features"]["x"].update(counts=[3, 40, 3])),
            "feature 'x': counts add up to 46, more than sampleSize 10",
        ),
        (_with(lambda d: d["features"]["x"].update(edges=[2.0, 1.0])), "edges must be strictly increasing"),
        (
            _with(lambda d: d["features"]["x"].update(edges=[1.0, "2"])),
            "edges must be finite numbers, got '2'",
        ),
        (
            _with(lambda d: d["features"]["x"].update(quantiles=[3.0, 1.0])),
            "quantiles must be at least 2 non-decreasing numbers",
        ),
        (
            _with(lambda d: d["features"]["x"].update(type="text")),
            "type must be numeric or categorical, got 'text'",
        ),
        (_with(lambda d: d["features"]["c"].update(counts={})), "feature 'c': categorical counts must be"),
        (_with(lambda d: d["features"].update(y=[1])), "feature 'y' must be an object"),
    ],
)
def test_a_bad_profile_is_refused_with_what_is_wrong(document: bytes | dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(document)


def test_bin_counts_put_edge_values_in_the_lower_bin() -> None:
    assert bin_counts([1.0, 2.0], [-5.0, 1.0, 1.5, 2.0, 2.5, 99.0]) == [2, 2, 2]


# --- modelfleet profile ------------------------------------------------------------------------------

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_columns() -> dict[str, list[Any]]:
    iris = load_iris()
    columns: dict[str, list[Any]] = {name: iris.data[:, i].tolist() for i, name in enumerate(IRIS_FEATURES)}
    columns["species"] = [str(iris.target_names[t]) for t in iris.target]
    return columns


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    return path


def test_a_csv_becomes_the_profile_of_its_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "iris.csv", iris_columns())
    out = tmp_path / "profile.json"

    assert modelfleet(["profile", str(data), "--out", str(out)]) == 0

    document = json.loads(out.read_text())
    assert document == build_profile(iris_columns())  # CSV's text of each float reads back as the float
    profile = load_profile(out.read_bytes())
    assert list(profile.features) == [*IRIS_FEATURES, "species"]
    assert profile.features["species"] == CategoricalFeature(
        {"setosa": 50, "versicolor": 50, "virginica": 50}
    )
    assert all(isinstance(profile.features[name], NumericFeature) for name in IRIS_FEATURES)
    err = capsys.readouterr().err
    assert "profile: 150 rows, 5 features" in err
    assert re.search(r"petal_length +numeric +10 bins, 150 values", err)
    assert re.search(r"species +categorical +3 categories, 150 values", err)
    assert f"({digest_path(out).digest}, for spec.reference.digest)" in err


def test_the_profile_of_all_iris_flags_versicolor_petals(tmp_path: Path) -> None:
    """The worked example of docs/monitoring.md."""
    columns = iris_columns()
    out = tmp_path / "profile.json"
    assert modelfleet(["profile", str(write_csv(tmp_path / "iris.csv", columns)), "--out", str(out)]) == 0
    versicolor = [i for i, s in enumerate(columns["species"]) if s == "versicolor"]
    live = {name: [columns[name][i] for i in versicolor] * 5 for name in IRIS_FEATURES}  # 250 requests

    result = data_drift(
        load_profile(out.read_bytes()),
        live,
        method="psi",
        limit=0.2,
        features=["petal_length", "petal_width"],
    )

    assert result.verdict is Verdict.FAIL
    assert set(result.exceeding) == {"petal_length", "petal_width"}
    assert result.summary.startswith(f"{result.exceeding[0]} psi ")
    assert "> 0.2 (n=250)" in result.summary


def test_an_existing_profile_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "iris.csv", iris_columns())
    out = tmp_path / "profile.json"
    out.write_text("old")

    assert modelfleet(["profile", str(data), "--out", str(out)]) == 1

    assert out.read_text() == "old"
    assert (
        capsys.readouterr().err
        == f"modelfleet profile: {out} exists (--force replaces it); nothing was written\n"
    )
    assert modelfleet(["profile", str(data), "--out", str(out), "--force"]) == 0
    assert load_profile(out.read_bytes()).sample_size == 150
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iris.csv", "profile.json"]


def test_a_missing_data_file_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"

    assert modelfleet(["profile", str(tmp_path / "nope.csv"), "--out", str(out)]) == 1

    assert capsys.readouterr().err == f"modelfleet profile: {tmp_path / 'nope.csv'}: no such file\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file, no header row"),
        ("a,b\n1,2\n3\n", "data.csv:3: 1 fields, the header has 2"),
        ("a,a\n1,2\n", "the header names a more than once"),
        ("a,b\n,\n", "column 'a' has no values"),
    ],
)
def test_bad_csv_is_one_line_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    (tmp_path / "data.csv").write_text(content)

    assert modelfleet(["profile", str(tmp_path / "data.csv"), "--out", str(tmp_path / "p.json")]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 2  # "reading ...", then the error
    assert message in err.splitlines()[-1]
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_csv(tmp_path / "iris.csv", iris_columns())

    def full(source: object, target: object) -> None:
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(os, "replace", full)

    assert modelfleet(["profile", str(data), "--out", str(tmp_path / "p.json")]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["iris.csv"]


def test_csv_cells_missing_or_forced_categorical(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("size,zip,colour\n1.5,007,red\nNA,010,\n,007,blue\n2.5,123,red\n")
    out = tmp_path / "p.json"

    assert modelfleet(["profile", str(data), "--out", str(out), "--categorical", "zip"]) == 0

    features = json.loads(out.read_text())["features"]
    assert features["size"]["type"] == "numeric"
    assert sum(features["size"]["counts"]) == 2
    assert features["zip"]["counts"] == {"007": 2, "010": 1, "123": 1}
    assert features["colour"]["counts"] == {"red": 2, "blue": 1}


def test_columns_are_selected_and_renamed(tmp_path: Path) -> None:
    columns = iris_columns()
    data = write_csv(tmp_path / "iris.csv", columns)
    out = tmp_path / "p.json"

    assert modelfleet(["profile", str(data), "--out", str(out), "--columns", "petal_length=pl,species"]) == 0

    document = json.loads(out.read_text())
    assert list(document["features"]) == ["pl", "species"]
    assert document["features"]["pl"] == build_profile({"x": columns["petal_length"]})["features"]["x"]


def test_an_npy_array_has_columns_f0_on_or_the_names_given(tmp_path: Path) -> None:
    iris = load_iris()
    np.save(tmp_path / "X.npy", iris.data)
    named, plain = tmp_path / "named.json", tmp_path / "plain.json"

    assert modelfleet(["profile", str(tmp_path / "X.npy"), "--out", str(plain)]) == 0
    assert (
        modelfleet(
            ["profile", str(tmp_path / "X.npy"), "--out", str(named), "--columns", ",".join(IRIS_FEATURES)]
        )
        == 0
    )

    assert list(load_profile(plain.read_bytes()).features) == ["f0", "f1", "f2", "f3"]
    profile = load_profile(named.read_bytes())
    assert list(profile.features) == IRIS_FEATURES
    petal = numeric(profile, "petal_length")
    assert list(petal.counts) == numpy_bins(petal.edges, iris.data[:, 2].tolist()).tolist()
    assert (
        modelfleet(
            ["profile", str(tmp_path / "X.npy"), "--out", str(tmp_path / "x.json"), "--columns", "a,b"]
        )
        == 1
    )


def test_an_npz_of_named_columns(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "data.npz", age=np.array([20, 30, 40, 50]), member=np.array([True, False, True, True])
    )
    out = tmp_path / "p.json"

    assert modelfleet(["profile", str(tmp_path / "data.npz"), "--out", str(out)]) == 0

    features = json.loads(out.read_text())["features"]
    assert features["age"]["type"] == "numeric"
    assert features["member"] == {"type": "categorical", "counts": {"true": 3, "false": 1}}


def test_a_parquet_file_is_read_with_pyarrow(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")

    columns = iris_columns()
    parquet.write_table(pyarrow.table(columns), tmp_path / "iris.parquet")
    out = tmp_path / "p.json"

    assert modelfleet(["profile", str(tmp_path / "iris.parquet"), "--out", str(out)]) == 0

    assert json.loads(out.read_text()) == build_profile(columns)


@pytest.mark.parametrize(("suffix", "library"), [(".parquet", "pyarrow"), (".npy", "numpy")])
def test_a_missing_library_is_named_with_its_install_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
    library: str,
) -> None:
    (tmp_path / f"data{suffix}").write_bytes(b"")
    monkeypatch.setitem(sys.modules, library, None)  # import fails as if not installed

    assert modelfleet(["profile", str(tmp_path / f"data{suffix}"), "--out", str(tmp_path / "p.json")]) == 1

    assert capsys.readouterr().err.splitlines()[-1].endswith(f"needs {library}: pip install {library}")


def test_an_unknown_kind_of_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"PK")

    assert modelfleet(["profile", str(tmp_path / "data.xlsx"), "--out", str(tmp_path / "p.json")]) == 1

    assert "unknown kind of file '.xlsx'" in capsys.readouterr().err


def test_the_command_is_listed() -> None:
    assert "profile" in usage()
