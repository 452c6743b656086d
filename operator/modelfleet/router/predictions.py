"""A bounded sample of each version's predictions, from which the operator computes drift.

Values come from successful JSON responses: Open Inference Protocol v2 `outputs[0].data` and v1
`predictions` (nested lists are flattened row-major, as v2 lays out its data). Only scalars are kept
(numbers, strings, booleans). Each version keeps its newest `size` values in a ring.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

Scalar = int | float | str | bool
MAX_VALUES_PER_RESPONSE = 1000


def _flatten(values: Any, out: list[Scalar], limit: int) -> None:
    for value in values:
        if len(out) >= limit:
            return
        if isinstance(value, list):
            _flatten(value, out, limit)
        elif isinstance(value, int | float | str):  # bool is an int
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
    """The newest `size` predicted values of one version."""

    __slots__ = ("protocol", "values")

    def __init__(self, protocol: str, size: int = 1000) -> None:
        self.protocol = protocol
        self.values: deque[Scalar] = deque(maxlen=size)

    def offer(self, body: bytes) -> None:
        self.values.extend(extract(body, self.protocol))

    def snapshot(self) -> list[Scalar]:
        return list(self.values)
