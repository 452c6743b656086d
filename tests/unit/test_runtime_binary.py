"""The OIP binary data extension in front of a JSON-only server: request bodies made by NVIDIA's
tritonclient (its own encoder) become JSON requests, and answers become what tritonclient's own decoder
reads back as the same arrays."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from modelfleet.runtime.binary import (
    BinaryDataError,
    BinaryDataMiddleware,
    Outputs,
    decode_request,
    decode_tensor,
    encode_response,
    encode_tensor,
)

IRIS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])


def triton_body(
    *inputs: triton.InferInput, outputs: list[triton.InferRequestedOutput] | None = None
) -> tuple[bytes, int | None]:
    body, header_length = triton.InferenceServerClient.generate_request_body(list(inputs), outputs=outputs)
    return bytes(body), header_length


def triton_input(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP64", IRIS),
        ("FP32", IRIS.astype(np.float32)),
        ("FP16", np.array([[0.5, -2.0]], dtype=np.float16)),
        ("INT64", np.array([[1, -2, 3]], dtype=np.int64)),
        ("INT32", np.array([7, -8], dtype=np.int32)),
        ("INT8", np.array([-128, 127], dtype=np.int8)),
        ("UINT8", np.array([0, 255], dtype=np.uint8)),
        ("UINT64", np.array([2**63 + 1], dtype=np.uint64)),
        ("BOOL", np.array([True, False, True])),
        ("BYTES", np.array([b"setosa", b"virginica", b""], dtype=np.object_)),
    ],
)
def test_a_binary_input_from_tritonclient_becomes_the_same_values_in_json(
    datatype: str, array: np.ndarray
) -> None:
    body, header_length = triton_body(triton_input("x", array, datatype))
    assert header_length is not None, "tritonclient sent JSON: the test would prove nothing"

    forwarded, _ = decode_request(body, header_length)

    request = json.loads(forwarded)
    (tensor,) = request["inputs"]
    assert tensor["shape"] == list(array.shape)
    assert "parameters" not in tensor or "binary_data_size" not in tensor["parameters"]
    expected = [v.decode() for v in array.flatten()] if datatype == "BYTES" else array.flatten().tolist()
    assert tensor["data"] == expected


def test_several_inputs_take_their_bytes_in_order() -> None:
    ints = np.array([[1, 2, 3]], dtype=np.int32)
    body, header_length = triton_body(
        triton_input("a", IRIS, "FP64"),
        triton_input("b", ints, "INT32", binary=False),
        triton_input("c", ints, "INT32"),
    )
    request = json.loads(decode_request(body, header_length)[0])
    assert [t["data"] for t in request["inputs"]] == [IRIS.flatten().tolist(), [1, 2, 3], [1, 2, 3]]


def test_tritonclient_defaults_ask_for_every_output_in_binary() -> None:
    body, header_length = triton_body(triton_input("x", IRIS, "FP64"))
    _, outputs = decode_request(body, header_length)
    assert outputs.wants("predict")
    assert outputs.wants("anything")


def test_an_output_asked_in_json_stays_json_while_another_is_binary() -> None:
    body, header_length = triton_body(
        triton_input("x", IRIS, "FP64"),
        outputs=[
            triton.InferRequestedOutput("predict", binary_data=True),
            triton.InferRequestedOutput("predict_proba", binary_data=False),
        ],
    )
    _, outputs = decode_request(body, header_length)
    assert outputs.wants("predict")
    assert not outputs.wants("predict_proba")


def test_a_json_answer_becomes_what_tritonclient_decodes_to_the_same_arrays() -> None:
    proba = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])
    answer = {
        "model_name": "iris",
        "outputs": [
            {
                "name": "predict",
                "shape": [2, 1],
                "datatype": "INT64",
                "parameters": {"content_type": "np"},
                "data": [0, 2],
            },
            {"name": "predict_proba", "shape": [2, 3], "datatype": "FP64", "data": proba.flatten().tolist()},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]},
        ],
    }
    body, header_length = encode_response(json.dumps(answer).encode(), Outputs(all=True))
    assert header_length is not None

    result = triton.InferenceServerClient.parse_response_body(body, header_length=header_length)

    assert result.as_numpy("predict").tolist() == [[0], [2]]
    assert np.array_equal(result.as_numpy("predict_proba"), proba)
    assert result.as_numpy("label").tolist() == [b"setosa", b"virginica"]
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"] == {"content_type": "np", "binary_data_size": 16}


def test_only_the_outputs_asked_for_go_binary() -> None:
    answer = {
        "outputs": [
            {"name": "a", "datatype": "INT64", "shape": [1], "data": [5]},
            {"name": "b", "datatype": "INT64", "shape": [1], "data": [6]},
        ]
    }
    body, header_length = encode_response(json.dumps(answer).encode(), Outputs(named=frozenset({"b"})))
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["data"] == [5]
    assert "data" not in header["outputs"][1]
    assert body[header_length:] == encode_tensor("INT64", [6])


def test_an_answer_with_no_binary_output_is_left_as_it_is() -> None:
    body = json.dumps({"outputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [5]}]}).encode()
    assert encode_response(body, Outputs(named=frozenset({"other"}))) == (body, None)


def one_input(datatype: str, size: int) -> bytes:
    tensor = {"name": "x", "datatype": datatype, "shape": [1], "parameters": {"binary_data_size": size}}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b'{"inputs": [', 12, "not valid JSON"),
        (b"{}", 10, "does not fit"),
        (
            one_input("FP64", 8) + b"\0\0",
            None,
            "runs past the end",
        ),
        (b'{"inputs": []}\1\2\3', 14, "3 bytes after the inference header"),
        (
            one_input("FP64", 3) + b"abc",
            None,
            "whole number of FP64",
        ),
        (
            one_input("BF16", 2) + b"ab",
            None,
            "BF16",
        ),
    ],
)
def test_a_malformed_binary_request_is_refused_with_the_reason(
    body: bytes, header_length: int | None, message: str
) -> None:
    if header_length is None:
        header_length = body.index(b"}}]}") + 4
    with pytest.raises(BinaryDataError, match=message):
        decode_request(body, header_length)


def test_bytes_elements_must_be_whole() -> None:
    with pytest.raises(BinaryDataError, match="inside an element"):
        decode_tensor("BYTES", b"\x05\x00\x00\x00abc")


# ---- the middleware, in front of a JSON-only ASGI app that answers what it was sent ------------


async def json_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the JSON request's inputs as outputs; refuses anything that is not JSON, like MLServer."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    try:
        request = json.loads(body)
        assert int(headers[b"content-length"]) == len(body)
        assert b"inference-header-content-length" not in headers
        status, answer = 200, {"outputs": request["inputs"]}
    except (ValueError, UnicodeDecodeError, AssertionError):
        status, answer = 422, {"detail": "JSON decode error"}
    raw = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def call(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []
    chunks = [body[:7], body[7:]]  # the body in two messages, as a server may deliver it

    async def receive() -> dict[str, Any]:
        if chunks:
            piece = chunks.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(chunks)}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_the_middleware_lets_a_json_only_app_answer_tritonclient_defaults() -> None:
    body, header_length = triton_body(triton_input("x", IRIS, "FP64"))
    assert (
        call(
            json_echo, "/v2/models/iris/infer", body, {"Inference-Header-Content-Length": str(header_length)}
        )[0]
        == 422
    ), "the app alone refuses it"

    status, headers, answer = call(
        BinaryDataMiddleware(json_echo),
        "/v2/models/iris/infer",
        body,
        {"Inference-Header-Content-Length": str(header_length), "Content-Length": str(len(body))},
    )

    assert status == 200
    assert int(headers[b"content-length"]) == len(answer)
    result = triton.InferenceServerClient.parse_response_body(
        answer, header_length=int(headers[b"inference-header-content-length"])
    )
    assert np.array_equal(result.as_numpy("x"), IRIS)


def test_the_middleware_passes_plain_json_through_untouched() -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}]}).encode()
    status, headers, answer = call(
        BinaryDataMiddleware(json_echo), "/v2/models/iris/infer", body, {"Content-Length": str(len(body))}
    )
    assert status == 200
    assert b"inference-header-content-length" not in headers
    assert json.loads(answer)["outputs"][0]["data"] == [3]


def test_the_middleware_answers_400_to_a_broken_binary_request() -> None:
    status, _, answer = call(
        BinaryDataMiddleware(json_echo),
        "/v2/models/iris/infer",
        b"{}",
        {"Inference-Header-Content-Length": "99"},
    )
    assert status == 400
    assert "does not fit" in json.loads(answer)["error"]
