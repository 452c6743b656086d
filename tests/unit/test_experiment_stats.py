"""The statistics of experiments: a winner only when it holds up, however often one looks.

The simulations are seeded, so every run sees the same experiments. The reference values (Beta
quantiles, P(best)) come from scipy and numpy, which the operator itself does not use.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pytest
from scipy import stats

from modelfleet.analysis.experiment import (
    ExperimentVerdict,
    Goal,
    MeanSummary,
    RateSummary,
    Summary,
    VariantSamples,
    VariantWeight,
    credible_interval,
    decide,
    log_evidence,
    probability_best,
    share_out,
)

CONFIDENCE = 0.95
MIN_SAMPLES = 200
RUNNING, CONCLUDED, INCONCLUSIVE = (
    ExperimentVerdict.RUNNING,
    ExperimentVerdict.CONCLUDED,
    ExperimentVerdict.INCONCLUSIVE,
)
NO_TIME = timedelta(0)


def variants(*summaries: Summary) -> list[VariantSamples]:
    return [VariantSamples(f"iris-v{i + 2}", s) for i, s in enumerate(summaries)]


def successes(rng: random.Random, p: float, n: int) -> int:
    return sum(rng.random() < p for _ in range(n))


@dataclass(frozen=True)
class Run:
    """One simulated experiment, looked at after every batch of samples."""

    winner: str | None
    samples_per_variant: int
    """At the look that concluded, or the last look."""
    naive_winner: bool
    """Whether "P(best) >= confidence" alone would have named a winner at some look."""


def simulate(
    draw: Callable[[random.Random, int, int], Summary],
    shares: Sequence[int],
    rng: random.Random,
    max_looks: int,
    goal: Goal = Goal.MAXIMIZE,
) -> Run:
    """Batches of `shares[i]` samples for variant i (`draw(rng, i, n)`), `decide` after each batch, until
    a winner or `max_looks` batches."""
    summaries: list[Summary] = [draw(rng, i, 0) for i in range(len(shares))]
    naive = False
    for look in range(1, max_looks + 1):
        summaries = [
            merged(s, draw(rng, i, n)) for i, (s, n) in enumerate(zip(summaries, shares, strict=True))
        ]
        result = decide(variants(*summaries), goal, MIN_SAMPLES, CONFIDENCE, NO_TIME)
        if min(s.count for s in summaries) >= MIN_SAMPLES:
            naive = naive or max(v.probability_best or 0 for v in result.variants) >= CONFIDENCE
        if result.winner is not None:
            return Run(result.winner, look * max(shares), naive)
    return Run(None, max_looks * max(shares), naive)


def merged(a: Summary, b: Summary) -> Summary:
    if isinstance(a, RateSummary) and isinstance(b, RateSummary):
        return a.merge(b)
    assert isinstance(a, MeanSummary)
    assert isinstance(b, MeanSummary)
    return a.merge(b)


def rates(ps: Sequence[float]) -> Callable[[random.Random, int, int], Summary]:
    def draw(rng: random.Random, i: int, n: int) -> Summary:
        return RateSummary(successes(rng, ps[i], n), n)

    return draw


def latencies(medians: Sequence[float], sigma: float = 0.5) -> Callable[[random.Random, int, int], Summary]:
    """Skewed, like real latencies: lognormal around each variant's median (seconds)."""

    def draw(rng: random.Random, i: int, n: int) -> Summary:
        mu = math.log(medians[i])
        return MeanSummary.of(rng.lognormvariate(mu, sigma) for _ in range(n))

    return draw


# -- A/A: identical variants, looked at every interval ------------------------------------------------


@pytest.mark.parametrize(
    ("arms", "shares", "experiments", "seed"),
    [(2, (100, 100), 300, 1), (3, (150, 90, 60), 300, 2)],
    ids=["2 variants 50/50", "3 variants 50/30/20"],
)
def test_identical_variants_looked_at_every_interval_rarely_get_a_winner(
    arms: int, shares: tuple[int, ...], experiments: int, seed: int
) -> None:
    """Given identical variants of accuracy 0.9, when the experiment is decided after every batch of
    samples (100 per variant for two; 300 split 50/30/20 for three), up to 20 looks, then at most
    1 - confidence of the experiments name a winner, while "P(best) >= confidence" alone would name
    one more often than that."""
    rng = random.Random(seed)
    runs = [simulate(rates([0.9] * arms), shares, rng, max_looks=20) for _ in range(experiments)]
    false_positives = sum(r.winner is not None for r in runs) / experiments
    naive = sum(r.naive_winner for r in runs) / experiments
    assert false_positives <= 1 - CONFIDENCE, false_positives
    assert naive > 1 - CONFIDENCE, naive


