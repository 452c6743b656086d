"""The steps of a run, in the order `run.run` takes them: the namespace (a bench/runs.py BenchNamespace)
and what the operator needs (its RBAC, the quota, the FlowSchema, the webhook, a token), the operator, the
serving Deployments, the registry, the Deployments, the restart, and the cleanup.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.operator_scale import ROOT
from bench.operator_scale.cluster import BenchCluster, create_all
from bench.operator_scale.measure import reconciles, wait_until
from bench.operator_scale.objects import (
    FIELD_MANAGER,
    NAMESPACE,
    PODS_PER_SERVING_DEPLOYMENT,
    SERVICE_ACCOUNT,
    chart_rbac,
    cluster_scoped,
    serving_objects,
    setup_manifests,
    token_kubeconfig,
)
from bench.operator_scale.watch import StatusWatch, combined
from bench.operator_scale.webhook import WEBHOOK, PodlessWebhook, check_webhook
from bench.runs import BenchNamespace
from support.net import free_port
from support.operator import OperatorProcess

NAMESPACE_DELETION_SECONDS = 900  # the namespace controller removes a few thousand objects slowly
SERVICE_IPS_SPARED = 50  # Service addresses left free for everyone else when --serving takes some
SERVING_READY_SECONDS = 300


# --- setting up ----------------------------------------------------------------------------------------


def check_service_ips(cluster: BenchCluster, serving: int) -> None:
    """Refuse --serving values that would leave the cluster's Service range with too few addresses."""
    needed = PODS_PER_SERVING_DEPLOYMENT * serving
    if serving and cluster.free_service_ips() < needed + SERVICE_IPS_SPARED:
        raise SystemExit(
            f"the cluster's Service range has {cluster.free_service_ips()} free addresses: too few for "
            f"{serving} serving Deployments ({needed}) while leaving {SERVICE_IPS_SPARED} to others"
        )


