"""The reference model server: the iris model, both protocols, bad input, and fault injection."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from modelfleet import oip
from modelfleet.httpcore import Request, Response
from modelfleet.modelserver import model
from modelfleet.modelserver.app import ModelServer
from modelfleet.modelserver.faults import Faults, parse_latency
from modelfleet.modelserver.main import main

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]


@pytest.fixture(scope="module")
def predictor() -> model.Predictor:
    return model.Predictor(model.train())


def server(predictor: model.Predictor, **kwargs: Any) -> ModelServer:
    return ModelServer(predictor, name="iris", version="2", **kwargs)


def call(app: ModelServer, method: bytes, path: bytes, body: Any = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    result = app.handle(Request(method, path, [], raw))
    if not isinstance(result, Response):
        result = asyncio.run(_await(result))
    return result


async def _await(pending: Any) -> Response:
    response: Response = await pending
    return response


def v2(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}],
        **extra,
    }


def test_the_trained_model_classifies_iris_well_and_the_fast_path_matches_sklearn(
    predictor: model.Predictor,
) -> None:
    features, labels = load_iris(return_X_y=True)
    predicted = predictor.predict(features)
    assert predicted == [int(x) for x in predictor.estimator.predict(features)]
    assert np.mean(np.array(predicted) == labels) > 0.95


def test_a_non_linear_estimator_goes_through_its_own_predict() -> None:
    from sklearn.tree import DecisionTreeClassifier

    features, labels = load_iris(return_X_y=True)
    tree = model.Predictor(DecisionTreeClassifier(random_state=0).fit(features, labels))
    assert tree.predict(np.array([SETOSA, VIRGINICA])) == [0, 2]


def test_a_saved_model_loads_back_and_predicts_the_same(tmp_path: Path, predictor: model.Predictor) -> None:
    path = tmp_path / "models" / "iris.joblib"
    model.save(predictor.estimator, path)
    loaded = model.Predictor(model.load(path))
    rows = np.array([SETOSA, VIRGINICA])
    assert loaded.predict(rows) == predictor.predict(rows) == [0, 2]


def test_the_train_command_writes_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "iris.joblib"
    assert main(["--train", str(path)]) == 0
    assert model.Predictor(model.load(path)).predict(np.array([SETOSA])) == [0]


def test_v2_infer_answers_labels_with_the_version_and_request_id(predictor: model.Predictor) -> None:
    response = call(server(predictor), b"POST", b"/v2/models/iris/infer", v2([SETOSA, VIRGINICA], id="r-1"))
    assert response.status == 200
    assert b"x-modelfleet-model-version: 2\r\n" in response.headers
    assert json.loads(response.body) == {
        "model_name": "iris",
        "model_version": "2",
        "id": "r-1",
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}],
    }


def test_v2_infer_takes_flat_data_and_the_versioned_path(predictor: model.Predictor) -> None:
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": SETOSA + VIRGINICA}]}
    response = call(server(predictor), b"POST", b"/v2/models/iris/versions/2/infer", body)
    assert json.loads(response.body)["outputs"][0]["data"] == [0, 2]


def test_v1_predict(predictor: model.Predictor) -> None:
    response = call(
        server(predictor), b"POST", b"/v1/models/iris:predict", {"instances": [VIRGINICA, SETOSA]}
    )
    assert response.status == 200
    assert json.loads(response.body) == {"predictions": [2, 0]}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (b"/v2/models/iris/infer", b"{not json", "body is not valid JSON"),
        (b"/v2/models/iris/infer", [1, 2], "body must be a JSON object"),
        (b"/v2/models/iris/infer", {"inputs": []}, 'expected {"inputs"'),
        (b"/v2/models/iris/infer", {"inputs": [{"shape": [1, 4]}]}, "inputs[0] has no data"),
        (b"/v2/models/iris/infer", v2([[1.0, 2.0, 3.0]]), "shape [1, 4] holds 4 values but data has 3"),
        (
            b"/v2/models/iris/infer",
            {"inputs": [{"shape": [1, 3], "data": [1, 2, 3]}]},
            "expected rows of 4 features, got shape [1, 3]",
        ),
        (b"/v2/models/iris/infer", {"inputs": [{"data": [["a", "b", "c", "d"]]}]}, "data must be numbers"),
        (b"/v2/models/iris/infer", {"inputs": [{"data": [[1, 2], [3]]}]}, "data must be numbers"),
        (b"/v2/models/iris/infer", {"inputs": [{"shape": "1x4", "data": SETOSA}]}, "shape must be a list"),
        (b"/v1/models/iris:predict", {"instances": []}, 'expected {"instances"'),
        (b"/v1/models/iris:predict", {"instances": [[1, 2, 3, 4, 5]]}, "expected rows of 4 features"),
        (b"/v1/models/iris:predict", b'{"instances": [[1, 2, 3, NaN]]}', "data must be finite numbers"),
    ],
)
def test_bad_input_gets_400_with_the_reason(
    predictor: model.Predictor, path: bytes, body: Any, message: str
) -> None:
    response = call(server(predictor), b"POST", path, body)
    assert response.status == 400
    assert message in json.loads(response.body)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        (b"GET", b"/v2/health/live", 200, {"live": True}),
        (b"GET", b"/v2/health/ready", 200, {"ready": True}),
        (b"GET", b"/v2/models/iris/ready", 200, {"name": "iris", "ready": True}),
        (b"GET", b"/v1/models/iris", 200, {"name": "iris", "ready": True}),
        (b"GET", b"/v2/models/other", 404, None),
        (b"POST", b"/v2/models/other/infer", 404, None),
        (b"DELETE", b"/v2/models/iris", 405, None),
    ],
)
def test_health_and_unknown_paths(
    predictor: model.Predictor, method: bytes, path: bytes, status: int, expected: Any
) -> None:
    response = call(server(predictor), method, path)
    assert response.status == status
    if expected is not None:
        assert json.loads(response.body) == expected
    else:
        assert "error" in json.loads(response.body)


def test_metadata_reports_the_version_and_tensor_shapes(predictor: model.Predictor) -> None:
    metadata = json.loads(call(server(predictor), b"GET", b"/v2/models/iris").body)
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["2"]
    assert metadata["inputs"][0]["shape"] == [-1, 4]
    assert metadata["outputs"][0]["datatype"] == "INT64"


def test_error_rate_fault_answers_500_for_that_share_of_inference_only(predictor: model.Predictor) -> None:
    draws = iter([0.1, 0.6, 0.3, 0.9])
    app = server(predictor, faults=Faults(error_rate=0.5), random_draw=lambda: next(draws))
    statuses = [
        call(app, b"POST", b"/v1/models/iris:predict", {"instances": [SETOSA]}).status for _ in range(4)
    ]
    assert statuses == [500, 200, 500, 200]
    assert call(app, b"GET", b"/v2/health/ready").status == 200
    always = server(predictor, faults=Faults(error_rate=1.0))
    response = call(always, b"POST", b"/v2/models/iris/infer", v2([SETOSA]))
    assert response.status == 500
    assert json.loads(response.body) == {"error": "injected fault (error rate 1)"}


def test_shift_fault_moves_every_class_by_one(predictor: model.Predictor) -> None:
    app = server(predictor, faults=Faults(shift=1))
    response = call(app, b"POST", b"/v2/models/iris/infer", v2([SETOSA, VIRGINICA]))
    assert json.loads(response.body)["outputs"][0]["data"] == [1, 0]


def test_latency_fault_delays_the_answer(predictor: model.Predictor) -> None:
    app = server(predictor, faults=Faults(latency=0.2))

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending = app.handle(
            Request(b"POST", b"/v1/models/iris:predict", [], b'{"instances": [[1, 2, 3, 4]]}')
        )
        assert not isinstance(pending, Response)
        response = await pending
        assert response.status == 200
        return loop.time() - started

    assert asyncio.run(timed()) >= 0.19


def test_faults_come_from_the_environment() -> None:
    faults = Faults.from_env(
        {
            "MODELFLEET_FAULT_ERROR_RATE": "1.0",
            "MODELFLEET_FAULT_LATENCY": "0.3s",
            "MODELFLEET_FAULT_SHIFT": "1",
        }
    )
    assert faults == Faults(error_rate=1.0, latency=0.3, shift=1)
    assert Faults.from_env({}) == Faults()
    assert not Faults.from_env({}).any
    assert parse_latency("300ms") == 0.3
    assert parse_latency("0.25") == 0.25


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MODELFLEET_FAULT_ERROR_RATE": "lots"}, "MODELFLEET_FAULT_ERROR_RATE='lots' is not a valid float"),
        ({"MODELFLEET_FAULT_ERROR_RATE": "1.5"}, "between 0 and 1"),
        ({"MODELFLEET_FAULT_LATENCY": "slow"}, "MODELFLEET_FAULT_LATENCY: invalid duration"),
        ({"MODELFLEET_FAULT_SHIFT": "0.5"}, "MODELFLEET_FAULT_SHIFT='0.5' is not a valid int"),
    ],
)
def test_bad_fault_settings_are_refused_with_the_variable_name(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Faults.from_env(environ)


def test_a_missing_model_file_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--model-file", str(tmp_path / "absent.joblib")])
    assert exited.value.code == 2
    assert "does not exist (train one with --train FILE)" in capsys.readouterr().err


# -- the binary tensor data extension ------------------------------------------------------------------


def binary_call(
    app: ModelServer,
    rows: np.ndarray,
    datatype: str = "FP32",
    length: bytes | None = None,
    cut: int = 0,
    **extra: Any,
) -> Response:
    """An infer request the way tritonclient's `set_data_from_numpy` sends one: JSON header, raw rows."""
    raw = rows.astype(oip.NUMPY_DTYPES[datatype]).tobytes()
    entry = {"name": "input-0", "shape": list(rows.shape), "datatype": datatype}
    head = json.dumps({"inputs": [{**entry, "parameters": {"binary_data_size": len(raw)}}], **extra}).encode()
    body = (head + raw)[: len(head) + len(raw) - cut]
    header = str(len(head)).encode() if length is None else length
    result = app.handle(Request(b"POST", b"/v2/models/iris/infer", [(oip.HEADER_LENGTH, header)], body))
    assert isinstance(result, Response)
    return result


