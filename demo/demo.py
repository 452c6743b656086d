"""The modelfleet demo: a real canary rollout and a real automatic rollback, under real traffic.

Run by `make demo` (through demo/run.sh) once the cluster is up and the images are loaded:

1. cleans and creates the namespace modelfleet-demo, installs the CRDs and the operator
   (the Helm chart from the image localhost/modelfleet:dev, or a host process with --operator host);
2. starts a real S3 object store (versitygw) in the namespace, trains iris v1, v2 (good) and v3
   (bad: trained with versicolor labelled as virginica) into model files, uploads them, and registers
   the Model iris (with governance) and the ModelVersions as artifacts served by the shared MLServer
   runtime; the operator checks each artifact (downloaded, digest verified) before anything rolls it out; then the
   Monitor iris-quality and the Deployment iris serving iris-v1;
3. starts a bounded load generator on this host against the router's ClusterIP Service, counting the
   status codes clients get and which version served them;
4. rolls out iris-v2 (stepping through its weights, gated by the Monitor, promoted), then iris-v3 (its
   predictions drift from the stable version's, the operator rolls it back, clients see no error);
5. prints a summary: timings, requests, client errors, rollback time, the rollout history.

It exits non-zero when the story did not happen (e.g. iris-v3 was not rolled back, or a client saw
an error). Every wait is bounded; the whole run stays under 10 minutes once the cluster is up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared test support

from support.objectstore import ObjectStore, start_object_store

from modelfleet.kubectl_plugin import render
from modelfleet.kubectl_plugin.kube import Kube, PluginError, Target, connect
from modelfleet.kubectl_plugin.watch import Snapshot, Watcher
from support.cluster import Cluster, KubectlError, cluster_at
from support.iris_artifacts import write as write_artifact
from support.load import Answer, Load
from support.operator import OperatorProcess
from support.tools import helm_binary

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "demo" / "manifests"
NAMESPACE = "modelfleet-demo"
OPERATOR_NAMESPACE = "modelfleet-system"
RELEASE = "modelfleet"
LOCAL_KUBECONFIG = "/var/lib/modelfleet/admin.kubeconfig"
CACHE = Path(os.environ.get("MODELFLEET_CACHE", Path.home() / ".cache" / "modelfleet"))
BUDGET = 570.0
"""Seconds the whole demo may take once the cluster is up (under 10 minutes)."""

# A few iris flowers of each species, so the predictions the Monitor compares are varied.
SAMPLES = (
    (5.1, 3.5, 1.4, 0.2),
    (4.9, 3.0, 1.4, 0.2),
    (6.1, 2.8, 4.7, 1.2),
    (5.9, 3.0, 4.2, 1.5),
    (6.3, 3.3, 6.0, 2.5),
    (7.2, 3.6, 6.1, 2.5),
)
BODIES = tuple(
    json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": list(sample)}]}
    ).encode()
    for sample in SAMPLES
)


class DemoFailed(Exception):
    """The story did not happen; the message says where it stopped."""


# --- output --------------------------------------------------------------------------------------------

T0 = time.monotonic()
BOLD, DIM, GREEN, RED, RESET = "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[31m", "\x1b[0m"
if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
    BOLD = DIM = GREEN = RED = RESET = ""


def stamp() -> str:
    return f"[{time.monotonic() - T0:6.1f}s]"


def say(text: str) -> None:
    print(f"{DIM}{stamp()}{RESET} {text}", flush=True)


def chapter(title: str) -> None:
    print(f"\n{BOLD}== {title} =={RESET}", flush=True)


def block(text: str, indent: str = "    ") -> None:
    print("\n".join(indent + line if line else "" for line in text.splitlines()), flush=True)


# --- what clients saw ---------------------------------------------------------------------------------


def client_line(answers: Sequence[Answer]) -> str:
    ok = sum(1 for a in answers if a.ok)
    served = Counter(a.served_by for a in answers if a.ok)
    fallbacks = sum(1 for a in answers if a.fallback)
    by = ", ".join(f"{v} {n}" for v, n in sorted(served.items()))
    return f"clients: {ok} ok, {len(answers) - ok} errors, {fallbacks} fallbacks (served by {by or '-'})"


# --- watching the rollout ------------------------------------------------------------------------------


@dataclass
class Seen:
    """One observation of the Deployment's status, as the watch delivered it."""

    time: float
    phase: str
    stable: str
    canary: str
    weight: int
    aborted: str


