"""Windowed per-version traffic from two scrapes of the router pods' counters.

The built-in metrics provider needs no Prometheus: the operator scrapes every router pod's /metrics,
keeps the previous scrape, and takes counter increases between the two. Increases are summed over
pods. A pod whose counters went backwards, lost a series or changed its process start time was
restarted: its current values are the whole increase since then. A pod absent from the previous scrape
counts in full only when its `process_start_time_seconds` shows it started inside the window;
otherwise (an operator restart, a missed scrape) the current scrape is only its baseline.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from modelfleet.analysis.exposition import Labels, Sample
from modelfleet.analysis.histogram import histogram_quantile

REQUESTS = "modelfleet_requests_total"
FALLBACKS = "modelfleet_fallbacks_total"
DEGRADED = "degraded"
"""The fallback reason of requests the router sends to the fallback while it is active, not a failure."""
DURATION = "modelfleet_request_duration_seconds"
MIRRORED = "modelfleet_mirrored_requests_total"
PROCESS_START = "process_start_time_seconds"

COUNTERS: frozenset[str] = frozenset(
    {REQUESTS, FALLBACKS, MIRRORED, f"{DURATION}_bucket", f"{DURATION}_count", f"{DURATION}_sum"}
)
"""The router series treated as counters (everything else in a scrape is ignored)."""

SeriesKey = tuple[str, Labels]


@dataclass(frozen=True)
class Scrape:
    """Samples of every router pod taken at one time; `pods` maps a stable pod key (name or UID)."""

    time: datetime
    pods: Mapping[str, Sequence[Sample]]


def _counters(samples: Sequence[Sample], names: Collection[str]) -> dict[SeriesKey, float]:
    return {(s.name, s.labels): s.value for s in samples if s.name in names}


def _start_time(samples: Sequence[Sample]) -> float | None:
    return next((s.value for s in samples if s.name == PROCESS_START), None)


def counter_increase(
    previous: Scrape, current: Scrape, names: Collection[str] = COUNTERS
) -> dict[SeriesKey, float]:
    """Increase of every counter series between two scrapes, summed over router pods."""
    if current.time <= previous.time:
        raise ValueError(f"scrape at {current.time.isoformat()} is not after {previous.time.isoformat()}")
    total: dict[SeriesKey, float] = {}
    for pod, samples in current.pods.items():
        now = _counters(samples, names)
        started = _start_time(samples)
        if pod in previous.pods:
            before = _counters(previous.pods[pod], names)
            restarted = (
                started != _start_time(previous.pods[pod])
                or any(key not in now for key in before)
                or any(now[key] < value for key, value in before.items())
            )
            if not restarted:
                now = {key: value - before.get(key, 0.0) for key, value in now.items()}
        elif started is None or started < previous.time.timestamp():
            continue  # no baseline for this pod yet
        for key, value in now.items():
            total[key] = total.get(key, 0.0) + value
    return total


@dataclass(frozen=True)
class VersionTraffic:
    """What one version answered during one window (counts are increases, not totals)."""

    version: str
    seconds: float
    requests: float = 0.0
    errors: float = 0.0
    """Requests answered with a 5xx code."""
    fallbacks: Mapping[str, float] = field(default_factory=dict)
    """Fallbacks by reason (retry_on_stable, retry_on_previous, retry_on_fallback, circuit_open,
    static_response, degraded)."""
    latency_buckets: tuple[tuple[float, float], ...] = ()
    """(upper bound in seconds, cumulative count), ascending, the last bound +Inf."""
    duration_sum: float = 0.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float | None:
        """Share of requests answered with 5xx; None without requests."""
        return self.errors / self.requests if self.requests > 0 else None

    @property
    def fallback_rate(self) -> float | None:
        """Fallbacks over requests; None without requests. Requests sent to the fallback while it is
        active (`degraded`) are left out: they never reached the version, which is measured on copies
        then, and counting them would keep a recovered version failing for as long as it is covered."""
        if self.requests <= 0:
            return None
        return sum(v for reason, v in self.fallbacks.items() if reason != DEGRADED) / self.requests

    def latency_quantile(self, q: float) -> float | None:
        """The q-quantile of request duration in seconds; None without observations."""
        return histogram_quantile(q, self.latency_buckets)


def _parse_bound(text: str) -> float | None:
    try:
        return float(text)  # float() reads "+Inf"
    except ValueError:
        return None


def window_traffic(previous: Scrape, current: Scrape, deployment: str) -> dict[str, VersionTraffic]:
    """Per-version traffic of one Deployment between two scrapes, keyed by version."""
    seconds = (current.time - previous.time).total_seconds()
    increase = counter_increase(previous, current)
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    fallbacks: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for (name, labels), value in increase.items():
        label = dict(labels)
        if label.get("deployment") != deployment or "version" not in label:
            continue
        version = label["version"]
        if name == REQUESTS:
            requests[version] = requests.get(version, 0.0) + value
            if label.get("code", "").startswith("5"):
                errors[version] = errors.get(version, 0.0) + value
        elif name == FALLBACKS:
            reasons = fallbacks.setdefault(version, {})
            reason = label.get("reason", "")
            reasons[reason] = reasons.get(reason, 0.0) + value
        elif name == f"{DURATION}_bucket":
            bound = _parse_bound(label.get("le", ""))
            if bound is not None:
                per_bound = buckets.setdefault(version, {})
                per_bound[bound] = per_bound.get(bound, 0.0) + value
        elif name == f"{DURATION}_sum":
            sums[version] = sums.get(version, 0.0) + value
    versions = set(requests) | set(fallbacks) | set(buckets)
    return {
        version: VersionTraffic(
            version=version,
            seconds=seconds,
            requests=requests.get(version, 0.0),
            errors=errors.get(version, 0.0),
            fallbacks=fallbacks.get(version, {}),
            latency_buckets=tuple(sorted(buckets.get(version, {}).items())),
            duration_sum=sums.get(version, 0.0),
        )
        for version in sorted(versions)
    }