def labels_of(response: Response) -> list[Any]:
    """The label output of an answer, binary or JSON, read as a client would."""
    match = re.search(rb"inference-header-content-length: (\d+)\r\n", response.headers)
    document, binary = oip.split(response.body, match.group(1) if match else None)
    return oip.read_tensors(document, binary, "outputs")[0].values()


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT64", "UINT8", "INT8", "UINT32", "INT32"])
def test_binary_inputs_of_each_numeric_datatype_are_classified(
    predictor: model.Predictor, datatype: str
) -> None:
    rows = np.array([SETOSA, VIRGINICA, [5.9, 3.0, 5.1, 1.8]])
    if datatype[0] in "UI":
        rows = np.array([[5, 4, 1, 0], [7, 3, 6, 2]])  # integral measurements: still a setosa and a virginica
    response = binary_call(server(predictor), rows, datatype)
    assert response.status == 200, response.body
    assert b"inference-header-content-length" not in response.headers  # JSON, since binary was not asked for
    assert json.loads(response.body)["outputs"][0]["data"] == ([0, 2, 2] if len(rows) == 3 else [0, 2])


@pytest.mark.parametrize(
    "extra",
    [
        {"parameters": {"binary_data_output": True}},
        {"outputs": [{"name": "label", "parameters": {"binary_data": True}}]},
    ],
)
def test_binary_outputs_are_answered_when_asked_for(
    predictor: model.Predictor, extra: dict[str, Any]
) -> None:
    response = binary_call(server(predictor), np.array([SETOSA, VIRGINICA]), id="r-9", **extra)
    assert response.status == 200
    assert b"content-type: application/octet-stream\r\n" in response.headers
    assert b"x-modelfleet-model-version: 2\r\n" in response.headers
    match = re.search(rb"inference-header-content-length: (\d+)\r\n", response.headers)
    assert match is not None
    header = json.loads(response.body[: int(match.group(1))])
    assert header == {
        "model_name": "iris",
        "model_version": "2",
        "id": "r-9",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}
        ],
    }
    assert response.body[int(match.group(1)) :] == np.array([0, 2], dtype="<i8").tobytes()
    assert labels_of(response) == [0, 2]


