"""Experiments: which of several versions is best on one objective, judged at every interval.

An experiment serves 2..10 variants side by side and measures one objective per variant: a rate
(accuracy, error rate, any share of successes: `RateSummary`) or a mean (latency, mean absolute error:
`MeanSummary`). `decide` is asked at every interval whether one variant is the winner. Looking again
and again is what breaks the textbook rules: "probability of being best >= 95%" alone, checked at every
interval, names a winner among identical variants far more often than 5% of the time (the unit tests
show it). So a winner needs two things:

1. **Probability of being best >= confidence** (what the status shows). Rates: each variant's posterior
   is Beta(1 + events, 1 + trials - events), from a uniform Beta(1, 1) prior. Means: the posterior of
   the mean is Normal(mean, variance / count) (a flat prior, the sample variance for the variance).
   P(best) is integrated numerically on a grid, deterministic for given summaries; the interval is the
   central `confidence` credible interval.
2. **The winner is apart from every other variant by an always-valid sequential test**, a mixture
   sequential probability ratio test (mSPRT; Robbins 1970, Johari et al., "Always valid inference",
   2017). For the difference d of two variants' estimates, with variance v, the likelihood ratio of
   "they differ" against "they are equal", with the difference mixed over Normal(0, tau^2), is

       evidence = sqrt(v / (v + tau^2)) * exp(tau^2 d^2 / (2 v (v + tau^2)))

   Under "equal" this is a nonnegative martingale over the looks, whatever the split between the two
   variants (the estimates have independent increments), so by Ville's inequality the chance that it
   ever reaches 1 / a, at any look of any schedule, is at most a.

Why this keeps the A/A false-positive rate at or below 1 - confidence: with k variants that are all
equal, naming any winner L needs L apart from every other variant, in particular from variant 0 (or,
when L is variant 0, from variant 1). So a false positive needs one of the k - 1 fixed pairs
(1, 0), ..., (k - 1, 0) to reach its threshold at some look. Each pair is tested at
a = (1 - confidence) / (k - 1), threshold (k - 1) / (1 - confidence), so the chance that any of them
ever does is at most 1 - confidence, however often the experiment is looked at.

The guarantee is exact for normal data of known variance; here the variance is estimated (the pooled
share of events for rates, the sample variances for means), so it holds in the normal approximation,
which `min_samples` per variant keeps honest. Samples are taken as independent: many samples from one
sticky user are not, and would make the evidence look stronger than it is. tau^2 changes how soon a
real difference is found, never the guarantee: it is set from the variance per sample so that the test
is sharpest at `max(min_samples, REFERENCE_SAMPLES_FLOOR)` samples per variant (`MIXTURE_RATIO`).

A decision is Running until every variant has `min_samples`, Concluded once a winner is found, and
Inconclusive when `max_duration` passes without one (a winner found at that same look still wins).
Guard metrics are the controller's: it passes only the variants still running, and `share_out` gives
a stopped variant's weight to the others.

Pure Python: the operator image has no numpy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from statistics import NormalDist
from typing import NamedTuple

MAX_VARIANTS = 10
MIN_VARIANT_SAMPLES = 2
"""Below this many samples a variant has no estimate, interval or probability of being best: a mean
of one sample has no variance."""
MIXTURE_RATIO = 10.0
"""tau^2 over the variance of the difference at the reference sample size. The mSPRT threshold in
standard errors, sqrt((1 + 1/r) (2 ln(1/a) + ln(1 + r))) for r = tau^2 / v, is lowest for r from 8
(a = 0.05) to 15 (a = 0.005) and flat around it: 3.28 standard errors at a = 0.025 and r = 10, 3.48 at
10 times the reference sample size (r = 100)."""
REFERENCE_SAMPLES_FLOOR = 100
"""The sequential test is sharpest at max(min_samples, this) samples per variant."""
GRID_POINTS = 64
"""Grid points per variant for the numeric integration of P(best) and the Beta intervals: P(best)
within 0.001 and interval ends within 0.05 posterior standard deviations of exact (scipy), at 0.4 ms
for three variants."""
GRID_HALF_WIDTH = 6.0
"""Each variant's grid spans its posterior mean +- this many posterior standard deviations."""


class Goal(StrEnum):
    MAXIMIZE = "Maximize"
    """Higher is better (accuracy)."""
    MINIMIZE = "Minimize"
    """Lower is better (error rate, latency, mean absolute error)."""


