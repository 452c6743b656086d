"""Prediction drift: the population stability index (PSI) of canary predictions against stable ones.

PSI = sum over bins of (canary share - stable share) * ln(canary share / stable share). Rules of thumb:
below 0.1 no shift, 0.1 to 0.25 a moderate one, above 0.25 a large one. Categorical predictions (class
labels such as iris' 0/1/2, strings, booleans) are binned by value; continuous ones by the quantiles of
the stable sample. Empty bins are smoothed with a small epsilon so the index stays finite.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

Prediction = str | float | int | bool
Kind = Literal["auto", "categorical", "continuous"]

MAX_CATEGORIES = 20
"""In "auto" mode, integral numbers with at most this many distinct values count as class labels."""


def _is_categorical(values: Sequence[Prediction]) -> bool:
    if any(isinstance(v, str | bool) for v in values):
        return True
    if any(not float(v).is_integer() for v in values):
        return False
    return len({float(v) for v in values}) <= MAX_CATEGORIES


def _category(value: Prediction) -> Hashable:
    if isinstance(value, str):
        return value
    return float(value)  # 1 and 1.0 are the same class; bools are 0.0 / 1.0


def smoothed_shares(counts: Sequence[float], epsilon: float) -> list[float]:
    """Each bin's share of the total, plus `epsilon`, renormalised: no share is 0, so ln(q/p) stays finite
    when one sample has an empty bin. The one smoothing convention of every PSI in the package."""
    total = sum(counts)
    return [(count / total + epsilon) / (1.0 + epsilon * len(counts)) for count in counts]


def quantile_edges(reference: Sequence[float], bins: int) -> list[float]:
    """Inner bin edges at the `bins`-quantiles of `reference` (non-empty), duplicates dropped. A value v
    falls in bin `bisect_left(edges, v)`: the first and last bins are open-ended, so values outside the
    reference's range are still counted."""
    ordered = sorted(reference)
    edges: list[float] = []
    for i in range(1, bins):
        edge = ordered[min(len(ordered) - 1, (i * len(ordered)) // bins)]
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def population_stability_index(
    stable: Sequence[Prediction],
    canary: Sequence[Prediction],
    *,
    bins: int = 10,
    epsilon: float = 1e-4,
    kind: Kind = "auto",
) -> float:
    """PSI of `canary` against `stable` (0 = same distribution). Both samples must be non-empty."""
    if not stable or not canary:
        raise ValueError("drift needs predictions from both versions")
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    categorical = _is_categorical([*stable, *canary]) if kind == "auto" else kind == "categorical"
    if categorical:
        expected = Counter(_category(v) for v in stable)
        actual = Counter(_category(v) for v in canary)
        keys: list[Hashable] = sorted(set(expected) | set(actual), key=repr)
    else:
        try:
            reference = [float(v) for v in stable]
            observed = [float(v) for v in canary]
        except ValueError:
            raise ValueError("continuous drift needs numeric predictions") from None
        if any(math.isnan(v) for v in (*reference, *observed)):
            raise ValueError("predictions contain NaN")
        edges = quantile_edges(reference, bins)
        expected = Counter(bisect.bisect_left(edges, v) for v in reference)
        actual = Counter(bisect.bisect_left(edges, v) for v in observed)
        keys = list(range(len(edges) + 1))
    p = smoothed_shares([expected[key] for key in keys], epsilon)
    q = smoothed_shares([actual[key] for key in keys], epsilon)
    return sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))
