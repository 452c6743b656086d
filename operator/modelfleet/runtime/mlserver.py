"""`modelfleet runtime mlserver`: serve the artifact in MODELFLEET_MODEL_DIR with MLServer.

    modelfleet runtime mlserver                 # settings from the environment, then MLServer starts
    modelfleet runtime mlserver --print         # show the settings it would write, and exit

It finds the model in the artifact for its format, writes MLServer's settings.json and the model's
model-settings.json into a working folder (not the artifact, which may be read-only), then replaces
itself with `mlserver start` (through `modelfleet.runtime.serve`, which adds the OIP binary data
extension to MLServer's REST server). HTTP on port 8080; MLServer's separate metrics server is off;
its gRPC server, which MLServer 1.7 cannot turn off, listens on 8081 inside the pod.

Formats, their MLServer runtime, and the files looked for (the first one found wins; else the one file
of the directory with one of the suffixes in brackets):
    sklearn   mlserver_sklearn.SKLearnModel    model.joblib, model.pkl, model.pickle  [.joblib .pkl .pickle]
    xgboost   mlserver_xgboost.XGBoostModel    model.json, model.ubj, model.bst       [.json .ubj .bst]
    lightgbm  mlserver_lightgbm.LightGBMModel  model.txt, model.bst                   [.txt .bst]
    mlflow    mlserver_mlflow.MLflowRuntime    the folder holding MLmodel (the artifact or one level down)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.clihelp import DefaultsHelpFormatter

ENV_MODEL_DIR = "MODELFLEET_MODEL_DIR"
ENV_MODEL_FORMAT = "MODELFLEET_MODEL_FORMAT"
ENV_MODEL_NAME = "MODELFLEET_MODEL_NAME"
ENV_MODEL_VERSION = "MODELFLEET_MODEL_VERSION"
ENV_WORK_DIR = "MODELFLEET_RUNTIME_DIR"
DEFAULT_MODEL_DIR = "/mnt/models"
DEFAULT_WORK_DIR = "/tmp/mlserver"
HTTP_PORT = 8080
GRPC_PORT = 8081


@dataclass(frozen=True)
class Format:
    implementation: str
    names: tuple[str, ...]  # well-known file names, in order of preference
    suffixes: tuple[str, ...]  # else: the one file with one of these suffixes


FORMATS: dict[str, Format] = {
    "sklearn": Format(
        "mlserver_sklearn.SKLearnModel",
        ("model.joblib", "model.pkl", "model.pickle"),
        (".joblib", ".pkl", ".pickle"),
    ),
    "xgboost": Format(
        "mlserver_xgboost.XGBoostModel", ("model.json", "model.ubj", "model.bst"), (".json", ".ubj", ".bst")
    ),
    "lightgbm": Format("mlserver_lightgbm.LightGBMModel", ("model.txt", "model.bst"), (".txt", ".bst")),
    "mlflow": Format("mlserver_mlflow.MLflowRuntime", ("MLmodel",), ()),
}


class ArtifactError(ValueError):
    """The artifact does not hold a model of the format asked for (the message says what is there)."""


def find_model(model_dir: Path, format_name: str) -> Path:
    """The file (or, for mlflow, the folder) MLServer should load from the artifact in `model_dir`."""
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ArtifactError(f"format {format_name!r} is not served by this runtime (it serves {_known()})")
    if not model_dir.exists():
        raise ArtifactError(f"{model_dir} does not exist: the artifact was not placed there")
    if format_name == "mlflow":
        return _find_mlflow(model_dir)
    if model_dir.is_file():
        return model_dir
    for name in fmt.names:
        if (model_dir / name).is_file():
            return model_dir / name
    candidates = sorted(
        p
        for p in model_dir.iterdir()
        if p.is_file() and p.suffix in fmt.suffixes and not p.name.startswith(".")
    )
    if len(candidates) == 1:
        return candidates[0]
    wanted = ", ".join(fmt.names)
    if candidates:
        found = ", ".join(p.name for p in candidates)
        raise ArtifactError(
            f"{model_dir} holds several {format_name} model files ({found}); name one {wanted}"
        )
    raise ArtifactError(
        f"{model_dir} holds no {format_name} model ({wanted}); it holds: {_listing(model_dir)}"
    )


def _find_mlflow(model_dir: Path) -> Path:
    if (model_dir / "MLmodel").is_file():
        return model_dir
    if model_dir.is_dir():
        below = sorted(p.parent for p in model_dir.glob("*/MLmodel") if p.is_file())
        if len(below) == 1:
            return below[0]
        if below:
            found = ", ".join(p.name for p in below)
            raise ArtifactError(f"{model_dir} holds several MLflow models ({found})")
    raise ArtifactError(
        f"{model_dir} holds no MLflow model (no MLmodel file); it holds: {_listing(model_dir)}"
    )


def _listing(folder: Path, limit: int = 10) -> str:
    if not folder.is_dir():
        return "a single file"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "nothing"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _known() -> str:
    return ", ".join(FORMATS)


def server_settings(work_dir: Path, *, port: int = HTTP_PORT, grpc_port: int = GRPC_PORT) -> dict[str, Any]:
    """MLServer's settings.json: one model, HTTP on `port`, no separate metrics server."""
    return {
        "http_port": port,
        "grpc_port": grpc_port,
        "metrics_endpoint": None,  # no metrics server (it would take a third port)
        "metrics_dir": str(work_dir / "metrics"),
        # The model runs in the server's own process: one process per pod, scaled by replicas.
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "model_repository_root": str(work_dir / "models"),
    }