class ExperimentVerdict(StrEnum):
    """The phase the statistics call for; Stopped (by hand) is the controller's."""

    RUNNING = "Running"
    """No winner yet, still within maxDuration."""
    CONCLUDED = "Concluded"
    """A winner is found."""
    INCONCLUSIVE = "Inconclusive"
    """maxDuration passed without a winner."""


@dataclass(frozen=True)
class RateSummary:
    """A rate's counts: `events` of `trials` (correct predictions of labelled ones for accuracy, 5xx of
    requests for the error rate)."""

    events: int
    trials: int

    def __post_init__(self) -> None:
        if not 0 <= self.events <= self.trials:
            raise ValueError(f"events must be within 0..trials, got {self.events} of {self.trials}")

    @property
    def count(self) -> int:
        return self.trials

    @property
    def estimate(self) -> float:
        """The observed rate (0 without trials)."""
        return self.events / self.trials if self.trials else 0.0

    def merge(self, other: RateSummary) -> RateSummary:
        return RateSummary(self.events + other.events, self.trials + other.trials)


@dataclass(frozen=True)
class MeanSummary:
    """Welford's running summary of values: count, mean and the sum of squared deviations `m2`. Summaries
    of parts (router pods, intervals) merge exactly (Chan et al.), so no values need be kept."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def __post_init__(self) -> None:
        if self.count < 0 or self.m2 < 0:
            raise ValueError(f"count and m2 must be >= 0, got {self.count} and {self.m2}")

    @classmethod
    def of(cls, values: Iterable[float]) -> MeanSummary:
        """The summary of `values`, by Welford's update (stable where the textbook sum of squares is not)."""
        count, mean, m2 = 0, 0.0, 0.0
        for value in values:
            count += 1
            delta = value - mean
            mean += delta / count
            m2 += delta * (value - mean)
        return cls(count, mean, m2)

    @property
    def estimate(self) -> float:
        return self.mean

    @property
    def variance(self) -> float:
        """The sample variance (n - 1 in the denominator); 0 below two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    def add(self, value: float) -> MeanSummary:
        count = self.count + 1
        delta = value - self.mean
        mean = self.mean + delta / count
        return MeanSummary(count, mean, self.m2 + delta * (value - mean))

    def merge(self, other: MeanSummary) -> MeanSummary:
        count = self.count + other.count
        if count == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        return MeanSummary(count, mean, self.m2 + other.m2 + delta * delta * self.count * other.count / count)


Summary = RateSummary | MeanSummary


@dataclass(frozen=True)
class VariantSamples:
    """What one variant measured of the objective so far."""

    version: str
    summary: Summary


@dataclass(frozen=True)
class VariantResult:
    """One variant's row of the experiment's status."""

    version: str
    samples: int
    objective: float | None
    """The observed rate or mean; None below `MIN_VARIANT_SAMPLES`."""
    interval: tuple[float, float] | None
    """The central credible interval at the experiment's confidence; None below `MIN_VARIANT_SAMPLES`."""
    probability_best: float | None
    """The posterior probability that this variant is the best; None until every variant has
    `MIN_VARIANT_SAMPLES`."""


@dataclass(frozen=True)
class ExperimentResult:
    """The decision at one look."""

    verdict: ExperimentVerdict
    variants: tuple[VariantResult, ...]
    """In the order the variants were given."""
    winner: str | None
    message: str
    """One line on why, for the status, e.g. `iris-v3 best with probability 0.97, apart from every
    other variant`."""


class VariantWeight(NamedTuple):
    version: str
    weight: int


# -- posteriors and probability of being best -----------------------------------------------------------


class _NormalPosterior:
    """The posterior of a mean: Normal(mean, variance / count)."""

    def __init__(self, mean: float, sd: float) -> None:
        self.dist = NormalDist(mean, sd)

    def window(self) -> tuple[float, float]:
        spread = GRID_HALF_WIDTH * self.dist.stdev
        return self.dist.mean - spread, self.dist.mean + spread

    def density_and_cdf(self, grid: Sequence[float]) -> tuple[list[float], list[float]]:
        return [self.dist.pdf(x) for x in grid], [self.dist.cdf(x) for x in grid]

    def interval(self, level: float, grid: Sequence[float], cdf: Sequence[float]) -> tuple[float, float]:
        tail = (1 - level) / 2
        return self.dist.inv_cdf(tail), self.dist.inv_cdf(1 - tail)


