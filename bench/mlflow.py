"""MLflow benchmark: from moving an alias to the canary's first live request, with webhooks and with
polling only; and what syncing a registered model with many versions costs.

    python -m bench.mlflow                         # (make bench-mlflow) 500 versions, 2 rounds a mode
    python -m bench.mlflow --versions 100 --rounds 1

Against the real cluster (KUBECONFIG, else the local cluster), in its own namespace
`modelfleet-bench-mlflow`, deleted at the end (also on failure or Ctrl-C):

1. Setup: the CRDs, a versitygw store with a credentials Secret, the MLflow tracking server
   (tests/support/mlflow.py: SQLite, artifacts in the store, webhooks to private HTTP addresses
   allowed), the MLServer runtime, the webhook Secret, and the operator on this host
   (tests/support/operator.py) with its metrics port and its MLflow webhook receiver.
2. Alias to the first canary request. The iris classifier logged and registered with MLflow's own
   client, approved by tag, `champion`; a Deployment following `champion` (one step: 50%, then 5 s) is
   Healthy and clients send it 20 requests a second through its router. Then, `--rounds` times in
   each mode: a new build is registered and approved and its ModelVersion is Ready; `champion` moves to
   it; the time until the Deployment names it (status.canaryVersion: the operator heard), and until
   the first answer a client gets from it (X-Modelfleet-Served-By: its pods are up and the router sends
   it traffic); the rollout is then let finish. Mode `webhook`: the Model polls once an hour and MLflow
   calls the operator's receiver; mode `polling`: no webhook, the default pollInterval (30 s).
3. Sync cost: a registered model with `--versions` versions (all of one logged model), and a Model
   mirroring it, with approval required. New pods are capped by a ResourceQuota in this phase, so the
   versions' artifact checks wait (they are not what is measured). The first sync, from the Model's
   creation until every ModelVersion exists: seconds, the operator's own sync time, and the HTTP
   requests it sent to MLflow by endpoint (the operator's /metrics). Then one sync with nothing new.
   Baseline, same run, same server: MLflow's own client (`MlflowClient`) reading the same from this
   host: every version (`search_model_versions`), and every version with its download URI (what a first
   sync needs at least).
4. Results: bench/results/mlflow-<timestamp>.json and bench/results/mlflow-latest.md.

Needs the images of `make images` (`localhost/modelfleet-mlserver:dev`, `localhost/versitygw:<version>`),
kubectl (`make components`) and the dev extras (the mlflow client: `make venv`). MLflow calls the
operator on this machine at the MLflow pod's node address: on the project's local cluster that node is
this machine; elsewhere `--no-webhooks` skips the webhook mode.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # tests/support: the store, MLflow, the operator, the load

from bench.runs import BenchNamespace, interrupt, machine, single_run  # noqa: E402
from modelfleet.analysis.exposition import parse_exposition  # noqa: E402
from support.cluster import Cluster, find_cluster  # noqa: E402
from support.iris_artifacts import train  # noqa: E402
from support.mlflow import WEBHOOK_EVENTS, MlflowServer, mlflow_client, start_mlflow  # noqa: E402
from support.net import free_port  # noqa: E402
from support.objectstore import start_object_store  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

if TYPE_CHECKING:
    from support.load import Load

RESULTS = ROOT / "bench" / "results"
NAMESPACE = "modelfleet-bench-mlflow"
API_VERSION = "modelfleet.io/v1alpha1"
DEPLOYMENTS = "deployments.modelfleet.io"
RUNTIME = "mlserver-mlflow"
RUNTIME_IMAGE = "localhost/modelfleet-mlserver:dev"
CREDENTIALS = "s3-creds"
WEBHOOK_SECRET_NAME = "mlflow-webhook"
ALIAS = "champion"
SERVED = "iris"
MANY = "many"
RATE = 20.0
NAMESPACE_DELETION_SECONDS = 300
DEFAULT_POLL = "30s"


# --- what the benchmark applies -------------------------------------------------------------------------


def _manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def model_manifest(
    name: str, server: MlflowServer, *, poll: str, webhook: bool, registered: str | None = None
) -> dict[str, Any]:
    source: dict[str, Any] = {
        # the operator runs on this host: it reaches the server as the host does
        "trackingUri": server.host_uri,
        "registeredModel": registered or name,
        "pollInterval": poll,
        "runtime": RUNTIME,
        "artifactCredentials": {"secretName": CREDENTIALS},
    }
    if webhook:
        source["webhook"] = {"secretName": WEBHOOK_SECRET_NAME, "key": "secret"}
    return _manifest("Model", name, {"governance": {"requireApproval": True}, "source": {"mlflow": source}})


def deployment_manifest() -> dict[str, Any]:
    return _manifest(
        "Deployment",
        SERVED,
        {
            "model": SERVED,
            "versionFrom": {"mlflowAlias": ALIAS},
            "replicas": 1,
            "progressDeadline": "5m",
            "strategy": {
                "type": "Canary",
                "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "5s"}}]},
                "rollbackWindow": "1m",
            },
            "fallback": {"timeout": "2s", "retryOnStable": True},
        },
    )


def pod_quota(pods: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "bench-pods"},
        "spec": {"hard": {"pods": str(pods)}},
    }


# --- figures ----------------------------------------------------------------------------------------------


def counter_values(exposition: str, name: str) -> dict[str, float]:
    """The samples of counter `name` (`<name>_total`) by their labels as text, e.g. {'endpoint=x': 3}."""
    out: dict[str, float] = {}
    for sample in parse_exposition(exposition):
        if sample.name == f"{name}_total":
            key = ",".join(f"{k}={v}" for k, v in sample.labels)
            out[key] = out.get(key, 0.0) + sample.value
    return out


def histogram_value(exposition: str, name: str, suffix: str, labels: dict[str, str]) -> float:
    """The `_sum` or `_count` (`suffix`) of histogram `name` for the sample with `labels`; 0 when none."""
    for sample in parse_exposition(exposition):
        if sample.name == f"{name}_{suffix}" and all(sample.label(k) == v for k, v in labels.items()):
            return sample.value
    return 0.0


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# --- the pieces of the run ------------------------------------------------------------------------------


class Bench:
    def __init__(
        self, cluster: Cluster, server: MlflowServer, operator: OperatorProcess, client: Any, timeout: float
    ) -> None:
        self.cluster = cluster
        self.server = server
        self.operator = operator
        self.client = client
        self.timeout = timeout
        self.built = 0

    def log(self, message: str) -> None:
        print(message, flush=True)

    def apply(self, *manifests: dict[str, Any]) -> None:
        self.cluster.apply(list(manifests), NAMESPACE)

    def status(self, kind: str = DEPLOYMENTS, name: str = SERVED) -> dict[str, Any]:
        found = self.cluster.get_or_none(kind, name, NAMESPACE)
        return dict((found or {}).get("status") or {})

    def wait(self, what: str, predicate: Any, timeout: float | None = None, interval: float = 0.2) -> Any:
        return self.cluster.wait_for(what, predicate, timeout=timeout or self.timeout, interval=interval)

    def register(self, build: int) -> str:
        """Train and log iris build `build` with a run, register it as `iris`, approve it by tag."""
        import numpy as np
        from mlflow.models import infer_signature

        import mlflow

        self.built += 1
        model: Any = train(build)
        sample = np.array([[5.1, 3.5, 1.4, 0.2], [6.1, 2.8, 4.7, 1.2]])
        mlflow.set_experiment("bench")
        with mlflow.start_run():
            mlflow.log_params({"build": build, "round": self.built})
            logged = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(sample, model.predict(sample)),
                pip_requirements=["scikit-learn"],
                registered_model_name=SERVED,
            )
        version = str(logged.registered_model_version)
        self.client.set_model_version_tag(SERVED, version, "modelfleet.io/approved", "true")
        return version

    def version_ready(self, number: str) -> None:
        name = f"{SERVED}-v{number}"
        self.wait(
            f"ModelVersion {name} Ready",
            lambda: self.status("modelversion", name).get("phase") in ("Ready", "Serving"),
        )

    def move_alias(self, number: str, load: Load, mode: str) -> dict[str, Any]:
        """`champion` to version `number`: seconds until the Deployment names it and until the first answer
        from it; then wait for the promotion."""
        name = f"{SERVED}-v{number}"
        moved = time.time()
        self.client.set_registered_model_alias(SERVED, ALIAS, number)
        self.wait(f"{name} canary", lambda: self.status().get("canaryVersion") == name, interval=0.05)
        heard = time.time() - moved

        def first_answer() -> float | None:
            for answer in load.between(moved):
                if answer.code == 200 and answer.served_by == name:
                    return float(answer.time)
            return None

        answered_at = self.wait(f"the first answer from {name}", first_answer, interval=0.1)
        self.wait(
            f"{name} promoted",
            lambda: (s := self.status()).get("stableVersion") == name and s.get("phase") == "Healthy",
        )
        errors = [a.describe() for a in load.errors(moved)]
        out = {
            "mode": mode,
            "version": name,
            "aliasToStatusSeconds": heard,
            "aliasToFirstAnswerSeconds": answered_at - moved,
            "clientErrors": len(errors),
        }
        self.log(
            f"  {mode}: {name}: the operator heard in {heard:.2f} s, first answer from it after "
            f"{answered_at - moved:.1f} s, {len(errors)} client errors"
        )
        return out

    def sync_cost(self, versions: int) -> dict[str, Any]:
        """Mirror a registered model of `versions` versions; the first sync, one with nothing new, and the
        MLflow client's baseline."""
        import mlflow

        self.log(f"registering {versions} versions of {MANY} (one logged model)")
        mlflow.set_experiment("bench-many")
        with mlflow.start_run() as run:
            logged = mlflow.sklearn.log_model(train(1), name="model", pip_requirements=["scikit-learn"])
        self.client.create_registered_model(MANY)
        started = time.monotonic()
        source = f"models:/{logged.model_id}"
        for n in range(versions):
            self.client.create_model_version(MANY, source, run_id=run.info.run_id, model_id=logged.model_id)
            if (n + 1) % 100 == 0:
                self.log(f"  {n + 1}/{versions} registered ({time.monotonic() - started:.0f} s)")

        pods = len(
            json.loads(self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        )
        self.apply(pod_quota(pods))
        before = self.operator.metrics()
        created = time.monotonic()
        self.apply(model_manifest(MANY, self.server, poll="10s", webhook=False))

        def mirrored() -> int:
            listed = self.cluster.kubectl(
                "get", "modelversions", "-n", NAMESPACE, "-l", "modelfleet.io/source=mlflow", "-o", "name"
            ).stdout
            return sum(
                1 for line in listed.splitlines() if line.startswith(f"modelversion.modelfleet.io/{MANY}-v")
            )

        last = 0.0

        def all_there() -> bool:
            nonlocal last
            count = mirrored()
            if time.monotonic() - last > 5:
                self.log(f"  {count}/{versions} ModelVersions ({time.monotonic() - created:.0f} s)")
                last = time.monotonic()
            return count >= versions

        self.wait(
            f"{versions} ModelVersions of {MANY}", all_there, timeout=max(self.timeout, 600), interval=1
        )
        first_seconds = time.monotonic() - created
        self.wait(
            f"the Model {MANY} synced",
            lambda: (self.status("model", MANY).get("source") or {}).get("versionsSeen") == versions,
        )
        after_first = self.operator.metrics()

        syncs_before = counter_values(after_first, "modelfleet_mlflow_syncs").get("result=Synced", 0.0)
        self.wait(
            "one more sync (nothing new)",
            lambda: (
                counter_values(self.operator.metrics(), "modelfleet_mlflow_syncs").get("result=Synced", 0.0)
                > syncs_before
            ),
            timeout=60,
            interval=0.5,
        )
        after_second = self.operator.metrics()

        def sync_seconds(later: str, earlier: str) -> float:
            labels = {"controller": "mlflow"}
            name = "modelfleet_reconcile_duration_seconds"
            return histogram_value(later, name, "sum", labels) - histogram_value(earlier, name, "sum", labels)

        requests = "modelfleet_mlflow_requests"
        first_requests = delta(counter_values(after_first, requests), counter_values(before, requests))
        again_requests = delta(counter_values(after_second, requests), counter_values(after_first, requests))
        again_seconds = sync_seconds(after_second, after_first)
        first: dict[str, Any] = {
            "seconds": first_seconds,
            "operatorSyncSeconds": sync_seconds(after_first, before),
            "mlflowRequests": first_requests,
            "mlflowRequestsTotal": sum(first_requests.values()),
        }
        again: dict[str, Any] = {
            "operatorSyncSeconds": again_seconds,
            "mlflowRequests": again_requests,
            "mlflowRequestsTotal": sum(again_requests.values()),
        }

        listing = time.monotonic()
        found = self.client.search_model_versions(f"name='{MANY}'", max_results=1000)
        listed = time.monotonic() - listing
        uris = time.monotonic()
        for version in found:
            self.client.get_model_version_download_uri(MANY, version.version)
        with_uris = listed + time.monotonic() - uris
        baseline = {
            "versionsListed": len(found),
            "listSeconds": listed,
            "listAndDownloadUrisSeconds": with_uris,
            "requests": {"list": 1, "listAndDownloadUris": 1 + len(found)},
        }
        self.log(
            f"  first sync: {first_seconds:.1f} s to {versions} ModelVersions (operator sync time "
            f"{first['operatorSyncSeconds']:.1f} s, {first['mlflowRequestsTotal']:.0f} MLflow requests); "
            f"again: {again_seconds * 1000:.0f} ms, {again['mlflowRequestsTotal']:.0f} requests; "
            f"MLflow client: list {listed * 1000:.0f} ms, list and download URIs {with_uris:.1f} s"
        )
        return {"versions": versions, "first": first, "again": again, "baseline": baseline}


# --- the run ----------------------------------------------------------------------------------------------


def run(cluster: Cluster, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    namespace = BenchNamespace(cluster, NAMESPACE, "mlflow", NAMESPACE_DELETION_SECONDS)
    namespace.clear_earlier_run()
    from support.load import Load  # the shared load generator (tests/support)

    operator: OperatorProcess | None = None
    load: Load | None = None
    rollouts: list[dict[str, Any]] = []
    sync: dict[str, Any] | None = None
    log_text = ""
    try:
        print(
            f"setting up namespace {NAMESPACE}: the CRDs, a store, the MLflow server, the runtime", flush=True
        )
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        namespace.create()
        store = start_object_store(cluster, NAMESPACE)
        store.make_secret(NAMESPACE, CREDENTIALS)
        server = start_mlflow(cluster, NAMESPACE, store)
        secret = base64.urlsafe_b64encode(os.urandom(24)).decode()
        cluster.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": WEBHOOK_SECRET_NAME},
                    "stringData": {"secret": secret},
                },
                _manifest("Runtime", RUNTIME, {"formats": ["mlflow"], "image": RUNTIME_IMAGE}),
            ],
            NAMESPACE,
        )
        port = free_port("0.0.0.0")
        metrics_port = free_port()
        operator = OperatorProcess(
            cluster,
            NAMESPACE,
            scratch / "operator.log",
            env={"MODELFLEET_WEBHOOK_PORT": str(port)},
            metrics_port=metrics_port,
        )
        operator.start()
        with mlflow_client(server) as client:
            bench = Bench(cluster, server, operator, client, args.timeout)
            modes = (["webhook"] if args.webhooks else []) + ["polling"]
            first = bench.register(1)
            client.set_registered_model_alias(SERVED, ALIAS, first)
            webhook_mode = modes[0] == "webhook"
            bench.apply(
                model_manifest(
                    SERVED, server, poll="1h" if webhook_mode else DEFAULT_POLL, webhook=webhook_mode
                ),
                deployment_manifest(),
            )
            bench.wait(
                f"{SERVED}-v{first} Healthy",
                lambda: (
                    (s := bench.status()).get("phase") == "Healthy"
                    and s.get("stableVersion") == f"{SERVED}-v{first}"
                ),
                timeout=max(args.timeout, 300),
            )
            address = str(cluster.get("service", SERVED, NAMESPACE)["spec"]["clusterIP"])
            load = Load(address, rate=RATE, clients=2, limit=24 * 3600)
            load.start()
            load.wait_serving(f"{SERVED}-v{first}", timeout=60)
            webhook_id = ""
            for mode in modes:
                if mode == "webhook":
                    url = f"http://{server.host_ip}:{port}/mlflow/webhooks/{NAMESPACE}/{SERVED}"
                    hook = client.create_webhook(
                        name="modelfleet", url=url, events=WEBHOOK_EVENTS, secret=secret
                    )
                    webhook_id = hook.webhook_id
                    time.sleep(1.5)  # the server's cache of webhooks (MLFLOW_WEBHOOK_CACHE_TTL, 1 s)
                    tested = client.test_webhook(webhook_id)
                    if not tested.success:
                        raise SystemExit(
                            f"MLflow cannot reach the operator at {url}: {tested}; try --no-webhooks"
                        )
                else:
                    if webhook_id:
                        client.delete_webhook(webhook_id)
                        webhook_id = ""
                    bench.apply(model_manifest(SERVED, server, poll=DEFAULT_POLL, webhook=False))
                print(f"mode {mode}: {args.rounds} alias moves", flush=True)
                for index in range(args.rounds):
                    number = bench.register(2 if index % 2 == 0 else 1)
                    bench.version_ready(number)
                    rollouts.append(bench.move_alias(number, load, mode))
            load.stop()
            if webhook_id:
                client.delete_webhook(webhook_id)
            sync = bench.sync_cost(args.versions)
    finally:
        if load is not None:
            load.stop()
        if operator is not None:
            operator.kill(signal.SIGTERM)
            log_text = operator.log()
        namespace.delete()
    errors = sum(1 for line in log_text.splitlines() if " ERROR " in line)
    return {"rollouts": rollouts, "sync": sync, "operator_log_errors": errors}


