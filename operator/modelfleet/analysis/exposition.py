"""Parse the Prometheus text exposition format (what the router serves on /metrics) into samples.

Only what the analysis needs: sample lines with labels and a value. `# HELP` / `# TYPE` lines and
timestamps are accepted and ignored; histograms arrive as their `_bucket`, `_sum` and `_count` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: hashable, so a (name, labels) pair identifies a series."""


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


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _is_name_char(char: str, first: bool) -> bool:
    if char.isascii() and (char.isalpha() or char in "_:"):
        return True
    return not first and char.isascii() and char.isdigit()


def _parse_value(text: str) -> float:
    lowered = text.lower()
    if lowered in {"+inf", "inf"}:
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)  # accepts "NaN" and exponents; raises ValueError otherwise


def _parse_line(line: str) -> Sample:
    pos = 0
    while pos < len(line) and _is_name_char(line[pos], first=pos == 0):
        pos += 1
    name = line[:pos]
    if not name:
        raise ValueError("expected a metric name")
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while True:
            while pos < len(line) and line[pos] in " \t":
                pos += 1
            if pos < len(line) and line[pos] == "}":
                pos += 1
                break
            start = pos
            while pos < len(line) and _is_name_char(line[pos], first=pos == start):
                pos += 1
            key = line[start:pos]
            if not key:
                raise ValueError(f"expected a label name at column {pos + 1}")
            if line[pos : pos + 2] != '="':
                raise ValueError(f'expected =" after label {key!r}')
            pos += 2
            chars: list[str] = []
            while True:
                if pos >= len(line):
                    raise ValueError(f"unterminated value of label {key!r}")
                char = line[pos]
                if char == '"':
                    pos += 1
                    break
                if char == "\\":
                    escaped = _ESCAPES.get(line[pos + 1 : pos + 2])
                    if escaped is None:
                        raise ValueError(f"bad escape in value of label {key!r}")
                    chars.append(escaped)
                    pos += 2
                    continue
                chars.append(char)
                pos += 1
            if key in labels:
                raise ValueError(f"label {key!r} repeated")
            labels[key] = "".join(chars)
            while pos < len(line) and line[pos] in " \t":
                pos += 1
            if pos < len(line) and line[pos] == ",":
                pos += 1
            elif pos >= len(line) or line[pos] != "}":
                raise ValueError(f"expected , or }} after label {key!r}")
    fields = line[pos:].split()
    if not fields or len(fields) > 2:
        raise ValueError("expected a value and an optional timestamp after the name")
    try:
        value = _parse_value(fields[0])
    except ValueError:
        raise ValueError(f"value {fields[0]!r} is not a number") from None
    return Sample(name, tuple(sorted(labels.items())), value)


def parse_exposition(text: str) -> list[Sample]:
    """All samples in `text`, in order. Raises ExpositionError naming the first bad line."""
    samples: list[Sample] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            samples.append(_parse_line(line))
        except ValueError as error:
            raise ExpositionError(f"line {number}: {error}: {line[:120]!r}") from None
    return samples
