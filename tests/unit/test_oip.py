"""The Open Inference Protocol codec: JSON and binary tensor data, round trips for each datatype, and bodies
that are malformed in each way a client can get them wrong."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from modelfleet import oip

# Values of each datatype, including each end of its range; FP16 and FP32 values are exact in their precision.
SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True],
    "UINT8": [0, 1, 255],
    "UINT16": [0, 513, 65535],
    "UINT32": [0, 70000, 2**32 - 1],
    "UINT64": [0, 2**40, 2**64 - 1],
    "INT8": [-128, 0, 127],
    "INT16": [-32768, -2, 32767],
    "INT32": [-(2**31), 5, 2**31 - 1],
    "INT64": [-(2**63), 7, 2**63 - 1],
    "FP16": [0.5, -2.0, 65504.0],
    "FP32": [1.5, -0.25, 2.0**127],
    "FP64": [0.1, -1e300, 2.5],
    "BYTES": [b"setosa", b"", "virginica \u00e9".encode()],
}


def request_body(tensors: list[tuple[str, list[Any]]], binary: bool = True) -> tuple[bytes, bytes | None]:
    """A request with one input per (datatype, values), the way tritonclient lays one out."""
    inputs, chunks = [], []
    for index, (datatype, values) in enumerate(tensors):
        entry: dict[str, Any] = {"name": f"in{index}", "datatype": datatype, "shape": [len(values)]}
        if binary:
            chunk = oip.pack(datatype, values)
            chunks.append(chunk)
            entry["parameters"] = {"binary_data_size": len(chunk)}
        else:
            entry["data"] = [v.decode() if isinstance(v, bytes) else v for v in values]
        inputs.append(entry)
    head = json.dumps({"inputs": inputs}).encode()
    if not binary:
        return head, None
    return head + b"".join(chunks), str(len(head)).encode()


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_each_datatype_goes_through_binary_data_and_back(datatype: str) -> None:
    values = SAMPLES[datatype]
    body, length = request_body([(datatype, values)])
    document, binary = oip.split(body, length)
    [tensor] = oip.read_tensors(document, binary)
    assert (tensor.name, tensor.datatype, tensor.shape) == ("in0", datatype, [3])
    assert tensor.values() == values
    assert tensor.values(limit=2) == values[:2]


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "BYTES"])
def test_raw_data_is_little_endian_as_numpy_lays_it_out(datatype: str) -> None:
    values = SAMPLES[datatype]
    dtype = np.dtype(oip.NUMPY_DTYPES[datatype])
    assert dtype.itemsize == oip.ITEM_SIZES[datatype]
    assert oip.pack(datatype, values) == np.array(values, dtype=dtype).tobytes()
    assert np.frombuffer(oip.pack(datatype, values), dtype=dtype).tolist() == values


def test_bytes_elements_carry_a_four_byte_little_endian_length() -> None:
    assert oip.pack("BYTES", [b"ab", "c"]) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


def test_tensors_take_their_binary_data_in_the_order_they_appear_and_json_ones_take_none() -> None:
    fp, ints, text = oip.pack("FP32", [1.0, 2.0]), oip.pack("INT8", [-1]), oip.pack("BYTES", [b"x", b"yz"])
    document = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": len(fp)}},
            {"name": "b", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
            {"name": "c", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": 1}},
            {"name": "d", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(text)}},
        ]
    }
    head = json.dumps(document).encode()
    body = head + fp + ints + text
    a, b, c, d = oip.read_tensors(*oip.split(body, str(len(head)).encode()))
    assert a.values() == [1.0, 2.0]
    assert a.raw is not None
    assert b.values() == [1, 2, 3, 4]
    assert b.raw is None
    assert c.values() == [-1]
    assert d.values() == [b"x", b"yz"]


def test_raw_data_is_a_view_of_the_body_not_a_copy() -> None:
    body, length = request_body([("FP64", [1.0] * 1000)])
    [tensor] = oip.read_tensors(*oip.split(body, length))
    assert isinstance(tensor.raw, memoryview)
    assert tensor.raw.obj is body


def test_without_the_header_the_whole_body_is_json() -> None:
    body, length = request_body([("FP32", [1.5, 2.5]), ("BYTES", [b"a"])], binary=False)
    assert length is None
    fp, text = oip.read_tensors(*oip.split(body, None))
    assert fp.values() == [1.5, 2.5]
    assert text.values() == ["a"]


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_a_response_round_trips_in_binary_and_in_json(datatype: str) -> None:
    values = SAMPLES[datatype]
    tensor = oip.Tensor("out", datatype, [3], data=values)
    body, length = oip.encode({"model_name": "m"}, [tensor], [True])
    assert length is not None
    document, binary = oip.split(body, str(length).encode())
    assert document["model_name"] == "m"
    [decoded] = oip.read_tensors(document, binary, "outputs")
    assert decoded.values() == values
    body, length = oip.encode({}, [tensor], [False])
    assert length is None
    [decoded] = oip.read_tensors(json.loads(body), memoryview(b""), "outputs")
    assert decoded.values() == [v.decode() if isinstance(v, bytes) else v for v in values]


def test_binary_and_json_outputs_mix_in_one_response() -> None:
    outputs = [oip.Tensor("a", "INT64", [2], data=[1, 2]), oip.Tensor("b", "FP32", [1], data=[0.5])]
    body, length = oip.encode({}, outputs, [False, True])
    assert length is not None
    document = json.loads(body[:length])
    assert document["outputs"][0]["data"] == [1, 2]
    assert document["outputs"][1]["parameters"] == {"binary_data_size": 4}
    assert body[length:] == struct.pack("<f", 0.5)


@pytest.mark.parametrize(
    ("request_document", "binary"),
    [
        ({}, False),
        ({"parameters": {"binary_data_output": True}}, True),
        ({"parameters": {"binary_data_output": False}}, False),
        ({"outputs": [{"name": "label", "parameters": {"binary_data": True}}]}, True),
        ({"outputs": [{"name": "label"}]}, False),
        ({"outputs": [{"name": "other", "parameters": {"binary_data": True}}]}, False),
        # An output's own binary_data wins over the request's binary_data_output.
        (
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
            },
            False,
        ),
        ({"parameters": {"binary_data_output": True}, "outputs": [{"name": "label"}]}, True),
    ],
)
def test_a_request_asks_for_binary_outputs_per_output_or_for_all(
    request_document: dict[str, Any], binary: bool
) -> None:
    assert oip.wants_binary(request_document, "label") is binary


def fp32_request(
    size: int, shape: list[int], extra: bytes = b"", datatype: str = "FP32"
) -> tuple[bytes, bytes]:
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}
            ]
        }
    ).encode()
    return head + b"\x00" * size + extra, str(len(head)).encode()


def malformed(body: bytes, length: bytes | None) -> str:
    with pytest.raises(oip.ProtocolError) as caught:
        oip.read_tensors(*oip.split(body, length))
    return str(caught.value)


def test_a_header_length_beyond_the_body_is_named() -> None:
    body, _ = fp32_request(8, [2])
    message = malformed(body, str(len(body) + 1).encode())
    assert (
        message
        == f"Inference-Header-Content-Length is {len(body) + 1}, but the body has only {len(body)} bytes"
    )


@pytest.mark.parametrize("value", [b"-3", b"ten", b"", b"1.5"])
def test_a_header_length_that_is_not_a_number_is_named(value: bytes) -> None:
    body, _ = fp32_request(8, [2])
    assert "Inference-Header-Content-Length must be a number of bytes" in malformed(body, value)


def test_a_header_length_that_cuts_the_json_is_named() -> None:
    body, _length = fp32_request(8, [2])
    assert "JSON header (the first 10 bytes of the body) is not valid JSON" in malformed(body, b"10")
    assert "body is not valid JSON" in malformed(body, None)  # binary data, no header


def test_a_size_that_does_not_match_shape_and_datatype_is_named() -> None:
    body, length = fp32_request(12, [2, 2])
    assert malformed(body, length) == (
        "inputs[0] has binary_data_size 12, but shape [2, 2] of FP32 takes 16 bytes (4 x 4)"
    )
    body, length = fp32_request(16, [2, 2], datatype="FP64")
    assert "shape [2, 2] of FP64 takes 32 bytes (4 x 8)" in malformed(body, length)


def test_a_size_past_the_end_of_the_body_is_named() -> None:
    body, length = fp32_request(16, [4])
    cut = body[:-4]
    assert malformed(cut, length) == (
        "inputs[0]: binary_data_size 16 goes past the end of the body (12 bytes follow the JSON header, "
        "0 of them taken by earlier tensors)"
    )


def test_binary_data_without_the_header_length_is_named() -> None:
    head = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}
    ).encode()
    message = malformed(head, None)
    assert "has binary_data_size 4, but no binary data follows the JSON header" in message
    assert "Inference-Header-Content-Length header missing" in message


def test_bytes_left_over_after_the_tensors_are_named() -> None:
    body, length = fp32_request(8, [2], extra=b"\x01\x02")
    assert malformed(body, length) == (
        "10 bytes of binary data follow the JSON header, but the binary_data_size of the inputs add up to 8"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x05\x00\x00\x00ab", "BYTES element 0 is 5 bytes long, past the end of binary_data_size 6"),
        (b"\x01\x00\x00\x00a\x00", "BYTES data ends after 1 of 2 elements"),
        (
            b"\x01\x00\x00\x00a\x00\x00\x00\x00\xff",
            "shape [2] of BYTES takes 9 bytes, but binary_data_size is 10",
        ),
    ],
)
def test_bytes_elements_that_do_not_fill_their_size_exactly_are_named(raw: bytes, message: str) -> None:
    head = json.dumps(
        {
            "inputs": [
                {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    assert message in malformed(head + raw, str(len(head)).encode())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}, "datatype must be one of BOOL, UINT8"),
        ({"name": "x", "datatype": "BF16", "shape": [1], "data": [1]}, "datatype BF16 is not supported"),
        (
            {"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]},
            "shape must be a list of non-negative",
        ),
        (
            {"name": "x", "datatype": "FP32", "shape": [True], "data": [1]},
            "shape must be a list of non-negative",
        ),
        (
            {"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]},
            "shape [3] holds 3 values but data has 2",
        ),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, "neither data nor parameters.binary_data_size"),
        (
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1],
                "data": [1],
                "parameters": {"binary_data_size": 0},
            },
            "has both data and binary_data_size",
        ),
        (
            {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": "4"}},
            "binary_data_size must be a non-negative integer",
        ),
        ({"name": 3, "datatype": "FP32", "shape": [1], "data": [1]}, "inputs[0].name must be a string"),
        ("x", "inputs[0] must be an object"),
    ],
)
def test_malformed_tensors_are_named(entry: Any, message: str) -> None:
    assert message in malformed(json.dumps({"inputs": [entry]}).encode(), None)


def test_values_that_do_not_fit_their_datatype_are_refused_when_packed() -> None:
    with pytest.raises(oip.ProtocolError, match="do not fit datatype UINT8"):
        oip.pack("UINT8", [256])
