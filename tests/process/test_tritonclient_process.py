"""NVIDIA's tritonclient, a client nobody here wrote, with its defaults, against the model server and the
router as processes on loopback.

tritonclient's `set_data_from_numpy` sends tensors in the binary tensor data extension, and `infer` without
requested outputs asks for every output in binary (`binary_data_output`); its `InferRequestedOutput` asks for
binary unless told otherwise. The iris rows below are the data set's rows 0, 50, 100, 25, 75 and 125, whose
classes are setosa, versicolor, virginica, setosa, versicolor, virginica.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from routerkit import INFER_BODY, INFER_PATH, Process, Reply, get_json, router, send, wait_until, write_config

ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [7.0, 3.2, 4.7, 1.4],
    [6.3, 3.3, 6.0, 2.5],
    [5.0, 3.0, 1.6, 0.2],
    [6.6, 3.0, 4.4, 1.4],
    [7.2, 3.2, 6.0, 1.8],
]
CLASSES = [0, 1, 2, 0, 1, 2]
SHIFTED = [(label + 1) % 3 for label in CLASSES]


@pytest.fixture
def routers() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def client(process: Process) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{process.port}")


def infer(
    process: Process, dtype: type = np.float32, outputs: list[triton.InferRequestedOutput] | None = None
) -> triton.InferResult:
    """One request exactly as a tritonclient user writes it: the defaults, apart from what is passed."""
    rows = np.array(ROWS, dtype=dtype)
    tensor = triton.InferInput("input-0", list(rows.shape), triton.np_to_triton_dtype(rows.dtype))
    tensor.set_data_from_numpy(rows)
    with client(process) as connection:
        return connection.infer("iris", [tensor], outputs=outputs)


def sent_binary(result: triton.InferResult) -> bool:
    """Whether the answer's label output came as binary data (after the JSON header)."""
    return "binary_data_size" in (result.get_output("label").get("parameters") or {})


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_tritonclient_with_its_defaults_gets_the_right_classes_from_the_model_server(
    stable_server: Process, dtype: type
) -> None:
    result = infer(stable_server, dtype)
    assert result.as_numpy("label").tolist() == CLASSES
    assert sent_binary(result)  # binary_data_output: every output in binary
    assert result.get_response()["model_version"] == "1"


def test_tritonclient_gets_a_requested_output_in_binary_or_as_json(stable_server: Process) -> None:
    result = infer(stable_server, outputs=[triton.InferRequestedOutput("label")])
    assert (result.as_numpy("label").tolist(), sent_binary(result)) == (CLASSES, True)
    result = infer(stable_server, outputs=[triton.InferRequestedOutput("label", binary_data=False)])
    assert (result.as_numpy("label").tolist(), sent_binary(result)) == (CLASSES, False)
    assert result.get_output("label")["data"] == CLASSES


def test_tritonclient_sees_a_ready_server_that_names_the_binary_extension(stable_server: Process) -> None:
    with client(stable_server) as connection:
        assert connection.is_server_live()
        assert connection.is_server_ready()
        assert connection.is_model_ready("iris")
        assert "binary_tensor_data" in connection.get_server_metadata()["extensions"]
        assert connection.get_model_metadata("iris")["outputs"][0]["name"] == "label"


def test_a_bad_request_from_tritonclient_is_a_400_that_says_why(stable_server: Process) -> None:
    rows = np.array(ROWS, dtype=np.float32)
    tensor = triton.InferInput("input-0", [len(ROWS), 3], "FP32")  # the shape says 3 features, the data has 4
    tensor.set_data_from_numpy(rows[:, :3])
    with client(stable_server) as connection, pytest.raises(triton.InferenceServerException) as caught:
        connection.infer("iris", [tensor])
    assert caught.value.status() == "400"
    assert "expected rows of 4 features, got shape [6, 3]" in caught.value.message()


def test_tritonclient_through_the_router_gets_stable_answers_and_the_samples_record_them(
    tmp_path: Path, routers: list[Process], stable_server: Process, shifted_server: Process
) -> None:
    """Given stable at weight 100 and a canary that shifts every class, with all stable traffic mirrored to
    the canary, when tritonclient sends 10 requests with its defaults, then each answer has the right
    classes, and the router's samples hold stable's answers and the canary's answers to the copies."""
    config = tmp_path / "router.json"
    write_config(
        config,
        [("iris-v1", stable_server, 100, "stable"), ("iris-v3", shifted_server, 0, "canary")],
        mirrorPercent=100,
    )
    proxy = router("--config", str(config), "--prediction-samples", "60")
    routers.append(proxy)
    for _ in range(10):
        result = infer(proxy)
        assert result.as_numpy("label").tolist() == CLASSES
        assert sent_binary(result)
    wait_until(lambda: len(get_json(proxy.admin_port, "/predictions").get("iris-v3", [])) == 60, 5.0)
    samples = get_json(proxy.admin_port, "/predictions")
    assert samples["iris-v1"] == CLASSES * 10
    assert samples["iris-v3"] == SHIFTED * 10  # the mirrored binary copies were understood too


def test_tritonclient_through_the_router_is_answered_by_stable_when_the_canary_fails(
    tmp_path: Path, routers: list[Process], stable_server: Process, failing_server: Process
) -> None:
    config = tmp_path / "router.json"
    write_config(
        config,
        [("iris-v1", stable_server, 0, "stable"), ("iris-v2", failing_server, 100, "canary")],
        fallback={"retryOnStable": True},
    )
    proxy = router("--config", str(config))
    routers.append(proxy)
    result = infer(proxy)
    assert result.as_numpy("label").tolist() == CLASSES
    assert sent_binary(result)
    assert get_json(proxy.admin_port, "/predictions")["iris-v1"] == CLASSES


def test_json_only_requests_still_work_directly_and_through_the_router(
    tmp_path: Path, routers: list[Process], stable_server: Process
) -> None:
    config = tmp_path / "router.json"
    write_config(config, [("iris-v1", stable_server, 100, "stable")])
    proxy = router("--config", str(config))
    routers.append(proxy)
    for process in (stable_server, proxy):
        rows = np.array(ROWS, dtype=np.float64)
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=False)
        with client(process) as connection:
            result = connection.infer(
                "iris", [tensor], outputs=[triton.InferRequestedOutput("label", binary_data=False)]
            )
        assert result.as_numpy("label").tolist() == CLASSES
        assert not sent_binary(result)
        reply = asyncio.run(_send_once(process.port, INFER_BODY))
        assert reply.status == 200
        assert "inference-header-content-length" not in reply.headers
        assert json.loads(reply.body)["outputs"][0]["data"] == [0, 2]


def test_a_header_length_beyond_the_body_is_a_400_through_the_router(
    tmp_path: Path, routers: list[Process], stable_server: Process
) -> None:
    config = tmp_path / "router.json"
    write_config(config, [("iris-v1", stable_server, 100, "stable")])
    proxy = router("--config", str(config))
    routers.append(proxy)
    reply = asyncio.run(_send_once(proxy.port, INFER_BODY, "inference-header-content-length: 5000\r\n"))
    assert reply.status == 400
    assert reply.headers["x-modelfleet-served-by"] == "iris-v1"
    assert json.loads(reply.body) == {
        "error": f"Inference-Header-Content-Length is 5000, but the body has only {len(INFER_BODY)} bytes"
    }


async def _send_once(port: int, body: bytes, headers: str = "") -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await send(reader, writer, INFER_PATH, body, headers)
    finally:
        writer.close()
