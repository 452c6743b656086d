"""Quantiles from histogram buckets, the way Prometheus' `histogram_quantile` computes them."""

from __future__ import annotations

import math
from collections.abc import Iterable


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile (0 <= q <= 1) of a histogram given as (upper bound, cumulative count) pairs.

    Linear interpolation inside the bucket that holds the rank, as Prometheus does: the first bucket
    starts at 0 (or is its own bound when that is <= 0), and a rank in the +Inf bucket answers the
    highest finite bound. None when there is no +Inf bucket, fewer than two buckets, or no observation.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {q}")
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return None
    # Deltas summed over pods can come out slightly non-monotonic; counts are cumulative, so clamp.
    monotonic: list[tuple[float, float]] = []
    highest = 0.0
    for bound, count in ordered:
        highest = max(highest, count)
        monotonic.append((bound, highest))
    observations = monotonic[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    index = next(i for i, (_, count) in enumerate(monotonic) if count >= rank)
    if index == len(monotonic) - 1:
        return monotonic[-2][0]
    bound, count = monotonic[index]
    if index == 0 and bound <= 0:
        return bound
    start = 0.0
    if index > 0:
        start, below = monotonic[index - 1]
        count -= below
        rank -= below
    if count <= 0:
        return start
    return start + (bound - start) * (rank / count)
