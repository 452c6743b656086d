"""Parse the Prometheus text exposition format (what the router serves on /metrics) into samples.

The parsing is `prometheus_client`'s (`text_string_to_metric_families`); this module flattens its
metric families into samples in text order, keeps every sample's name as written, and turns its errors
into an `ExpositionError` that names the bad line. `# HELP` / `# TYPE` lines and timestamps are read and
ignored; histograms arrive as their `_bucket`, `_sum` and `_count` samples.

prometheus_client's parser is laxer than Prometheus' own: a line with more than one field after the
value keeps the first (the value) and the last (a timestamp), and an unknown escape in a label value
(`\\q`) is kept as written.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: hashable, so a (name, labels) pair identifies a series."""

_TOTAL = "_total"


class ExpositionError(ValueError):
    """The text is not valid Prometheus exposition; the message names the line."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, name: str, default: str = "") -> str:
        for key, value in self.labels:
            if key == name:
                return value
        return default


def _counters_typed_without_total(text: str) -> set[str]:
    """Names of `# TYPE NAME counter` lines whose NAME lacks `_total`.

    prometheus_client appends `_total` to the samples of such a counter; Prometheus keeps the names as
    written, and so does `parse_exposition` (unless the text also declares NAME_total a counter: then
    the two cannot be told apart and both keep prometheus_client's names).
    """
    declared = set()
    for line in io.StringIO(text):
        fields = line.split()
        if len(fields) == 4 and fields[:2] == ["#", "TYPE"] and fields[3] == "counter":
            declared.add(fields[2])
    return {name for name in declared if not name.endswith(_TOTAL) and name + _TOTAL not in declared}


def _float(value: float) -> float:
    """prometheus_client reads integral values as int, which may be too large for a float."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _error(text: str, error: Exception) -> ExpositionError:
    """`error` with the first line that fails on its own (prometheus_client's errors name none)."""
    for number, raw in enumerate(io.StringIO(text), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            list(text_string_to_metric_families(line))
        except (ValueError, OverflowError) as line_error:  # overflow: a timestamp too large
            reason = str(line_error) or "not a sample, a # HELP or a # TYPE line"
            return ExpositionError(f"line {number}: {reason}: {line[:120]!r}")
    return ExpositionError(str(error) or "not Prometheus text exposition")


def parse_exposition(text: str) -> list[Sample]:
    """All samples in `text`, in order. Raises ExpositionError naming the first bad line."""
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, OverflowError) as error:
        raise _error(text, error) from None
    untotalled = _counters_typed_without_total(text)
    samples: list[Sample] = []
    for family in families:
        strip_total = family.type == "counter" and family.name in untotalled
        for sample in family.samples:
            name = sample.name[: -len(_TOTAL)] if strip_total else sample.name
            samples.append(Sample(name, tuple(sorted(sample.labels.items())), _float(sample.value)))
    return samples