class Story:
    """Watches the demo objects and prints every change as one line, with what clients saw."""

    def __init__(self, kube: Kube, load: Load | None = None) -> None:
        self.kube = kube
        self.load = load
        self.watcher = Watcher(kube, ("Deployment", "Monitor", "ModelVersion"))
        self.timeline: list[Seen] = []
        self._last_line = ""
        self._last_message = ""
        self.since = time.monotonic()

    def start(self) -> None:
        self.watcher.start()
        if not self.watcher.wait_synced(30):
            raise DemoFailed("could not list the demo objects within 30s")

    def stop(self) -> None:
        self.watcher.stop()

    def deployment(self, snapshot: Snapshot | None = None) -> dict[str, Any] | None:
        return (snapshot or self.watcher.snapshot()).get("Deployment", "iris")

    def _observe(self, snapshot: Snapshot, quiet: bool) -> None:
        obj = self.deployment(snapshot)
        if obj is None or not obj.get("status"):
            return
        status = obj["status"]
        self.timeline.append(
            Seen(
                time.monotonic(),
                str(status.get("phase", "")),
                str(status.get("stableVersion", "")),
                str(status.get("canaryVersion", "")),
                int(status.get("canaryWeight", 0)),
                str(status.get("rolledBackVersion", "")),
            )
        )
        if quiet:
            return
        line = render.render_line(obj, snapshot.of("Monitor"))
        if line != self._last_line:
            self._last_line = line
            clients = f"\n{' ' * 10}{client_line(self.load.between(self.since))}" if self.load else ""
            say(f"{line}{DIM}{clients}{RESET}")
        message = str(status.get("message", ""))
        if message and message != self._last_message:
            self._last_message = message
            print(f"{' ' * 10}{DIM}message: {message}{RESET}", flush=True)

    def wait(
        self,
        what: str,
        done: Callable[[Snapshot], bool],
        timeout: float,
        deadline: float,
        quiet: bool = False,
    ) -> Snapshot:
        """Print changes until `done(snapshot)`; fail after `timeout` (or at the demo's deadline)."""
        until = min(time.monotonic() + timeout, deadline)
        seen = -1
        while True:
            seen = self.watcher.wait(seen, 1.0)
            snapshot = self.watcher.snapshot()
            self._observe(snapshot, quiet)
            if done(snapshot):
                return snapshot
            if time.monotonic() > until:
                trouble = "; ".join(snapshot.errors.values())
                raise DemoFailed(
                    f"timed out after {timeout:.0f}s waiting for {what}"
                    + (f" ({trouble})" if trouble else "")
                )


def status_of(snapshot: Snapshot) -> dict[str, Any]:
    obj = snapshot.get("Deployment", "iris") or {}
    status: dict[str, Any] = obj.get("status") or {}
    return status


# --- the operator --------------------------------------------------------------------------------------