def model_settings(
    name: str, format_name: str, model_path: Path, version: str | None = None
) -> dict[str, Any]:
    """MLServer's model-settings.json for the model found by `find_model`."""
    parameters: dict[str, Any] = {"uri": str(model_path)}
    if version:
        parameters["version"] = version
    return {"name": name, "implementation": FORMATS[format_name].implementation, "parameters": parameters}


@dataclass(frozen=True)
class Launch:
    work_dir: Path
    settings: dict[str, Any]
    model: dict[str, Any]

    def write(self) -> None:
        """settings.json in the working folder, model-settings.json in its models/NAME/."""
        model_folder = self.work_dir / "models" / self.model["name"]
        model_folder.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "metrics").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "settings.json").write_text(json.dumps(self.settings, indent=2) + "\n")
        (model_folder / "model-settings.json").write_text(json.dumps(self.model, indent=2) + "\n")


def plan(args: argparse.Namespace) -> Launch:
    """What to write, from the command line and the environment; ArtifactError when it cannot serve."""
    if not args.format:
        raise ArtifactError(f"no model format: set {ENV_MODEL_FORMAT} ({_known()})")
    work_dir = Path(args.work_dir)
    model_path = find_model(Path(args.model_dir), args.format)
    return Launch(
        work_dir=work_dir,
        settings=server_settings(work_dir, port=args.port, grpc_port=args.grpc_port),
        model=model_settings(args.model_name, args.format, model_path, args.model_version),
    )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelfleet runtime mlserver",
        formatter_class=DefaultsHelpFormatter,
        description="Serve a model artifact with MLServer over Open Inference Protocol v2.",
    )
    parser.add_argument(
        "--model-dir",
        default=env.get(ENV_MODEL_DIR, DEFAULT_MODEL_DIR),
        help=f"the artifact: a folder or a file (env {ENV_MODEL_DIR})",
    )
    parser.add_argument(
        "--format",
        default=env.get(ENV_MODEL_FORMAT),
        choices=sorted(FORMATS),
        help=f"the artifact's format (env {ENV_MODEL_FORMAT})",
    )
    parser.add_argument(
        "--model-name",
        default=env.get(ENV_MODEL_NAME, "model"),
        help=f"model name in URLs (env {ENV_MODEL_NAME})",
    )
    parser.add_argument(
        "--model-version",
        default=env.get(ENV_MODEL_VERSION),
        help=f"version in metadata (env {ENV_MODEL_VERSION})",
    )
    parser.add_argument("--port", type=int, default=HTTP_PORT, help="HTTP port (OIP v2 REST)")
    parser.add_argument(
        "--grpc-port", type=int, default=GRPC_PORT, help="gRPC port (MLServer always starts it)"
    )
    parser.add_argument(
        "--work-dir",
        default=env.get(ENV_WORK_DIR, DEFAULT_WORK_DIR),
        help=f"writable folder for MLServer's settings (env {ENV_WORK_DIR})",
    )
    parser.add_argument("--print", action="store_true", help="print the settings and exit")
    return parser


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    args = build_parser(os.environ if env is None else env).parse_args(argv)
    try:
        launch = plan(args)
    except ArtifactError as error:
        print(f"modelfleet runtime mlserver: {error}", file=sys.stderr)
        return 2
    if args.print:
        print(json.dumps({"settings.json": launch.settings, "model-settings.json": launch.model}, indent=2))
        return 0
    launch.write()
    print(
        f"modelfleet runtime mlserver: serving {launch.model['parameters']['uri']} as {args.format} model "
        f"{args.model_name!r} on port {args.port}",
        file=sys.stderr,
        flush=True,
    )
    command = [sys.executable, "-m", "modelfleet.runtime.serve", "start", str(launch.work_dir)]
    os.execv(command[0], command)
    return 0  # not reached: execv replaces the process