def _range(figures: dict[str, float] | None, spec: str) -> str:
    """median (min to max) in seconds."""
    if not figures:
        return "n/a"
    return f"{figures['median']:{spec}} s ({figures['min']:{spec}} to {figures['max']:{spec}})"


def _s(value: float | None, spec: str = ".1f", unit: str = " s") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def markdown(report: dict[str, Any], json_name: str) -> str:
    machine = report["machine"]
    lines = [
        "# MLflow benchmark (latest)",
        "",
        f"Run {report['started']} on {machine['cpus']} CPUs (load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}); Python "
        f"{machine['python']}, Kubernetes {machine['kubernetes']}, MLflow {machine['mlflow']}. Full data: "
        f"`{json_name}`.",
        "",
        "## From moving the alias to the canary's first live request",
        "",
        f"Clients at {RATE:.0f} requests/s through the router; per mode, the median (min to max) of "
        f"{report['settings']['rounds']} alias moves.",
        "",
        "| mode | the operator names the new version | the first answer from it | client errors |",
        "|---|---|---|---|",
    ]
    for mode, figures in report["modes"].items():
        heard, first = figures["aliasToStatusSeconds"], figures["aliasToFirstAnswerSeconds"]
        lines.append(
            f"| {mode} | {_range(heard, '.2f')} | {_range(first, '.1f')} | {figures['clientErrors']} |"
        )
    sync = report.get("sync")
    if sync:
        first, again, base = sync["first"], sync["again"], sync["baseline"]
        by_endpoint = ", ".join(
            f"{k.removeprefix('endpoint=')} {v:.0f}" for k, v in sorted(first["mlflowRequests"].items())
        )
        lines += [
            "",
            f"## Syncing a registered model with {sync['versions']} versions",
            "",
            "| | seconds | MLflow requests |",
            "|---|---|---|",
            f"| first sync: Model created to every ModelVersion there | {first['seconds']:.1f} "
            f"(the operator's sync time {first['operatorSyncSeconds']:.1f}) "
            f"| {first['mlflowRequestsTotal']:.0f} ({by_endpoint}) |",
            f"| a sync with nothing new | {again['operatorSyncSeconds']:.3f} "
            f"| {again['mlflowRequestsTotal']:.0f} |",
            f"| baseline, MLflow's client: every version | {base['listSeconds']:.3f} "
            f"| {base['requests']['list']} |",
            f"| baseline, MLflow's client: every version and its download URI | "
            f"{base['listAndDownloadUrisSeconds']:.1f} | {base['requests']['listAndDownloadUris']} |",
        ]
    lines += ["", f"Operator log: {report['operator_log_errors']} ERROR lines.", ""]
    return "\n".join(lines)