class _BetaPosterior:
    """The posterior of a rate: Beta(1 + events, 1 + non-events); its CDF by the trapezoid rule on a grid."""

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b
        total = a + b
        self.mean = a / total
        self.sd = math.sqrt(a * b / (total * total * (total + 1)))

    def window(self) -> tuple[float, float]:
        spread = GRID_HALF_WIDTH * self.sd
        return max(0.0, self.mean - spread), min(1.0, self.mean + spread)

    def _log_density(self, grid: Sequence[float]) -> list[float]:
        """(a - 1) ln x + (b - 1) ln(1 - x) on the grid, without the constant: the grid normalizes."""
        a1, b1 = self.a - 1, self.b - 1
        logs = [0.0] * len(grid)
        if a1:
            logs = [v + a1 * math.log(x) if x > 0 else -math.inf for v, x in zip(logs, grid, strict=True)]
        if b1:
            logs = [v + b1 * math.log1p(-x) if x < 1 else -math.inf for v, x in zip(logs, grid, strict=True)]
        return logs

    def density_and_cdf(self, grid: Sequence[float]) -> tuple[list[float], list[float]]:
        logs = self._log_density(grid)
        top = max(logs)
        density = [math.exp(v - top) for v in logs]
        cumulative = _cumulative_trapezoid(grid, density)
        total = cumulative[-1]
        return [d / total for d in density], [c / total for c in cumulative]

    def interval(self, level: float, grid: Sequence[float], cdf: Sequence[float]) -> tuple[float, float]:
        tail = (1 - level) / 2
        return _quantile(grid, cdf, tail), _quantile(grid, cdf, 1 - tail)


_Posterior = _NormalPosterior | _BetaPosterior
"""One variant's posterior: its grid window, its density and CDF on a grid, its credible interval
(from its CDF on the grid)."""


def _cumulative_trapezoid(xs: Sequence[float], ys: Sequence[float]) -> list[float]:
    """The running integral of ys over xs by the trapezoid rule, starting at 0."""
    steps = ((x1 - x0) * (y1 + y0) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))
    return list(itertools.accumulate(steps, initial=0.0))


