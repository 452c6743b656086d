"""Ground truth: a version's accuracy and mean absolute error, from the labels its routers joined.

Each router pod's /feedback shows, per version, what the labels joined since that router process started
(its `instance`) add up to: `labels`, `correct`, `numericLabels`, `absoluteError`. They are cumulative,
like counters, so what came in between two reads is their difference for the same pod and instance
(`new_labels`). A router seen for the first time (a new pod), a new instance (the router restarted) and
counts that went down (the version left the router's configuration and came back) bring all their
counts as new.

Which labels a metric is judged on (`LabelHistory`): labels come late and for some requests only, so at
modest traffic one window (10 s) holds a few, far below the 50 that accuracy and meanAbsoluteError need
by default (`minSamples`); judged window by window, such a metric would stay Inconclusive for ever. All
labels since the version began being measured would be plenty, but then an old good record hides a
version that has just got worse (after promotion, days of them). So the value is taken over the newest
windows that together hold at least minSamples labels: the current window alone when it holds enough,
else reaching back window by window, as far as the version has been measured. The newest `MAX_WINDOWS`
windows are kept one by one and everything older in one sum, so the memory is bounded and a version
with rare labels is still judged on all it ever had. The result names the span it covers
(`over the last 2m30s`).
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelfleet.analysis.assessment import SampledValue
from modelfleet.api.common import format_duration

MAX_WINDOWS = 60
"""Windows kept one by one per version; older ones are summed into one."""


@dataclass(frozen=True)
class Labels:
    """Labels joined with predictions of one version: how many, how many equal to the prediction, how
    many numeric (both numbers), and the sum of |prediction - label| over those."""

    labels: int = 0
    correct: int = 0
    numeric: int = 0
    absolute_error: float = 0.0

    def __add__(self, other: Labels) -> Labels:
        return Labels(
            self.labels + other.labels,
            self.correct + other.correct,
            self.numeric + other.numeric,
            self.absolute_error + other.absolute_error,
        )

    def since(self, earlier: Labels) -> Labels | None:
        """What was joined after `earlier`, a count of the same router process; None when these counts
        did not grow from it (they started again)."""
        if self.labels < earlier.labels or self.correct < earlier.correct or self.numeric < earlier.numeric:
            return None
        if self.absolute_error < earlier.absolute_error - 1e-9 * max(1.0, earlier.absolute_error):
            return None
        return Labels(
            self.labels - earlier.labels,
            self.correct - earlier.correct,
            self.numeric - earlier.numeric,
            max(0.0, self.absolute_error - earlier.absolute_error),
        )


@dataclass(frozen=True)
class RouterFeedback:
    """One read of one router pod's /feedback."""

    instance: str
    """The router process: another one means it restarted and its counts began again."""
    cursor: int
    """The sequence number of the newest pair joined: the `after` of the next read."""
    enabled: bool
    """Does the router take feedback (its Deployment has spec.feedback)?"""
    versions: Mapping[str, Labels]
    """Per version, the labels joined since the router process started."""


def _count(document: Mapping[str, Any], name: str) -> int:
    value = document.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def parse_feedback(document: Any) -> RouterFeedback:
    """A router's /feedback answer; ValueError saying what is wrong with it."""
    if not isinstance(document, Mapping):
        raise ValueError("the answer is not a JSON object")
    instance = document.get("instance")
    if not isinstance(instance, str) or not instance:
        raise ValueError("instance must be a non-empty string")
    cursor = _count(document, "cursor")
    versions = document.get("versions")
    if versions is None:
        versions = {}
    if not isinstance(versions, Mapping):
        raise ValueError("versions must be an object")
    counts: dict[str, Labels] = {}
    for version, stats in versions.items():
        if not isinstance(stats, Mapping):
            raise ValueError(f"versions.{version} must be an object")
        error = stats.get("absoluteError", 0.0)
        if isinstance(error, bool) or not isinstance(error, numbers.Real) or not math.isfinite(error):
            raise ValueError(f"versions.{version}.absoluteError must be a number")
        counts[str(version)] = Labels(
            _count(stats, "labels"), _count(stats, "correct"), _count(stats, "numericLabels"), float(error)
        )
    return RouterFeedback(instance, cursor, bool(document.get("enabled", False)), counts)


def new_labels(previous: RouterFeedback | None, current: RouterFeedback) -> dict[str, Labels]:
    """What a router joined between two reads, per version: the difference of the counts for the same
    instance; all of them for a router not read before (`previous` None) or restarted, and for a version
    whose counts went down."""
    if previous is None or previous.instance != current.instance:
        return dict(current.versions)
    out: dict[str, Labels] = {}
    for version, now in current.versions.items():
        before = previous.versions.get(version)
        grown = now.since(before) if before is not None else now
        out[version] = grown if grown is not None else now
    return out


def total(parts: Mapping[str, Mapping[str, Labels]], version: str) -> Labels:
    """The labels of `version` over several routers' `new_labels`."""
    out = Labels()
    for labels in parts.values():
        out += labels.get(version, Labels())
    return out


@dataclass(frozen=True)
class Span:
    """Labels joined from `start` on."""

    start: datetime
    labels: Labels


class LabelHistory:
    """One version's labels, window by window since it began being measured: the newest `limit` windows
    one by one, everything older summed into the first."""

    __slots__ = ("limit", "windows")

    def __init__(self, limit: int = MAX_WINDOWS) -> None:
        self.limit = max(2, limit)
        self.windows: deque[Span] = deque()

    def add(self, start: datetime, labels: Labels) -> None:
        """The labels joined in the window that began at `start` (and ends at the next one's start)."""
        self.windows.append(Span(start, labels))
        if len(self.windows) > self.limit:
            oldest, next_oldest = self.windows.popleft(), self.windows.popleft()
            self.windows.appendleft(Span(oldest.start, oldest.labels + next_oldest.labels))

    def newest(self, needed: int, count: Callable[[Labels], int]) -> Span | None:
        """The newest windows together, as few as hold `needed` labels by `count`, else all of them;
        None before any window."""
        found: Span | None = None
        for window in reversed(self.windows):
            found = Span(window.start, window.labels + (found.labels if found else Labels()))
            if count(found.labels) >= needed:
                break
        return found


def _over(span: Span | None, now: datetime) -> str:
    if span is None:
        return "no labels read yet"
    return f"over the last {format_duration(max((now - span.start).total_seconds(), 0.0))}"


def accuracy(history: LabelHistory, needed: int, now: datetime) -> SampledValue:
    """The share of the newest labels (at least `needed` of them, if there are) equal to the prediction."""
    span = history.newest(needed, lambda labels: labels.labels)
    labels = span.labels if span is not None else Labels()
    value = labels.correct / labels.labels if labels.labels else math.nan
    return SampledValue(value, labels.labels, _over(span, now))


def mean_absolute_error(history: LabelHistory, needed: int, now: datetime) -> SampledValue:
    """The mean |prediction - label| of the newest numeric labels (at least `needed`, if there are)."""
    span = history.newest(needed, lambda labels: labels.numeric)
    labels = span.labels if span is not None else Labels()
    value = labels.absolute_error / labels.numeric if labels.numeric else math.nan
    detail = _over(span, now)
    if labels.labels and not labels.numeric:
        detail += f"; none of its {labels.labels} labels is a number"
    return SampledValue(value, labels.numeric, detail)
