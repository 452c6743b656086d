"""Open Inference Protocol v2 tensors as JSON and as the binary tensor data extension, for the data plane.

With the extension, a request or response body is a JSON object (its length in bytes given by the
`Inference-Header-Content-Length` HTTP header), followed by the raw data of every tensor whose
`parameters.binary_data_size` is set, in the order the tensors appear in the JSON, each taking exactly that
many bytes. Raw data is little-endian, row-major, without padding; a BOOL is one byte (0 or 1); a BYTES
element is a 4-byte little-endian unsigned length followed by that many bytes. A client asks for binary
outputs with `parameters.binary_data: true` on a requested output, or `parameters.binary_data_output: true`
on the request (an output's own `binary_data` wins). Without the header the whole body is JSON.

Standard library only (the router's image has no numpy): raw data is read with `struct`, and raw input
data stays a view of the body (no copy) until a caller decodes it. `NUMPY_DTYPES` names the dtype a
numpy user passes to `numpy.frombuffer`. Everything malformed raises `ProtocolError`, whose message says
what is wrong (for a 400).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any

HEADER_LENGTH = b"inference-header-content-length"
"""The HTTP header (lower-case, as `httpcore` keeps names) giving the JSON header's length in bytes."""
BINARY_CONTENT_TYPE = b"content-type: application/octet-stream\r\n"

# struct format character of each fixed-size datatype ("<" makes sizes standard and order little-endian).
FORMATS: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
ITEM_SIZES: dict[str, int] = {datatype: struct.calcsize("<" + code) for datatype, code in FORMATS.items()}
DATATYPES: tuple[str, ...] = (*FORMATS, "BYTES")
NUMPY_DTYPES: dict[str, str] = {
    datatype: ("|" if ITEM_SIZES[datatype] == 1 else "<") + kind + str(ITEM_SIZES[datatype])
    for datatype, kind in zip(FORMATS, "buuuuiiiifff", strict=True)
}
_LENGTH = struct.Struct("<I")


class ProtocolError(ValueError):
    """The body is not a valid inference request or response; the message says why."""


