"""A bounded sample of each version's predictions, from which the operator computes drift.

Values come from successful JSON responses: Open Inference Protocol v2 `outputs[0].data` and v1
`predictions` (nested lists are flattened row-major, as v2 lays out its data). Only scalars are kept
(numbers, strings, booleans). Each version keeps its newest `size` values in a ring.

Reading a response costs a JSON parse, so each version reads at most `per_second` responses a second
(a token bucket with a burst of the same size); under heavier traffic the ring holds a thinned,
still recent sample.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

Scalar = int | float | str | bool
MAX_VALUES_PER_RESPONSE = 1000
_SCALAR_TYPES = (int, float, str)  # bool is an int


def _flatten(values: Any, out: list[Scalar], limit: int) -> None:
    for value in values:
        if len(out) >= limit:
            return
        if isinstance(value, list):
            _flatten(value, out, limit)
        elif isinstance(value, _SCALAR_TYPES):
            out.append(value)


def extract(body: bytes, protocol: str) -> list[Scalar]:
    """The predicted values in a response body; [] when it has none in a known shape."""
    if not body.startswith(b"{"):
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return []
    values: Any = None
    if protocol in ("v2", "http"):
        outputs = document.get("outputs")
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
            values = outputs[0].get("data")
    if values is None and protocol in ("v1", "http"):
        values = document.get("predictions")
    if not isinstance(values, list):
        return []
    out: list[Scalar] = []
    _flatten(values, out, MAX_VALUES_PER_RESPONSE)
    return out


class PredictionSample:
    """The newest `size` predicted values of one version, read from at most `per_second` responses a
    second (0: every response)."""

    __slots__ = ("_last", "_tokens", "per_second", "protocol", "values")

    def __init__(self, protocol: str, size: int = 1000, per_second: float = 200.0) -> None:
        self.protocol = protocol
        self.values: deque[Scalar] = deque(maxlen=size)
        self.per_second = per_second
        self._tokens = per_second
        self._last = 0.0

    def wants(self, now: float) -> bool:
        """Whether to read the response that completed at `now` (seconds, any monotonic clock)."""
        if not self.per_second:
            return True
        tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def offer(self, body: bytes) -> None:
        self.values.extend(extract(body, self.protocol))

    def snapshot(self) -> list[Scalar]:
        return list(self.values)