class Operator:
    """The operator: the Helm chart in the cluster (default), or a process on this host."""

    def __init__(self, cluster: Cluster, mode: str) -> None:
        self.cluster = cluster
        self.mode = mode
        self.log_path = CACHE / "demo" / "operator.log"
        self.process = OperatorProcess(
            cluster,
            NAMESPACE,
            self.log_path,
            [str(Path(sys.executable).parent / "modelfleet"), "operator", "--namespace", NAMESPACE],
        )
        """The operator on this host (--operator host)."""

    def start(self) -> None:
        if self.mode == "helm":
            self._helm()
        else:
            self._host()

    def _helm(self) -> None:
        helm = helm_binary()
        if helm is None:
            raise DemoFailed("no helm binary: run `make components`, or use --operator host")
        existed = (
            subprocess.run(
                [helm, "status", RELEASE, "-n", OPERATOR_NAMESPACE],
                capture_output=True,
                env=self.cluster.env,
                check=False,
            ).returncode
            == 0
        )
        say(
            f"helm upgrade --install {RELEASE} charts/modelfleet -n {OPERATOR_NAMESPACE}"
            f" (watching {NAMESPACE})"
        )
        result = subprocess.run(
            [
                *[helm, "upgrade", "--install", RELEASE, str(REPO / "charts" / "modelfleet")],
                *["--namespace", OPERATOR_NAMESPACE, "--create-namespace"],
                *["--set", f"watchNamespaces={{{NAMESPACE}}}", "--wait", "--timeout", "3m"],
            ],
            capture_output=True,
            text=True,
            env=self.cluster.env,
            timeout=240,
            check=False,
        )
        if result.returncode != 0:
            raise DemoFailed(f"helm upgrade --install failed: {result.stderr.strip()}")
        if existed:
            # The image may have been rebuilt under the same tag: restart to run the current one.
            self.cluster.kubectl("rollout", "restart", f"deployment/{RELEASE}", "-n", OPERATOR_NAMESPACE)
        self.cluster.kubectl(
            "rollout",
            "status",
            f"deployment/{RELEASE}",
            "-n",
            OPERATOR_NAMESPACE,
            "--timeout=180s",
            timeout=200,
        )
        say(f"operator running in namespace {OPERATOR_NAMESPACE} (image localhost/modelfleet:dev)")

    def _host(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process.start()
        time.sleep(1.0)
        if not self.process.alive():
            raise DemoFailed(f"the operator exited at once; see {self.log_path}")
        assert self.process.process is not None
        say(f"operator running on this host (pid {self.process.process.pid}, log {self.log_path})")

    def stop(self) -> None:
        self.process.kill(signal.SIGTERM)

    def log_tail(self, lines: int = 30) -> str:
        if self.mode == "helm":
            result = self.cluster.kubectl(
                "logs", f"deployment/{RELEASE}", "-n", OPERATOR_NAMESPACE, f"--tail={lines}", check=False
            )
            return result.stdout or result.stderr
        return self.process.tail(lines)


# --- the story -----------------------------------------------------------------------------------------


@dataclass
class Figures:
    started: float = T0
    serving_since: float = 0.0
    v2_patched: float = 0.0
    v2_promoted: float = 0.0
    v2_weights: list[int] = field(default_factory=list)
    v3_patched: float = 0.0
    v3_first_traffic: float = 0.0
    v3_zero: float = 0.0
    """When the watch first showed iris-v3 rolled back at weight 0; 0 when it never was."""
    v3_ended: float = 0.0
    v3_reason: str = ""
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> None:
        self.checks.append((ok, text))
        mark = f"{GREEN}[ok]{RESET}" if ok else f"{RED}[FAILED]{RESET}"
        say(f"{mark} {text}")


def clean_namespace(cluster: Cluster) -> None:
    exists = cluster.kubectl("get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "name").stdout.strip()
    if not exists:
        return
    say(f"removing the previous run's namespace {NAMESPACE}")
    # Without a running operator, finalizers on our objects would hold the namespace forever.
    for kind in (
        "deployments.modelfleet.io",
        "monitors.modelfleet.io",
        "modelversions.modelfleet.io",
        "models.modelfleet.io",
    ):
        names = cluster.kubectl("get", kind, "-n", NAMESPACE, "-o", "name", check=False).stdout.split()
        for name in names:
            cluster.kubectl(
                "patch",
                name,
                "-n",
                NAMESPACE,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=150s", timeout=170)


def apply_manifest(cluster: Cluster, name: str, values: dict[str, str] | None = None) -> list[dict[str, Any]]:
    text = (MANIFESTS / name).read_text()
    if values:
        text = string.Template(text).substitute(values)
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=text)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def monitor_budget() -> tuple[float, str]:
    """interval x failureLimit + 2 s (docs/design.md's target for a failing canary) from monitor.yaml."""
    from modelfleet.api import Monitor

    spec = Monitor.from_k8s(yaml.safe_load((MANIFESTS / "monitor.yaml").read_text())).spec
    budget = spec.interval * spec.failure_limit + 2
    return budget, f"interval {spec.interval:g}s x failureLimit {spec.failure_limit} + 2s = {budget:g}s"


def setup(cluster: Cluster, operator: Operator, deadline: float) -> None:
    chapter("Setting up")
    say(f"cluster: Kubernetes {cluster.server_version()}, kubeconfig {cluster.kubeconfig}")
    clean_namespace(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE)
    say(f"namespace {NAMESPACE} created")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{p}.modelfleet.io" for p in ("models", "modelversions", "deployments", "monitors")],
    )
    say("CRDs installed: Model, ModelVersion, Deployment, Monitor (modelfleet.io/v1alpha1)")
    operator.start()
    if time.monotonic() > deadline:
        raise DemoFailed("setup took too long")


def start_store(operator: Operator) -> ObjectStore:
    chapter("Starting the object store")
    store = start_object_store(operator.cluster, NAMESPACE)
    store.create_bucket("models")
    store.make_secret(NAMESPACE, "s3-creds")
    say(f"S3 store (versitygw) at {store.endpoint}, bucket models; Secret s3-creds holds its credentials")
    if operator.mode == "host":
        apply_manifest(operator.cluster, "runtime.yaml")
        say("Runtime mlserver-sklearn (the chart would install it as a ClusterRuntime)")
    else:
        say("runtime: ClusterRuntime mlserver-sklearn, installed by the chart")
    return store


def register(cluster: Cluster, story: Story, store: ObjectStore, deadline: float) -> None:
    chapter("Registering the model: three artifacts in the store")
    digests: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="modelfleet-demo-"))
    for version in (1, 2, 3):
        artifact = write_artifact(version, work / str(version))
        store.upload_directory("models", f"iris/{version}", artifact.folder)
        digests[f"DIGEST_V{version}"] = artifact.digest
        note = " (the bad build: versicolor labelled as virginica)" if version == 3 else ""
        say(
            f"trained iris v{version}{note}: s3://models/iris/{version}/model.joblib,"
            f" {artifact.size} bytes, {artifact.digest[:19]}..."
        )
    apply_manifest(cluster, "model.yaml")
    apply_manifest(cluster, "modelversions.yaml", digests)
    say(
        "Model iris (approval and digests required, images from localhost/) and ModelVersions iris-v1,"
        " iris-v2, iris-v3; the operator checks each artifact before anything may roll it out"
    )

    def registered(snapshot: Snapshot) -> bool:
        versions = {v["metadata"]["name"]: v for v in snapshot.of("ModelVersion")}
        phases = [
            ((versions.get(n) or {}).get("status") or {}).get("phase")
            for n in ("iris-v1", "iris-v2", "iris-v3")
        ]
        return all(p in {"Ready", "Serving"} for p in phases)

    try:
        snapshot = story.wait("the artifacts to be checked (Ready)", registered, 150, deadline, quiet=True)
    except DemoFailed as error:
        waiting = [
            f"{v['metadata']['name']} {(v.get('status') or {}).get('phase', 'no status')}:"
            f" {(v.get('status') or {}).get('message', '')}"
            for v in story.watcher.snapshot().of("ModelVersion")
            if (v.get("status") or {}).get("phase") not in {"Ready", "Serving"}
        ]
        raise DemoFailed(f"{error}; " + "; ".join(waiting)) from None
    rows = []
    for mv in sorted(snapshot.of("ModelVersion"), key=lambda v: v["metadata"]["name"]):
        spec, status = mv["spec"], mv.get("status") or {}
        approval = spec.get("approval") or {}
        checked = status.get("artifact") or {}
        rows.append(
            [
                mv["metadata"]["name"],
                spec["artifact"]["uri"],
                f"{checked.get('size', '?')} B, digest verified",
                checked.get("runtime", "-"),
                f"by {approval.get('by', '?')}" if approval.get("approved") else "no",
                status.get("phase", "-"),
            ]
        )
    block(render.table(("VERSION", "ARTIFACT", "CHECK", "RUNTIME", "APPROVED", "PHASE"), rows))