class Tensor:
    """One input or output: `data` (flat, row-major) when it came as JSON, `raw` when it came as binary."""

    __slots__ = ("data", "datatype", "name", "parameters", "raw", "shape")

    def __init__(
        self,
        name: str,
        datatype: str,
        shape: Sequence[int],
        data: list[Any] | None = None,
        raw: memoryview | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.data = data
        self.raw = raw
        self.parameters = parameters or {}

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    def values(self, limit: int | None = None) -> list[Any]:
        """The elements as Python values (BYTES as `bytes` when raw), at most `limit` of them."""
        if self.raw is None:
            data = self.data or []
            return data if limit is None else data[:limit]
        return unpack(self.datatype, self.raw, self.count if limit is None else min(limit, self.count))


# -- raw data ----------------------------------------------------------------------------------------------


def pack(datatype: str, values: Sequence[Any]) -> bytes:
    """The raw data of flat `values` of `datatype` (BYTES elements: `bytes`, or `str` encoded as UTF-8)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in values:
            element = value.encode() if isinstance(value, str) else bytes(value)
            parts += (_LENGTH.pack(len(element)), element)
        return b"".join(parts)
    code = FORMATS.get(datatype)
    if code is None:
        raise ProtocolError(_unknown(datatype))
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except struct.error as error:
        raise ProtocolError(f"values do not fit datatype {datatype}: {error}") from None


def unpack(datatype: str, raw: bytes | memoryview, count: int) -> list[Any]:
    """The first `count` elements of raw data (BYTES elements as `bytes`)."""
    if datatype == "BYTES":
        out: list[Any] = []
        offset = 0
        for _ in range(count):
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            out.append(bytes(raw[offset : offset + length]))
            offset += length
        return out
    return list(struct.unpack_from(f"<{count}{FORMATS[datatype]}", raw))


def _check_raw(where: str, datatype: str, shape: list[int], raw: memoryview) -> None:
    count = math.prod(shape)
    size = ITEM_SIZES.get(datatype)
    if size is not None:
        if len(raw) != count * size:
            raise ProtocolError(
                f"{where} has binary_data_size {len(raw)}, but shape {shape} of {datatype} "
                f"takes {count * size} bytes ({count} x {size})"
            )
        return
    offset = 0
    for index in range(count):
        if offset + 4 > len(raw):
            raise ProtocolError(
                f"{where}: BYTES data ends after {index} of {count} elements (shape {shape}) in "
                f"binary_data_size {len(raw)}"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4 + length
        if offset > len(raw):
            raise ProtocolError(
                f"{where}: BYTES element {index} is {length} bytes long, past the end of binary_data_size "
                f"{len(raw)}"
            )
    if offset != len(raw):
        raise ProtocolError(
            f"{where}: shape {shape} of BYTES takes {offset} bytes, but binary_data_size is {len(raw)}"
        )


# -- bodies ------------------------------------------------------------------------------------------------


def header_length(value: bytes | None, body_size: int) -> int | None:
    """The JSON header's length from the `Inference-Header-Content-Length` value, or None without one."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        shown = value.decode(errors="replace")
        raise ProtocolError(f"Inference-Header-Content-Length must be a number of bytes, got {shown!r}")
    length = int(text)
    if length > body_size:
        raise ProtocolError(
            f"Inference-Header-Content-Length is {length}, but the body has only {body_size} bytes"
        )
    return length


def split(body: bytes, length_header: bytes | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON object of a body and what follows it (a view, not a copy; empty without the header)."""
    length = header_length(length_header, len(body))
    head = body if length is None else body[:length]
    try:
        document = json.loads(head)
    except ValueError as error:
        what = "body" if length is None else f"JSON header (the first {length} bytes of the body)"
        raise ProtocolError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ProtocolError(
            "body must be a JSON object" if length is None else "JSON header must be an object"
        )
    return document, memoryview(body)[len(head) :]


def read_tensors(document: dict[str, Any], binary: memoryview, key: str = "inputs") -> list[Tensor]:
    """The tensors under `key` ("inputs" or "outputs"), checked against their shape and datatype; the
    binary data after the header must be exactly what their `binary_data_size` parameters add up to."""
    entries = document.get(key)
    if not isinstance(entries, list):
        raise ProtocolError(f'expected "{key}": a list of tensors')
    tensors = []
    offset = 0
    for index, entry in enumerate(entries):
        where = f"{key}[{index}]"
        if not isinstance(entry, dict):
            raise ProtocolError(f"{where} must be an object")
        name, datatype, shape = entry.get("name", ""), entry.get("datatype"), entry.get("shape")
        if not isinstance(name, str):
            raise ProtocolError(f"{where}.name must be a string")
        if datatype not in DATATYPES:
            raise ProtocolError(f"{where}: {_unknown(datatype)}")
        if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
            raise ProtocolError(f"{where}.shape must be a list of non-negative integers, got {shape!r}")
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError(f"{where}.parameters must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not _is_size(size):
                raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
            if "data" in entry:
                raise ProtocolError(f"{where} has both data and binary_data_size")
            if offset + size > len(binary):
                if not binary:
                    raise ProtocolError(
                        f"{where} has binary_data_size {size}, but no binary data follows the JSON header "
                        "(is the Inference-Header-Content-Length header missing?)"
                    )
                raise ProtocolError(
                    f"{where}: binary_data_size {size} goes past the end of the body ({len(binary)} bytes "
                    f"follow the JSON header, {offset} of them taken by earlier tensors)"
                )
            raw = binary[offset : offset + size]
            offset += size
            _check_raw(where, datatype, shape, raw)
            tensors.append(Tensor(name, datatype, shape, raw=raw, parameters=parameters))
            continue
        if "data" not in entry:
            raise ProtocolError(f"{where} has neither data nor parameters.binary_data_size")
        data = flatten(entry["data"])
        if len(data) != math.prod(shape):
            raise ProtocolError(
                f"{where}: shape {shape} holds {math.prod(shape)} values but data has {len(data)}"
            )
        tensors.append(Tensor(name, datatype, shape, data=data, parameters=parameters))
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary)} bytes of binary data follow the JSON header, but the binary_data_size of the "
            f"{key} add up to {offset}"
        )
    return tensors


def wants_binary(request: dict[str, Any], output: str) -> bool:
    """Whether a request asks for output `output` as binary data."""
    for requested in request.get("outputs") or ():
        if isinstance(requested, dict) and requested.get("name") == output:
            parameters = requested.get("parameters")
            if isinstance(parameters, dict) and "binary_data" in parameters:
                return parameters["binary_data"] is True
    parameters = request.get("parameters")
    return isinstance(parameters, dict) and parameters.get("binary_data_output") is True


def encode(
    document: dict[str, Any], outputs: Sequence[Tensor], binary: Sequence[bool]
) -> tuple[bytes, int | None]:
    """A response body: `document` with `outputs` added, each as JSON data or, where `binary` says so, as
    raw data after the header. Returns the body and the header length (None when all of it is JSON)."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor, as_binary in zip(outputs, binary, strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        parameters = dict(tensor.parameters)
        values = tensor.values()
        if as_binary:
            chunk = bytes(tensor.raw) if tensor.raw is not None else pack(tensor.datatype, values)
            chunks.append(chunk)
            parameters["binary_data_size"] = len(chunk)
        elif tensor.datatype == "BYTES":
            entry["data"] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values]
        else:
            entry["data"] = values
        if parameters:
            entry["parameters"] = parameters
        entries.append(entry)
    head = json.dumps({**document, "outputs": entries}, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return b"".join((head, *chunks)), len(head)


def flatten(values: Any) -> list[Any]:
    """Nested lists laid out row-major; a scalar is one value."""
    if not isinstance(values, list):
        return [values]
    if not any(isinstance(value, list) for value in values):
        return values
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(flatten(value))
        else:
            out.append(value)
    return out


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unknown(datatype: Any) -> str:
    if datatype == "BF16":
        return "datatype BF16 is not supported (no numpy type holds it)"
    return f"datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}"
