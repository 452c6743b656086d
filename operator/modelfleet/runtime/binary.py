"""The Open Inference Protocol binary data extension over HTTP, for a server that speaks JSON only.

A client such as NVIDIA's tritonclient sends tensors as raw bytes by default: the body is a JSON
header of `Inference-Header-Content-Length` bytes, then each input's data in order, each input
naming its size in `parameters.binary_data_size`. It asks for binary outputs with the request
parameter `binary_data_output: true` (all outputs) or an output's `parameters.binary_data`. MLServer
1.7 answers such a body with an error, so `BinaryDataMiddleware` sits in front of its REST app:

- a request with binary inputs becomes the same request in JSON (`data` lists) before MLServer reads it;
- when binary outputs are asked for, MLServer's JSON answer becomes a JSON header plus the raw bytes
  of those outputs, with `Inference-Header-Content-Length` set.

Requests that use neither pass through untouched. Numbers are little-endian, row-major; BYTES
elements carry a 4-byte little-endian length before each element (Triton's layout). Standard
library only: the codec is pure and is tested without MLServer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from modelfleet.oip import FORMATS, ITEM_SIZES, ProtocolError, flatten, pack, unpack

HEADER = "inference-header-content-length"


class BinaryDataError(ValueError):
    """A request that claims the binary data extension but does not follow it (answered 400)."""


def decode_tensor(datatype: str, raw: bytes) -> list[Any]:
    """The flat `data` list of a tensor sent as raw bytes (BYTES elements as text, for JSON)."""
    if datatype == "BYTES":
        return _decode_bytes(raw)
    if datatype not in FORMATS:
        raise BinaryDataError(f"datatype {datatype!r} is not supported in binary form")
    size = ITEM_SIZES[datatype]
    if len(raw) % size:
        raise BinaryDataError(f"{len(raw)} bytes is not a whole number of {datatype} elements")
    return unpack(datatype, raw, len(raw) // size)


def encode_tensor(datatype: str, data: Any) -> bytes:
    """The raw bytes of a tensor given as a (possibly nested) JSON `data` list."""
    if datatype != "BYTES" and datatype not in FORMATS:
        raise BinaryDataError(f"datatype {datatype!r} is not supported in binary form")
    values = flatten(data)
    if datatype != "BYTES" and FORMATS[datatype] not in "?efd":
        values = [int(v) for v in values]
    try:
        return pack(datatype, values)
    except ProtocolError as error:
        raise BinaryDataError(str(error)) from None


def _decode_bytes(raw: bytes) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BinaryDataError("BYTES tensor ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BinaryDataError("BYTES tensor ends inside an element")
        try:
            out.append(raw[offset : offset + length].decode())
        except UnicodeDecodeError as error:
            raise BinaryDataError("a BYTES element is not UTF-8 text") from error
        offset += length
    return out


@dataclass(frozen=True)
class Outputs:
    """Which outputs of the answer go back in binary form."""

    all: bool = False  # request parameter binary_data_output
    named: frozenset[str] = frozenset()  # outputs asking binary_data: true
    json: frozenset[str] = frozenset()  # outputs asking binary_data: false (wins over `all`)

    def __bool__(self) -> bool:
        return self.all or bool(self.named)

    def wants(self, name: str) -> bool:
        return name in self.named or (self.all and name not in self.json)


def decode_request(body: bytes, header_length: int | None) -> tuple[bytes, Outputs]:
    """A JSON-only inference request equal to `body`, and the outputs to send back in binary form."""
    if header_length is None:
        header, rest = body, b""
    else:
        if not 0 < header_length <= len(body):
            raise BinaryDataError(
                f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes"
            )
        header, rest = body[:header_length], body[header_length:]
    try:
        request = json.loads(header)
    except ValueError as error:
        raise BinaryDataError(f"the inference header is not valid JSON: {error}") from error
    if not isinstance(request, dict):
        raise BinaryDataError("the inference header is not a JSON object")
    offset = 0
    for tensor in request.get("inputs") or []:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        size = parameters.pop("binary_data_size")
        if not isinstance(size, int) or size < 0:
            raise BinaryDataError(f"input {tensor.get('name')!r}: binary_data_size must be a byte count")
        if offset + size > len(rest):
            raise BinaryDataError(
                f"input {tensor.get('name')!r}: binary_data_size {size} runs past the end of the body"
            )
        tensor["data"] = decode_tensor(str(tensor.get("datatype")), rest[offset : offset + size])
        offset += size
        if not parameters:
            del tensor["parameters"]
    if offset != len(rest):
        raise BinaryDataError(f"{len(rest) - offset} bytes after the inference header belong to no input")
    return json.dumps(request).encode(), _requested_outputs(request)


def _requested_outputs(request: dict[str, Any]) -> Outputs:
    parameters = request.get("parameters")
    everything = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    named: set[str] = set()
    as_json: set[str] = set()
    for output in request.get("outputs") or []:
        if not isinstance(output, dict):
            continue
        binary = (output.get("parameters") or {}).get("binary_data")
        if binary is True:
            named.add(str(output.get("name")))
        elif binary is False:
            as_json.add(str(output.get("name")))
    return Outputs(all=everything, named=frozenset(named), json=frozenset(as_json))


def encode_response(body: bytes, outputs: Outputs) -> tuple[bytes, int | None]:
    """The answer with the wanted outputs in binary form, and its JSON header's length (None: as is)."""
    response = json.loads(body)
    tail = bytearray()
    encoded = 0
    for tensor in response.get("outputs") or []:
        if not outputs.wants(str(tensor.get("name"))) or "data" not in tensor:
            continue
        raw = encode_tensor(str(tensor.get("datatype")), tensor.pop("data"))
        tensor["parameters"] = {**(tensor.get("parameters") or {}), "binary_data_size": len(raw)}
        tail += raw
        encoded += 1
    if not encoded:
        return body, None
    header = json.dumps(response).encode()
    return header + bytes(tail), len(header)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BinaryDataMiddleware:
    """ASGI middleware: the binary data extension in front of a JSON-only OIP v2 REST app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/infer"):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != HEADER.encode()]
        announced = _header(scope, HEADER)
        body = await _read_body(receive)
        if announced is None and b'"binary_data' not in body:
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            header_length = int(announced) if announced is not None else None
            body, outputs = decode_request(body, header_length)
        except ValueError as error:  # BinaryDataError, or a malformed header length
            await _answer(send, 400, json.dumps({"error": str(error)}).encode())
            return
        headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        inner = {**scope, "headers": headers}
        if not outputs:
            await self.app(inner, _replay(body, receive), send)
            return
        await self.app(inner, _replay(body, receive), _BinaryAnswer(send, outputs).send)


class _BinaryAnswer:
    """Holds the app's answer until it is complete, then sends it with the binary outputs."""

    def __init__(self, send: Send, outputs: Outputs) -> None:
        self._send = send
        self._outputs = outputs
        self._start: Message | None = None
        self._body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._body += message.get("body", b"")
        if message.get("more_body", False):
            return
        start, body = self._start, bytes(self._body)
        headers = list(start.get("headers", []))
        if start.get("status") == 200 and _is_json(headers):
            try:
                body, header_length = encode_response(body, self._outputs)
            except ValueError as error:
                await _answer(self._send, 500, json.dumps({"error": f"binary output: {error}"}).encode())
                return
            if header_length is not None:
                headers = [
                    (k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")
                ]
                headers += [
                    (b"content-type", b"application/octet-stream"),
                    (HEADER.encode(), str(header_length).encode()),
                ]
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and b"json" in v.lower() for k, v in headers)


def _header(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name.encode():
            return bytes(value).decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body, already read, as one message; later calls wait on the client as before."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
