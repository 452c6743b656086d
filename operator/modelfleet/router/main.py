"""`modelfleet router`: run the inference router.

modelfleet router --config router.json            # a plain process; the file is re-read on change
modelfleet router --configmap ml/iris-router      # in a cluster: watch the ConfigMap's config.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import signal
import sys
from collections.abc import Sequence

from modelfleet.api.routerconfig import parse_duration
from modelfleet.clihelp import DefaultsHelpFormatter
from modelfleet.httpcore import HTTPServer, Limits
from modelfleet.router.admin import admin_handler
from modelfleet.router.auth import TokenFile
from modelfleet.router.configsource import ConfigMapSource, FileSource, KubeAPI
from modelfleet.router.metrics import RouterMetrics
from modelfleet.router.proxy import SERVED_BY_ROUTER, Router

log = logging.getLogger("modelfleet.router")

_SIZE = re.compile(r"^\s*(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512KiB`, `8MiB`, `1MB`..."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8MiB, 512KiB, 1048576)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from error
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value:g}")
    return value


def configmap_ref(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelfleet router",
        formatter_class=DefaultsHelpFormatter,
        description="The modelfleet inference router: weighted stable/canary split, mirroring, "
        "fallback chain, metrics, prediction and input samples, ground-truth labels, payload capture.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--config", metavar="FILE", help="read the configuration from FILE, re-read on change"
    )
    source.add_argument(
        "--configmap",
        metavar="NAMESPACE/NAME",
        type=configmap_ref,
        help="watch this ConfigMap's config.json through the Kubernetes API",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address for traffic and admin")
    parser.add_argument("--port", type=int, default=8080, help="traffic port (0 picks one)")
    parser.add_argument("--admin-port", type=int, default=9090, help="admin port (0 picks one)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-size", type=parse_size, default="8MiB", help="request body limit (413)")
    limits.add_argument(
        "--max-header-size", type=parse_size, default="64KiB", help="request header limit (431)"
    )
    limits.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=1024,
        help="requests in flight before 503",
    )
    limits.add_argument("--max-connections", type=positive_int, default=8192, help="open client connections")
    limits.add_argument("--header-timeout", type=duration, default="10s", help="time to send headers (408)")
    limits.add_argument("--body-timeout", type=duration, default="30s", help="time to send the body (408)")
    limits.add_argument("--idle-timeout", type=duration, default="75s", help="keep-alive idle time")
    limits.add_argument(
        "--max-mirrors",
        type=positive_int,
        default=256,
        help="mirrored requests in flight before copies are skipped",
    )
    parser.add_argument(
        "--prediction-samples", type=positive_int, default=1000, help="predicted values kept per version"
    )
    parser.add_argument(
        "--prediction-reads",
        type=non_negative,
        default=200.0,
        help="responses per second and version read for prediction samples (0: all)",
    )
    parser.add_argument(
        "--input-samples", type=positive_int, default=1000, help="input values kept per feature and version"
    )
    parser.add_argument(
        "--input-reads",
        type=non_negative,
        default=20.0,
        help="requests per second and version read for input samples (0: all)",
    )
    parser.add_argument(
        "--admin-token-file",
        metavar="FILE",
        help="bearer token that the admin paths /predictions, /inputs, /feedback and /config ask for, "
        "re-read at most once a second (the operator mounts the Secret <deployment>-router-admin); "
        "without it they answer anyone",
    )
    parser.add_argument("--config-poll", type=duration, default="200ms", help="how often --config is checked")
    kube = parser.add_argument_group("kubernetes (with --configmap)")
    kube.add_argument(
        "--kube-api", metavar="URL", help="API server URL (default: in-cluster service account)"
    )
    kube.add_argument("--kube-token-file", metavar="FILE", help="bearer token file (with --kube-api)")
    kube.add_argument("--kube-ca-file", metavar="FILE", help="CA bundle for the API server (with --kube-api)")
    parser.add_argument(
        "--drain-delay",
        type=duration,
        default="0s",
        help="after SIGTERM, keep serving this long before closing",
    )
    parser.add_argument(
        "--shutdown-grace", type=duration, default="10s", help="time for requests under way to end"
    )
    parser.add_argument(
        "--capture-flush-timeout",
        type=duration,
        default="3s",
        help="after the requests under way, time for payload capture to write what it holds "
        "(what is left is dropped and counted)",
    )
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
    try:
        limits = Limits(
            max_body_bytes=args.max_body_size,
            max_header_bytes=args.max_header_size,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            idle_timeout=args.idle_timeout,
            max_concurrency=args.max_concurrency,
            max_connections=args.max_connections,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(serve(args, limits))
    return uvloop.run(serve(args, limits))


async def serve(args: argparse.Namespace, limits: Limits) -> int:
    loop = asyncio.get_running_loop()
    router: Router

    def in_flight() -> float:
        return float(traffic.in_flight)

    router = Router(
        RouterMetrics(in_flight),
        prediction_samples=args.prediction_samples,
        prediction_reads_per_second=args.prediction_reads,
        input_samples=args.input_samples,
        input_reads_per_second=args.input_reads,
        max_mirrors=args.max_mirrors,
    )

    def rejected(code: int) -> None:
        deployment = router.route.config.deployment if router.route is not None else ""
        router.metrics.rejected.labels(deployment, str(code)).inc()

    traffic = HTTPServer(router.handle, limits, "router", extra_headers=SERVED_BY_ROUTER, on_reject=rejected)
    stopping = asyncio.Event()
    admin_token: TokenFile | None = None
    if args.admin_token_file:
        admin_token = TokenFile(args.admin_token_file, what="admin token")
        admin_token.digest()  # says at once in the log when it cannot be read
    else:
        log.warning(
            "no --admin-token-file: the admin port shows /predictions, /inputs, /feedback and /config "
            "to anyone who reaches it"
        )
    admin = HTTPServer(
        admin_handler(router, lambda: not stopping.is_set(), admin_token), Limits(max_concurrency=64), "admin"
    )

    background: list[asyncio.Task[None]] = []
    watcher: ConfigMapSource | None = None
    if args.config:
        source = FileSource(args.config, router.apply_json, args.config_poll)
        source.poll()
        background.append(loop.create_task(source.run()))
    else:
        namespace, name = args.configmap
        try:
            api = (
                KubeAPI(args.kube_api, args.kube_token_file, args.kube_ca_file)
                if args.kube_api
                else KubeAPI.in_cluster()
            )
        except RuntimeError as error:
            log.error("%s", error)
            return 2

        def on_config(text: str) -> None:
            loop.call_soon_threadsafe(_apply_logged, router, f"configmap {namespace}/{name}", text)

        watcher = ConfigMapSource(api, namespace, name, on_config)
        watcher.start()

    try:
        host, port = await traffic.listen(args.host, args.port)
        _, admin_port = await admin.listen(args.host, args.admin_port)
    except OSError as error:
        log.error("cannot listen on %s: %s", args.host, error.strerror or error)
        return 1
    log.info("listening on http://%s:%d (admin http://%s:%d)", host, port, host, admin_port)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    gc.collect()
    gc.freeze()  # objects from start-up are never collected: keeps collections short on the request path
    await stopping.wait()

    log.info(
        "shutting down: draining for %.1fs, then up to %.1fs for requests under way",
        args.drain_delay,
        args.shutdown_grace,
    )
    traffic.draining = True  # from now on every answer closes its connection
    await asyncio.sleep(args.drain_delay)
    if watcher is not None:
        watcher.stop()
    for task in background:
        task.cancel()
    await traffic.close(args.shutdown_grace)
    await admin.close(0.5)
    await router.close(args.capture_flush_timeout)
    return 0


def _apply_logged(router: Router, where: str, text: str) -> None:
    problem = router.apply_json(text)
    if problem is not None:
        log.error("%s refused, keeping the previous configuration: %s", where, problem)
