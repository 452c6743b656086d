"""HTTP endpoints of the model server (Open Inference Protocol v2, and v1 `:predict`).

    GET  /v2/health/live, /v2/health/ready, /v2     server liveness, readiness, metadata
    GET  /v2/models/<name>[/versions/<v>][/ready]    model metadata, readiness
    POST /v2/models/<name>[/versions/<v>]/infer      {"inputs": [{"shape": [n, 4], "datatype", "data"}]}
                                                     (or the binary tensor data extension, see below)
    GET  /v1/models/<name>                           {"name", "ready"}
    POST /v1/models/<name>:predict                   {"instances": [[4 numbers]]} -> {"predictions": [...]}

Inference requests may use the Open Inference Protocol's binary tensor data extension (`modelfleet.oip`):
a JSON header of `Inference-Header-Content-Length` bytes, then the raw input tensors (any numeric
datatype, BOOL, or BYTES, which this model refuses: it takes numbers). The answer is binary when the request
asks for it (`binary_data` on the requested output, or `binary_data_output` in the request parameters),
JSON otherwise.

Every response carries `X-Modelfleet-Model-Version`. Bad input gets 400 with {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from modelfleet import oip
from modelfleet.httpcore import Request, Response
from modelfleet.modelserver.faults import Faults
from modelfleet.modelserver.model import CLASSES, Predictor

VERSION_HEADER = "x-modelfleet-model-version"


OUTPUT = "label"


class BadRequest(oip.ProtocolError):
    """The request body cannot be understood; the message says why."""


def _rows(values: Any, shape: Any, features: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest("data must be numbers (a flat list, or rows of equal length)") from None
    if shape is not None:
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise BadRequest(f"shape must be a list of non-negative integers, got {shape!r}")
        if int(np.prod(shape)) != array.size:
            raise BadRequest(f"shape {shape} holds {int(np.prod(shape))} values but data has {array.size}")
        array = array.reshape(shape)
    if array.ndim == 1 and array.size == features:
        array = array.reshape(1, features)
    if array.ndim == 1 and array.size % features == 0 and shape is None:
        array = array.reshape(-1, features)
    if array.ndim != 2 or array.shape[1] != features:
        raise BadRequest(f"expected rows of {features} features, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise BadRequest("data must be finite numbers")
    return array


def parse_v2(
    body: bytes, features: int, header_length: bytes | None = None
) -> tuple[np.ndarray, str | None, dict[str, Any]]:
    """(rows, request id, request) of an Open Inference Protocol v2 infer request, in JSON or with the
    binary tensor data extension (`header_length`: the Inference-Header-Content-Length value)."""
    document, binary = oip.split(body, header_length)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        raise BadRequest(
            'expected {"inputs": [{"name": ..., "shape": [n, 4], "datatype": "FP32", "data": [...]}]}'
        )
    if header_length is None and not any(_binary_input(entry) for entry in inputs):
        tensor = inputs[0]
        if "data" not in tensor:
            raise BadRequest("inputs[0] has no data")
        rows = _rows(tensor["data"], tensor.get("shape"), features)
    else:
        rows = _tensor_rows(oip.read_tensors(document, binary)[0], features)
    request_id = document.get("id")
    return rows, (str(request_id) if request_id is not None else None), document


def _binary_input(entry: Any) -> bool:
    parameters = entry.get("parameters") if isinstance(entry, dict) else None
    return isinstance(parameters, dict) and "binary_data_size" in parameters


def _tensor_rows(tensor: oip.Tensor, features: int) -> np.ndarray:
    if tensor.datatype == "BYTES":
        raise BadRequest("inputs[0] has datatype BYTES, but this model takes numbers")
    if tensor.raw is None:
        return _rows(tensor.data, tensor.shape, features)
    values = np.frombuffer(tensor.raw, dtype=oip.NUMPY_DTYPES[tensor.datatype])
    return _rows(values, tensor.shape, features)


def parse_v1(body: bytes, features: int) -> np.ndarray:
    """Rows of a v1 `:predict` request."""
    instances = _json(body).get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest('expected {"instances": [[4 numbers], ...]}')
    return _rows(instances, None, features)


def _json(body: bytes) -> dict[str, Any]:
    return oip.split(body, None)[0]


def _outputs_wanted(request: dict[str, Any]) -> None:
    """Refuse a request for outputs this model does not have."""
    requested = request.get("outputs")
    if requested is None:
        return
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    for output in requested:
        if output.get("name") != OUTPUT:
            raise BadRequest(f"no output named {output.get('name')!r} (this model has: {OUTPUT})")


class ModelServer:
    """Answers requests for one model (`name`) with `predictor`, applying `faults`."""

    def __init__(
        self,
        predictor: Predictor,
        name: str = "iris",
        version: str = "1",
        faults: Faults | None = None,
        random_draw: Callable[[], float] = random.random,
    ) -> None:
        self.predictor = predictor
        self.name = name
        self.version = version
        self.faults = faults or Faults()
        self._draw = random_draw
        self.headers = f"{VERSION_HEADER}: {version}\r\n".encode()
        self.json_headers = b"content-type: application/json\r\n" + self.headers
        prefix = f"/v2/models/{name}".encode()
        self._v2_prefixes = (prefix, prefix + f"/versions/{version}".encode())
        self._v1_model = f"/v1/models/{name}".encode()
        self.metadata = {
            "name": name,
            "versions": [version],
            "platform": "scikit-learn",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, predictor.features]}],
            "outputs": [{"name": OUTPUT, "datatype": "INT64", "shape": [-1]}],
            "parameters": {"classes": list(CLASSES)},
        }

    def _json(self, status: int, value: Any) -> Response:
        return Response(status, json.dumps(value, separators=(",", ":")).encode(), self.json_headers)

    def _error(self, status: int, message: str) -> Response:
        return self._json(status, {"error": message})

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path.split(b"?", 1)[0]
        method = request.method
        if method == b"POST":
            if path.endswith(b"/infer") and path[: -len(b"/infer")] in self._v2_prefixes:
                return self._infer(request, "v2")
            if path == self._v1_model + b":predict":
                return self._infer(request, "v1")
        elif method in (b"GET", b"HEAD"):
            if path in (b"/v2/health/live", b"/healthz"):
                return self._json(200, {"live": True})
            if path == b"/v2/health/ready":
                return self._json(200, {"ready": True})
            if path == b"/v2":
                return self._json(
                    200,
                    {
                        "name": "modelfleet-model-server",
                        "version": self.version,
                        "extensions": ["binary_tensor_data"],
                    },
                )
            if path in self._v2_prefixes:
                return self._json(200, self.metadata)
            if path.endswith(b"/ready") and path[: -len(b"/ready")] in self._v2_prefixes:
                return self._json(200, {"name": self.name, "ready": True})
            if path == self._v1_model:
                return self._json(200, {"name": self.name, "ready": True})
        else:
            return self._error(405, f"method {method.decode(errors='replace')} not allowed")
        return self._error(
            404, f"no such endpoint: {method.decode(errors='replace')} {path.decode(errors='replace')}"
        )

    def _infer(self, request: Request, protocol: str) -> Response | Awaitable[Response]:
        faults = self.faults
        if faults.error_rate > 0 and self._draw() < faults.error_rate:
            response = self._error(500, f"injected fault (error rate {faults.error_rate:g})")
        else:
            response = self._predict(request.body, protocol, request.header(oip.HEADER_LENGTH))
        if faults.latency > 0:
            return self._later(response, faults.latency)
        return response

    async def _later(self, response: Response, delay: float) -> Response:
        await asyncio.sleep(delay)
        return response

    def _predict(self, body: bytes, protocol: str, header_length: bytes | None = None) -> Response:
        features = self.predictor.features
        document: dict[str, Any] = {}
        try:
            if protocol == "v2":
                rows, request_id, document = parse_v2(body, features, header_length)
                _outputs_wanted(document)
            else:
                rows, request_id = parse_v1(body, features), None
        except oip.ProtocolError as error:
            return self._error(400, str(error))
        labels = self.predictor.predict(rows)
        if self.faults.shift:
            labels = [(label + self.faults.shift) % len(CLASSES) for label in labels]
        if protocol == "v1":
            return self._json(200, {"predictions": labels})
        answer: dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        if request_id is not None:
            answer["id"] = request_id
        if oip.wants_binary(document, OUTPUT):
            output = oip.Tensor(OUTPUT, "INT64", [len(labels)], data=labels)
            body, length = oip.encode(answer, [output], [True])
            assert length is not None  # a binary output makes a header
            return Response(
                200,
                body,
                oip.BINARY_CONTENT_TYPE + b"inference-header-content-length: %d\r\n" % length + self.headers,
            )
        answer["outputs"] = [{"name": OUTPUT, "datatype": "INT64", "shape": [len(labels)], "data": labels}]
        return self._json(200, answer)
