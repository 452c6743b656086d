"""Data drift: the request inputs a version sees, feature by feature, against its training data.

The training data is known through a reference profile (`modelfleet profile` makes one,
`ModelVersion.spec.reference` points at it) that keeps what the comparison needs and none of the rows:
- a numeric feature: its counts in about 10 bins cut at the training data's quantiles (the first and
  last bins open-ended, so an input outside the training range still lands somewhere), and a sketch of
  101 quantiles for the KS statistic;
- a categorical feature: its counts by value, the `MAX_CATEGORIES` most frequent, the rest as `__other__`.

Each method gives 0 for the same distribution and grows with the shift:
- `psi`: population stability index over the profile's bins, smoothed as in `drift`. On two samples of
  one distribution it is still about (bins - 1) * (1/n + 1/N), so a small sample looks drifted: below
  `min_samples` inputs a feature is Inconclusive, never failing;
- `ks`: the Kolmogorov-Smirnov statistic max |F_training(x) - F_inputs(x)|, with F_training read off the
  quantile sketch (so within 1/100 of the exact two-sample statistic); numeric features only;
- `jsd`: the Jensen-Shannon distance in base 2 (the square root of the divergence, in [0, 1]) over the
  same bins as psi.

Pure Python: the operator image has no numpy, and a profile is small.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import numbers
import reprlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelfleet.analysis.assessment import ProviderError, SampledValue
from modelfleet.analysis.drift import quantile_edges, smoothed_shares
from modelfleet.api.monitor import Verdict

PROFILE_FORMAT = "modelfleet.profile/v1"
OTHER = "__other__"
"""The category that holds the values a profile did not keep, and the inputs it never saw."""
DEFAULT_BINS = 10
MAX_CATEGORIES = 50
"""A categorical feature keeps its most frequent values up to this many; the rest count as `__other__`."""
SKETCH_QUANTILES = 100
"""The quantile sketch holds the 0/100, 1/100, ... 100/100 quantiles: KS within 1/100 of exact."""
DEFAULT_MIN_SAMPLES = 100
"""Inputs per feature below which a feature is Inconclusive: with 10 bins, PSI on 100 inputs of the
training distribution itself is already about 0.09, half the usual 0.2 limit."""
EPSILON = 1e-4
"""PSI smoothing, as `drift.population_stability_index`."""

_SEVERITY = {Verdict.PASS: 0, Verdict.INCONCLUSIVE: 1, Verdict.ERROR: 2, Verdict.FAIL: 3}
_show = reprlib.Repr()
_show.maxstring = 40
_show.maxother = 40


class ProfileError(ValueError):
    """A profile, or data for one, that cannot be used; the message says which feature and what is wrong."""


class Method(StrEnum):
    PSI = "psi"
    """Population stability index over the profile's bins."""
    KS = "ks"
    """Kolmogorov-Smirnov statistic against the profile's quantile sketch (numeric features)."""
    JSD = "jsd"
    """Jensen-Shannon distance, base 2, over the profile's bins."""


@dataclass(frozen=True)
class NumericFeature:
    """Counts of a numeric feature in bins: bin i holds the values v with bisect_left(edges, v) == i."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    quantiles: tuple[float, ...] | None = None
    """The quantiles at 0, 1/m, ..., 1 (m + 1 values, min and max included); None: no ks."""


@dataclass(frozen=True)
class CategoricalFeature:
    """Counts of a categorical feature by value (the `category` of each value)."""

    counts: Mapping[str, int]


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class Profile:
    """A training data profile, checked (`load_profile`)."""

    sample_size: int
    """Rows of training data profiled; a feature's counts add up to at most this (missing values)."""
    features: Mapping[str, Feature]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison."""

    feature: str
    verdict: Verdict
    value: float | None
    """The statistic; None when it was not computed (Inconclusive, Error)."""
    sample_size: int
    """Inputs compared (numbers for a numeric feature; not null)."""
    unusable: int
    """Inputs left out: null, NaN, or not a number for a numeric feature."""
    message: str
    """One line, e.g. `petal_length psi 0.412 > 0.2 (n=240)`."""


@dataclass(frozen=True)
class DataDrift:
    """The comparison of a sample of inputs with a profile, features worst first."""

    method: Method
    limit: float
    features: tuple[FeatureDrift, ...]
    not_compared: tuple[str, ...] = ()
    """Profile features the method does not apply to (categorical ones under ks), left out because no
    `features` list named them."""

    @property
    def verdict(self) -> Verdict:
        """Fail if any feature exceeds the limit, else Error, else Inconclusive, else Pass (as the
        Monitor combines its metrics). Nothing compared at all is an Error."""
        if not self.features:
            return Verdict.ERROR
        return max((f.verdict for f in self.features), key=_SEVERITY.__getitem__)

    @property
    def exceeding(self) -> tuple[str, ...]:
        """The features over the limit, worst first."""
        return tuple(f.feature for f in self.features if f.verdict is Verdict.FAIL)

    @property
    def value(self) -> float | None:
        """The largest statistic of the features compared: the metric's value."""
        values = [f.value for f in self.features if f.value is not None]
        return max(values) if values else None

    @property
    def summary(self) -> str:
        """One line for a status message: the features that make the verdict, e.g.
        `petal_length psi 0.412 > 0.2 (n=240); petal_width psi 0.305 > 0.2 (n=240)`."""
        verdict = self.verdict
        if not self.features:
            return f"no feature to compare with {self.method}" + (
                f" ({', '.join(self.not_compared)} categorical)" if self.not_compared else ""
            )
        if verdict is Verdict.PASS:
            worst = self.features[0]
            more = len(self.features) - 1
            return worst.message + (f", the highest of {more + 1} features" if more else "")
        deciding = [f for f in self.features if f.verdict is verdict]
        text = "; ".join(f.message for f in deciding[:3])
        if len(deciding) > 3:
            text += f"; and {len(deciding) - 3} more"
        return text[:1024]