def test_identical_latencies_looked_at_every_interval_rarely_get_a_winner() -> None:
    rng = random.Random(3)
    runs = [
        simulate(latencies([0.2, 0.2]), (100, 100), rng, max_looks=15, goal=Goal.MINIMIZE) for _ in range(200)
    ]
    false_positives = sum(r.winner is not None for r in runs) / len(runs)
    assert false_positives <= 1 - CONFIDENCE, false_positives


# -- real effects --------------------------------------------------------------------------------------


def test_a_real_difference_in_accuracy_is_found_and_the_better_variant_wins() -> None:
    """Given accuracy 0.90 against 0.95, looked at every 100 samples per variant: the better variant
    wins in every run that concludes, nearly all conclude within 2,000 samples per variant, half within
    800."""
    rng = random.Random(4)
    runs = [simulate(rates([0.90, 0.95]), (100, 100), rng, max_looks=20) for _ in range(100)]
    winners = {r.winner for r in runs if r.winner is not None}
    found = [r.samples_per_variant for r in runs if r.winner is not None]
    assert winners == {"iris-v3"}
    assert len(found) >= 95
    assert statistics.median(found) <= 800


def test_the_lowest_error_rate_wins_when_minimizing() -> None:
    """Three variants, error rates 5%, 2% and 5%: the 2% one wins, not the others."""
    rng = random.Random(5)
    runs = [simulate(rates([0.05, 0.02, 0.05]), (100, 100, 100), rng, 30, Goal.MINIMIZE) for _ in range(40)]
    assert {r.winner for r in runs} == {"iris-v3"}


def test_the_lowest_mean_latency_wins_when_minimizing_and_the_highest_when_maximizing() -> None:
    rng = random.Random(6)
    slow_fast = latencies([0.22, 0.2])
    assert {simulate(slow_fast, (100, 100), rng, 30, Goal.MINIMIZE).winner for _ in range(20)} == {"iris-v3"}
    assert {simulate(slow_fast, (100, 100), rng, 30, Goal.MAXIMIZE).winner for _ in range(20)} == {"iris-v2"}


# -- the rule at one look ------------------------------------------------------------------------------


def test_no_winner_before_every_variant_has_min_samples() -> None:
    result = decide(
        variants(RateSummary(190, 200), RateSummary(50, 150)), Goal.MAXIMIZE, 200, CONFIDENCE, NO_TIME
    )
    assert (result.verdict, result.winner) == (RUNNING, None)
    assert result.message == "200 samples per variant needed (iris-v3 150)"
    assert result.variants[0].probability_best == pytest.approx(1.0)


def test_after_max_duration_without_a_winner_it_is_inconclusive_but_a_winner_found_then_still_wins() -> None:
    even = variants(RateSummary(180, 200), RateSummary(181, 200))
    later, limit = timedelta(hours=25), timedelta(hours=24)
    assert decide(even, Goal.MAXIMIZE, 200, CONFIDENCE, timedelta(hours=23), limit).verdict is RUNNING
    assert decide(even, Goal.MAXIMIZE, 200, CONFIDENCE, later, limit).verdict is INCONCLUSIVE
    clear = variants(RateSummary(1800, 2000), RateSummary(1950, 2000))
    result = decide(clear, Goal.MAXIMIZE, 200, CONFIDENCE, later, limit)
    assert (result.verdict, result.winner) == (CONCLUDED, "iris-v3")
    assert result.message == "iris-v3 best with probability 1.000, apart from every other variant"


def test_a_likely_leader_is_not_a_winner_until_the_sequential_test_sets_it_apart() -> None:
    # P(best) about 0.98 at 1,000 samples each: a fixed-sample test would call it, repeated looks may not.
    result = decide(
        variants(RateSummary(900, 1000), RateSummary(925, 1000)), Goal.MAXIMIZE, 200, CONFIDENCE, NO_TIME
    )
    row = result.variants[1]
    assert row.probability_best is not None
    assert row.probability_best > CONFIDENCE
    assert (result.verdict, result.winner) == (RUNNING, None)
    assert result.message.startswith("iris-v3 leads with probability 0.9")
    assert "but is not yet apart from iris-v2 (evidence" in result.message