def rbac_and_setup(cluster: BenchCluster, serving: int) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The chart's RBAC with the quota and the FlowSchema, and (kind, name) of every cluster-scoped object
    the run creates (the webhook configuration's too): what the cleanup deletes besides the namespace."""
    manifests = [*chart_rbac(cluster.helm_path, cluster.server_version()), *setup_manifests(serving)]
    return manifests, [*cluster_scoped(manifests), ("MutatingWebhookConfiguration", WEBHOOK)]


def set_up(cluster: BenchCluster, namespace: BenchNamespace, manifests: list[dict[str, Any]]) -> None:
    """The CRDs, the namespace, the chart's RBAC, the pod quota and the FlowSchema."""
    print(
        f"setting up namespace {NAMESPACE}: the chart's RBAC, a pod quota, a FlowSchema and a "
        "webhook (headless Services, router Deployments paused)",
        flush=True,
    )
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    namespace.create()
    cluster.apply(manifests, server_side=True, field_manager=FIELD_MANAGER)


def install_webhook(cluster: BenchCluster, webhook: PodlessWebhook) -> None:
    """The webhook's configuration, then a probe: it must be in effect before any Service is created."""
    cluster.apply([webhook.manifest()], server_side=True, field_manager=FIELD_MANAGER)
    check_webhook(cluster)


def operator_kubeconfig(cluster: BenchCluster, scratch: Path) -> Path:
    """A kubeconfig for the operator: the same API server, a token of the chart's ServiceAccount."""
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=4h"
    ).stdout.strip()
    admin = json.loads(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    kubeconfig = scratch / "operator.kubeconfig"
    kubeconfig.touch(mode=0o600)
    kubeconfig.write_text(yaml.safe_dump(token_kubeconfig(admin, token)))
    return kubeconfig


def start_operator(
    cluster: BenchCluster, kubeconfig: Path, log_path: Path, tracemalloc_dir: Path | None = None
) -> OperatorProcess:
    """`modelfleet operator --namespace modelfleet-bench` on this host, as the chart's ServiceAccount
    (`kubeconfig`), with its /metrics on a free port."""
    operator = OperatorProcess(
        cluster,
        NAMESPACE,
        log_path,
        [sys.executable, "-m", "modelfleet.cli", "operator", "--namespace", NAMESPACE],
        # its namespace, as in a pod: where the chart's RBAC lets it make and read the router admin key
        {"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": NAMESPACE},
        metrics_port=free_port(),
        tracemalloc_dir=tracemalloc_dir,
        cwd=ROOT,
    )
    operator.start()
    return operator


# --- the load ------------------------------------------------------------------------------------------


def serving_phase(
    cluster: BenchCluster, operator: OperatorProcess, deployments: StatusWatch, serving: int, workers: int
) -> float:
    """Create the serving Deployments and wait until they are Healthy; the seconds that took."""
    print(f"creating {serving} serving Deployments (pods)", flush=True)
    t0 = time.monotonic()
    for plural, objects in serving_objects(serving).items():
        create_all(cluster, plural, objects, workers)
    seconds, _ = wait_until(
        "serving Deployments Healthy",
        deployments.counts,
        serving,
        lambda total, ok, phases: phases.get("Healthy", 0) >= serving,
        SERVING_READY_SECONDS,
        operator,
        t0,
    )
    return seconds


def registry_phase(
    cluster: BenchCluster,
    operator: OperatorProcess,
    registry: list[StatusWatch],
    objects: dict[str, list[dict[str, Any]]],
    serving: int,
    workers: int,
    timeout: float,
) -> dict[str, Any]:
    """Create the Models and ModelVersions and wait until the operator has written all their statuses."""
    out: dict[str, Any] = {
        "models": len(objects["models"]) + (1 if serving else 0),
        "modelversions": len(objects["modelversions"]) + (1 if serving else 0),
    }
    print(
        f"creating {len(objects['models'])} Models and {len(objects['modelversions'])} ModelVersions",
        flush=True,
    )
    t0 = time.monotonic()
    out["registry_created_seconds"] = create_all(cluster, "models", objects["models"], workers) + create_all(
        cluster, "modelversions", objects["modelversions"], workers
    )
    registry_total = out["models"] + out["modelversions"]
    out["registry_reconciled_seconds"], _ = wait_until(
        "Models and ModelVersions reconciled",
        combined(*registry),
        registry_total,
        lambda total, ok, phases: total >= registry_total and ok >= registry_total,
        timeout,
        operator,
        t0,
    )
    return out


def deployments_phase(
    cluster: BenchCluster,
    operator: OperatorProcess,
    deployments: StatusWatch,
    objects: list[dict[str, Any]],
    count: int,
    workers: int,
    timeout: float,
) -> dict[str, Any]:
    """Create the Deployments and time them until all `count` (the serving ones too) are reconciled, with
    the operator's CPU, API requests and peak RSS meanwhile."""
    print(f"creating {len(objects)} Deployments", flush=True)
    cpu_before = operator.sample().cpu_seconds
    requests_before = cluster.operator_requests()
    t0 = time.monotonic()
    out: dict[str, Any] = {"deployments_created": len(objects)}
    out["deployments_created_seconds"] = create_all(cluster, "deployments", objects, workers)
    out["deployments_reconciled_seconds"], out["peak_rss_mb"] = wait_until(
        "Deployments reconciled",
        deployments.counts,
        count,
        lambda total, ok, phases: total >= count and ok >= count,
        timeout,
        operator,
        t0,
    )
    out["operator_cpu_seconds"] = operator.sample().cpu_seconds - cpu_before
    out["api_requests"] = cluster.operator_requests() - requests_before
    return out


def restart_phase(
    cluster: BenchCluster,
    operator: OperatorProcess,
    make: Callable[[], OperatorProcess],
    count: int,
    timeout: float,
) -> tuple[OperatorProcess, dict[str, Any]]:
    """Stop the operator, start another, and time it until it has reconciled every Deployment once (its
    own reconcile counter), with its API requests meanwhile."""
    print(f"restarting the operator; waiting for {count} Deployment reconciles", flush=True)
    operator.kill(signal.SIGTERM)
    requests_before = cluster.operator_requests()
    started = time.monotonic()
    fresh = make()
    first: float | None = None
    last_print = started
    while True:
        done = reconciles(fresh)
        now = time.monotonic()
        if done > 0 and first is None:
            first = now - started
        if done >= count:
            break
        if now - started > timeout:
            raise TimeoutError(
                f"restart: {done:.0f}/{count} reconciled after {timeout:.0f} s:\n{fresh.tail()}"
            )
        if now - last_print >= 5:
            print(f"  restart: {done:.0f}/{count} ({now - started:.0f} s)", flush=True)
            last_print = now
        fresh.sample()  # fails early if it died
        time.sleep(0.2)
    seconds = time.monotonic() - started
    out = {
        "deployments": count,
        "first_reconcile_seconds": first if first is not None else seconds,
        "reconciled_seconds": seconds,
        "api_requests": cluster.operator_requests() - requests_before,
        "cpu_seconds": fresh.sample().cpu_seconds,
    }
    print(
        f"  restart: all {count} reconciled {seconds:.1f} s after the start ({count / seconds:.1f}/s), "
        f"{out['api_requests']:.0f} API requests",
        flush=True,
    )
    return fresh, out


# --- cleaning up ---------------------------------------------------------------------------------------


def tear_down(
    namespace: BenchNamespace, leftovers: list[tuple[str, str]], webhook: PodlessWebhook | None
) -> None:
    """Delete the namespace and the cluster-scoped objects, wait for the namespace to go (saying how to
    delete what may be left), and stop the webhook (its configuration is deleted first)."""
    try:
        namespace.delete(also=leftovers)
    finally:
        if webhook is not None:
            webhook.close()
