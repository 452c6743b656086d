"""Operator scale benchmark: memory, idle CPU and reconcile throughput with many Deployments.

    python -m bench.operator_scale                  # (make bench-operator) 1000 Deployments, about 8 minutes
    python -m bench.operator_scale --count 100      # a smaller run
    python -m bench.operator_scale --idle 660       # an idle window that holds every Deployment's resync

Against the real cluster (KUBECONFIG, else the local cluster), in its own namespace `modelfleet-bench`,
deleted at the end (also on failure or Ctrl-C):

1. The operator runs on this host (`modelfleet operator --namespace modelfleet-bench`) as the chart's
   ServiceAccount with the chart's RBAC, with nothing to do: baseline memory (VmRSS, Pss) and CPU over
   an idle window.
2. N Deployments are created, each of its own Model (`governance.requireApproval: true`) and one
   ModelVersion that is valid but not approved. They are reconciled to their final status (phase
   Failed, reason VersionNotServable) without model pods. The operator still applies every router
   object (ServiceAccount, Role, RoleBinding, Service, Deployment); a mutating webhook served on
   127.0.0.1 makes their Services headless and pauses their router Deployments (no ReplicaSet, no
   pods), because the shared node holds about 110 pods and the local cluster's Service range 254
   addresses. A
   ResourceQuota on pods backs it up. `--serving K` makes K of the N Deployments serve for real
   (approved version, one model pod and one router pod each; the quota allows exactly those).
3. The benchmark waits until every Deployment has `status.observedGeneration == metadata.generation`:
   reconcile time and throughput (Deployments per second).
4. Steady state: memory and CPU over the same idle window as the baseline, and the API requests the
   operator made in each window, counted by the API server itself: a FlowSchema matches only the
   operator's ServiceAccount and `apiserver_flowcontrol_dispatched_requests_total` counts its requests.
5. Results: bench/results/operator-<timestamp>.json and bench/results/operator-latest.md, with the
   ratios loaded / baseline and the verdicts against the targets (< 150 MB, idle CPU < 2% of a core).

Needs kubectl and helm (`make components`), and the CRDs (applied from crds/ here).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from modelfleet.analysis.exposition import parse_exposition

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMESPACE = "modelfleet-bench"
BENCH_LABEL = "modelfleet.io/bench"
RELEASE = "modelfleet-bench"
SERVICE_ACCOUNT = RELEASE  # the chart names its objects after a release whose name holds "modelfleet"
FLOW_SCHEMA = "modelfleet-bench-operator"
QUOTA = "modelfleet-bench-pods"
WEBHOOK = "modelfleet-bench-podless"
SERVING_PREFIX = "serving-"
GROUP, VERSION = "modelfleet.io", "v1alpha1"
LOCAL_KUBECONFIG = Path("/var/lib/modelfleet/admin.kubeconfig")
SETTLE_LIMIT_SECONDS = 900.0
NAMESPACE_DELETION_SECONDS = 900  # the namespace controller removes a few thousand objects slowly
LOCK_FILE = Path(tempfile.gettempdir()) / "modelfleet-bench-operator.lock"
TARGET_RSS_MB = 150.0  # with 1,000 Deployments (docs/design.md)
TARGET_RSS_MB_10K = 400.0  # with 10,000
TARGET_IDLE_CPU_PERCENT = 2.0
TARGET_RESTART_PER_SECOND = 100.0  # Deployments reconciled per second after an operator restart
RECONCILES = "modelfleet_reconcile_duration_seconds_count"
SERVING_IMAGE = "localhost/iris-server:1"
PODS_PER_SERVING_DEPLOYMENT = 2  # one router pod, one model pod; as many ClusterIP Services
SERVICE_IPS_SPARED = 50  # Service addresses left free for everyone else when --serving takes some
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024.0  # /proc reports kB


# --- pure helpers (tests/unit/test_bench_operator.py) ---------------------------------------------


def cpu_seconds_from_stat(stat: str, ticks: int = CLOCK_TICKS) -> float:
    """User + system CPU seconds of a process (all its threads) from the text of /proc/PID/stat."""
    # the command name (field 2) is in parentheses and may hold spaces: split after its closing one
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def kb_field(text: str, name: str) -> int:
    """A `Name:   1234 kB` line of /proc/PID/status or smaps_rollup, in kB."""
    match = re.search(rf"^{re.escape(name)}:\s+(\d+) kB$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {name} line")
    return int(match.group(1))


def counter_total(exposition: str, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples of a Prometheus counter whose labels include `labels` (0 when none).

    Only the lines that start with `name` are parsed: the API server's whole exposition (megabytes)
    would take the parser seconds, and a line of some other metric cannot fail the count.
    """
    lines = "\n".join(line for line in exposition.splitlines() if line.startswith(name))
    matching = (
        sample.value
        for sample in parse_exposition(lines)
        if sample.name == name and all(dict(sample.labels).get(k) == v for k, v in labels.items())
    )
    return sum(matching, 0.0)


def target_rss_mb(count: int) -> float:
    """The RSS target for `count` Deployments: 150 MB up to 1,000, 400 MB beyond (up to 10,000)."""
    return TARGET_RSS_MB if count <= 1000 else TARGET_RSS_MB_10K