def test_the_status_rows_say_samples_objective_interval_and_probability_best() -> None:
    result = decide(
        variants(RateSummary(1140, 1200), RateSummary(1000, 1200), RateSummary(1, 1)),
        Goal.MAXIMIZE,
        0,
        CONFIDENCE,
        NO_TIME,
    )
    first, _, third = result.variants
    assert (first.version, first.samples, first.objective) == ("iris-v2", 1200, 0.95)
    assert first.interval == pytest.approx(tuple(stats.beta.ppf([0.025, 0.975], 1141, 61)), abs=2e-4)
    # One sample: no estimate, no interval, and nobody's probability of being best yet.
    assert (third.objective, third.interval, third.probability_best) == (None, None, None)
    assert result.verdict is RUNNING


# -- probability of being best and intervals, against references ---------------------------------------


@pytest.mark.parametrize("goal", [Goal.MAXIMIZE, Goal.MINIMIZE])
def test_probability_best_of_rates_agrees_with_monte_carlo(goal: Goal) -> None:
    counts = [(180, 200), (185, 200), (170, 200)]
    draws = np.random.default_rng(1).beta(
        [[1 + e] for e, _ in counts], [[1 + n - e] for e, n in counts], size=(3, 400_000)
    )
    best = draws.argmax(0) if goal is Goal.MAXIMIZE else draws.argmin(0)
    expected = np.bincount(best, minlength=3) / best.size
    found = probability_best([RateSummary(e, n) for e, n in counts], goal)
    assert found == pytest.approx(expected, abs=0.003)
    assert sum(found) == pytest.approx(1.0)


def test_probability_best_of_means_agrees_with_the_normal_formula() -> None:
    # Two normals: P(A > B) = Phi((mean_a - mean_b) / sqrt(var_a + var_b)).
    a = MeanSummary.of([0.2, 0.3, 0.25, 0.22, 0.27])
    b = MeanSummary.of([0.21, 0.31, 0.26, 0.25, 0.24, 0.3])
    spread = math.sqrt(a.variance / a.count + b.variance / b.count)
    expected = statistics.NormalDist().cdf((a.mean - b.mean) / spread)
    assert probability_best([a, b], Goal.MAXIMIZE) == pytest.approx((expected, 1 - expected), abs=1e-3)
    assert probability_best([a, b], Goal.MINIMIZE) == pytest.approx((1 - expected, expected), abs=1e-3)


def test_identical_variants_are_equally_likely_best() -> None:
    same = [RateSummary(90, 100)] * 4
    assert probability_best(same, Goal.MAXIMIZE) == pytest.approx((0.25,) * 4, abs=1e-9)


@pytest.mark.parametrize(("events", "trials"), [(0, 300), (300, 300), (181, 200), (9000, 10000), (3, 7)])
def test_rate_intervals_are_the_beta_posterior_quantiles(events: int, trials: int) -> None:
    a, b = 1 + events, 1 + trials - events
    low, high = credible_interval(RateSummary(events, trials), CONFIDENCE)
    assert (low, high) == pytest.approx(
        tuple(stats.beta.ppf([0.025, 0.975], a, b)), abs=0.05 * stats.beta.std(a, b)
    )


def test_mean_intervals_are_normal_around_the_mean() -> None:
    summary = MeanSummary.of([0.2, 0.3, 0.25, 0.22, 0.27])
    spread = math.sqrt(summary.variance / summary.count)
    assert credible_interval(summary, CONFIDENCE) == pytest.approx(
        (summary.mean - 1.959964 * spread, summary.mean + 1.959964 * spread)
    )


def test_variants_without_variance_that_differ_are_apart_and_equal_ones_are_not() -> None:
    perfect, off = MeanSummary.of([0.0] * 300), MeanSummary.of([0.5] * 300)
    result = decide(variants(off, perfect), Goal.MINIMIZE, 200, CONFIDENCE, NO_TIME)
    assert (result.verdict, result.winner) == (CONCLUDED, "iris-v3")
    assert log_evidence(perfect, perfect, 200) == 0.0


# -- the sequential test -------------------------------------------------------------------------------


def test_the_evidence_does_not_depend_on_the_unit_of_a_mean() -> None:
    rng = random.Random(8)
    seconds = [[rng.lognormvariate(math.log(m), 0.5) for _ in range(500)] for m in (0.2, 0.21)]
    in_s = [MeanSummary.of(v) for v in seconds]
    in_ms = [MeanSummary.of(x * 1000 for x in v) for v in seconds]
    assert log_evidence(*in_s, 200) == pytest.approx(log_evidence(*in_ms, 200), rel=1e-9)