def by_mode(rollouts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in rollouts):
        mine = [r for r in rollouts if r["mode"] == mode]
        out[mode] = {
            "aliasToStatusSeconds": summary([r["aliasToStatusSeconds"] for r in mine]),
            "aliasToFirstAnswerSeconds": summary([r["aliasToFirstAnswerSeconds"] for r in mine]),
            "clientErrors": sum(r["clientErrors"] for r in mine),
        }
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mlflow", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--versions", type=int, default=500, help="versions of the synced model (default 500)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alias moves per mode (default 2)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds for each wait (default 240)")
    parser.add_argument(
        "--no-webhooks",
        dest="webhooks",
        action="store_false",
        help="polling only (MLflow cannot reach this host)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.versions < 1 or args.rounds < 1:
        parser.error("--versions and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import mlflow
    except ImportError:
        raise SystemExit("the benchmark needs the MLflow client of the dev extras: make venv") from None
    signal.signal(signal.SIGTERM, interrupt)
    cluster = find_cluster()
    if cluster is None:
        raise SystemExit("no Kubernetes cluster answers: `make cluster-up`, or point KUBECONFIG at one")
    with single_run("mlflow"):
        started = datetime.now(UTC)
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="modelfleet-bench-mlflow-") as scratch:
            figures = run(cluster, args, Path(scratch))
    report = {
        "benchmark": "mlflow",
        "started": started.isoformat(),
        "machine": machine(load_before, kubernetes=cluster.server_version(), mlflow=mlflow.__version__),
        "settings": {
            "versions": args.versions,
            "rounds": args.rounds,
            "webhooks": args.webhooks,
            "rate": RATE,
        },
        "modes": by_mode(figures["rollouts"]),
        **figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"mlflow-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, json_path.name)
    (args.out / "mlflow-latest.md").write_text(text)
    print(text)
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
