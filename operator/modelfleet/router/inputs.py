"""A bounded sample of each version's request inputs, by feature, from which the operator computes data drift.

A feature is one column of what clients send, by the version's protocol:

- v2 (Open Inference Protocol): an input tensor of shape [n] or [n, 1] is one feature, named after the
  input; one of shape [n, k] is k features, named by the tensor's `parameters.names` (or
  `parameters.feature_names`) when that lists k texts, else `f0`..`f<k-1>` when it is the request's only
  input, else `<input>.f0`..; binary tensor data is read in place. Inputs of more dimensions (images,
  sequences) are not sampled.
- v1: each of `instances` is a list (features `f0`..), an object (its fields) or one value (`f0`).
- http: a body in either shape above is read as such; otherwise a JSON object's fields, or a list of
  objects; a field holding a list of values is a column.

Only scalars are kept (numbers, texts up to `MAX_TEXT` characters, booleans; NaN and infinities left out).
A request gives at most `MAX_ROWS` rows; a version keeps at most `MAX_FEATURES` features (those seen
first) and the newest `size` values of each; at most `per_second` requests a second and version are read
(the parse is the cost), like prediction samples.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from typing import Any

from modelfleet import oip
from modelfleet.router.predictions import ReadRate, Scalar

MAX_ROWS = 100
MAX_FEATURES = 64
MAX_TEXT = 256
MAX_NAME = 128

Columns = dict[str, list[Scalar]]


def extract_inputs(body: bytes, protocol: str, header_length: bytes | None = None) -> Columns:
    """The request's input values by feature; {} when the body holds none in a known shape.
    `header_length` is the request's Inference-Header-Content-Length value (binary tensor data)."""
    if header_length is not None:
        if protocol not in ("v2", "http"):
            return {}
        try:
            document, binary = oip.split(body, header_length)
            return _tensor_columns(oip.read_tensors(document, binary))
        except oip.ProtocolError:
            return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    if isinstance(document, dict):
        if protocol in ("v2", "http") and isinstance(document.get("inputs"), list):
            try:
                return _tensor_columns(oip.read_tensors(document, memoryview(b"")))
            except oip.ProtocolError:
                if protocol == "v2":
                    return {}
        instances = document.get("instances")
        if protocol in ("v1", "http") and isinstance(instances, list):
            return _row_columns(instances[:MAX_ROWS])
        return _row_columns([document]) if protocol == "http" else {}
    if protocol == "http" and isinstance(document, list):
        return _row_columns(document[:MAX_ROWS])
    return {}


def _scalar(value: Any) -> Scalar | None:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):  # and bool
        return value
    return None


def _scalars(values: Iterable[Any]) -> list[Scalar]:
    out = []
    for value in values:
        kept = _scalar(value)
        if kept is not None:
            out.append(kept)
    return out


def _tensor_columns(tensors: list[oip.Tensor]) -> Columns:
    out: Columns = {}
    only = len(tensors) == 1
    for tensor in tensors:
        shape = tensor.shape
        if len(shape) > 2:
            continue
        columns = shape[1] if len(shape) == 2 else 1
        rows = min(shape[0] if shape else 1, MAX_ROWS)
        if not 1 <= columns <= MAX_FEATURES or rows == 0:
            continue
        values = tensor.values(rows * columns)
        for index, name in enumerate(_column_names(tensor, columns, only)):
            column = _scalars(values[index::columns])
            if column:
                out.setdefault(name, []).extend(column)
    return out


def _column_names(tensor: oip.Tensor, columns: int, only: bool) -> list[str]:
    for key in ("names", "feature_names"):
        names = tensor.parameters.get(key)
        if (
            isinstance(names, list)
            and len(names) == columns
            and all(isinstance(name, str) and 0 < len(name) <= MAX_NAME for name in names)
        ):
            return names
    if columns == 1:
        return [tensor.name]
    prefix = "" if only else f"{tensor.name}."
    return [f"{prefix}f{index}" for index in range(columns)]


def _row_columns(rows: list[Any]) -> Columns:
    out: Columns = {}
    for row in rows:
        if isinstance(row, dict):
            for name, value in row.items():
                if len(name) > MAX_NAME:
                    continue
                if isinstance(value, list):
                    column = _scalars(value[:MAX_ROWS])
                    if column:
                        out.setdefault(name, []).extend(column)
                    continue
                kept = _scalar(value)
                if kept is not None:
                    out.setdefault(name, []).append(kept)
        elif isinstance(row, list):
            for index, value in enumerate(row[:MAX_FEATURES]):
                kept = _scalar(value)
                if kept is not None:
                    out.setdefault(f"f{index}", []).append(kept)
        else:
            kept = _scalar(row)
            if kept is not None:
                out.setdefault("f0", []).append(kept)
    return out


class InputSample(ReadRate):
    """The newest `size` values of each input feature of one version, read from at most `per_second`
    requests a second (0: every request)."""

    __slots__ = ("features", "protocol", "size")

    def __init__(self, protocol: str, size: int = 1000, per_second: float = 20.0) -> None:
        super().__init__(per_second)
        self.protocol = protocol
        self.size = size
        self.features: dict[str, deque[Scalar]] = {}

    def offer(self, body: bytes, header_length: bytes | None = None) -> None:
        features = self.features
        for name, values in extract_inputs(body, self.protocol, header_length).items():
            column = features.get(name)
            if column is None:
                if len(features) >= MAX_FEATURES:
                    continue
                column = features[name] = deque(maxlen=self.size)
            column.extend(values)

    def snapshot(self) -> dict[str, list[Scalar]]:
        return {name: list(values) for name, values in self.features.items()}