def test_the_evidence_grows_with_a_real_difference_and_stays_low_without_one() -> None:
    n = 5000
    assert log_evidence(RateSummary(int(0.95 * n), n), RateSummary(int(0.90 * n), n), 200) > 20
    assert log_evidence(RateSummary(int(0.90 * n), n), RateSummary(int(0.90 * n), n), 200) < 0


# -- summaries -----------------------------------------------------------------------------------------


def test_mean_summaries_of_parts_merge_into_the_summary_of_the_whole() -> None:
    rng = random.Random(9)
    values = [rng.gauss(1000.0, 0.01) for _ in range(1000)]
    whole = MeanSummary.of(values)
    parts = (
        MeanSummary.of(values[:10]).merge(MeanSummary.of(values[10:700])).merge(MeanSummary.of(values[700:]))
    )
    added = MeanSummary()
    for value in values:
        added = added.add(value)
    for summary in (whole, parts, added):
        assert summary.count == 1000
        assert summary.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert summary.variance == pytest.approx(statistics.variance(values), rel=1e-6)
    assert MeanSummary().merge(MeanSummary()) == MeanSummary()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="events must be within"):
        RateSummary(5, 4)
    with pytest.raises(ValueError, match=r"2\.\.10 variants"):
        decide(variants(RateSummary(1, 2)), Goal.MAXIMIZE, 0, CONFIDENCE, NO_TIME)
    with pytest.raises(ValueError, match="all rates or all means"):
        decide(variants(RateSummary(1, 2), MeanSummary.of([1, 2])), Goal.MAXIMIZE, 0, CONFIDENCE, NO_TIME)
    with pytest.raises(ValueError, match="unique"):
        decide([VariantSamples("a", RateSummary(1, 2))] * 2, Goal.MAXIMIZE, 0, CONFIDENCE, NO_TIME)
    with pytest.raises(ValueError, match="confidence"):
        decide(variants(RateSummary(1, 2), RateSummary(1, 2)), Goal.MAXIMIZE, 0, 1.0, NO_TIME)


# -- weights after a stop ------------------------------------------------------------------------------


def weights(*pairs: tuple[str, int]) -> list[VariantWeight]:
    return [VariantWeight(v, w) for v, w in pairs]


def test_a_stopped_variants_weight_is_shared_out_in_proportion() -> None:
    three = weights(("iris-v2", 34), ("iris-v3", 33), ("iris-v4", 33))
    # 34 : 33 of 100 is 50.75 : 49.25, rounded to whole percents by the largest remainder.
    assert share_out(three, {"iris-v3"}) == tuple(weights(("iris-v2", 51), ("iris-v3", 0), ("iris-v4", 49)))
    five = weights(*((f"iris-v{i}", 20) for i in range(1, 6)))
    assert [w.weight for w in share_out(five, {"iris-v3"})] == [25, 25, 0, 25, 25]
    unequal = weights(*zip((f"iris-v{i}" for i in range(1, 6)), (10, 15, 20, 25, 30), strict=True))
    assert [w.weight for w in share_out(unequal, {"iris-v5"})] == [14, 21, 29, 36, 0]


def test_sharing_out_nothing_changes_nothing_and_always_adds_up_to_100() -> None:
    three = weights(("iris-v2", 34), ("iris-v3", 33), ("iris-v4", 33))
    assert share_out(three, set()) == tuple(three)
    assert share_out(three, {"iris-v9"}) == tuple(three)
    rng = random.Random(10)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, 100), 4))
        ws = weights(*zip("abcde", np.diff([0, *cuts, 100]).tolist(), strict=True))
        stopped = set(rng.sample("abcde", rng.randint(1, 4)))
        shared = share_out(ws, stopped)
        assert sum(w.weight for w in shared) == 100
        assert all(w.weight == 0 for w in shared if w.version in stopped)


def test_remaining_variants_of_weight_0_share_equally_and_all_stopped_is_refused() -> None:
    ws = weights(("a", 100), ("b", 0), ("c", 0), ("d", 0))
    assert [w.weight for w in share_out(ws, {"a"})] == [0, 34, 33, 33]
    # A variant at 0 (served by a rule only) stays at 0 while others have weight.
    assert [w.weight for w in share_out(weights(("a", 50), ("b", 50), ("c", 0)), {"a"})] == [0, 100, 0]
    with pytest.raises(ValueError, match="every variant is stopped"):
        share_out(ws, {"a", "b", "c", "d"})
