"""The sampled metrics: dataDrift, accuracy and meanAbsoluteError, from the router pods' admin port.

Every window, for the version under judgement (and, during a rollout, for the stable version, for the
metrics with a ratio bound: `Reading.stable_sampled`):

- dataDrift: the input samples of every router pod's /inputs (`{version: {feature: [values]}}`, the newest
  1,000 values per feature and pod), merged across pods, against the version's reference profile
  (ModelVersion `spec.reference`, read and kept by `reference.ReferenceProfiles`), by the metric's
  `method`, over its `features`, each feature needing `minSamples` inputs
  (`modelfleet.analysis.datadrift`). The value is the largest statistic; the result's message names the
  features that decide the verdict (`petal_width psi 0.41 > 0.2 (n=250); ...`). A version without
  `spec.reference`, or whose profile cannot be read, is an Error saying so.
- accuracy, meanAbsoluteError: from every router pod's /feedback, whose counts are cumulative per router
  process: what a window adds is the difference from the previous read of the same pod and instance (a
  restarted router's counts are all new; `modelfleet.analysis.groundtruth`). The value is taken over the
  newest windows that together hold at least `minSamples` labels (numeric ones for meanAbsoluteError),
  reaching back as far as the version has been measured by this Monitor when its labels are rare, so a
  modest traffic is judged at all and a version that just got worse is not hidden by its past; the
  message names the span (`62 samples; over the last 1m40s`).

The first /feedback read of a Monitor is the baseline of its next window (`Reading.baseline`), as the
router metrics' first scrape is: counts that routers gathered before are not this window's. What is kept
per Monitor is each router pod's last /feedback read (dropped when the pod is gone) and each measured
version's `LabelHistory` (dropped when the version is no longer measured); losing it (an operator
restart) costs one window. No router pod running yet is Inconclusive; pods that do not answer are
named in the message, judged on those that did; none answering is an Error. The pods are reached as
the router metrics reach them (`routeradmin`: discovery, admin token, timeouts, refusals).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelfleet.analysis import ProviderError, SampledValue, data_drift
from modelfleet.analysis.datadrift import as_sampled
from modelfleet.analysis.groundtruth import (
    LabelHistory,
    RouterFeedback,
    accuracy,
    mean_absolute_error,
    new_labels,
    parse_feedback,
    total,
)
from modelfleet.api import ModelVersion
from modelfleet.api.monitor import SAMPLED_METRICS, Metric, MetricType
from modelfleet.providers import Key, Reading, Target
from modelfleet.providers.reference import ReferenceProfiles
from modelfleet.providers.routeradmin import NO_ROUTERS, AdminAnswers, RouterAdmin

Versions = Callable[[str, str], ModelVersion | None]
"""(namespace, name) -> the ModelVersion, or None when there is none (or it is not valid)."""
Values = dict[str, SampledValue | ProviderError]

GROUND_TRUTH = frozenset({MetricType.ACCURACY, MetricType.MEAN_ABSOLUTE_ERROR})


@dataclass
class _Feedback:
    """What one Monitor keeps between windows for its ground-truth metrics."""

    started: bool = False
    """Has a read given the baseline yet?"""
    last: datetime | None = None
    """When the last read that some pod answered was taken: the start of the next window."""
    routers: dict[str, RouterFeedback] = field(default_factory=dict)
    """The last read of each running router pod, by pod name."""
    versions: dict[str, LabelHistory] = field(default_factory=dict)
    """The labels of each version measured, window by window."""


def _merged_inputs(answers: AdminAnswers, version: str) -> dict[str, list[Any]]:
    """The input samples of `version`, feature by feature, from every pod that answered /inputs."""
    merged: dict[str, list[Any]] = {}
    for pod in sorted(answers.answers):
        document = answers.answers[pod]
        features = document.get(version) if isinstance(document, dict) else None
        if not isinstance(features, dict):
            continue
        for feature, values in features.items():
            if isinstance(values, list):
                merged.setdefault(str(feature), []).extend(values)
    return merged


def _noted(value: SampledValue | ProviderError, note: str) -> SampledValue | ProviderError:
    """`value` with `note` (e.g. which pods did not answer) after its detail."""
    if not note or isinstance(value, ProviderError):
        return value
    detail = f"{value.detail}; {note}" if value.detail else note
    return SampledValue(value.value, value.samples, detail[:1024])


def _pending(metrics: Sequence[Metric]) -> Values:
    """No router pod runs yet: nothing sampled (Inconclusive)."""
    return {m.name: SampledValue(math.nan, 0, NO_ROUTERS) for m in metrics}


def _failed(metrics: Sequence[Metric], message: str) -> Values:
    return {m.name: ProviderError(message[:1024]) for m in metrics}


class SampledMetrics:
    """The provider of the sampled metric types: dataDrift, accuracy, meanAbsoluteError."""

    def __init__(self, routers: RouterAdmin, references: ReferenceProfiles, versions: Versions) -> None:
        self.routers = routers
        """How the router pods are found and asked (shared with the router metrics)."""
        self.references = references
        self.versions = versions
        self._feedback: dict[Key, _Feedback] = {}

    def handles(self, metric: Metric) -> bool:
        return metric.type in SAMPLED_METRICS

    async def measure(self, target: Target, metrics: Sequence[Metric], now: datetime) -> Reading:
        drift = [m for m in metrics if m.type == MetricType.DATA_DRIFT]
        truth = [m for m in metrics if m.type in GROUND_TRUTH]
        sampled: Values = {}
        stable: Values = {}
        baseline = False
        jobs = []
        if drift:
            jobs.append(self._data_drift(target, drift))
        if truth:
            jobs.append(self._ground_truth(target, truth, now))
        else:
            self._feedback.pop(target.monitor, None)  # its ground-truth metrics were removed
        for mine, theirs, first in await asyncio.gather(*jobs):
            sampled.update(mine)
            stable.update(theirs)
            baseline = baseline or first
        if baseline:
            return Reading(baseline=True)
        return Reading(sampled=sampled, stable_sampled=stable if target.reference else {})

    def forget(self, monitor: Key) -> None:
        self._feedback.pop(monitor, None)

    async def close(self) -> None:
        await self.routers.http.close()

    # -- dataDrift -------------------------------------------------------------------------------------------

    async def _data_drift(self, target: Target, metrics: Sequence[Metric]) -> tuple[Values, Values, bool]:
        answers = await self.routers.read_json(target, "/inputs", without="no input samples from them")
        sides = [(target.version, list(metrics))]
        if target.reference:
            sides.append((target.reference, [m for m in metrics if m.has_ratio]))
        out: list[Values] = []
        for version, wanted in sides:
            if not answers.pods:
                out.append(_pending(wanted))
            elif answers.error:
                out.append(_failed(wanted, answers.error))
            elif wanted:
                out.append(await self._drift_of(target.namespace, version, wanted, answers))
            else:
                out.append({})
        mine, theirs = out[0], out[1] if len(out) > 1 else {}
        return mine, theirs, False

    async def _drift_of(
        self, namespace: str, version: str, metrics: Sequence[Metric], answers: AdminAnswers
    ) -> Values:
        found = self.versions(namespace, version)
        if found is None:
            return _failed(metrics, f"ModelVersion {version} not found")
        reference = found.spec.reference
        if reference is None:
            return _failed(metrics, f"ModelVersion {version} has no spec.reference")
        profile = await self.references.profile(namespace, version, reference)
        if isinstance(profile, ProviderError):
            return {m.name: profile for m in metrics}
        sample = _merged_inputs(answers, version)
        values: Values = {}
        for metric in metrics:
            try:
                drift = data_drift(
                    profile,
                    sample,
                    method=metric.drift_method,
                    limit=metric.max if metric.max is not None else math.inf,
                    features=metric.features,
                    min_samples=metric.samples_needed,
                )
            except ValueError as error:
                values[metric.name] = ProviderError(f"dataDrift: {error}"[:1024])
                continue
            values[metric.name] = _noted(as_sampled(drift), answers.partial)
        return values

    # -- accuracy, meanAbsoluteError -------------------------------------------------------------------------

    async def _ground_truth(
        self, target: Target, metrics: Sequence[Metric], now: datetime
    ) -> tuple[Values, Values, bool]:
        state = self._feedback.setdefault(target.monitor, _Feedback())

        def after(pod: str) -> str:
            read = state.routers.get(pod)
            return f"after={read.cursor if read is not None else 0}"

        answers = await self.routers.read_json(target, "/feedback", after, without="no labels from them")
        theirs = [m for m in metrics if m.has_ratio] if target.reference else []
        if not answers.pods:
            state.routers.clear()
            state.started, state.last = True, now  # routers that start later bring all their labels
            return _pending(metrics), _pending(theirs), False
        reads: dict[str, RouterFeedback] = {}
        failures = dict(answers.failures)
        for pod, document in answers.answers.items():
            try:
                reads[pod] = parse_feedback(document)
            except ValueError as error:
                failures[pod] = f"bad /feedback answer: {error}"
        if not reads:
            why = "; ".join(f"{pod}: {reason}" for pod, reason in sorted(failures.items()))
            message = f"no router pod answered /feedback: {why}"
            return _failed(metrics, message), _failed(theirs, message), False
        if not any(read.enabled for read in reads.values()):
            message = (
                f"the routers of Deployment {target.deployment} take no feedback: it has no spec.feedback"
            )
            return _failed(metrics, message), _failed(theirs, message), False
        added = {pod: new_labels(state.routers.get(pod), read) for pod, read in reads.items()}
        running = set(answers.pods)
        state.routers = {
            pod: read for pod, read in {**state.routers, **reads}.items() if pod in running
        }  # a pod that did not answer keeps its last read: its labels come with its next answer
        start, state.last = state.last, now
        if not state.started or start is None:
            state.started = True
            return {}, {}, True
        measured = [target.version] + ([target.reference] if theirs and target.reference else [])
        state.versions = {v: state.versions[v] if v in state.versions else LabelHistory() for v in measured}
        for version in measured:
            state.versions[version].add(start, total(added, version))
        note = ""
        if failures:
            note = f"{len(reads)} of {len(answers.pods)} router pods answered /feedback"
        mine = self._truth_values(metrics, state.versions[target.version], now, note)
        stable: Values = {}
        if theirs and target.reference:
            stable = self._truth_values(theirs, state.versions[target.reference], now, note)
        return mine, stable, False

    @staticmethod
    def _truth_values(metrics: Sequence[Metric], history: LabelHistory, now: datetime, note: str) -> Values:
        values: Values = {}
        for metric in metrics:
            needed = metric.samples_needed
            if metric.type == MetricType.ACCURACY:
                value = accuracy(history, needed, now)
            else:
                value = mean_absolute_error(history, needed, now)
            values[metric.name] = _noted(value, note)
        return values


__all__ = ["GROUND_TRUTH", "SampledMetrics", "Versions"]