def serve_v1(cluster: Cluster, story: Story, deadline: float) -> str:
    chapter("Serving iris-v1")
    apply_manifest(cluster, "monitor.yaml")
    apply_manifest(cluster, "deployment.yaml")
    say(
        "Monitor iris-quality (errors <= 5%, p99 <= 0.5s, fallbacks <= 10%, prediction drift <= 0.25;"
        " every 3s)"
        " and Deployment iris at iris-v1"
    )

    def healthy(snapshot: Snapshot) -> bool:
        status = status_of(snapshot)
        return status.get("phase") == "Healthy" and status.get("stableVersion") == "iris-v1"

    story.wait("iris-v1 to serve (Healthy)", healthy, 180, deadline)
    service = cluster.get("service", "iris", NAMESPACE)
    ip = str(service["spec"]["clusterIP"])
    say(f"endpoint http://iris.{NAMESPACE}.svc:80 = ClusterIP {ip}:80")
    return ip


def roll_out_v2(cluster: Cluster, story: Story, figures: Figures, deadline: float) -> None:
    chapter("Rolling out iris-v2 (a good version)")
    figures.v2_patched = time.monotonic()
    story.since = figures.v2_patched
    cluster.kubectl(
        "patch",
        "deployments.modelfleet.io",
        "iris",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"version":"iris-v2"}}',
    )
    say("spec.version: iris-v1 -> iris-v2")

    def promoted(snapshot: Snapshot) -> bool:
        status = status_of(snapshot)
        return status.get("phase") == "Healthy" and status.get("stableVersion") == "iris-v2"

    def ended(snapshot: Snapshot) -> bool:
        return promoted(snapshot) or status_of(snapshot).get("rolledBackVersion") == "iris-v2"

    snapshot = story.wait("iris-v2 to be promoted", ended, 240, deadline)
    figures.v2_promoted = time.monotonic()
    for seen in story.timeline:
        rolling = seen.time >= figures.v2_patched and seen.canary == "iris-v2" and seen.weight > 0
        if rolling and (not figures.v2_weights or figures.v2_weights[-1] != seen.weight):
            figures.v2_weights.append(seen.weight)
    ok = promoted(snapshot)
    weights = " -> ".join(f"{w}%" for w in [*figures.v2_weights, 100])
    figures.check(
        ok and figures.v2_weights == [20, 50],
        f"iris-v2 promoted in {figures.v2_promoted - figures.v2_patched:.1f}s through the weights {weights}"
        if ok
        else f"iris-v2 was not promoted: {status_of(snapshot).get('message', '')}",
    )