def is_reconciled(obj: dict[str, Any]) -> bool:
    """The operator has written a status for the object's current spec."""
    generation = obj.get("metadata", {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is not None and observed == generation


def bench_objects(count: int, per_model: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Models (approval required), one unapproved ModelVersion each, and `count` Deployments of them.

    Every Deployment is valid and reconciles to a final status, but none is servable: no model pods.
    """
    if count < 0 or per_model < 1:
        raise ValueError("count must be at least 0, per_model at least 1")
    models, versions, deployments = [], [], []
    for m in range((count + per_model - 1) // per_model):
        model = f"bench-m{m:05d}"
        models.append(
            _manifest(
                "Model",
                model,
                {"owner": "bench", "task": "classification", "governance": {"requireApproval": True}},
            )
        )
        versions.append(
            _manifest(
                "ModelVersion",
                f"{model}-v1",
                {
                    "model": model,
                    "version": "1",
                    "image": SERVING_IMAGE,
                    "approval": {"approved": False, "by": "bench", "reason": "kept unservable on purpose"},
                },
            )
        )
    for d in range(count):
        model = f"bench-m{d // per_model:05d}"
        deployments.append(
            _manifest("Deployment", f"bench-d{d:05d}", {"model": model, "version": f"{model}-v1"})
        )
    return {"models": models, "modelversions": versions, "deployments": deployments}


def serving_objects(count: int) -> dict[str, list[dict[str, Any]]]:
    """One Model and approved ModelVersion, and `count` Deployments that serve it (one pod each)."""
    model = _manifest("Model", "serving", {"owner": "bench", "task": "classification"})
    version = _manifest(
        "ModelVersion",
        "serving-v1",
        {"model": "serving", "version": "1", "image": SERVING_IMAGE, "approval": {"approved": True}},
    )
    deployments = [
        _manifest(
            "Deployment",
            f"serving-d{d:03d}",
            {"model": "serving", "version": "serving-v1", "replicas": 1, "strategy": {"type": "Immediate"}},
        )
        for d in range(count)
    ]
    return {"models": [model], "modelversions": [version], "deployments": deployments}


def _manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "labels": {BENCH_LABEL: "operator"}},
        "spec": spec,
    }


def setup_manifests(serving: int) -> list[dict[str, Any]]:
    """The namespace's pod quota and the FlowSchema that gives the operator's requests their own count."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA, "namespace": NAMESPACE},
            "spec": {"hard": {"pods": str(PODS_PER_SERVING_DEPLOYMENT * serving)}},
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": FLOW_SCHEMA, "labels": {BENCH_LABEL: "operator"}},
            "spec": {
                # before `service-accounts` (9000), which would otherwise take this ServiceAccount
                "matchingPrecedence": 8000,
                "priorityLevelConfiguration": {"name": "workload-low"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
                            }
                        ],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    ]


def podless_review(review: dict[str, Any]) -> dict[str, Any]:
    """The webhook's answer to an AdmissionReview: what the benchmark's Deployments own takes no room.

    - A Service becomes headless. Every modelfleet Deployment has a ClusterIP Service for its router,
      and a cluster's Service range is finite (the local cluster's /24 holds 254 addresses).
    - An apps/v1 Deployment is paused: the Deployment controller makes no ReplicaSet for it, so no pods.
      Router pods would not fit on the node; refused by the pod quota instead, their ReplicaSets would
      retry for many minutes and keep the owned objects' status changing, which is not the steady state
      to measure. Pausing adds a field the operator's manifest does not have, so the live object still
      holds every field the operator applies (its replicas too) and a restarted operator applies
      nothing again; scaling to 0 changed a field it applies, and every restart re-applied every
      router Deployment.

    The serving Deployments' objects are left as they are.
    """
    request = review["request"]
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    obj = request.get("object") or {}
    spec = obj.get("spec") or {}
    kind = request.get("kind", {}).get("kind")
    owner = (obj.get("metadata", {}).get("labels") or {}).get("modelfleet.io/deployment", "")
    patch: list[dict[str, Any]] = []
    if owner.startswith(SERVING_PREFIX):
        pass
    elif (
        kind == "Service"
        and request.get("operation") == "CREATE"
        and spec.get("type", "ClusterIP") == "ClusterIP"
        and spec.get("clusterIP") in (None, "")
    ):
        patch = [
            {"op": "add", "path": "/spec/clusterIP", "value": "None"},
            {"op": "add", "path": "/spec/clusterIPs", "value": ["None"]},
        ]
    elif kind == "Deployment" and spec.get("paused") is not True:
        patch = [{"op": "add", "path": "/spec/paused", "value": True}]
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def webhook_manifest(port: int, ca_pem: bytes) -> dict[str, Any]:
    """The MutatingWebhookConfiguration: Services and apps/v1 Deployments of the benchmark namespace only."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK, "labels": {BENCH_LABEL: "operator"}},
        "webhooks": [
            {
                "name": "podless.bench.modelfleet.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",  # never a ClusterIP or a pod by accident: no webhook, no object
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["services"],
                        "scope": "Namespaced",
                    },
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "resources": ["deployments"],
                        "scope": "Namespaced",
                    },
                ],
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/mutate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
    }


def token_kubeconfig(admin: dict[str, Any], token: str) -> dict[str, Any]:
    """A kubeconfig for the same API server as `admin` (a minified, flattened one) with a bearer token."""
    cluster = admin["clusters"][0]["cluster"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {
                "name": "bench",
                "context": {"cluster": "bench", "user": SERVICE_ACCOUNT, "namespace": NAMESPACE},
            }
        ],
        "current-context": "bench",
    }


def ratio(loaded: float, baseline: float) -> float | None:
    return loaded / baseline if baseline > 0 else None


def summarize(
    baseline: dict[str, Any], loaded: dict[str, Any], load: dict[str, Any], count: int
) -> dict[str, Any]:
    """Ratios loaded / baseline, per-Deployment costs and the verdicts against the design targets."""
    reconcile_seconds = load["deployments_reconciled_seconds"]
    bulk = load["deployments_created"]
    restart = load.get("restart")
    restart_rate = (
        count / restart["reconciled_seconds"] if restart and restart["reconciled_seconds"] else None
    )
    return {
        "rss_ratio": ratio(loaded["rss_mb"], baseline["rss_mb"]),
        "pss_ratio": ratio(loaded["pss_mb"], baseline["pss_mb"]),
        "idle_cpu_ratio": ratio(loaded["cpu_percent"], baseline["cpu_percent"]),
        "idle_requests_ratio": ratio(loaded["api_requests_per_minute"], baseline["api_requests_per_minute"]),
        "rss_kb_per_deployment": (loaded["rss_mb"] - baseline["rss_mb"]) * MB / count,
        "deployments_per_second": bulk / reconcile_seconds if reconcile_seconds > 0 else None,
        "cpu_ms_per_deployment": 1000.0 * load["operator_cpu_seconds"] / bulk if bulk else None,
        "api_requests_per_deployment": load["api_requests"] / bulk if bulk else None,
        "restart_deployments_per_second": restart_rate,
        "restart_api_requests_per_deployment": (
            restart["api_requests"] / count if restart and count else None
        ),
        "targets": {
            "rss_mb": target_rss_mb(count),
            "idle_cpu_percent": TARGET_IDLE_CPU_PERCENT,
            "restart_per_second": TARGET_RESTART_PER_SECOND,
        },
        "meets": {
            "rss": loaded["rss_mb"] < target_rss_mb(count),
            "idle_cpu": loaded["cpu_percent"] < TARGET_IDLE_CPU_PERCENT,
            "restart": restart_rate is not None and restart_rate >= TARGET_RESTART_PER_SECOND,
        },
    }


def _num(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def markdown(report: dict[str, Any], json_name: str) -> str:
    """The Markdown summary written to operator-latest.md."""
    s, b, loaded, load = report["summary"], report["baseline"], report["loaded"], report["load"]
    settings, machine = report["settings"], report["machine"]
    count = settings["count"]
    phases = ", ".join(f"{phase or '(none)'} {n}" for phase, n in sorted(load["final_phases"].items()))
    log = report["operator_log"]
    lines = [
        "# Operator scale benchmark (latest)",
        "",
        f"Run {report['started']} on {machine['cpus']} CPUs (load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}); "
        f"Python {machine['python']}, Kubernetes {machine['kubernetes']}. Full data: `{json_name}`.",
        f"{count} Deployments ({settings['serving']} serving, the rest not servable: unapproved versions), "
        f"{load['models']} Models, {load['modelversions']} ModelVersions; idle windows of "
        f"{settings['idle']:g} s, the loaded one starting {load['settle_seconds']:.0f} s after the last "
        f"Deployment was reconciled, once the benchmark's objects had not changed for "
        f"{settings.get('quiet', 0):g} s. The operator runs on the host as the chart's ServiceAccount; "
        "its API requests are counted by the API server (its own FlowSchema).",
        "",
        "| measure | baseline (no objects) | loaded | loaded / baseline | target |",
        "|---|---|---|---|---|",
        f"| RSS (VmRSS) | {b['rss_mb']:.1f} MB | {loaded['rss_mb']:.1f} MB | {_num(s['rss_ratio'])} | "
        f"< {s['targets']['rss_mb']:.0f} MB: {_verdict(s['meets']['rss'])} |",
        f"| PSS (smaps_rollup) | {b['pss_mb']:.1f} MB | {loaded['pss_mb']:.1f} MB | "
        f"{_num(s['pss_ratio'])} | |",
        f"| peak RSS so far (VmHWM) | {b['hwm_mb']:.1f} MB | {loaded['hwm_mb']:.1f} MB | | |",
        f"| idle CPU | {b['cpu_percent']:.2f}% of a core | {loaded['cpu_percent']:.2f}% of a core | "
        f"{_num(s['idle_cpu_ratio'])} | < {s['targets']['idle_cpu_percent']:g}%: "
        f"{_verdict(s['meets']['idle_cpu'])} |",
        f"| API requests while idle | {b['api_requests']:.0f} ({b['api_requests_per_minute']:.1f}/min) | "
        f"{loaded['api_requests']:.0f} ({loaded['api_requests_per_minute']:.1f}/min) | "
        f"{_num(s['idle_requests_ratio'])} | |",
        f"| changes of the benchmark's objects while idle (control plane settling) | "
        f"{b.get('object_changes', 0)} | {loaded.get('object_changes', 0)} | | 0 for a clean window |",
        "",
        "| reconcile | result |",
        "|---|---|",
        f"| Models and ModelVersions created / reconciled | {load['registry_created_seconds']:.1f} s / "
        f"{load['registry_reconciled_seconds']:.1f} s |",
        f"| {load['deployments_created']} Deployments created | "
        f"{load['deployments_created_seconds']:.1f} s |",
        f"| all reconciled (observedGeneration == generation), from the first create | "
        f"{load['deployments_reconciled_seconds']:.1f} s: "
        f"{_num(s['deployments_per_second'], '.1f')} Deployments/s |",
        f"| operator CPU while reconciling them | {load['operator_cpu_seconds']:.1f} s "
        f"({_num(s['cpu_ms_per_deployment'], '.1f')} ms per Deployment) |",
        f"| operator API requests while reconciling them | {load['api_requests']:.0f} "
        f"({_num(s['api_requests_per_deployment'], '.1f')} per Deployment) |",
        f"| peak RSS while reconciling | {load['peak_rss_mb']:.1f} MB |",
        f"| memory per Deployment (loaded - baseline RSS) / N | {s['rss_kb_per_deployment']:.1f} kB |",
        *restart_rows(load.get("restart"), s),
        f"| final phases | {phases} |",
        f"| operator log | {log['errors']} ERROR, {log['warnings']} WARNING, "
        f"{log['tracebacks']} tracebacks |",
        *(f"| log, {k['count']} x | `{k['line'].replace('|', '/')}` |" for k in log["frequent"]),
        "",
    ]
    if settings["serving"]:
        lines.insert(
            -1,
            f"| {settings['serving']} serving Deployments Healthy after | "
            f"{load['serving_ready_seconds']:.1f} s |",
        )
    allocations = report.get("allocations")
    if allocations:
        lines += [
            f"Profiling run (--tracemalloc): the figures above include the tracing's own cost. Live "
            f"Python allocations at the end of the loaded window: {allocations['traced_mb']:.1f} MB.",
            "",
            "| package | MB |",
            "|---|---|",
            *(f"| {name} | {mb:.1f} |" for name, mb in allocations["by_package_mb"]),
            "",
            "| allocation site | MB | blocks |",
            "|---|---|---|",
            *(
                f"| `{site['where']}` | {site['mb']:.1f} | {site['blocks']} |"
                for site in allocations["top_sites"]
            ),
            "",
        ]
    return "\n".join(lines)


def restart_rows(restart: dict[str, Any] | None, s: dict[str, Any]) -> list[str]:
    """The restart phase's rows of the reconcile table (none when the run had no restart phase)."""
    if not restart:
        return []
    rate, target = _num(s["restart_deployments_per_second"], ".1f"), s["targets"]["restart_per_second"]
    return [
        f"| operator restarted: first reconcile after / all {restart['deployments']} reconciled after "
        f"(from the new process's start; its own reconcile count) | "
        f"{restart['first_reconcile_seconds']:.1f} s / {restart['reconciled_seconds']:.1f} s: {rate} "
        f"Deployments/s (target >= {target:g}: {_verdict(s['meets']['restart'])}) |",
        f"| API requests of the restarted operator until then | {restart['api_requests']:.0f} "
        f"({_num(s['restart_api_requests_per_deployment'], '.2f')} per Deployment, watches and lists "
        "included) |",
        f"| operator CPU from the restart until all reconciled | {restart['cpu_seconds']:.1f} s |",
    ]


def log_counts(text: str, examples: int = 5) -> dict[str, Any]:
    """ERROR and WARNING lines and tracebacks in the operator's log, with the most frequent kinds.

    A kind is the line without its time and with numbers masked, so that one warning about many
    objects counts once.
    """
    problems = re.findall(r"^\S+ \S+ ((?:ERROR|WARNING) .*)$", text, re.MULTILINE)
    kinds = Counter(re.sub(r"\d+", "N", line)[:200] for line in problems)
    return {
        "errors": sum(line.startswith("ERROR") for line in problems),
        "warnings": sum(line.startswith("WARNING") for line in problems),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "frequent": [{"count": n, "line": line} for line, n in kinds.most_common(examples)],
    }


# --- the cluster -------------------------------------------------------------------------------------


def _versions_env() -> dict[str, str]:
    out = {}
    for line in (ROOT / "cluster" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def find_tool(name: str, version_key: str) -> str:
    """The project's pinned build of a tool (make components), else the one on PATH."""
    cache = Path(os.environ.get("MODELFLEET_CACHE", Path.home() / ".cache" / "modelfleet"))
    version = _versions_env().get(version_key, "")
    folder = "kubernetes" if name == "kubectl" else name
    pinned = cache / "bin" / f"{folder}-{version}" / name
    if pinned.exists():
        return str(pinned)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"no {name}: run `make components` or put {name} on PATH")
    return found


class Cluster:
    """kubectl and the Python client, as the cluster's admin (the benchmark, not the operator)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        self.kubeconfig = os.environ.get("KUBECONFIG") or str(LOCAL_KUBECONFIG)
        self.kubectl_path = find_tool("kubectl", "KUBERNETES_VERSION")
        self.helm_path = find_tool("helm", "HELM_VERSION")
        if self.kubectl("get", "--raw=/readyz", check=False, timeout=15).returncode != 0:
            raise SystemExit(f"the cluster of {self.kubeconfig} does not answer: run `make cluster-up`")
        api = config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
        api.configuration.connection_pool_maxsize = 32
        self.api = api
        self.custom: Any = client.CustomObjectsApi(api)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_path, *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": self.kubeconfig},
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=modelfleet-bench",
            "-f",
            "-",
            input=yaml.safe_dump_all(manifests),
        )

    def server_version(self) -> str:
        info = json.loads(self.kubectl("version", "-o", "json").stdout)
        return str(info.get("serverVersion", {}).get("gitVersion", "?"))

    def operator_requests(self) -> float:
        """Requests the API server dispatched for the operator's ServiceAccount so far."""
        text = self.kubectl("get", "--raw=/metrics", timeout=60).stdout
        return counter_total(
            text, "apiserver_flowcontrol_dispatched_requests_total", {"flow_schema": FLOW_SCHEMA}
        )

    def free_service_ips(self) -> int:
        """Addresses left in the cluster's IPv4 Service ranges (ServiceCIDRs minus IPAddresses in use)."""
        cidrs = json.loads(self.kubectl("get", "servicecidrs", "-o", "json").stdout)["items"]
        size = sum(
            ipaddress.ip_network(cidr).num_addresses - 2
            for item in cidrs
            for cidr in item["spec"].get("cidrs", [])
            if ipaddress.ip_network(cidr).version == 4
        )
        used = json.loads(self.kubectl("get", "ipaddresses", "-o", "json").stdout)["items"]
        return size - sum(":" not in item["metadata"]["name"] for item in used)

    def namespace_phase(self) -> str | None:
        found = self.kubectl("get", "namespace", NAMESPACE, "-o", "json", "--ignore-not-found")
        if not found.stdout.strip():
            return None
        body = json.loads(found.stdout)
        if body["metadata"].get("labels", {}).get(BENCH_LABEL) != "operator":
            raise SystemExit(f"namespace {NAMESPACE} exists and is not this benchmark's: not touching it")
        return str(body.get("status", {}).get("phase", ""))

    def wait_namespace_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.namespace_phase() is None:
                return True
            time.sleep(2)
        return False


def chart_rbac(cluster: Cluster) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC for an operator watching the benchmark namespace."""
    rendered = subprocess.run(
        [
            cluster.helm_path,
            "template",
            RELEASE,
            str(ROOT / "charts" / "modelfleet"),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            cluster.server_version(),
            "--set",
            f"watchNamespaces={{{NAMESPACE}}}",
            "--set",
            "leaderElection.enabled=false",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if rendered.returncode != 0:
        raise SystemExit(f"helm template of the chart failed: {rendered.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    for doc in docs:
        doc["metadata"].setdefault("labels", {})[BENCH_LABEL] = "operator"
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            doc["metadata"]["namespace"] = NAMESPACE
    if not any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == SERVICE_ACCOUNT for d in docs):
        raise SystemExit(f"the chart renders no ServiceAccount {SERVICE_ACCOUNT}")
    return docs


class PodlessWebhook:
    """`podless_review` served over HTTPS on 127.0.0.1 (the API server runs on this host)."""

    def __init__(self, scratch: Path) -> None:
        cert, key = scratch / "webhook.crt", scratch / "webhook.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            capture_output=True,
            check=True,
        )  # fmt: skip
        self.ca_pem = cert.read_bytes()
        self.calls = 0
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                answer = json.dumps(podless_review(json.loads(self.rfile.read(length)))).encode()
                with webhook.lock:
                    webhook.calls += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True).start()

    def manifest(self) -> dict[str, Any]:
        return webhook_manifest(self.port, self.ca_pem)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_webhook(cluster: Cluster) -> None:
    """A probe Service must come out headless, else stop before filling the cluster's Service range."""
    probe = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "bench-probe", "namespace": NAMESPACE},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "bench-probe"}},
    }
    deadline = time.monotonic() + 30
    while True:
        result = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(probe), check=False)
        if result.returncode == 0:
            cluster.kubectl("delete", "service", "bench-probe", "-n", NAMESPACE, "--ignore-not-found")
            if json.loads(result.stdout)["spec"].get("clusterIP") == "None":
                return
            raise SystemExit("the benchmark's webhook is not in effect: not creating Services")
        if time.monotonic() > deadline:
            raise SystemExit(f"the benchmark's webhook does not answer: {result.stderr.strip()}")
        time.sleep(1)


