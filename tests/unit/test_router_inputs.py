"""Input samples the operator computes data drift from: features by protocol, bounds and the read rate."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from modelfleet import oip
from modelfleet.router.inputs import MAX_FEATURES, MAX_ROWS, InputSample, extract_inputs

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]


def v2(*inputs: dict[str, Any]) -> bytes:
    return json.dumps({"id": "r1", "inputs": list(inputs)}).encode()


def tensor(
    name: str, shape: list[int], data: Any, datatype: str = "FP64", **parameters: Any
) -> dict[str, Any]:
    entry = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    if parameters:
        entry["parameters"] = parameters
    return entry


def test_one_v2_input_of_n_rows_and_4_columns_gives_features_f0_to_f3() -> None:
    body = v2(tensor("input-0", [2, 4], [SETOSA, VIRGINICA]))
    assert extract_inputs(body, "v2") == {
        "f0": [5.1, 6.7],
        "f1": [3.5, 3.0],
        "f2": [1.4, 5.2],
        "f3": [0.2, 2.3],
    }


def test_columns_take_the_names_the_tensor_gives() -> None:
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    body = v2(tensor("input-0", [1, 4], SETOSA, names=names))
    assert extract_inputs(body, "v2") == dict(zip(names, [[v] for v in SETOSA], strict=True))
    other = v2(tensor("input-0", [1, 4], SETOSA, feature_names=names))
    assert list(extract_inputs(other, "v2")) == names
    wrong_count = v2(tensor("input-0", [1, 4], SETOSA, names=names[:3]))
    assert list(extract_inputs(wrong_count, "v2")) == ["f0", "f1", "f2", "f3"]


def test_several_inputs_are_named_by_input_and_column() -> None:
    body = v2(
        tensor("petal_length", [2], [1.4, 5.2]),
        tensor("petal_width", [2, 1], [[0.2], [2.3]]),
        tensor("sepal", [2, 2], [[5.1, 3.5], [6.7, 3.0]]),
        tensor("species", [2], ["setosa", "virginica"], datatype="BYTES"),
        tensor("image", [1, 2, 2], [[[1, 2], [3, 4]]], datatype="INT32"),  # not tabular: left out
    )
    assert extract_inputs(body, "v2") == {
        "petal_length": [1.4, 5.2],
        "petal_width": [0.2, 2.3],
        "sepal.f0": [5.1, 6.7],
        "sepal.f1": [3.5, 3.0],
        "species": ["setosa", "virginica"],
    }


def test_binary_tensor_data_is_read_in_place() -> None:
    raw = struct.pack("<8f", *SETOSA, *VIRGINICA)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
            ]
        }
    ).encode()
    columns = extract_inputs(header + raw, "v2", str(len(header)).encode())
    assert list(columns) == ["f0", "f1", "f2", "f3"]
    assert columns["f2"] == pytest.approx([1.4, 5.2])
    text = oip.pack("BYTES", ["a", "bc"])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "t",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(text)},
                }
            ]
        }
    ).encode()
    assert extract_inputs(header + text, "v2", str(len(header)).encode()) == {"t": ["a", "bc"]}
    assert extract_inputs(header + text, "v1", str(len(header)).encode()) == {}


@pytest.mark.parametrize(
    ("body", "protocol", "columns"),
    [
        (b'{"instances": [[5.1, 3.5], [6.7, 3.0]]}', "v1", {"f0": [5.1, 6.7], "f1": [3.5, 3.0]}),
        (b'{"instances": [{"a": 1, "b": "x"}, {"a": 2}]}', "v1", {"a": [1, 2], "b": ["x"]}),
        (b'{"instances": ["some text", 3]}', "v1", {"f0": ["some text", 3]}),
        (b'{"instances": [[[1, 2]], [3]]}', "v1", {"f0": [3]}),
        (
            b'{"petal_length": 1.4, "species": "setosa", "nested": {"x": 1}}',
            "http",
            {"petal_length": [1.4], "species": ["setosa"]},
        ),
        (b'[{"a": 1}, {"a": 2, "b": true}]', "http", {"a": [1, 2], "b": [True]}),
        (b'{"a": [1, 2, 3], "b": 4}', "http", {"a": [1, 2, 3], "b": [4]}),
        (b'{"instances": [[1, 2]]}', "http", {"f0": [1], "f1": [2]}),
        (v2(tensor("x", [1, 2], [1, 2])), "http", {"f0": [1], "f1": [2]}),
        (b'{"inputs": [1, 2]}', "http", {"inputs": [1, 2]}),  # not tensors: a plain field
    ],
)
def test_v1_instances_and_plain_json_fields(body: bytes, protocol: str, columns: dict[str, Any]) -> None:
    assert extract_inputs(body, protocol) == columns


@pytest.mark.parametrize(
    ("body", "protocol"),
    [
        (b"not json", "v2"),
        (b"", "http"),
        (b"[1, 2]", "v2"),
        (b'{"inputs": [1, 2]}', "v2"),
        (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1]}]}', "v2"),  # 3 != 1
        (b'{"instances": [[1]]}', "v2"),
        (v2(tensor("x", [1], [1])), "v1"),
        (b'{"a": 1}', "v1"),
        (b"[" * 100_000, "http"),
    ],
)
def test_anything_else_gives_no_inputs(body: bytes, protocol: str) -> None:
    assert extract_inputs(body, protocol) == {}


def test_non_finite_numbers_and_long_texts_are_left_out() -> None:
    body = b'{"instances": [[NaN, 1.0, Infinity, "%s", "ok"]]}' % (b"x" * 300)
    assert extract_inputs(body, "v1") == {"f1": [1.0], "f4": ["ok"]}


def test_one_request_gives_at_most_max_rows_rows() -> None:
    rows = [[float(n), 1.0] for n in range(MAX_ROWS * 3)]
    columns = extract_inputs(v2(tensor("x", [len(rows), 2], rows)), "v2")
    assert len(columns["f0"]) == MAX_ROWS
    assert columns["f0"][-1] == MAX_ROWS - 1
    assert len(extract_inputs(json.dumps({"instances": rows}).encode(), "v1")["f1"]) == MAX_ROWS


def test_a_version_keeps_the_newest_values_of_at_most_max_features_features() -> None:
    sample = InputSample("v2", size=3, per_second=0)
    for n in range(5):
        sample.offer(v2(tensor("x", [1, 2], [float(n), 10.0 + n])))
    assert sample.snapshot() == {"f0": [2.0, 3.0, 4.0], "f1": [12.0, 13.0, 14.0]}
    wide = InputSample("http", size=10, per_second=0)
    wide.offer(json.dumps({f"field{n}": n for n in range(MAX_FEATURES + 20)}).encode())
    wide.offer(b'{"late": 1, "field0": 100}')
    shown = wide.snapshot()
    assert len(shown) == MAX_FEATURES
    assert "late" not in shown
    assert shown["field0"] == [0, 100]


def test_at_most_per_second_requests_are_read() -> None:
    sample = InputSample("v2", per_second=5)
    assert sum(sample.wants(100.0) for _ in range(50)) == 5  # the burst
    assert sum(sample.wants(100.4) for _ in range(50)) == 2  # 0.4 s refills two
    assert sum(sample.wants(200.0) for _ in range(50)) == 5  # never more than one burst
    assert all(InputSample("v2", per_second=0).wants(1.0) for _ in range(100))  # 0: every request
