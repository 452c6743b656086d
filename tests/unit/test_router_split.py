"""The weighted split: each version's share of draws matches its weight within binomial bounds."""

from __future__ import annotations

import math
import random

import pytest

from modelfleet.api.routerconfig import RouterConfig
from modelfleet.router.proxy import Route, Router


def route(*weights: int) -> Route:
    versions = [
        {"name": f"v{i}", "url": f"http://127.0.0.1:{10000 + i}", "weight": w, "role": "canary"}
        for i, w in enumerate(weights)
    ]
    versions[0]["role"] = "stable"
    router = Router()
    router.apply(RouterConfig.model_validate({"deployment": "d", "versions": versions}))
    assert router.route is not None
    return router.route


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (99, 1), (10, 90), (50, 30, 20), (3, 1)])
def test_each_version_gets_its_weight_within_five_standard_deviations(weights: tuple[int, ...]) -> None:
    split = route(*weights)
    draws = random.Random(sum(weights) * 7919 + len(weights))
    n = 100_000
    counts = dict.fromkeys([b.name for b in split.backends], 0)
    for _ in range(n):
        counts[split.pick(draws.random()).name] += 1
    total = sum(weights)
    for i, weight in enumerate(weights):
        p = weight / total
        bound = 5 * math.sqrt(n * p * (1 - p))
        assert abs(counts[f"v{i}"] - n * p) <= bound, (counts, weights)


def test_a_version_at_weight_zero_is_never_drawn_even_at_the_edges() -> None:
    split = route(100, 0)
    for draw in (0.0, 0.5, 0.999999999):
        assert split.pick(draw).name == "v0"
    split = route(0, 100)
    for draw in (0.0, 0.5, 0.999999999):
        assert split.pick(draw).name == "v1"


def test_draws_map_to_versions_by_cumulative_weight() -> None:
    split = route(50, 30, 20)
    picked = [split.pick(d).name for d in (0.0, 0.49, 0.5, 0.79, 0.8, 0.99)]
    assert picked == ["v0", "v0", "v1", "v1", "v2", "v2"]
