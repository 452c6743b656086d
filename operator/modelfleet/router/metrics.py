"""Prometheus metrics kept cheap for the request path, rendered in the text exposition format.

A request touches only pre-resolved children (`child.inc()`, `child.observe(seconds)`): no label lookup,
no lock (the router is one event loop). Families render themselves on scrape.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

# Fine enough to read p50..p99 anywhere between 1 ms and 10 s (each bound at most ~1.5x the previous).
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild(CounterChild):
    __slots__ = ()

    def set(self, value: float) -> None:
        self.value = value


class HistogramChild:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class _Family:
    kind = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, documentation, labelnames)
        self.children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = CounterChild()
        return child

    def render(self) -> list[str]:
        lines = self.header()
        for values, child in sorted(self.children.items()):
            lines.append(f"{self.name}{_labels(self.labelnames, values)} {_number(child.value)}")
        return lines


class Gauge(_Family):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        function: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.children: dict[tuple[str, ...], GaugeChild] = {}
        self.function = function

    def labels(self, *values: str) -> GaugeChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = GaugeChild()
        return child

    def render(self) -> list[str]:
        lines = self.header()
        if self.function is not None:
            lines.append(f"{self.name} {_number(self.function())}")
        for values, child in sorted(self.children.items()):
            lines.append(f"{self.name}{_labels(self.labelnames, values)} {_number(child.value)}")
        return lines


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        buckets: tuple[float, ...] = DURATION_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        if list(buckets) != sorted(set(buckets)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.buckets = tuple(float(bound) for bound in buckets)
        self.children: dict[tuple[str, ...], HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = HistogramChild(self.buckets)
        return child

    def render(self) -> list[str]:
        lines = self.header()
        for values, child in sorted(self.children.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), child.counts, strict=True):
                cumulative += count
                le = 'le="+Inf"' if bound == float("inf") else f'le="{bound!r}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, values, le)} {cumulative}")
            labels = _labels(self.labelnames, values)
            lines.append(f"{self.name}_sum{labels} {_number(child.sum)}")
            lines.append(f"{self.name}_count{labels} {child.count}")
        return lines


class Registry:
    def __init__(self) -> None:
        self.families: list[_Family] = []

    def register(self, family: _Family) -> None:
        if any(existing.name == family.name for existing in self.families):
            raise ValueError(f"metric {family.name} is already registered")
        self.families.append(family)

    def render(self) -> bytes:
        lines: list[str] = []
        for family in self.families:
            lines.extend(family.render())
        return ("\n".join(lines) + "\n").encode()


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class RouterMetrics:
    """The router's metric families (names are part of the API contract)."""

    def __init__(self, in_flight: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = Registry()
        labels = ("deployment", "version")
        self.requests = Counter(
            "modelfleet_requests_total",
            "Attempts at each version by HTTP status code (502: connection failed, 504: timed out, "
            "503: skipped by an open circuit); version fallback-static counts static responses.",
            (*labels, "code"),
        )
        self.duration = Histogram(
            "modelfleet_request_duration_seconds",
            "Time from sending a request to a version to its complete response, in seconds.",
            labels,
        )
        self.fallbacks = Counter(
            "modelfleet_fallbacks_total",
            "Requests a version could not answer, by what answered instead (retry_on_stable, "
            "retry_on_previous, retry_on_fallback, circuit_open, static_response), or sent to the fallback "
            "while it is active (degraded).",
            (*labels, "reason"),
        )
        self.mirrored = Counter(
            "modelfleet_mirrored_requests_total",
            "Copies of live requests sent to a version (of stable's to the canary; while the fallback is "
            "active, to stable), responses discarded.",
            labels,
        )
        self.circuit_open = Gauge(
            "modelfleet_circuit_open", "1 while the version's circuit breaker is open, else 0.", labels
        )
        self.rejected = Counter(
            "modelfleet_router_rejected_total",
            "Requests the router answered itself before choosing a version, by status code.",
            ("deployment", "code"),
        )
        self.config_loads = Counter(
            "modelfleet_router_config_loads_total",
            "Configurations read, by result (applied, invalid).",
            ("result",),
        )
        self.feedback = Counter(
            "modelfleet_router_feedback_total",
            "Labels sent to the feedback endpoint, by outcome (joined, duplicate, expired, unknown, invalid, "
            "mismatch, unauthorized, forbidden, disabled, unavailable).",
            ("deployment", "outcome"),
        )
        self.admin_refused = Counter(
            "modelfleet_router_admin_refused_total",
            "Requests for the admin paths that show user data (/predictions, /inputs, /feedback, /config) "
            "refused: 401 without a bearer token, 403 with another, 503 while the token file cannot be read.",
            ("deployment", "code"),
        )
        self.labels = Counter(
            "modelfleet_feedback_labels_total",
            "Served predictions joined with their true label (each value of a batch counts).",
            labels,
        )
        self.correct = Counter(
            "modelfleet_feedback_correct_total",
            "Joined predictions equal to their label: accuracy is correct / labels.",
            labels,
        )
        self.numeric_labels = Counter(
            "modelfleet_feedback_numeric_labels_total",
            "Joined predictions where the prediction and the label are both numbers.",
            labels,
        )
        self.absolute_error = Counter(
            "modelfleet_feedback_absolute_error_total",
            "Sum of |prediction - label| over the numeric joined predictions: the mean absolute error is "
            "this over numeric labels.",
            labels,
        )
        self.capture_records = Counter(
            "modelfleet_capture_records_total",
            "Answers captured with their requests (taken into the capture buffer), by the version that "
            "answered.",
            labels,
        )
        self.capture_dropped = Counter(
            "modelfleet_capture_dropped_total",
            "Captured records never written, by reason: buffer_full, too_large (over maxRecordBytes), "
            "store_error (their batch was refused or timed out), unencodable, shutdown (not written in "
            "time when the router stopped).",
            ("deployment", "reason"),
        )
        self.capture_batches = Counter(
            "modelfleet_capture_batches_total",
            "Batches of captured records the writer tried to store, by outcome (written, failed).",
            ("deployment", "outcome"),
        )
        self.capture_written_records = Counter(
            "modelfleet_capture_written_records_total",
            "Captured records written to the store.",
            ("deployment",),
        )
        self.capture_written_bytes = Counter(
            "modelfleet_capture_written_bytes_total",
            "Bytes of the objects written to the store (after compression).",
            ("deployment",),
        )
        self.capture_buffered_records = Gauge(
            "modelfleet_capture_buffered_records",
            "Captured records held in memory: waiting for the writer or being written.",
            ("deployment",),
        )
        self.capture_buffered_bytes = Gauge(
            "modelfleet_capture_buffered_bytes",
            "Bytes the capture buffer holds (bodies and a fixed overhead per record).",
            ("deployment",),
        )
        self.in_flight = Gauge(
            "modelfleet_router_in_flight_requests", "Client requests being handled now.", function=in_flight
        )
        start = time.time()
        self.process_start = Gauge(
            "process_start_time_seconds",
            "Start time of the process since the epoch, in seconds.",
            function=lambda: start,
        )
        for family in (
            self.requests,
            self.duration,
            self.fallbacks,
            self.mirrored,
            self.circuit_open,
            self.rejected,
            self.config_loads,
            self.feedback,
            self.admin_refused,
            self.labels,
            self.correct,
            self.numeric_labels,
            self.absolute_error,
            self.capture_records,
            self.capture_dropped,
            self.capture_batches,
            self.capture_written_records,
            self.capture_written_bytes,
            self.capture_buffered_records,
            self.capture_buffered_bytes,
            self.in_flight,
            self.process_start,
        ):
            self.registry.register(family)

    def render(self) -> bytes:
        return self.registry.render()