def roll_out_v3(cluster: Cluster, story: Story, load: Load, figures: Figures, deadline: float) -> None:
    chapter("Rolling out iris-v3 (a bad version: fast, no errors, wrong predictions)")
    figures.v3_patched = time.monotonic()
    story.since = figures.v3_patched
    cluster.kubectl(
        "patch",
        "deployments.modelfleet.io",
        "iris",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"version":"iris-v3"}}',
    )
    say("spec.version: iris-v2 -> iris-v3")

    def ended(snapshot: Snapshot) -> bool:
        status = status_of(snapshot)
        rolled_back = status.get("phase") == "RolledBack" and status.get("rolledBackVersion") == "iris-v3"
        promoted = status.get("stableVersion") == "iris-v3"
        return (rolled_back and int(status.get("canaryWeight", 0)) == 0) or promoted

    snapshot = story.wait("iris-v3 to be rolled back", ended, 180, deadline)
    status = status_of(snapshot)
    figures.v3_ended = time.monotonic()
    rolled_back = status.get("phase") == "RolledBack" and status.get("stableVersion") == "iris-v2"
    if rolled_back:
        figures.v3_zero = next(
            s.time
            for s in story.timeline
            if s.time >= figures.v3_patched and s.phase == "RolledBack" and s.weight == 0
        )
    history = status.get("history") or []
    figures.v3_reason = str(history[0].get("reason", "")) if history else ""
    time.sleep(3)  # the routers follow the new weights within a second; let clients show it
    first = next(
        (a for a in load.between(figures.v3_patched) if a.fallback or a.served_by == "iris-v3"), None
    )
    figures.v3_first_traffic = first.time if first else 0.0
    figures.check(
        rolled_back,
        f"iris-v3 rolled back automatically ({figures.v3_reason}); iris-v2 serves all traffic"
        if rolled_back
        else f"iris-v3 was not rolled back: phase {status.get('phase')}, {status.get('message', '')}",
    )
    if rolled_back:
        after = load.between(figures.v3_zero + 2)
        served = Counter(a.served_by or f"error {a.code}" for a in after)
        fallbacks = sum(1 for a in after if a.fallback)
        figures.check(
            bool(after) and set(served) == {"iris-v2"} and not fallbacks,
            f"from 2s after the rollback, {len(after)} requests: served by "
            + ", ".join(f"{v} {n}" for v, n in sorted(served.items()))
            + f", {fallbacks} fallbacks",
        )


