"""Prediction samples the operator computes drift from."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelfleet import oip
from modelfleet.router.predictions import MAX_VALUES_PER_RESPONSE, PredictionSample, extract


def v2(data: object) -> bytes:
    return json.dumps({"model_name": "iris", "outputs": [{"name": "label", "data": data}]}).encode()


@pytest.mark.parametrize(
    ("body", "protocol", "values"),
    [
        (v2([0, 2, 1]), "v2", [0, 2, 1]),
        (v2([[0.1, 0.9], [0.7, 0.3]]), "v2", [0.1, 0.9, 0.7, 0.3]),
        (b'{"predictions": [1, 1, 0]}', "v1", [1, 1, 0]),
        (b'{"predictions": [["a"], ["b"]]}', "v1", ["a", "b"]),
        (v2([2]), "http", [2]),
        (b'{"predictions": [0.5]}', "http", [0.5]),
        (b'{"predictions": [1, {"x": 1}, null, 2]}', "v1", [1, 2]),
    ],
)
def test_values_are_read_from_v2_outputs_and_v1_predictions(
    body: bytes, protocol: str, values: list[object]
) -> None:
    assert extract(body, protocol) == values


@pytest.mark.parametrize(
    ("body", "protocol"),
    [
        (b'{"predictions": [1]}', "v2"),  # v1 shape on a v2 version
        (v2([1]), "v1"),
        (b"not json", "v2"),
        (b"{broken", "v2"),
        (b"[1, 2]", "v1"),
        (b'{"outputs": []}', "v2"),
        (b'{"outputs": [{"data": 3}]}', "v2"),
        (b'{"outputs": ["x"]}', "v2"),
        (b"", "http"),
    ],
)
def test_anything_else_gives_no_values(body: bytes, protocol: str) -> None:
    assert extract(body, protocol) == []


def test_one_response_contributes_at_most_the_cap() -> None:
    assert len(extract(v2(list(range(5000))), "v2")) == MAX_VALUES_PER_RESPONSE


def test_the_sample_keeps_the_newest_values_up_to_its_size() -> None:
    sample = PredictionSample("v2", size=5)
    for start in range(0, 12, 3):
        sample.offer(v2([start, start + 1, start + 2]))
    assert sample.snapshot() == [7, 8, 9, 10, 11]


def test_reads_are_limited_per_second_with_a_burst_of_the_same_size() -> None:
    sample = PredictionSample("v2", per_second=10)
    assert sum(sample.wants(100.0) for _ in range(50)) == 10  # the burst
    assert sum(sample.wants(100.5) for _ in range(50)) == 5  # half a second refills half
    assert sum(sample.wants(160.0) for _ in range(50)) == 10  # never more than one burst
    unlimited = PredictionSample("v2", per_second=0)
    assert all(unlimited.wants(1.0) for _ in range(1000))


# -- binary answers --------------------------------------------------------------------------------------


def binary(*outputs: oip.Tensor, as_binary: list[bool] | None = None) -> tuple[bytes, bytes]:
    body, length = oip.encode({"model_name": "iris"}, outputs, as_binary or [True] * len(outputs))
    assert length is not None
    return body, str(length).encode()


@pytest.mark.parametrize(
    ("datatype", "values", "expected"),
    [
        ("INT64", [0, 2, 1], [0, 2, 1]),
        ("UINT8", [1, 255], [1, 255]),
        ("BOOL", [True, False], [True, False]),
        ("FP16", [0.5, 1.5], [0.5, 1.5]),
        ("FP32", [0.25, float("nan"), float("inf"), 0.75], [0.25, 0.75]),  # JSON could carry neither
        ("FP64", [[0.1, 0.9], [0.7, 0.3]], [0.1, 0.9, 0.7, 0.3]),
        ("BYTES", [b"setosa", "virginica", b"\xff"], ["setosa", "virginica", "\ufffd"]),
    ],
)
def test_binary_outputs_are_read_from_the_body_after_the_json_header(
    datatype: str, values: list[Any], expected: list[Any]
) -> None:
    flat = oip.flatten(values)
    body, length = binary(oip.Tensor("label", datatype, [len(flat)], data=flat))
    assert extract(body, "v2", length) == expected
    assert extract(body, "http", length) == expected
    assert extract(body, "v1", length) == []  # v1 has no binary form


def test_only_the_json_header_of_a_binary_answer_is_parsed() -> None:
    # Raw bytes that are not JSON (nor UTF-8) follow the header: reading must not try to parse them.
    body, length = binary(oip.Tensor("label", "UINT8", [4], data=[0xFF, 0xFE, 0x7B, 0x00]))
    assert extract(body, "v2", length) == [255, 254, 123, 0]


def test_a_binary_answer_contributes_at_most_the_cap() -> None:
    body, length = binary(oip.Tensor("label", "INT32", [5000], data=list(range(5000))))
    assert extract(body, "v2", length) == list(range(MAX_VALUES_PER_RESPONSE))
    many = [f"c{i}" for i in range(5000)]
    body, length = binary(oip.Tensor("label", "BYTES", [5000], data=many))
    assert extract(body, "v2", length) == many[:MAX_VALUES_PER_RESPONSE]


def test_a_json_output_in_a_binary_answer_is_read_as_json() -> None:
    body, length = binary(
        oip.Tensor("label", "INT64", [2], data=[2, 1]),
        oip.Tensor("proba", "FP32", [2], data=[0.5, 0.5]),
        as_binary=[False, True],
    )
    assert extract(body, "v2", length) == [2, 1]


def header(datatype: str, size: Any) -> bytes:
    return json.dumps(
        {
            "outputs": [
                {"name": "l", "datatype": datatype, "shape": [1], "parameters": {"binary_data_size": size}}
            ]
        }
    ).encode()


@pytest.mark.parametrize(
    ("head", "after", "length"),
    [
        (b'{"outputs": []}', b"", None),
        (header("INT64", 8), b"\x00" * 8, 999),  # a header length beyond the body
        (header("INT64", 8), b"\x00" * 7, None),  # binary_data_size beyond the body
        (header("FP8", 1), b"\x00", None),
        (header("INT8", -1), b"", None),
        (header("INT8", "1"), b"\x00", None),
        (b'{"outputs": [', b"", None),
        (b"[1, 2]", b"", None),
        (b"{}", b"", "two"),
    ],
)
def test_a_malformed_binary_answer_gives_no_values(head: bytes, after: bytes, length: object) -> None:
    value = str(len(head) if length is None else length).encode()
    assert extract(head + after, "v2", value) == []


def test_the_same_headers_with_their_data_are_read() -> None:
    """The control for the malformed cases above: each of them fails for its own reason only."""
    body = header("INT64", 8) + b"\x07" + b"\x00" * 7
    assert extract(body, "v2", str(len(header("INT64", 8))).encode()) == [7]
    assert extract(header("INT8", 1) + b"\xff", "v2", str(len(header("INT8", 1))).encode()) == [-1]


def test_the_sample_takes_binary_and_json_answers_alike() -> None:
    sample = PredictionSample("v2", size=10)
    sample.offer(*binary(oip.Tensor("label", "INT64", [2], data=[0, 2])))
    sample.offer(v2([1]))
    assert sample.snapshot() == [0, 2, 1]


# -- MLServer's answers ----------------------------------------------------------------------------------
# The shapes MLServer 1.7's codecs give (mlserver/codecs/numpy.py, pandas.py, string.py, base64.py): each
# output says how its data was encoded in parameters.content_type; a NaN is encoded as null.


def mlserver(*outputs: dict[str, Any], content_type: str | None = None) -> bytes:
    document: dict[str, Any] = {
        "model_name": "iris",
        "id": "5d1b",
        "parameters": {},
        "outputs": list(outputs),
    }
    if content_type is not None:
        document["parameters"] = {"content_type": content_type}
    return json.dumps(document).encode()


def output(name: str, datatype: str, shape: list[int], data: Any, content_type: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    entry["parameters"] = {} if content_type is None else {"content_type": content_type}
    return entry


@pytest.mark.parametrize(
    ("body", "values"),
    [
        # The sklearn runtime's predict: a numpy array of shape [n, 1].
        (mlserver(output("predict", "INT64", [3, 1], [0, 2, 1], "np")), [0, 2, 1]),
        (mlserver(output("predict", "INT64", [2, 1], [[0], [2]], "np")), [0, 2]),
        (mlserver(output("predict_proba", "FP64", [2, 2], [0.9, None, 0.2, 0.8], "np")), [0.9, 0.2, 0.8]),
        # A DataFrame: one output per column; the first column is read.
        (
            mlserver(
                output("label", "BYTES", [2, 1], ["setosa", "virginica"], "str"),
                output("score", "FP64", [2, 1], [0.9, 0.8], None),
                content_type="pd",
            ),
            ["setosa", "virginica"],
        ),
        (mlserver(output("ok", "BOOL", [2, 1], [True, False], None), content_type="pd"), [True, False]),
        # Mixed columns are JSON-encoded element by element (pd_json); a non-scalar element is left out.
        (mlserver(output("x", "BYTES", [4, 1], ["1", '"a"', '{"k": 1}', "not json"], "pd_json")), [1, "a"]),
        (mlserver(output("s", "BYTES", [2], ["c2V0b3Nh", "@@"], "base64")), ["setosa"]),
        (
            mlserver(output("when", "BYTES", [1], ["2026-12-01T23:00:00"], "datetime")),
            ["2026-12-01T23:00:00"],
        ),
        (mlserver(output("predict", "FP32", [1, 1], [0.5], None)), [0.5]),
    ],
)
def test_mlserver_answers_are_read_by_their_content_type(body: bytes, values: list[Any]) -> None:
    assert extract(body, "v2") == values
