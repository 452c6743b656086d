"""`modelfleet model-server`: serve the iris model, or train it into a file.

modelfleet model-server --train /models/iris.joblib       # train, save, exit (for image builds)
modelfleet model-server --model-file /models/iris.joblib  # serve a trained model
modelfleet model-server                                   # no file: train at start-up (milliseconds)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from modelfleet.clihelp import DefaultsHelpFormatter
from modelfleet.httpcore import HTTPServer, Limits
from modelfleet.modelserver import model
from modelfleet.modelserver.app import ModelServer
from modelfleet.modelserver.faults import ENV_ERROR_RATE, ENV_LATENCY, ENV_SHIFT, Faults, parse_latency

log = logging.getLogger("modelfleet.modelserver")

ENV_MODEL_FILE = "MODELFLEET_MODEL_FILE"
ENV_MODEL_VERSION = "MODELFLEET_MODEL_VERSION"
ENV_MODEL_NAME = "MODELFLEET_MODEL_NAME"


def _latency(text: str) -> float:
    try:
        return parse_latency(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelfleet model-server",
        formatter_class=DefaultsHelpFormatter,
        description="Serve the iris classifier over Open Inference Protocol v2 and v1, with optional faults.",
    )
    parser.add_argument("--train", metavar="OUT_FILE", help="train the model, save it to OUT_FILE and exit")
    parser.add_argument(
        "--model-file",
        default=os.environ.get(ENV_MODEL_FILE),
        help=f"trained model to serve (env {ENV_MODEL_FILE})",
    )
    parser.add_argument(
        "--model-name",
        default=os.environ.get(ENV_MODEL_NAME, "iris"),
        help=f"model name in URLs (env {ENV_MODEL_NAME})",
    )
    parser.add_argument(
        "--model-version",
        default=os.environ.get(ENV_MODEL_VERSION, "1"),
        help=f"version in metadata and the X-Modelfleet-Model-Version header (env {ENV_MODEL_VERSION})",
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8080")), help="port (0 picks one)"
    )
    faults = parser.add_argument_group("fault injection (flags win over the environment)")
    faults.add_argument(
        "--error-rate", type=float, help=f"share of inference requests answered 500 (env {ENV_ERROR_RATE})"
    )
    faults.add_argument(
        "--latency", type=_latency, help=f"latency added to inference, e.g. 300ms (env {ENV_LATENCY})"
    )
    faults.add_argument("--shift", type=int, help=f"add N mod 3 to predicted classes (env {ENV_SHIFT})")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.train:
        model.save(model.train(args.seed), args.train)
        log.info("trained the iris model and saved it to %s", args.train)
        return 0
    try:
        env = Faults.from_env()
        faults = Faults(
            error_rate=env.error_rate if args.error_rate is None else args.error_rate,
            latency=env.latency if args.latency is None else args.latency,
            shift=env.shift if args.shift is None else args.shift,
        )
    except ValueError as error:
        parser.error(str(error))
    if args.model_file:
        if not os.path.exists(args.model_file):
            parser.error(f"model file {args.model_file} does not exist (train one with --train FILE)")
        estimator = model.load(args.model_file)
        log.info("loaded the model from %s", args.model_file)
    else:
        estimator = model.train(args.seed)
        log.info("no model file given: trained the iris model at start-up")
    app = ModelServer(model.Predictor(estimator), args.model_name, args.model_version, faults)
    if faults.any:
        log.warning("fault injection on: %s", faults)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(serve(app, args.host, args.port))
    return uvloop.run(serve(app, args.host, args.port))


async def serve(app: ModelServer, host: str, port: int) -> int:
    server = HTTPServer(app.handle, Limits(max_concurrency=4096), "model-server")
    try:
        bound_host, bound_port = await server.listen(host, port)
    except OSError as error:
        log.error("cannot listen on %s:%d: %s", host, port, error.strerror or error)
        return 1
    log.info(
        "listening on http://%s:%d (model %s, version %s)", bound_host, bound_port, app.name, app.version
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close(5.0)
    return 0