def test_a_json_request_may_ask_for_a_binary_answer_and_a_binary_one_for_json(
    predictor: model.Predictor,
) -> None:
    app = server(predictor)
    response = call(
        app, b"POST", b"/v2/models/iris/infer", v2([VIRGINICA], parameters={"binary_data_output": True})
    )
    assert b"inference-header-content-length" in response.headers
    assert labels_of(response) == [2]
    no = {
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True},
    }
    response = binary_call(app, np.array([VIRGINICA]), **no)
    assert json.loads(response.body)["outputs"][0]["data"] == [2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": b"100000"}, "Inference-Header-Content-Length is 100000, but the body has only"),
        ({"length": b"twelve"}, "Inference-Header-Content-Length must be a number of bytes, got 'twelve'"),
        ({"cut": 4}, "binary_data_size 32 goes past the end of the body (28 bytes follow the JSON header"),
        ({"datatype": "BYTES"}, "inputs[0] has datatype BYTES, but this model takes numbers"),
        ({"outputs": [{"name": "proba"}]}, "no output named 'proba' (this model has: label)"),
    ],
)
def test_malformed_binary_requests_get_400_naming_what_is_wrong(
    predictor: model.Predictor, kwargs: dict[str, Any], message: str
) -> None:
    rows = np.array([SETOSA, VIRGINICA])
    if kwargs.get("datatype") == "BYTES":
        app = server(predictor)
        raw = oip.pack("BYTES", [b"5.1"])
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ]
            }
        ).encode()
        request = Request(
            b"POST", b"/v2/models/iris/infer", [(oip.HEADER_LENGTH, str(len(head)).encode())], head + raw
        )
        response = app.handle(request)
    else:
        response = binary_call(server(predictor), rows, **kwargs)
    assert isinstance(response, Response)
    assert response.status == 400
    assert message in json.loads(response.body)["error"]


def test_a_binary_size_that_does_not_match_the_shape_gets_400(predictor: model.Predictor) -> None:
    raw = np.array(SETOSA, dtype="<f4").tobytes()
    entry = {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
    head = json.dumps({"inputs": [entry]}).encode()
    response = server(predictor).handle(
        Request(b"POST", b"/v2/models/iris/infer", [(oip.HEADER_LENGTH, str(len(head)).encode())], head + raw)
    )
    assert isinstance(response, Response)
    assert response.status == 400
    assert json.loads(response.body)["error"] == (
        "inputs[0] has binary_data_size 16, but shape [2, 4] of FP32 takes 32 bytes (8 x 4)"
    )


def test_the_server_metadata_names_the_binary_extension(predictor: model.Predictor) -> None:
    metadata = json.loads(call(server(predictor), b"GET", b"/v2").body)
    assert metadata["extensions"] == ["binary_tensor_data"]
