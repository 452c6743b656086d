"""The benchmark's command line, and the run: its phases in order, then the results written."""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench.operator_scale
from bench.operator_scale import ROOT
from bench.operator_scale.cluster import BenchCluster, connect
from bench.operator_scale.measure import allocations, idle_window, settle
from bench.operator_scale.objects import NAMESPACE, bench_objects
from bench.operator_scale.phases import (
    NAMESPACE_DELETION_SECONDS,
    check_service_ips,
    deployments_phase,
    install_webhook,
    operator_kubeconfig,
    rbac_and_setup,
    registry_phase,
    restart_phase,
    serving_phase,
    set_up,
    start_operator,
    tear_down,
)
from bench.operator_scale.report import log_counts, markdown, summarize
from bench.operator_scale.watch import StatusWatch
from bench.operator_scale.webhook import PodlessWebhook
from bench.runs import BenchNamespace, interrupt, machine, single_run
from support.operator import OperatorProcess

RESULTS = ROOT / "bench" / "results"
SETTLE_LIMIT_SECONDS = 900.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator_scale",
        description=(bench.operator_scale.__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--count", type=int, default=1000, help="Deployments to create (default 1000)")
    parser.add_argument("--serving", type=int, default=0, help="of them, this many serve for real (pods)")
    parser.add_argument("--per-model", type=int, default=1, help="Deployments per Model (default 1)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of each idle window (default 60)")
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="seconds before an idle window, and after that until the benchmark's objects have not "
        "changed for --quiet seconds (default 30)",
    )
    parser.add_argument("--quiet", type=float, default=15.0, help="seconds without changes (default 15)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for reconciliation")
    parser.add_argument("--workers", type=int, default=8, help="threads creating objects")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="profile: trace the operator's allocations and report where its memory is (slower, and its "
        "memory figures include the tracing)",
    )
    parser.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="skip the last phase: the operator restarted, timed until it reconciled every Deployment",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    problems = []
    if not 1 <= args.count <= 10000:
        problems.append("--count must be 1..10000")
    if not 0 <= args.serving <= min(20, args.count):
        problems.append("--serving must be 0..20 and at most --count (the node holds about 110 pods)")
    if not 1 <= args.per_model <= 100:
        problems.append("--per-model must be 1..100")
    if not 10 <= args.idle <= 1800 or not 0 <= args.settle <= 600 or not 0 <= args.quiet <= 120:
        problems.append("--idle must be 10..1800 seconds, --settle 0..600, --quiet 0..120")
    if not 10 <= args.timeout <= 3600 or not 1 <= args.workers <= 32:
        problems.append("--timeout must be 10..3600 seconds, --workers 1..32")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    with single_run("operator"):
        cluster = connect()
        started = datetime.now(UTC)
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="modelfleet-bench-operator-") as scratch:
            report = run(cluster, args, Path(scratch), started, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"operator-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, json_path.name)
    (args.out / "operator-latest.md").write_text(text)
    print(text)
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0


def run(
    cluster: BenchCluster,
    args: argparse.Namespace,
    scratch: Path,
    started: datetime,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    namespace = BenchNamespace(cluster, NAMESPACE, "operator", NAMESPACE_DELETION_SECONDS)
    namespace.clear_earlier_run()
    manifests, leftovers = rbac_and_setup(cluster, args.serving)
    check_service_ips(cluster, args.serving)
    operator: OperatorProcess | None = None
    watches: list[StatusWatch] = []
    webhook: PodlessWebhook | None = None
    try:
        set_up(cluster, namespace, manifests)
        webhook = PodlessWebhook(scratch)
        install_webhook(cluster, webhook)
        kubeconfig = operator_kubeconfig(cluster, scratch)

        print("starting the operator with nothing to do", flush=True)
        hook = scratch / "hook" if args.tracemalloc else None
        if hook is not None:
            hook.mkdir()
        log_path = scratch / "operator.log"  # a restarted operator appends to it
        operator = start_operator(cluster, kubeconfig, log_path, hook)
        deployments_watch = StatusWatch(cluster, "deployments")
        registry = [StatusWatch(cluster, "models"), StatusWatch(cluster, "modelversions")]
        owned = StatusWatch(cluster, "deployments", "apps", "v1")  # the routers' apps/v1 Deployments
        watches = [deployments_watch, *registry, owned]
        settle(watches, args.settle, args.quiet, SETTLE_LIMIT_SECONDS)
        baseline = idle_window(cluster, operator, args.idle, "baseline", watches)
        load: dict[str, Any] = {}

        if args.serving:
            load["serving_ready_seconds"] = serving_phase(
                cluster, operator, deployments_watch, args.serving, args.workers
            )
        objects = bench_objects(args.count - args.serving, args.per_model)
        load |= registry_phase(cluster, operator, registry, objects, args.serving, args.workers, args.timeout)
        load |= deployments_phase(
            cluster,
            operator,
            deployments_watch,
            objects["deployments"],
            args.count,
            args.workers,
            args.timeout,
        )

        print(
            f"settling: {args.settle:g} s, then until nothing changed for {args.quiet:g} s; "
            f"then {args.idle:g} s idle",
            flush=True,
        )
        load["settle_seconds"] = settle(watches, args.settle, args.quiet, SETTLE_LIMIT_SECONDS)
        print(f"  settled after {load['settle_seconds']:.0f} s", flush=True)
        loaded = idle_window(cluster, operator, args.idle, "loaded", watches)
        memory = allocations(operator) if args.tracemalloc else None
        if args.restart:
            operator, load["restart"] = restart_phase(
                cluster,
                operator,
                lambda: start_operator(cluster, kubeconfig, log_path),
                args.count,
                args.timeout,
            )
        total, reconciled, phases = deployments_watch.counts()
        load["final_phases"] = dict(phases)
        load["reconciled_at_end"] = reconciled
        if reconciled < args.count:
            print(f"  warning: only {reconciled}/{total} Deployments reconciled at the end", flush=True)
        operator_log = log_counts(operator.log())
        load["webhook_reviews"] = webhook.calls
    finally:
        for watch in watches:
            watch.stop()
        if operator is not None:
            operator.kill(signal.SIGTERM)
        tear_down(namespace, leftovers, webhook)

    return {
        "benchmark": "operator",
        "started": started.isoformat(),
        "machine": machine(load_before, kubernetes=cluster.server_version()),
        "settings": {
            "count": args.count,
            "serving": args.serving,
            "per_model": args.per_model,
            "idle": args.idle,
            "settle": args.settle,
            "quiet": args.quiet,
            "workers": args.workers,
            "tracemalloc": args.tracemalloc,
            "restart": args.restart,
        },
        "baseline": baseline,
        "loaded": loaded,
        "load": load,
        "summary": summarize(baseline, loaded, load, args.count),
        "operator_log": operator_log,
        "allocations": memory,
    }
