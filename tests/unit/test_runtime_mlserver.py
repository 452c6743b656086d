"""`modelfleet runtime mlserver`: which file of an artifact MLServer loads for each format, and the
settings it writes (HTTP on 8080, no metrics server, the right runtime class)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfleet.cli import main as cli_main
from modelfleet.runtime.mlserver import (
    FORMATS,
    ArtifactError,
    build_parser,
    find_model,
    main,
    plan,
    server_settings,
)


def touch(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"m")
    return folder


@pytest.mark.parametrize(
    ("format_name", "files", "expected"),
    [
        ("sklearn", ["model.joblib"], "model.joblib"),
        ("sklearn", ["model.pkl", "README.md"], "model.pkl"),
        ("sklearn", ["iris-v2.joblib", "manifest.txt"], "iris-v2.joblib"),
        ("sklearn", ["model.joblib", "other.joblib"], "model.joblib"),
        ("xgboost", ["model.json"], "model.json"),
        ("xgboost", ["booster.ubj"], "booster.ubj"),
        ("xgboost", ["model.bst", "model.json"], "model.json"),
        ("lightgbm", ["model.txt"], "model.txt"),
        ("lightgbm", ["lgbm.bst"], "lgbm.bst"),
        ("mlflow", ["MLmodel", "model.pkl", "conda.yaml"], "."),
        ("mlflow", ["model/MLmodel", "model/model.pkl"], "model"),
    ],
)
def test_the_model_is_found_in_the_artifact_for_its_format(
    tmp_path: Path, format_name: str, files: list[str], expected: str
) -> None:
    touch(tmp_path, *files)
    assert find_model(tmp_path, format_name) == (tmp_path / expected if expected != "." else tmp_path)


def test_an_artifact_that_is_one_file_is_served_as_it_is(tmp_path: Path) -> None:
    touch(tmp_path, "iris.joblib")
    assert find_model(tmp_path / "iris.joblib", "sklearn") == tmp_path / "iris.joblib"


@pytest.mark.parametrize(
    ("format_name", "files", "message"),
    [
        ("sklearn", ["weights.onnx", "notes/"], "holds no sklearn model .* it holds: notes/, weights.onnx"),
        ("sklearn", ["a.joblib", "b.pkl"], "several sklearn model files \\(a.joblib, b.pkl\\)"),
        ("mlflow", ["model.pkl"], "no MLflow model"),
        ("mlflow", ["a/MLmodel", "b/MLmodel"], "several MLflow models \\(a, b\\)"),
        ("onnx", ["model.onnx"], "format 'onnx' is not served by this runtime"),
    ],
)
def test_an_artifact_the_format_cannot_serve_is_refused_saying_what_is_there(
    tmp_path: Path, format_name: str, files: list[str], message: str
) -> None:
    for name in files:
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            touch(tmp_path, name)
    with pytest.raises(ArtifactError, match=message):
        find_model(tmp_path, format_name)


def test_a_missing_artifact_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        find_model(tmp_path / "models", "sklearn")


def test_settings_serve_http_on_8080_with_no_metrics_server(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    assert settings["http_port"] == 8080
    assert settings["metrics_endpoint"] is None
    assert settings["grpc_port"] not in (8080, settings.get("metrics_port"))
    assert settings["model_repository_root"] == str(tmp_path / "models")


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_each_format_gets_its_mlserver_runtime(tmp_path: Path, format_name: str) -> None:
    touch(tmp_path / "artifact", FORMATS[format_name].names[0])
    env = {
        "MODELFLEET_MODEL_DIR": str(tmp_path / "artifact"),
        "MODELFLEET_MODEL_FORMAT": format_name,
        "MODELFLEET_MODEL_NAME": "iris",
        "MODELFLEET_RUNTIME_DIR": str(tmp_path / "work"),
    }
    launch = plan(build_parser(env).parse_args([]))
    implementation = {
        "sklearn": "mlserver_sklearn.SKLearnModel",
        "xgboost": "mlserver_xgboost.XGBoostModel",
        "lightgbm": "mlserver_lightgbm.LightGBMModel",
        "mlflow": "mlserver_mlflow.MLflowRuntime",
    }[format_name]
    assert launch.model["implementation"] == implementation
    assert launch.model["name"] == "iris"

    launch.write()

    written = json.loads((tmp_path / "work" / "models" / "iris" / "model-settings.json").read_text())
    assert written == launch.model
    assert json.loads((tmp_path / "work" / "settings.json").read_text())["http_port"] == 8080
    assert not (tmp_path / "artifact" / "model-settings.json").exists(), "the artifact is not written to"


def test_print_shows_the_settings_without_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    touch(tmp_path, "model.txt")
    env = {"MODELFLEET_MODEL_DIR": str(tmp_path), "MODELFLEET_MODEL_FORMAT": "lightgbm"}
    assert main(["--print", "--model-name", "churn", "--model-version", "3"], env=env) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model-settings.json"]["parameters"] == {"uri": str(tmp_path / "model.txt"), "version": "3"}


def test_no_format_or_no_model_is_a_clear_error_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([], env={"MODELFLEET_MODEL_DIR": str(tmp_path)}) == 2
    assert "no model format: set MODELFLEET_MODEL_FORMAT" in capsys.readouterr().err
    assert main(["--format", "sklearn"], env={"MODELFLEET_MODEL_DIR": str(tmp_path)}) == 2
    assert "holds no sklearn model" in capsys.readouterr().err


def test_the_command_is_reached_through_modelfleet_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["runtime", "--help"]) == 0
    assert "mlserver" in capsys.readouterr().out
    assert cli_main(["runtime", "triton"]) == 2