def summary(load: Load, figures: Figures, kube: Kube) -> None:
    chapter("Summary")
    answers = load.between(figures.serving_since)
    errors = [a for a in answers if not a.ok]
    codes = Counter(a.code for a in answers)
    served = Counter(a.served_by for a in answers)
    fallbacks = Counter(a.fallback for a in answers if a.fallback)
    budget, budget_text = monitor_budget()
    rolled_back = figures.v3_zero > 0
    v3_end = figures.v3_zero if rolled_back else figures.v3_ended
    rows = [
        [
            "setup (namespace, CRDs, operator, registry, iris-v1 serving)",
            f"{figures.serving_since - figures.started:.1f}s",
        ],
        ["iris-v2: spec.version changed -> promoted", f"{figures.v2_promoted - figures.v2_patched:.1f}s"],
    ]
    if rolled_back:
        rows.append(
            [
                "iris-v3: spec.version changed -> rolled back (weight 0)",
                f"{figures.v3_zero - figures.v3_patched:.1f}s",
            ]
        )
    if rolled_back and figures.v3_first_traffic:
        rows.append(
            [
                "iris-v3: first live request -> weight 0 (the rollback time)",
                f"{figures.v3_zero - figures.v3_first_traffic:.1f}s (target {budget_text})",
            ]
        )
    block(render.table(("TIMING", ""), rows), "  ")
    print()
    phases = [
        ("iris-v1 serving", figures.serving_since, figures.v2_patched),
        ("iris-v2 rollout", figures.v2_patched, figures.v2_promoted),
        ("iris-v2 serving", figures.v2_promoted, figures.v3_patched),
        ("iris-v3 rollout and rollback" if rolled_back else "iris-v3 rollout", figures.v3_patched, v3_end),
        ("after the rollback" if rolled_back else "after the rollout", v3_end, float("inf")),
    ]
    rows = []
    for name, start, end in phases:
        part = [a for a in answers if start <= a.sent < end]
        by = Counter(a.served_by for a in part if a.ok)
        rows.append(
            [
                name,
                str(len(part)),
                str(sum(1 for a in part if not a.ok)),
                str(sum(1 for a in part if a.fallback)),
                ", ".join(f"{v} {n}" for v, n in sorted(by.items())) or "-",
            ]
        )
    rows.append(["all", str(len(answers)), str(len(errors)), str(sum(fallbacks.values())), ""])
    block(render.table(("CLIENTS", "REQUESTS", "ERRORS", "FALLBACKS", "SERVED BY"), rows), "  ")
    print()
    code_text = ", ".join(f"{c or 'no answer'} x{n}" for c, n in sorted(codes.items()))
    served_text = ", ".join(f"{v or '-'} x{n}" for v, n in sorted(served.items()))
    say(f"status codes seen by clients: {code_text}; served by: {served_text}")
    if fallbacks:
        say(
            "requests the canary failed and the router answered from stable: "
            + ", ".join(f"{reason} x{n}" for reason, n in sorted(fallbacks.items()))
        )
    for bad in errors[:5]:
        detail = bad.detail or f"HTTP {bad.code} (served by {bad.served_by or '-'})"
        say(f"client error, sent at {bad.sent - T0:.1f}s: {detail}")
    print()
    try:
        block(render.render_history(kube.get("Deployment", "iris"), datetime.now(UTC)), "  ")
    except PluginError as error:
        say(f"history unavailable: {error}")
    print()
    figures.check(not errors, f"clients saw {len(errors)} errors in {len(answers)} requests")
    if rolled_back and figures.v3_first_traffic:
        took = figures.v3_zero - figures.v3_first_traffic
        say(
            f"rollback took {took:.1f}s from the canary's first live request"
            f" ({'within' if took <= budget else 'over'} the {budget:g}s target)"
        )