def _trapezoid(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The integral of ys over xs by the trapezoid rule."""
    return sum((x1 - x0) * (y1 + y0) for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False)) / 2


def _quantile(xs: Sequence[float], cdf: Sequence[float], q: float) -> float:
    """The x where a grid CDF reaches q, by linear interpolation."""
    for i in range(1, len(xs)):
        if cdf[i] >= q:
            low, high = cdf[i - 1], cdf[i]
            share = (q - low) / (high - low) if high > low else 0.0
            return xs[i - 1] + share * (xs[i] - xs[i - 1])
    return xs[-1]


def _posterior(summary: Summary) -> _Posterior:
    if isinstance(summary, RateSummary):
        return _BetaPosterior(1 + summary.events, 1 + summary.trials - summary.events)
    sd = math.sqrt(summary.variance / summary.count)
    # All values equal: a point mass, kept integrable with a spread far below any real difference.
    return _NormalPosterior(summary.mean, max(sd, 1e-9 * max(1.0, abs(summary.mean))))


def _grid(posteriors: Sequence[_Posterior]) -> list[float]:
    """Every variant's window at `GRID_POINTS` points, merged: dense wherever some posterior has mass."""
    points: set[float] = set()
    for posterior in posteriors:
        low, high = posterior.window()
        step = (high - low) / (GRID_POINTS - 1)
        points.update(low + i * step for i in range(GRID_POINTS))
    return sorted(points)


@dataclass(frozen=True)
class _OnGrid:
    """The posteriors of all variants, each with its density and CDF on one shared grid."""

    posteriors: tuple[_Posterior, ...]
    grid: list[float]
    curves: tuple[tuple[list[float], list[float]], ...]

    @classmethod
    def of(cls, summaries: Sequence[Summary]) -> _OnGrid:
        posteriors = tuple(_posterior(s) for s in summaries)
        grid = _grid(posteriors)
        return cls(posteriors, grid, tuple(p.density_and_cdf(grid) for p in posteriors))

    def probability_best(self, goal: Goal) -> tuple[float, ...]:
        curves = self.curves
        if goal is Goal.MINIMIZE:
            curves = tuple((density, [1 - c for c in cdf]) for density, cdf in curves)
        shares = []
        for i, (density, _) in enumerate(curves):
            integrand = density
            for j, (_, below) in enumerate(curves):
                if j != i:
                    integrand = [f * b for f, b in zip(integrand, below, strict=True)]
            shares.append(_trapezoid(self.grid, integrand))
        total = sum(shares)
        if total <= 0:
            return tuple(1 / len(shares) for _ in shares)
        return tuple(s / total for s in shares)

    def interval(self, i: int, level: float) -> tuple[float, float]:
        return self.posteriors[i].interval(level, self.grid, self.curves[i][1])


def probability_best(summaries: Sequence[Summary], goal: Goal) -> tuple[float, ...]:
    """For each variant, the posterior probability that its objective is the best of all:
    P(best_i) = integral of density_i(x) * prod_{j != i} P(X_j below x) dx (above x to minimize),
    by the trapezoid rule on a grid dense around every posterior. Deterministic; the results add up
    to 1. Every summary needs `MIN_VARIANT_SAMPLES`."""
    return _OnGrid.of(summaries).probability_best(goal)


def credible_interval(summary: Summary, level: float) -> tuple[float, float]:
    """The central `level` credible interval of a variant's objective (Beta or Normal posterior)."""
    return _OnGrid.of([summary]).interval(0, level)


# -- the always-valid test of two variants --------------------------------------------------------------


def log_evidence(a: Summary, b: Summary, reference_samples: int) -> float:
    """ln of the mSPRT likelihood ratio that variants `a` and `b` differ (module docstring); +inf when
    two variants without variance differ at all.

    Rates: v = p(1 - p)(1/n_a + 1/n_b) with p the pooled share of events (smoothed by the prior), as
    the test is calibrated under "equal". Means: v = s_a^2/n_a + s_b^2/n_b (Welch). tau^2 is
    `MIXTURE_RATIO` times the difference's variance at `reference_samples` per variant, i.e. the mixture
    is over the standardized effect, so the test means the same for seconds or milliseconds."""
    if isinstance(a, RateSummary) and isinstance(b, RateSummary):
        pooled = (a.events + b.events + 1) / (a.trials + b.trials + 2)
        per_sample = pooled * (1 - pooled)
        variance = per_sample * (1 / a.trials + 1 / b.trials)
    elif isinstance(a, MeanSummary) and isinstance(b, MeanSummary):
        per_sample = (a.m2 + b.m2) / (a.count + b.count - 2)
        variance = a.variance / a.count + b.variance / b.count
    else:
        raise ValueError("cannot compare a rate with a mean")
    difference = a.estimate - b.estimate
    if variance <= 0:
        return 0.0 if difference == 0 else math.inf
    tau2 = MIXTURE_RATIO * per_sample * 2 / reference_samples
    return 0.5 * math.log(variance / (variance + tau2)) + tau2 * difference * difference / (
        2 * variance * (variance + tau2)
    )


# -- the decision ---------------------------------------------------------------------------------------


def _check(variants: Sequence[VariantSamples], min_samples: int, confidence: float) -> None:
    if not 2 <= len(variants) <= MAX_VARIANTS:
        raise ValueError(f"an experiment compares 2..{MAX_VARIANTS} variants, got {len(variants)}")
    versions = [v.version for v in variants]
    if len(set(versions)) != len(versions):
        raise ValueError(f"variant versions must be unique: {', '.join(versions)}")
    if len({type(v.summary) for v in variants}) != 1:
        raise ValueError("all variants must measure the objective the same way (all rates or all means)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}")


def _interval(on_grid: _OnGrid | None, i: int, summary: Summary, level: float) -> tuple[float, float] | None:
    """Variant i's credible interval, from the shared grid when there is one."""
    if summary.count < MIN_VARIANT_SAMPLES:
        return None
    return on_grid.interval(i, level) if on_grid is not None else credible_interval(summary, level)


def _better(a: float, b: float, goal: Goal) -> bool:
    return a > b if goal is Goal.MAXIMIZE else a < b


def decide(
    variants: Sequence[VariantSamples],
    goal: Goal,
    min_samples: int,
    confidence: float,
    elapsed: timedelta,
    max_duration: timedelta | None = None,
) -> ExperimentResult:
    """The experiment's verdict at one look: the variants still running (stopped ones left out), the
    goal, `minSamples` per variant, `confidence`, and the time since the experiment started (the clock
    is the caller's). See the module docstring for the rule and why repeated looks do not inflate
    false positives. Raises ValueError for input the API refuses (fewer than 2 or more than 10
    variants, duplicate versions, rates mixed with means, confidence outside (0, 1))."""
    _check(variants, min_samples, confidence)
    summaries = [v.summary for v in variants]
    counts = [s.count for s in summaries]
    enough = all(c >= MIN_VARIANT_SAMPLES for c in counts)
    on_grid = _OnGrid.of(summaries) if enough else None
    best = on_grid.probability_best(goal) if on_grid is not None else None
    rows = tuple(
        VariantResult(
            version=v.version,
            samples=v.summary.count,
            objective=v.summary.estimate if v.summary.count >= MIN_VARIANT_SAMPLES else None,
            interval=_interval(on_grid, i, v.summary, confidence),
            probability_best=None if best is None else best[i],
        )
        for i, v in enumerate(variants)
    )
    out_of_time = max_duration is not None and elapsed >= max_duration
    waiting = ExperimentVerdict.INCONCLUSIVE if out_of_time else ExperimentVerdict.RUNNING
    short = [
        (v.version, c)
        for v, c in zip(variants, counts, strict=True)
        if c < max(min_samples, MIN_VARIANT_SAMPLES)
    ]
    if short or best is None:
        needed = max(min_samples, MIN_VARIANT_SAMPLES)
        lacking = ", ".join(f"{version} {count}" for version, count in short)
        return ExperimentResult(waiting, rows, None, f"{needed} samples per variant needed ({lacking})")
    leader = max(range(len(variants)), key=best.__getitem__)
    name = variants[leader].version
    if best[leader] < confidence:
        return ExperimentResult(
            waiting, rows, None, f"{name} leads with probability {best[leader]:.3f} < {confidence}"
        )
    threshold = math.log((len(variants) - 1) / (1 - confidence))
    reference = max(min_samples, REFERENCE_SAMPLES_FLOOR)
    for other, variant in enumerate(variants):
        if other == leader:
            continue
        evidence = log_evidence(summaries[leader], variant.summary, reference)
        ahead = _better(summaries[leader].estimate, variant.summary.estimate, goal)
        if not ahead or evidence < threshold:
            return ExperimentResult(
                waiting,
                rows,
                None,
                f"{name} leads with probability {best[leader]:.3f} but is not yet apart from "
                f"{variant.version} (evidence {_show(evidence)} of {_show(threshold)} needed, ln)",
            )
    return ExperimentResult(
        ExperimentVerdict.CONCLUDED,
        rows,
        name,
        f"{name} best with probability {best[leader]:.3f}, apart from every other variant",
    )


def _show(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "inf"


# -- weights after a stop -------------------------------------------------------------------------------


def share_out(weights: Sequence[VariantWeight], stopped: Collection[str]) -> tuple[VariantWeight, ...]:
    """The weights with the stopped variants' shares given to the others in proportion to their weights,
    as integers adding up to 100 (largest remainders; ties to the variant listed first). Stopped variants
    keep their place at weight 0; stopped names not among the variants are ignored. When every remaining
    variant has weight 0 they share equally. Raises ValueError when every variant is stopped.

    Proportional shares keep sticky users where they are: rendezvous hashing depends only on the ratios
    of weights (`router.assignment`), so only the stopped variants' users move, up to the rounding."""
    remaining = [i for i, w in enumerate(weights) if w.version not in stopped]
    if not remaining:
        raise ValueError("every variant is stopped: there is nothing to share the traffic out to")
    total = sum(weights[i].weight for i in remaining)
    ideal = {i: (100 * weights[i].weight / total if total else 100 / len(remaining)) for i in remaining}
    shares = {i: math.floor(ideal[i]) for i in remaining}
    left = 100 - sum(shares.values())
    for i in sorted(remaining, key=lambda i: (-(ideal[i] - shares[i]), i))[:left]:
        shares[i] += 1
    return tuple(VariantWeight(w.version, shares.get(i, 0)) for i, w in enumerate(weights))
