"""A bounded sample of each version's predictions, from which the operator computes drift.

Values come from successful responses: Open Inference Protocol v2 `outputs[0]` and v1 `predictions`
(nested lists are flattened row-major, as v2 lays out its data). Only scalars are kept (numbers, strings,
booleans). Each version keeps its newest `size` values in a ring.

A v2 output may come as JSON `data` or, with the binary tensor data extension (the response has an
`Inference-Header-Content-Length` header), as raw bytes after the JSON header: then only the header is
parsed and at most `MAX_VALUES_PER_RESPONSE` elements are read from the body in place (BYTES as UTF-8
text; NaN and infinities, which JSON cannot carry, are left out). MLServer's JSON outputs are read by
their `parameters.content_type`: `np`, `pd` and `str` data are plain values (a NaN is a null, left out),
`pd_json` elements are JSON texts (decoded, scalars kept) and `base64` elements are decoded to text.

Reading a response costs a JSON parse, so each version reads at most `per_second` responses a second
(a token bucket with a burst of the same size); under heavier traffic the ring holds a thinned,
still recent sample.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from modelfleet import oip

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


def extract(body: bytes, protocol: str, header_length: bytes | None = None) -> list[Scalar]:
    """The predicted values in a response body; [] when it has none in a known shape. `header_length`
    is the response's Inference-Header-Content-Length value (binary tensor data), if it has one."""
    if header_length is not None:
        return _binary_values(body, header_length) if protocol in ("v2", "http") else []
    if not body.startswith(b"{"):
        return []
    try:
        document = json.loads(body)
    except ValueError:
        return []
    values: Any = None
    output: Any = None
    if protocol in ("v2", "http"):
        outputs = document.get("outputs")
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
            output = outputs[0]
            values = output.get("data")
    if values is None and protocol in ("v1", "http"):
        values = document.get("predictions")
    if not isinstance(values, list):
        return []
    return _json_values(values, output)


def _json_values(values: list[Any], output: dict[str, Any] | None) -> list[Scalar]:
    """The scalars of JSON `data` (or v1 predictions), decoded as the v2 `output`'s content type says."""
    out: list[Scalar] = []
    _flatten(values, out, MAX_VALUES_PER_RESPONSE)
    parameters = output.get("parameters") if output is not None else None
    if parameters and isinstance(parameters, dict):
        decode = _DECODERS.get(str(parameters.get("content_type")))
        if decode is not None:
            return _decoded(out, decode)
    return out


def _binary_values(body: bytes, header_length: bytes) -> list[Scalar]:
    """outputs[0] of a response in the binary tensor data extension, parsing only the JSON header."""
    try:
        length = oip.header_length(header_length, len(body)) or 0
        document = json.loads(body[:length])  # the header only
    except ValueError:
        return []
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        return []
    output = outputs[0]
    parameters = output.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        data = output.get("data")
        return _json_values(data, output) if isinstance(data, list) else []
    datatype = output.get("datatype")
    if type(size) is not int or size < 0 or length + size > len(body) or datatype not in oip.DATATYPES:
        return []
    raw = memoryview(body)[length : length + size]  # a view: the body is not copied
    if datatype == "BYTES":
        return _bytes_elements(raw)
    count = min(size // oip.ITEM_SIZES[datatype], MAX_VALUES_PER_RESPONSE)
    values: list[Scalar] = oip.unpack(datatype, raw, count)
    if datatype.startswith("FP"):
        return [v for v in values if not isinstance(v, float) or math.isfinite(v)]
    return values


def _bytes_elements(raw: memoryview) -> list[Scalar]:
    out: list[Scalar] = []
    offset = 0
    while offset + 4 <= len(raw) and len(out) < MAX_VALUES_PER_RESPONSE:
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            break
        out.append(bytes(raw[offset : offset + size]).decode(errors="replace"))
        offset += size
    return out


def _json_text(value: Scalar) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _base64_text(value: Scalar) -> Any:
    return (
        base64.b64decode(value, validate=True).decode(errors="replace") if isinstance(value, str) else value
    )


_DECODERS = {"pd_json": _json_text, "base64": _base64_text}


def _decoded(values: list[Scalar], decode: Callable[[Scalar], Any]) -> list[Scalar]:
    out: list[Scalar] = []
    for value in values:
        try:
            decoded = decode(value)
        except (ValueError, binascii.Error):
            continue
        if isinstance(decoded, _SCALAR_TYPES):
            out.append(decoded)
    return out


class ReadRate:
    """Which responses to read: at most `per_second` a second (a token bucket with a burst of the same size;
    0: every one). Under heavier traffic what is read is a thinned, still recent sample."""

    __slots__ = ("_last", "_tokens", "per_second")

    def __init__(self, per_second: float) -> None:
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


class PredictionSample(ReadRate):
    """The newest `size` predicted values of one version, read from at most `per_second` responses a
    second (0: every response)."""

    __slots__ = ("protocol", "values")

    def __init__(self, protocol: str, size: int = 1000, per_second: float = 200.0) -> None:
        super().__init__(per_second)
        self.protocol = protocol
        self.values: deque[Scalar] = deque(maxlen=size)

    def offer(self, body: bytes, header_length: bytes | None = None) -> None:
        self.values.extend(extract(body, self.protocol, header_length))

    def snapshot(self) -> list[Scalar]:
        return list(self.values)