# --- values -------------------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    """A finite number as float; None for anything else (booleans are categories, not numbers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _missing(value: object) -> bool:
    """None, NaN and the infinities: what a CSV's empty cell, pandas' NA or a failed sensor write."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def category(value: object) -> str:
    """The key a categorical value is counted under. Profile keys are JSON object keys, so text; the same
    value must find the same key whether it came from a CSV cell, an array or a JSON request: strings as
    they are, booleans `true` / `false`, integers and integral floats in decimal (1.0 is 1), other
    floats as Python writes them. TypeError for anything else (lists, objects)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    raise TypeError(f"a value of type {type(value).__name__} is neither a number nor a category")


# --- statistics ---------------------------------------------------------------------------------------


def bin_counts(edges: Sequence[float], values: Iterable[float]) -> list[int]:
    """How many values fall in each of the len(edges) + 1 bins (v in bin bisect_left(edges, v))."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bisect.bisect_left(edges, value)] += 1
    return counts


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of `actual` counts against `expected` ones, bin by bin (>= 0)."""
    _check_counts(expected, actual)
    p = smoothed_shares(expected, epsilon)
    q = smoothed_shares(actual, epsilon)
    return sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))


def jensen_shannon_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """sqrt of the Jensen-Shannon divergence of two count vectors, in base 2: 0 for the same shares, 1 for
    disjoint ones (scipy.spatial.distance.jensenshannon(p, q, base=2)). No smoothing is needed: the
    mixture is never 0 where either share is not."""
    _check_counts(p, q)
    p_total, q_total = sum(p), sum(q)
    divergence = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / p_total, b / q_total
        mixture = (a + b) / 2
        if a > 0:
            divergence += a * math.log2(a / mixture)
        if b > 0:
            divergence += b * math.log2(b / mixture)
    return min(1.0, math.sqrt(max(0.0, divergence / 2)))


def _check_counts(p: Sequence[float], q: Sequence[float]) -> None:
    if len(p) != len(q) or not p:
        raise ValueError(f"need two count vectors of one length, got {len(p)} and {len(q)}")
    if min(*p, *q) < 0 or sum(p) <= 0 or sum(q) <= 0:
        raise ValueError("counts must be non-negative, with a positive total on each side")