def cluster_scoped(manifests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, name) of the cluster-scoped objects among the benchmark's own."""
    return [
        (m["kind"], m["metadata"]["name"])
        for m in manifests
        if m["kind"] in ("ClusterRole", "ClusterRoleBinding", "FlowSchema", "MutatingWebhookConfiguration")
    ]


def create_all(cluster: Cluster, plural: str, objects: list[dict[str, Any]], workers: int) -> float:
    """Create the custom objects with a thread pool, showing progress; seconds taken."""
    from kubernetes.client.exceptions import ApiException

    def create(obj: dict[str, Any]) -> None:
        try:
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, obj)
        except ApiException as error:
            if error.status != 409:  # already there: a retry after a hiccup
                raise RuntimeError(f"creating {plural}/{obj['metadata']['name']}: {error.reason}") from None

    started = time.monotonic()
    step = max(1, len(objects) // 10)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(create, obj) for obj in objects]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if done % step == 0 or done == len(objects):
                print(
                    f"  created {done}/{len(objects)} {plural} ({time.monotonic() - started:.1f} s)",
                    flush=True,
                )
    return time.monotonic() - started


class StatusWatch:
    """Generation, observedGeneration and phase of every object of one kind, kept by a watch."""

    def __init__(self, cluster: Cluster, plural: str, group: str = GROUP, version: str = VERSION) -> None:
        self.cluster = cluster
        self.plural = plural
        self.api = (group, version)
        self.name = f"{plural}.{group}"
        self.events = 0
        """Changes seen (added, modified, deleted), the initial listing not counted."""
        self.objects: dict[str, tuple[bool, str]] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)
        self.thread.start()

    def _record(self, obj: dict[str, Any]) -> None:
        phase = str((obj.get("status") or {}).get("phase", ""))
        self.objects[obj["metadata"]["name"]] = (is_reconciled(obj), phase)

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    listing: dict[str, Any] = self.cluster.custom.list_namespaced_custom_object(
                        *self.api, NAMESPACE, self.plural
                    )
                    with self.lock:
                        self.objects.clear()
                        for obj in listing["items"]:
                            self._record(obj)
                    version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch()  # type: ignore[no-untyped-call]
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self.cluster.custom.list_namespaced_custom_object,
                    *self.api,
                    NAMESPACE,
                    self.plural,
                    resource_version=version,
                    timeout_seconds=30,
                ):
                    if self.stopped.is_set():
                        stream.stop()  # type: ignore[no-untyped-call]
                        break
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    with self.lock:
                        self.events += 1
                        if event["type"] == "DELETED":
                            self.objects.pop(obj["metadata"]["name"], None)
                        else:
                            self._record(obj)
            except ApiException as error:
                version = None
                if error.status != 410:
                    time.sleep(1)
            except Exception:  # a dropped connection: list again
                version = None
                time.sleep(1)

    def counts(self) -> tuple[int, int, Counter[str]]:
        """(objects, reconciled objects, objects per phase)."""
        with self.lock:
            values = list(self.objects.values())
        return len(values), sum(ok for ok, _ in values), Counter(phase for _, phase in values)

    def stop(self) -> None:
        self.stopped.set()