def diagnose(cluster: Cluster, operator: Operator, kube: Kube | None) -> None:
    chapter("What the cluster shows")
    if kube is not None:
        try:
            deployment = kube.get_or_none("Deployment", "iris")
            if deployment is not None:
                monitors, _ = kube.list("Monitor")
                versions, _ = kube.list("ModelVersion")
                block(
                    render.render_status(
                        deployment, monitors, {v["metadata"]["name"]: v for v in versions}, datetime.now(UTC)
                    )
                )
        except PluginError as error:
            say(f"cannot read the Deployment: {error}")
    print()
    block(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout)
    events = cluster.kubectl(
        "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False
    ).stdout.splitlines()
    block("\n".join(events[-15:]))
    print(f"\n    operator log ({operator.mode}), last lines:")
    block(operator.log_tail())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo/run.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--operator",
        choices=("auto", "helm", "host"),
        default=os.environ.get("DEMO_OPERATOR", "auto"),
        help="where the operator runs: the Helm chart in the cluster, a process on this host, or auto"
        " (helm when helm and the chart are there)",
    )
    parser.add_argument("--rate", type=float, default=40.0, help="client requests per second (default 40)")
    args = parser.parse_args(argv)
    if not 1 <= args.rate <= 500:
        parser.error("--rate must be between 1 and 500 requests per second")

    kubeconfig = os.environ.get("KUBECONFIG") or LOCAL_KUBECONFIG
    mode = args.operator
    if mode == "auto":
        mode = (
            "helm" if helm_binary() and (REPO / "charts" / "modelfleet" / "Chart.yaml").exists() else "host"
        )
    deadline = T0 + BUDGET
    figures = Figures()
    load: Load | None = None
    story: Story | None = None
    kube: Kube | None = None
    print(f"{BOLD}modelfleet demo{RESET}: a canary rollout and an automatic rollback, under live traffic")
    found = cluster_at(kubeconfig)
    if found is None:
        print(
            f"{RED}demo failed:{RESET} no Kubernetes API server answers with {kubeconfig}:"
            " run `make cluster-up`"
        )
        return 1
    cluster = found
    operator = Operator(cluster, mode)
    try:
        setup(cluster, operator, deadline)
        kube = connect(Target(kubeconfig=kubeconfig, namespace=NAMESPACE))
        story = Story(kube)
        story.start()
        store = start_store(operator)
        register(cluster, story, store, deadline)
        ip = serve_v1(cluster, story, deadline)
        load = Load(
            ip,
            rate=args.rate,
            limit=max(60.0, deadline - time.monotonic()),
            clients=2,
            bodies=BODIES,
            clock=time.monotonic,
        )
        load.start()
        story.load = load
        try:
            figures.serving_since = load.wait_serving("iris-v1", timeout=60).sent
        except TimeoutError as error:
            raise DemoFailed(str(error)) from None
        say(
            f"load generator: {args.rate:g} requests/s from this host to {ip}:80"
            f" ({load.clients} keep-alive clients)"
        )
        time.sleep(5)
        say(client_line(load.between(figures.serving_since)))
        roll_out_v2(cluster, story, figures, deadline)
        time.sleep(3)
        roll_out_v3(cluster, story, load, figures, deadline)
        load.stop()
        story.stop()
        chapter("The Deployment now")
        monitors, _ = kube.list("Monitor")
        versions, _ = kube.list("ModelVersion")
        block(
            render.render_status(
                kube.get("Deployment", "iris"),
                monitors,
                {v["metadata"]["name"]: v for v in versions},
                datetime.now(UTC),
            )
        )
        summary(load, figures, kube)
    except (DemoFailed, PluginError, KubectlError, subprocess.TimeoutExpired) as error:
        if load is not None:
            load.stop()
        if story is not None:
            story.stop()
        print(f"\n{RED}demo failed:{RESET} {error}", flush=True)
        diagnose(cluster, operator, kube)
        operator.stop()
        return 1
    except KeyboardInterrupt:
        if load is not None:
            load.stop()
        operator.stop()
        print("\ninterrupted", flush=True)
        return 130
    operator.stop()
    failed = [text for ok, text in figures.checks if not ok]
    took = time.monotonic() - T0
    if failed:
        print(f"\n{RED}The story did not happen{RESET} ({took:.0f}s): " + "; ".join(failed))
        return 1
    print(f"\n{GREEN}Done in {took:.0f}s.{RESET} The demo objects stay in namespace {NAMESPACE}; try:")
    hints = [
        f"kubectl modelfleet status iris -n {NAMESPACE} --watch",
        f"kubectl modelfleet history iris -n {NAMESPACE}",
        f"kubectl get modelfleet -n {NAMESPACE}",
    ]
    if mode == "host":
        hints.append(
            "(the operator ran on this host and has stopped;"
            f" `modelfleet operator -n {NAMESPACE}` restarts it)"
        )
    block("\n".join(hints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