def quantile_sketch(values: Iterable[float], quantiles: int = SKETCH_QUANTILES) -> list[float]:
    """The j/quantiles quantiles of `values` (non-empty), j = 0..quantiles, as the smallest value whose
    share at or below it reaches j/quantiles: that definition keeps the CDF `ks_statistic` reads off the
    sketch within 1/quantiles of the data's own, ties included."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values for a quantile sketch")
    if quantiles < 1:
        raise ValueError(f"quantiles must be at least 1, got {quantiles}")
    n = len(ordered)
    return [ordered[max(0, -(-j * n // quantiles) - 1)] for j in range(quantiles + 1)]


def _sketch_cdf(quantiles: Sequence[float]) -> tuple[list[float], list[float], list[float]]:
    """Distinct sketch values with the CDF just below and at each: a run of equal quantiles j..k is a
    jump from j/m to k/m (a value the data holds many times)."""
    m = len(quantiles) - 1
    xs: list[float] = []
    below: list[float] = []
    at: list[float] = []
    for j, x in enumerate(quantiles):
        if xs and x == xs[-1]:
            at[-1] = j / m
        else:
            xs.append(x)
            below.append(j / m)
            at.append(j / m)
    below[0] = 0.0
    at[-1] = 1.0
    return xs, below, at


def ks_statistic(quantiles: Sequence[float], sample: Sequence[float]) -> float:
    """max |F(x) - G(x)| of the training CDF F, linear between the sketch's quantiles, and the sample's
    empirical CDF G. Between two consecutive points where either jumps or bends, G is flat and F
    monotone, so the maximum is at such a point, from the left or the right: those are all checked."""
    if len(quantiles) < 2 or not sample:
        raise ValueError("ks needs a sketch of at least 2 quantiles and a non-empty sample")
    xs, below, at = _sketch_cdf(quantiles)
    ordered = sorted(sample)
    n = len(ordered)

    def training(x: float) -> tuple[float, float]:
        i = bisect.bisect_left(xs, x)
        if i < len(xs) and xs[i] == x:
            return below[i], at[i]
        if i == 0:
            return 0.0, 0.0
        if i == len(xs):
            return 1.0, 1.0
        share = at[i - 1] + (below[i] - at[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])
        return share, share

    distance = 0.0
    for x in sorted({*xs, *ordered}):
        f_below, f_at = training(x)
        g_below = bisect.bisect_left(ordered, x) / n
        g_at = bisect.bisect_right(ordered, x) / n
        distance = max(distance, abs(f_below - g_below), abs(f_at - g_at))
    return distance


# --- profiles -----------------------------------------------------------------------------------------


def build_profile(
    columns: Mapping[str, Sequence[object]],
    *,
    bins: int = DEFAULT_BINS,
    categorical: Collection[str] = (),
    max_categories: int = MAX_CATEGORIES,
    quantiles: int = SKETCH_QUANTILES,
) -> dict[str, Any]:
    """The profile document (JSON-ready) of training data given as columns of equal length. A column of
    numbers only (missing values aside: None, NaN, infinities) is numeric unless named in
    `categorical`; any other column is categorical."""
    if bins < 2:
        raise ProfileError(f"bins must be at least 2, got {bins}")
    if max_categories < 1:
        raise ProfileError(f"max_categories must be at least 1, got {max_categories}")
    if not columns:
        raise ProfileError("no columns to profile")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ProfileError(f"columns differ in length: {_show.repr(lengths)}")
    rows = next(iter(lengths.values()))
    if rows == 0:
        raise ProfileError("no rows to profile")
    unknown = sorted(set(categorical) - set(columns))
    if unknown:
        raise ProfileError(f"categorical names no such column: {', '.join(unknown)}")
    features: dict[str, dict[str, Any]] = {}
    for name, values in columns.items():
        if not name:
            raise ProfileError("a column has an empty name")
        present = [v for v in values if not _missing(v)]
        if not present:
            raise ProfileError(f"column {name!r} has no values")
        as_numbers = [_number(v) for v in present]
        try:
            features[name] = (
                _numeric_profile([v for v in as_numbers if v is not None], bins, quantiles)
                if None not in as_numbers and name not in categorical
                else _categorical_profile(present, max_categories)
            )
        except TypeError as error:
            raise ProfileError(f"column {name!r}: {error}") from None
    return {"format": PROFILE_FORMAT, "sampleSize": rows, "features": features}


def _numeric_profile(values: Sequence[float], bins: int, quantiles: int) -> dict[str, Any]:
    data = sorted(values)
    edges = quantile_edges(data, bins)
    return {
        "type": "numeric",
        "edges": edges,
        "counts": bin_counts(edges, data),
        "quantiles": quantile_sketch(data, quantiles),
    }


def _categorical_profile(values: Sequence[object], max_categories: int) -> dict[str, Any]:
    counts = Counter(category(v) for v in values)
    kept = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:max_categories]
    result = dict(kept)
    rest = len(values) - sum(result.values())
    if rest:
        result[OTHER] = result.get(OTHER, 0) + rest
    return {"type": "categorical", "counts": result}


def render_profile(document: Mapping[str, Any]) -> str:
    """The profile as JSON text, one feature a line: short enough to read, stable enough to digest."""
    head = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in document.items() if k != "features"]
    features = [
        f"    {json.dumps(name)}: {json.dumps(spec, allow_nan=False)}"
        for name, spec in document["features"].items()
    ]
    return "\n".join(["{", *head, '  "features": {', ",\n".join(features), "  }", "}"]) + "\n"


def load_profile(data: bytes | str | Mapping[str, Any]) -> Profile:
    """A profile from its JSON text or parsed document, checked whole: ProfileError names what is wrong."""
    if isinstance(data, bytes | str):
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ProfileError(f"profile is not JSON: {error}") from None
    else:
        document = data
    if not isinstance(document, Mapping):
        raise ProfileError(f"profile must be a JSON object, got {type(document).__name__}")
    tag = document.get("format")
    if tag != PROFILE_FORMAT:
        raise ProfileError(f"profile format is {_show.repr(tag)}, expected {PROFILE_FORMAT!r}")
    size = document.get("sampleSize")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ProfileError(f"profile sampleSize must be a positive integer, got {_show.repr(size)}")
    features = document.get("features")
    if not isinstance(features, Mapping) or not features:
        raise ProfileError("profile has no features")
    return Profile(size, {_name(name): _feature(name, spec, size) for name, spec in features.items()})


def _name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ProfileError(f"profile feature name must be a non-empty string, got {_show.repr(name)}")
    return name


def _counts_total(where: str, counts: Collection[object], size: int) -> None:
    total = 0
    for count in counts:
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ProfileError(f"{where}: counts must be non-negative integers, got {_show.repr(count)}")
        total += count
    if total == 0:
        raise ProfileError(f"{where}: counts are all 0")
    if total > size:
        raise ProfileError(f"{where}: counts add up to {total}, more than sampleSize {size}")


def _feature(name: str, spec: object, size: int) -> Feature:
    where = f"profile feature {name!r}"
    if not isinstance(spec, Mapping):
        raise ProfileError(f"{where} must be an object")
    kind = spec.get("type")
    if kind == "categorical":
        counts = spec.get("counts")
        if not isinstance(counts, Mapping) or not counts:
            raise ProfileError(f"{where}: categorical counts must be a non-empty object of value: count")
        if not all(isinstance(key, str) for key in counts):
            raise ProfileError(f"{where}: categorical values must be strings (JSON object keys)")
        _counts_total(where, counts.values(), size)
        return CategoricalFeature(dict(counts))
    if kind != "numeric":
        raise ProfileError(f"{where}: type must be numeric or categorical, got {_show.repr(kind)}")
    edges = _numbers(where, "edges", spec.get("edges"))
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"{where}: edges must be strictly increasing")
    counts = spec.get("counts")
    if not isinstance(counts, list):
        raise ProfileError(f"{where}: counts must be a list")
    if len(counts) != len(edges) + 1:
        raise ProfileError(
            f"{where}: {len(counts)} counts for {len(edges)} edges (need edges + 1 = {len(edges) + 1})"
        )
    _counts_total(where, counts, size)
    sketch: tuple[float, ...] | None = None
    if spec.get("quantiles") is not None:
        sketch = _numbers(where, "quantiles", spec["quantiles"])
        if len(sketch) < 2 or any(b < a for a, b in itertools.pairwise(sketch)):
            raise ProfileError(f"{where}: quantiles must be at least 2 non-decreasing numbers")
    return NumericFeature(edges, tuple(counts), sketch)


def _numbers(where: str, field: str, values: object) -> tuple[float, ...]:
    if not isinstance(values, list):
        raise ProfileError(f"{where}: {field} must be a list of numbers")
    checked: list[float] = []
    for value in values:
        number = _number(value)
        if number is None:
            raise ProfileError(f"{where}: {field} must be finite numbers, got {_show.repr(value)}")
        checked.append(number)
    return tuple(checked)


# --- comparison ---------------------------------------------------------------------------------------


def data_drift(
    profile: Profile,
    sample: Mapping[str, Sequence[object]],
    *,
    method: Method | str,
    limit: float,
    features: Sequence[str] | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    epsilon: float = EPSILON,
) -> DataDrift:
    """Compare a sample of request inputs (feature -> values) with the profile, feature by feature; a
    feature over `limit` fails (`math.inf`: none does, for a metric bounded only relative to stable).
    `features` picks features (default: all of the profile's). A feature the profile lacks is an Error
    and one the sample lacks Inconclusive: both are reported, neither stops the others from being
    compared."""
    try:
        method = Method(method)
    except ValueError:
        raise ValueError(f"unknown drift method {method!r}: psi, ks or jsd") from None
    if not limit >= 0:
        raise ValueError(f"limit must be a non-negative number, got {limit}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    if features is None:
        names = list(profile.features)
        not_compared = tuple(
            n for n in names if method is Method.KS and isinstance(profile.features[n], CategoricalFeature)
        )
        names = [n for n in names if n not in not_compared]
    else:
        names, not_compared = list(dict.fromkeys(features)), ()
    results = [
        _compare(name, profile, sample.get(name), method, limit, min_samples, epsilon) for name in names
    ]
    results.sort(key=_worst_first)
    return DataDrift(method, limit, tuple(results), not_compared)


def as_sampled(drift: DataDrift) -> SampledValue | ProviderError:
    """The dataDrift metric's value of a comparison, as the assessment judges it, with the features that
    decide it as its `detail`: the largest statistic over at least as many inputs as every compared
    feature had (Pass, Fail); a feature with too few inputs, or none, makes `samples` its count, below
    minSamples (Inconclusive); a feature that cannot be compared is a ProviderError (Error)."""
    verdict = drift.verdict
    if verdict is Verdict.ERROR:
        return ProviderError(f"dataDrift: {drift.summary}"[:1024])
    value = drift.value
    if verdict is Verdict.INCONCLUSIVE:
        samples = min(f.sample_size for f in drift.features if f.verdict is Verdict.INCONCLUSIVE)
        return SampledValue(math.nan if value is None else value, samples, drift.summary)
    samples = min(f.sample_size for f in drift.features if f.value is not None)
    assert value is not None  # a Pass or a Fail compared some feature
    return SampledValue(value, samples, drift.summary)


def _worst_first(result: FeatureDrift) -> tuple[int, bool, float, str]:
    return (-_SEVERITY[result.verdict], result.value is None, -(result.value or 0.0), result.feature)


def _compare(
    name: str,
    profile: Profile,
    values: Sequence[object] | None,
    method: Method,
    limit: float,
    min_samples: int,
    epsilon: float,
) -> FeatureDrift:
    reference = profile.features.get(name)
    if reference is None:
        known = ", ".join(list(profile.features)[:10]) + (", ..." if len(profile.features) > 10 else "")
        return FeatureDrift(name, Verdict.ERROR, None, 0, 0, f"{name}: not in the profile ({known})")
    if method is Method.KS and isinstance(reference, CategoricalFeature):
        message = f"{name}: ks compares numeric features, {name} is categorical (psi or jsd compare it)"
        return FeatureDrift(name, Verdict.ERROR, None, 0, 0, message)
    if method is Method.KS and isinstance(reference, NumericFeature) and reference.quantiles is None:
        message = f"{name}: the profile has no quantiles for ks (`modelfleet profile` writes them)"
        return FeatureDrift(name, Verdict.ERROR, None, 0, 0, message)
    if values is None:
        return FeatureDrift(name, Verdict.INCONCLUSIVE, None, 0, 0, f"{name}: not in the sampled inputs")
    present = [v for v in values if not _missing(v)]
    if isinstance(reference, NumericFeature):
        usable: list[float] = [n for n in map(_number, present) if n is not None]
        n = len(usable)
    else:
        keys = [_category_or_none(v) for v in present]
        labels = [k for k in keys if k is not None]
        n = len(labels)
    unusable = len(values) - n
    left_out = f", {unusable} unusable" if unusable else ""
    if n < min_samples:
        message = f"{name}: n={n} < minSamples {min_samples}{left_out}"
        return FeatureDrift(name, Verdict.INCONCLUSIVE, None, n, unusable, message)
    if isinstance(reference, NumericFeature):
        if method is Method.KS:
            assert reference.quantiles is not None
            value = ks_statistic(reference.quantiles, usable)
        else:
            value = _binned(method, reference.counts, bin_counts(reference.edges, usable), epsilon)
    else:
        bins = [*reference.counts, *([] if OTHER in reference.counts else [OTHER])]
        seen = Counter(k if k in reference.counts else OTHER for k in labels)
        expected = [reference.counts.get(k, 0) for k in bins]
        value = _binned(method, expected, [seen[k] for k in bins], epsilon)
    over = value > limit
    bound = f" {'>' if over else '<='} {limit:g}" if math.isfinite(limit) else ""  # no max: no bound
    message = f"{name} {method} {value:.3g}{bound} (n={n}{left_out})"
    return FeatureDrift(name, Verdict.FAIL if over else Verdict.PASS, value, n, unusable, message)


def _category_or_none(value: object) -> str | None:
    try:
        return category(value)
    except TypeError:
        return None


def _binned(method: Method, expected: Sequence[int], actual: Sequence[int], epsilon: float) -> float:
    if method is Method.JSD:
        return jensen_shannon_distance(expected, actual)
    return psi(expected, actual, epsilon)