# --- the operator ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_seconds: float
    rss_mb: float
    hwm_mb: float
    pss_mb: float


TRACEMALLOC_HOOK = """\
import os, signal, tracemalloc

tracemalloc.start()


def _dump(signum, frame):
    out = os.environ["MODELFLEET_BENCH_TRACEMALLOC"]
    snapshot = tracemalloc.take_snapshot()
    with open(out + ".tmp", "w") as handle:
        for stat in snapshot.statistics("lineno"):
            frame = stat.traceback[0]
            handle.write(f"{stat.size}\\t{stat.count}\\t{frame.filename}\\t{frame.lineno}\\n")
    os.replace(out + ".tmp", out)


signal.signal(signal.SIGUSR1, _dump)
"""
"""`sitecustomize` of the operator under --tracemalloc: trace allocations, dump them on SIGUSR1."""


def package_of(filename: str) -> str:
    """The distribution or standard-library module an allocating source file belongs to."""
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/modelfleet/" in filename:
        return "modelfleet." + filename.split("/modelfleet/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith("<"):
        return filename
    return "stdlib " + Path(filename).name.removesuffix(".py") if "/lib/python" in filename else filename


def allocation_summary(dump: str, top: int = 15) -> dict[str, Any]:
    """Live memory by package and the biggest allocation sites, from a TRACEMALLOC_HOOK dump."""
    by_package: Counter[str] = Counter()
    sites = []
    for line in dump.splitlines():
        size, count, filename, lineno = line.split("\t")
        by_package[package_of(filename)] += int(size)
        sites.append((int(size), int(count), f"{filename}:{lineno}"))
    sites.sort(reverse=True)
    return {
        "traced_mb": sum(by_package.values()) / MB / MB,
        "by_package_mb": [(name, size / MB / MB) for name, size in by_package.most_common(top)],
        "top_sites": [{"mb": size / MB / MB, "blocks": n, "where": where} for size, n, where in sites[:top]],
    }


class Operator:
    """`modelfleet operator --namespace modelfleet-bench` as a process on this host."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, tracemalloc_dir: Path | None = None, metrics_port: int = 0
    ) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port or free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "MODELFLEET_METRICS_PORT": str(self.metrics_port),
            # its namespace, as in a pod: where the chart's RBAC lets it make and read the router admin key
            "POD_NAMESPACE": NAMESPACE,
        }
        self.tracemalloc_out: Path | None = None
        if tracemalloc_dir is not None:
            (tracemalloc_dir / "sitecustomize.py").write_text(TRACEMALLOC_HOOK)
            self.tracemalloc_out = tracemalloc_dir / "tracemalloc.tsv"
            env["MODELFLEET_BENCH_TRACEMALLOC"] = str(self.tracemalloc_out)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tracemalloc_dir), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelfleet.cli", "operator", "--namespace", NAMESPACE],
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )

    def allocations(self, timeout: float = 120) -> dict[str, Any]:
        """Live allocations by package and site (only when started with a tracemalloc_dir)."""
        if self.tracemalloc_out is None:
            raise RuntimeError("the operator runs without tracemalloc")
        self.tracemalloc_out.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not self.tracemalloc_out.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the operator wrote no tracemalloc snapshot")
            time.sleep(0.5)
        return allocation_summary(self.tracemalloc_out.read_text())

    def sample(self) -> Sample:
        pid = self.process.pid
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited ({self.process.returncode}):\n{self.tail()}")
        status = Path(f"/proc/{pid}/status").read_text()
        return Sample(
            at=time.monotonic(),
            cpu_seconds=cpu_seconds_from_stat(Path(f"/proc/{pid}/stat").read_text()),
            rss_mb=kb_field(status, "VmRSS") / MB,
            hwm_mb=kb_field(status, "VmHWM") / MB,
            pss_mb=kb_field(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss") / MB,
        )

    def reconciles(self) -> float:
        """Deployment reconciles the operator counted (its own /metrics); 0 until it serves them."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return 0.0
        return counter_total(text, RECONCILES, {"controller": "deployment"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def restart_phase(
    cluster: Cluster, operator: Operator, make: Callable[[], Operator], count: int, timeout: float
) -> tuple[Operator, dict[str, Any]]:
    """Stop the operator, start another, and time it until it has reconciled every Deployment once (its
    own reconcile counter), with its API requests meanwhile."""
    print(f"restarting the operator; waiting for {count} Deployment reconciles", flush=True)
    operator.stop()
    requests_before = cluster.operator_requests()
    started = time.monotonic()
    fresh = make()
    first: float | None = None
    last_print = started
    while True:
        done = fresh.reconciles()
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


def idle_window(
    cluster: Cluster, operator: Operator, seconds: float, what: str, watches: Sequence[StatusWatch]
) -> dict[str, Any]:
    """Memory at the end, CPU and API requests over `seconds` of nothing changing.

    `watches` count the changes of the benchmark's objects meanwhile: anything but 0 means something
    did change (the control plane still settling), and the window is not quite idle.
    """
    requests_before = cluster.operator_requests()
    events_before = sum(w.events for w in watches)
    before_by_kind = {w.name: w.events for w in watches}
    before = operator.sample()
    deadline = before.at + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        operator.sample()  # fails early if the operator died
    after = operator.sample()
    requests = cluster.operator_requests() - requests_before
    changes = sum(w.events for w in watches) - events_before
    by_kind = {w.name: w.events - before_by_kind.get(w.name, 0) for w in watches}
    wall = after.at - before.at
    out = {
        "seconds": wall,
        "cpu_seconds": after.cpu_seconds - before.cpu_seconds,
        "cpu_percent": 100.0 * (after.cpu_seconds - before.cpu_seconds) / wall,
        "rss_mb": after.rss_mb,
        "pss_mb": after.pss_mb,
        "hwm_mb": after.hwm_mb,
        "api_requests": requests,
        "api_requests_per_minute": 60.0 * requests / wall,
        "object_changes": changes,
        "object_changes_by_kind": by_kind,
    }
    print(
        f"  {what}: RSS {out['rss_mb']:.1f} MB, PSS {out['pss_mb']:.1f} MB, "
        f"idle CPU {out['cpu_percent']:.2f}% of a core, {requests:.0f} API requests and {changes} object "
        f"changes in {wall:.0f} s",
        flush=True,
    )
    return out


Counts = Callable[[], tuple[int, int, Counter[str]]]


def combined(*watches: StatusWatch) -> Counts:
    """The counts of several watches, added up."""

    def counts() -> tuple[int, int, Counter[str]]:
        parts = [w.counts() for w in watches]
        return sum(p[0] for p in parts), sum(p[1] for p in parts), sum((p[2] for p in parts), Counter())

    return counts


def wait_until(
    what: str,
    counts: Counts,
    expected: int,
    done: Callable[[int, int, Counter[str]], bool],
    timeout: float,
    operator: Operator,
    started: float,
) -> tuple[float, float]:
    """Poll the watch until `done`; (seconds since `started`, peak operator RSS MB meanwhile)."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    last_print = 0.0
    while True:
        peak = max(peak, operator.sample().rss_mb)
        total, reconciled, phases = counts()
        now = time.monotonic()
        if done(total, reconciled, phases):
            print(f"  {what}: {reconciled}/{expected} after {now - started:.1f} s", flush=True)
            return now - started, peak
        if now > deadline:
            raise TimeoutError(
                f"{what}: only {reconciled}/{expected} reconciled after {timeout:.0f} s "
                f"(phases {dict(phases)}); operator log:\n{operator.tail()}"
            )
        if now - last_print >= 5:
            print(f"  {what}: {reconciled}/{expected} ({now - started:.0f} s, RSS {peak:.0f} MB)", flush=True)
            last_print = now
        time.sleep(0.5)


def settle(
    watches: Sequence[StatusWatch], minimum: float, quiet: float, limit: float, poll: float = 1.0
) -> float:
    """Wait at least `minimum` seconds, then until the benchmark's objects have not changed for `quiet`
    seconds (the control plane done with them), at most `limit` seconds in all; seconds waited."""
    started = time.monotonic()
    time.sleep(minimum)
    last_count, last_change = sum(w.events for w in watches), time.monotonic()
    while (now := time.monotonic()) - last_change < quiet:
        if now - started > limit:
            print(f"  still changing after {limit:.0f} s: measuring anyway", flush=True)
            break
        time.sleep(poll)
        count = sum(w.events for w in watches)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
    return time.monotonic() - started


# --- the run -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_run() -> Iterator[None]:
    """One operator benchmark at a time on this machine (they share the namespace)."""
    with LOCK_FILE.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("another operator benchmark is running on this machine") from None
        yield


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator_scale", description=__doc__.split("\n\n")[0]
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
    signal.signal(signal.SIGTERM, _interrupt)
    with single_run():
        cluster = Cluster()
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
    cluster: Cluster,
    args: argparse.Namespace,
    scratch: Path,
    started: datetime,
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    phase = cluster.namespace_phase()
    if phase is not None:
        print(f"namespace {NAMESPACE} is left from an earlier run ({phase}): deleting it", flush=True)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found")
        if not cluster.wait_namespace_gone(NAMESPACE_DELETION_SECONDS):
            raise SystemExit(f"namespace {NAMESPACE} is still there after {NAMESPACE_DELETION_SECONDS} s")
    rbac = chart_rbac(cluster)
    setup = setup_manifests(args.serving)
    needed = PODS_PER_SERVING_DEPLOYMENT * args.serving
    if args.serving and cluster.free_service_ips() < needed + SERVICE_IPS_SPARED:
        raise SystemExit(
            f"the cluster's Service range has {cluster.free_service_ips()} free addresses: too few for "
            f"{args.serving} serving Deployments ({needed}) while leaving {SERVICE_IPS_SPARED} to others"
        )
    leftovers = [*cluster_scoped([*rbac, *setup]), ("MutatingWebhookConfiguration", WEBHOOK)]
    operator: Operator | None = None
    watches: list[StatusWatch] = []
    webhook: PodlessWebhook | None = None
    try:
        print(
            f"setting up namespace {NAMESPACE}: the chart's RBAC, a pod quota, a FlowSchema and a "
            "webhook (headless Services, router Deployments paused)",
            flush=True,
        )
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        cluster.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": NAMESPACE, "labels": {BENCH_LABEL: "operator"}},
                }
            ]
        )
        cluster.apply([*rbac, *setup])
        webhook = PodlessWebhook(scratch)
        cluster.apply([webhook.manifest()])
        check_webhook(cluster)
        token = cluster.kubectl(
            "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=4h"
        ).stdout.strip()
        admin = json.loads(
            cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
        )
        kubeconfig = scratch / "operator.kubeconfig"
        kubeconfig.touch(mode=0o600)
        kubeconfig.write_text(yaml.safe_dump(token_kubeconfig(admin, token)))

        print("starting the operator with nothing to do", flush=True)
        hook = scratch / "hook" if args.tracemalloc else None
        if hook is not None:
            hook.mkdir()
        operator = Operator(kubeconfig, scratch / "operator.log", hook)
        deployments_watch = StatusWatch(cluster, "deployments")
        registry = [StatusWatch(cluster, "models"), StatusWatch(cluster, "modelversions")]
        owned = StatusWatch(cluster, "deployments", "apps", "v1")  # the routers' apps/v1 Deployments
        watches = [deployments_watch, *registry, owned]
        settle(watches, args.settle, args.quiet, SETTLE_LIMIT_SECONDS)
        baseline = idle_window(cluster, operator, args.idle, "baseline", watches)
        load: dict[str, Any] = {}

        if args.serving:
            print(f"creating {args.serving} serving Deployments (pods)", flush=True)
            t0 = time.monotonic()
            for plural, serving in serving_objects(args.serving).items():
                create_all(cluster, plural, serving, args.workers)
            load["serving_ready_seconds"], _ = wait_until(
                "serving Deployments Healthy",
                deployments_watch.counts,
                args.serving,
                lambda total, ok, phases: phases.get("Healthy", 0) >= args.serving,
                300,
                operator,
                t0,
            )

        bulk = args.count - args.serving
        objects = bench_objects(bulk, args.per_model)
        load["models"] = len(objects["models"]) + (1 if args.serving else 0)
        load["modelversions"] = len(objects["modelversions"]) + (1 if args.serving else 0)
        print(
            f"creating {len(objects['models'])} Models and {len(objects['modelversions'])} ModelVersions",
            flush=True,
        )
        t0 = time.monotonic()
        load["registry_created_seconds"] = create_all(
            cluster, "models", objects["models"], args.workers
        ) + create_all(cluster, "modelversions", objects["modelversions"], args.workers)
        registry_total = load["models"] + load["modelversions"]

        load["registry_reconciled_seconds"], _ = wait_until(
            "Models and ModelVersions reconciled",
            combined(*registry),
            registry_total,
            lambda total, ok, phases: total >= registry_total and ok >= registry_total,
            args.timeout,
            operator,
            t0,
        )

        print(f"creating {bulk} Deployments", flush=True)
        cpu_before = operator.sample().cpu_seconds
        requests_before = cluster.operator_requests()
        t0 = time.monotonic()
        load["deployments_created"] = bulk
        load["deployments_created_seconds"] = create_all(
            cluster, "deployments", objects["deployments"], args.workers
        )
        load["deployments_reconciled_seconds"], load["peak_rss_mb"] = wait_until(
            "Deployments reconciled",
            deployments_watch.counts,
            args.count,
            lambda total, ok, phases: total >= args.count and ok >= args.count,
            args.timeout,
            operator,
            t0,
        )
        load["operator_cpu_seconds"] = operator.sample().cpu_seconds - cpu_before
        load["api_requests"] = cluster.operator_requests() - requests_before

        print(
            f"settling: {args.settle:g} s, then until nothing changed for {args.quiet:g} s; "
            f"then {args.idle:g} s idle",
            flush=True,
        )
        load["settle_seconds"] = settle(watches, args.settle, args.quiet, SETTLE_LIMIT_SECONDS)
        print(f"  settled after {load['settle_seconds']:.0f} s", flush=True)
        loaded = idle_window(cluster, operator, args.idle, "loaded", watches)
        allocations = operator.allocations() if args.tracemalloc else None
        if args.restart:
            log_path = scratch / "operator.log"  # the restarted one appends to it
            operator, load["restart"] = restart_phase(
                cluster, operator, lambda: Operator(kubeconfig, log_path), args.count, args.timeout
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
            operator.stop()
        print(f"deleting namespace {NAMESPACE} and the benchmark's cluster-scoped objects", flush=True)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found", check=False)
        for kind, name in leftovers:
            cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        if webhook is not None:
            webhook.close()
        try:
            gone = cluster.wait_namespace_gone(NAMESPACE_DELETION_SECONDS)
        except RuntimeError as error:  # the API server went away meanwhile
            print(f"  could not check the namespace: {error}", flush=True)
            gone = False
        if not gone:
            print(
                f"  namespace {NAMESPACE} may still be there: it is deleted at the start of the next run, "
                f"or by hand: kubectl delete namespace {NAMESPACE}; "
                + "; ".join(f"kubectl delete {kind} {name}" for kind, name in leftovers),
                flush=True,
            )

    return {
        "benchmark": "operator",
        "started": started.isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "kubernetes": cluster.server_version(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
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
        "allocations": allocations,
    }


if __name__ == "__main__":
    sys.exit(main())
