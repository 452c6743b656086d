"""`modelfleet model-server` as a process: a trained file, both protocols, the version header, faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from routerkit import INFER_BODY, SETOSA, VIRGINICA, get_json, model_server


def post(port: int, path: str, body: bytes) -> tuple[int, dict[str, str], object]:
    request = Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_a_model_trained_into_a_file_is_served_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "iris.joblib"
    trained = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli", "model-server", "--train", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr
    assert path.stat().st_size > 0
    server = model_server("7", "--model-file", str(path))
    try:
        assert f"loaded the model from {path}" in server.log
        assert get_json(server.port, "/v2/health/ready") == {"ready": True}
        assert get_json(server.port, "/v2/models/iris")["versions"] == ["7"]
        status, headers, body = post(server.port, "/v2/models/iris/infer", INFER_BODY)
        assert status == 200
        assert headers["x-modelfleet-model-version"] == "7"
        assert body["outputs"][0]["data"] == [0, 2]  # type: ignore[index]
        status, _, body = post(
            server.port, "/v1/models/iris:predict", json.dumps({"instances": [VIRGINICA, SETOSA]}).encode()
        )
        assert (status, body) == (200, {"predictions": [2, 0]})
        status, _, body = post(server.port, "/v2/models/iris/infer", b"{}")
        assert status == 400
        assert "inputs" in body["error"]  # type: ignore[index]
    finally:
        assert server.stop() == 0


def test_faults_from_the_environment_make_a_bad_version(failing_server: object) -> None:
    port = failing_server.port  # type: ignore[attr-defined]
    status, headers, body = post(port, "/v2/models/iris/infer", INFER_BODY)
    assert status == 500
    assert body == {"error": "injected fault (error rate 1)"}
    assert headers["x-modelfleet-model-version"] == "2"
    assert get_json(port, "/v2/health/ready") == {"ready": True}  # still Ready: bad on purpose


def test_bad_fault_settings_stop_the_server_with_the_reason() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli", "model-server", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MODELFLEET_FAULT_ERROR_RATE": "often", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert "MODELFLEET_FAULT_ERROR_RATE='often' is not a valid float" in result.stderr


@pytest.mark.parametrize("flag", ["--error-rate=2", "--latency=soon"])
def test_bad_fault_flags_are_usage_errors(flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli", "model-server", flag],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "usage: modelfleet model-server" in result.stderr
