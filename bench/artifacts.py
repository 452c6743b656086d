"""Artifact benchmark: from applying an artifact version to serving it, and downloads with the node cache.

    python -m bench.artifacts                        # (make bench-artifacts) 1 MiB and 200 MiB, 5 to 10 min
    python -m bench.artifacts --sizes 1Mi,50Mi --big 50Mi   # other sizes

Against the real cluster (KUBECONFIG, else the local cluster), in its own namespace
`modelfleet-bench-artifacts`, deleted at the end (also on failure or Ctrl-C):

1. Setup: the CRDs (from crds/), a versitygw store (tests/support/objectstore.py) with a bucket and a
   credentials Secret, the MLServer runtime as a namespaced Runtime, and the operator on this host
   (tests/support/operator.py), watching only the namespace.
2. Per artifact: the iris classifier (scikit-learn, joblib) plus a padding file of random bytes that
   brings the artifact to its size (the runtime loads model.joblib and ignores the rest), and a note
   that makes its digest unique to the run, so that no node cache of an earlier run holds it. It is
   uploaded to the store.
3. Baseline, same run, same store: this host downloads the artifact's objects with a plain boto3
   client (one get_object each, as the fetcher does), `--baseline-rounds` times; the median is the
   reference for the fetcher's download time (fetch / baseline).
4. A Model, then a ModelVersion and a Deployment (1 replica) applied together, until the Deployment is
   Healthy with the version stable. The time is split from the objects' own timestamps and the
   fetcher's report, not from the benchmark's clock: ModelVersion created -> status.artifact.verifiedAt
   (the operator's pre-rollout check), -> the model pod scheduled, -> the `fetch` init container
   finished (its report's downloadSeconds and verifySeconds, the rest is starting the container and
   moving files), -> the pod Ready (the runtime loading the model), -> the Deployment Ready.
5. Downloads of the padding file (the big object) counted on the store (its access log, one line per
   GET; the fetcher reads each object with one GET): the check's own, the first pod's, and those of a
   scale-out from 1 to 3 pods, with the node cache off (target: 3 pod downloads) and then, with the
   operator restarted with MODELFLEET_ARTIFACT_NODE_CACHE, on (target: 1).
6. Results: bench/results/artifacts-<timestamp>.json and bench/results/artifacts-latest.md.

Needs the images `localhost/modelfleet:dev`, `localhost/modelfleet-mlserver:dev` and
`localhost/versitygw:<version>` in the cluster (`make images`), and kubectl (`make components`).
Kubernetes writes pod and container times in whole seconds, so each segment that ends or starts at one
is good to about a second; the check's and the Deployment's times (written by the operator) and the
fetcher's own figures are finer.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # tests/support: the store, the operator process, the cluster

from bench.runs import BenchNamespace, interrupt, machine, single_run  # noqa: E402
from modelfleet.fetch.digest import digest_path  # noqa: E402
from modelfleet.fetch.main import parse_size  # noqa: E402
from modelfleet.fetch.report import Report, parse_report  # noqa: E402
from support.cluster import Cluster, find_cluster  # noqa: E402
from support.iris_artifacts import write  # noqa: E402
from support.objectstore import ObjectStore, start_object_store  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NAMESPACE = "modelfleet-bench-artifacts"
BENCH_LABEL = "modelfleet.io/bench"
API_VERSION = "modelfleet.io/v1alpha1"
DEPLOYMENTS = "deployments.modelfleet.io"
BUCKET = "models"
SECRET = "s3-creds"
RUNTIME = "mlserver-sklearn"
RUNTIME_IMAGE = "localhost/modelfleet-mlserver:dev"
PADDING_FILE = "padding.bin"
NOTE_FILE = "NOTES.txt"
NODE_CACHE = "/var/cache/modelfleet/artifacts"
FETCH_CONTAINER = "fetch"
NAMESPACE_DELETION_SECONDS = 300
TARGET_DOWNLOADS = {"off": 3, "on": 1}
SCALE_TO = 3
MIB = 1024.0 * 1024.0
STUCK_REASONS = frozenset(
    {
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    }
)


# --- pure helpers (tests/unit/test_bench_artifacts.py) ---------------------------------------------


def parse_time(text: str) -> datetime:
    """A Kubernetes RFC 3339 time (`2026-12-01T10:00:00Z`, fractions kept) as an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone")
    return value.astimezone(UTC)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """end - start in seconds; None when either is unknown."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _time_of(value: Any) -> datetime | None:
    return parse_time(value) if isinstance(value, str) and value else None


def condition_time(obj: dict[str, Any], type_: str) -> datetime | None:
    """lastTransitionTime of the object's condition `type_` when its status is True, else None."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return _time_of(condition.get("lastTransitionTime"))
    return None


def _fetch_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") == FETCH_CONTAINER:
            return dict(status)
    return {}


def fetch_terminated(pod: dict[str, Any]) -> dict[str, Any]:
    """The `fetch` init container's terminated state (startedAt, finishedAt, exitCode, message); {}
    while it has not finished."""
    return dict((_fetch_status(pod).get("state") or {}).get("terminated") or {})


def fetch_report(pod: dict[str, Any]) -> Report | None:
    """The fetcher's report, from its termination message; None when there is none (yet)."""
    message = fetch_terminated(pod).get("message") or ""
    if not message.strip():
        return None
    return parse_report(message)


def stuck_reason(pod: dict[str, Any]) -> str:
    """A waiting reason that will not pass by itself (an image that is not there, a crash loop), as
    `container: reason: message`; "" when there is none."""
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"{container.get('name')}: {waiting['reason']}: {waiting.get('message', '')}".strip()
        terminated = (container.get("state") or {}).get("terminated") or {}
        if container.get("name") == FETCH_CONTAINER and terminated.get("exitCode", 0) != 0:
            return f"{FETCH_CONTAINER}: exited {terminated['exitCode']}: {terminated.get('message', '')}"
    return ""


def rollout_segments(
    version: dict[str, Any], deployment: dict[str, Any], pod: dict[str, Any]
) -> dict[str, Any]:
    """Where the time from creating the ModelVersion to the Deployment being Ready went, from the
    objects' timestamps and the fetcher's report (seconds; None where a timestamp is missing).

    `check` + `to_scheduled` + `fetch` + `load` + `to_deployment_ready` == `total`; `fetch` is
    `fetch_start` (scheduled -> init container started) + the init container's run, which is the
    report's `download` + `verify` + `fetch_other` (process start, listing, moving files into place;
    pod times are whole seconds, so it can come out a little below 0).
    """
    created = _time_of(version.get("metadata", {}).get("creationTimestamp"))
    verified = _time_of(((version.get("status") or {}).get("artifact") or {}).get("verifiedAt"))
    scheduled = condition_time(pod, "PodScheduled")
    terminated = fetch_terminated(pod)
    init_started, init_finished = (
        _time_of(terminated.get("startedAt")),
        _time_of(terminated.get("finishedAt")),
    )
    pod_ready = condition_time(pod, "Ready")
    deployment_ready = condition_time(deployment, "Ready")
    report = fetch_report(pod)
    run = seconds_between(init_started, init_finished)
    download = report.download_seconds if report else None
    verify = report.verify_seconds if report else None
    other = (
        run - download - verify if run is not None and download is not None and verify is not None else None
    )
    return {
        "total": seconds_between(created, deployment_ready),
        "check": seconds_between(created, verified),
        "to_scheduled": seconds_between(verified, scheduled),
        "fetch": seconds_between(scheduled, init_finished),
        "fetch_start": seconds_between(scheduled, init_started),
        "fetch_run": run,
        "download": download,
        "verify": verify,
        "fetch_other": other,
        "load": seconds_between(init_finished, pod_ready),
        "to_deployment_ready": seconds_between(pod_ready, deployment_ready),
        "fetch_result": str(report.result) if report else None,
        "fetched_bytes": report.size if report else None,
        "fetched_files": report.files if report else None,
        "fetch_restarts": int(_fetch_status(pod).get("restartCount") or 0),
    }


def padding_size(target: int, existing: int) -> int:
    """Bytes of padding that bring an artifact of `existing` bytes to `target` (0 when it is there)."""
    return max(0, target - existing)


def downloads(before: int, after: int) -> int:
    """GETs counted on the store between two readings of its access log."""
    if after < before:
        raise ValueError(f"the store's GET count went down ({before} -> {after}): was its pod restarted?")
    return after - before


def ratio(value: float | None, baseline: float | None) -> float | None:
    return value / baseline if value is not None and baseline else None


def baseline_summary(rounds: Sequence[float], size: int) -> dict[str, Any]:
    """The host's raw downloads of an artifact: seconds per round, the median, and MiB/s at the median."""
    if not rounds:
        raise ValueError("no baseline rounds")
    median = statistics.median(rounds)
    return {
        "rounds_seconds": list(rounds),
        "seconds": median,
        "mib_per_second": size / MIB / median if median > 0 else None,
    }


def scale_summary(
    cache: str, gets: dict[str, int], reports: Sequence[str | None], target: int
) -> dict[str, Any]:
    """Downloads of the big object in a scale-out: the check's apart, then the pods' against the target."""
    pods = gets["first_pod"] + gets["scale_out"]
    return {
        "cache": cache,
        "gets": dict(gets),
        "pod_downloads": pods,
        "target": target,
        "meets": pods == target,
        "fetch_results": sorted(r or "(none)" for r in reports),
    }


def label_of(size: int) -> str:
    """`1 MiB`, `200 MiB`, `1.5 GiB` (binary units)."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def _s(value: float | None, spec: str = ".1f", unit: str = " s") -> str:
    """A figure with its unit, or n/a."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def markdown(report: dict[str, Any], json_name: str) -> str:
    """The Markdown summary written to artifacts-latest.md."""
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# Artifact benchmark (latest)",
        "",
        f"Run {report['started']} on {machine['cpus']} CPUs (load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}); "
        f"Python {machine['python']}, Kubernetes {machine['kubernetes']}. Full data: `{json_name}`.",
        "Each artifact is the iris classifier (scikit-learn, joblib) and a padding file, in a versitygw "
        f"store in the cluster, served by the MLServer runtime (`{settings['runtime_image']}`); the "
        "operator runs on the host. Times come from the objects' timestamps (pods: whole seconds) and the "
        "fetcher's report; the baseline is this host downloading the same objects from the same store "
        f"with a plain boto3 client (median of {settings['baseline_rounds']} rounds).",
        "",
        "| artifact | node cache | applied -> Ready (host clock) | check (created -> verifiedAt) | "
        "-> pod scheduled | fetch (scheduled -> init done) | download | verify | fetch, rest | "
        "model load (init done -> pod Ready) | -> Deployment Ready |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["rollouts"]:
        seg = run["segments"]
        lines.append(
            f"| {run['label']} | {run['cache']} | {_s(seg['total'])} ({_s(run['observed_seconds'])}) | "
            f"{_s(seg['check'])} | "
            f"{_s(seg['to_scheduled'])} | {_s(seg['fetch'])} | {_s(seg['download'], '.2f')} | "
            f"{_s(seg['verify'], '.3f')} | {_s(seg['fetch_other'])} | {_s(seg['load'])} | "
            f"{_s(seg['to_deployment_ready'])} |"
        )
    lines += [
        "",
        "| artifact | node cache | fetcher download | host baseline (boto3) | fetch / baseline | "
        "fetcher result |",
        "|---|---|---|---|---|---|",
    ]
    for run in report["rollouts"]:
        seg, base = run["segments"], run["baseline"]
        fetch_rate = (
            run["size"] / MIB / seg["download"]
            if seg["download"] and seg["fetch_result"] == "Fetched"
            else None
        )
        lines.append(
            f"| {run['label']} | {run['cache']} | {_s(seg['download'], '.2f')} "
            f"({_s(fetch_rate, unit=' MiB/s')}) | {_s(base['seconds'], '.2f')} "
            f"({_s(base['mib_per_second'], unit=' MiB/s')}) "
            f"| {_s(run['download_ratio'], '.2f', '')} | {seg['fetch_result'] or 'n/a'} |"
        )
    lines += [
        "",
        f"Downloads of `{PADDING_FILE}` ({label_of(settings['big'])}) counted on the store (GET requests in "
        f"its access log; the fetcher reads each object with one GET) for a scale-out from 1 to {SCALE_TO} "
        "pods. The pre-rollout check downloads the artifact once more, never through the cache: counted "
        "apart.",
        "",
        "| node cache | check | first pod | scale-out (2 new pods) | pod downloads | target | "
        "fetcher results |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale in report["scale_outs"]:
        gets = scale["gets"]
        lines.append(
            f"| {scale['cache']} | {gets['check']} | {gets['first_pod']} | {gets['scale_out']} | "
            f"{scale['pod_downloads']} | {scale['target']}: {_verdict(scale['meets'])} | "
            f"{', '.join(scale['fetch_results'])} |"
        )
    lines.append("")
    log = report.get("operator_log") or {}
    if log:
        lines += [f"Operator log: {log['errors']} ERROR, {log['tracebacks']} tracebacks.", ""]
    return "\n".join(lines)


def log_counts(text: str) -> dict[str, int]:
    """ERROR lines and tracebacks in the operator's log."""
    return {
        "errors": sum(" ERROR " in line for line in text.splitlines()),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }


def parse_sizes(text: str) -> list[int]:
    """`1Mi,200Mi` -> bytes, each at least 64 KiB (room for the model file)."""
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes or any(size < 64 * 1024 for size in sizes):
        raise ValueError(f"invalid sizes {text!r}: a comma-separated list of sizes of at least 64Ki")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.artifacts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1Mi,200Mi", help="artifact sizes to time (default 1Mi,200Mi)")
    parser.add_argument(
        "--big", default="200Mi", help="the artifact size of the scale-outs, with and without the cache"
    )
    parser.add_argument("--baseline-rounds", type=int, default=3, help="host downloads per artifact (3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each step (600)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.sizes)
        args.big = parse_sizes(args.big)[0]
    except ValueError as error:
        parser.error(str(error))
    if not 1 <= args.baseline_rounds <= 20 or not 30 <= args.timeout <= 3600:
        parser.error("--baseline-rounds must be 1..20, --timeout 30..3600 seconds")
    if max([*args.sizes, args.big]) > 2 * 1024**3:
        parser.error("sizes above 2Gi do not fit the node's disk alongside everyone else's")
    return args


# --- objects -----------------------------------------------------------------------------------------


def _manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {BENCH_LABEL: "artifacts"}},
        "spec": spec,
    }


def runtime_manifest() -> dict[str, Any]:
    return _manifest("Runtime", RUNTIME, {"formats": ["sklearn"], "image": RUNTIME_IMAGE})


def model_manifest(name: str) -> dict[str, Any]:
    return _manifest("Model", name, {"owner": "bench", "task": "classification"})


def version_manifest(model: str, digest: str) -> dict[str, Any]:
    return _manifest(
        "ModelVersion",
        f"{model}-v1",
        {
            "model": model,
            "version": "1",
            "artifact": {
                "uri": f"s3://{BUCKET}/{model}/",
                "digest": digest,
                "format": "sklearn",
                "credentials": {"secretName": SECRET},
            },
            "runtime": RUNTIME,
        },
    )


def deployment_manifest(model: str) -> dict[str, Any]:
    return _manifest(
        "Deployment",
        model,
        {"model": model, "version": f"{model}-v1", "replicas": 1, "strategy": {"type": "Immediate"}},
    )


# --- the run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    name: str  # the Model's name, and the artifact's prefix in the bucket
    folder: Path
    digest: str
    size: int


def make_artifact(name: str, size: int, scratch: Path) -> Artifact:
    """The iris classifier, a note that makes the digest unique to the run, and random padding that
    brings the folder to `size` bytes."""
    folder = scratch / name
    folder.mkdir(parents=True)
    (folder / NOTE_FILE).write_text(f"{name}: modelfleet artifact benchmark, run {uuid.uuid4()}\n")
    left = padding_size(size, write(1, folder).size)
    with (folder / PADDING_FILE).open("wb") as handle:
        while left > 0:
            chunk = os.urandom(min(left, 4 * 1024 * 1024))
            handle.write(chunk)
            left -= len(chunk)
    found = digest_path(folder)
    return Artifact(name, folder, found.digest, found.size)


def host_download(store: ObjectStore, keys: Sequence[str]) -> float:
    """Seconds for this host to download the objects with one get_object each, reading every byte."""
    client = store.client()
    started = time.perf_counter()
    for key in keys:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
        while body.read(1024 * 1024):
            pass
    return time.perf_counter() - started


class Bench:
    def __init__(self, cluster: Cluster, store: ObjectStore, timeout: float) -> None:
        self.cluster = cluster
        self.store = store
        self.timeout = timeout

    def gets(self) -> dict[str, int]:
        """Successful GETs of each key so far, from one reading of the store's access log."""
        counts: dict[str, int] = {}
        for record in self.store.access_log():
            if record.operation == "s3_GetObject" and record.bucket == BUCKET and 200 <= record.status < 300:
                counts[record.key] = counts.get(record.key, 0) + 1
        return counts

    def big_gets(self, artifact: Artifact) -> int:
        return self.gets().get(f"{artifact.name}/{PADDING_FILE}", 0)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.cluster.get(kind, name, NAMESPACE)

    def model_pods(self, model: str) -> list[dict[str, Any]]:
        selector = f"modelfleet.io/version={model}-v1,app.kubernetes.io/component=model"
        out = self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def wait(self, what: str, check: Callable[[], Any], model: str | None = None) -> Any:
        """Poll `check` (every 0.5 s) until it returns something; stop early when a pod is stuck."""

        def step() -> Any:
            if model is not None:
                for pod in self.model_pods(model):
                    reason = stuck_reason(pod)
                    if reason:
                        raise SystemExit(f"{what}: pod {pod['metadata']['name']} is stuck: {reason}")
            return check()

        return self.cluster.wait_for(what, step, timeout=self.timeout, interval=0.5)

    def version_checked(self, model: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            version = self.get("modelversion", f"{model}-v1")
            status = version.get("status") or {}
            if status.get("phase") == "Rejected":
                raise SystemExit(f"{model}-v1 was Rejected: {status.get('message', '')}")
            verified = (status.get("artifact") or {}).get("verifiedAt")
            return version if verified and status.get("phase") in ("Ready", "Serving") else None

        return dict(self.wait(f"{model}-v1 checked", check))

    def healthy(self, model: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            deployment = self.get(DEPLOYMENTS, model)
            status = deployment.get("status") or {}
            stable = status.get("phase") == "Healthy" and status.get("stableVersion") == f"{model}-v1"
            return deployment if stable and condition_time(deployment, "Ready") else None

        return dict(self.wait(f"Deployment {model} Healthy with {model}-v1 stable", check, model))

    def ready_pods(self, model: str, count: int) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            pods = [p for p in self.model_pods(model) if not p["metadata"].get("deletionTimestamp")]
            ready = [p for p in pods if condition_time(p, "Ready")]
            return ready if len(ready) >= count else None

        return list(self.wait(f"{count} ready {model} pods", check, model))

    def rollout(self, artifact: Artifact, cache: str, baseline_rounds: int, scale: bool) -> dict[str, Any]:
        """One artifact from upload to serving (and a scale-out): its figures."""
        name = artifact.name
        print(f"{name}: uploading {label_of(artifact.size)} ({artifact.digest[:19]}...)", flush=True)
        keys = tuple(self.store.upload_directory(BUCKET, name, artifact.folder))
        rounds = [host_download(self.store, keys) for _ in range(baseline_rounds)]
        baseline = baseline_summary(rounds, artifact.size)
        print(
            f"  baseline: the host downloads it in {baseline['seconds']:.2f} s "
            f"({_s(baseline['mib_per_second'], unit=' MiB/s')})",
            flush=True,
        )
        self.cluster.apply(model_manifest(name))
        before = self.big_gets(artifact)
        applied = time.monotonic()
        self.cluster.apply([version_manifest(name, artifact.digest), deployment_manifest(name)])
        version = self.version_checked(name)
        # read once verifiedAt is there: the first pod's GET cannot be in it yet (its pod is made after the
        # check, and the store logs a GET once the object has been sent)
        checked = self.big_gets(artifact)
        deployment = self.healthy(name)
        observed = time.monotonic() - applied
        (pod,) = self.ready_pods(name, 1)
        first = self.big_gets(artifact)
        segments = rollout_segments(version, deployment, pod)
        print(
            f"  Ready: {_s(segments['total'])} by the objects' times ({observed:.1f} s seen from here); "
            f"check {_s(segments['check'])}, fetch {_s(segments['fetch'])} (download "
            f"{_s(segments['download'], '.2f')}), load {_s(segments['load'])}",
            flush=True,
        )
        out: dict[str, Any] = {
            "label": label_of(artifact.size),
            "model": name,
            "size": artifact.size,
            "digest": artifact.digest,
            "cache": cache,
            "segments": segments,
            "observed_seconds": observed,
            "baseline": baseline,
            "download_ratio": ratio(segments["download"], baseline["seconds"])
            if segments["fetch_result"] == "Fetched"
            else None,
        }
        if scale:
            self.cluster.kubectl(
                "patch", DEPLOYMENTS, name, "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"replicas": SCALE_TO}}),
            )  # fmt: skip
            pods = self.ready_pods(name, SCALE_TO)
            gets = {
                "check": downloads(before, checked),
                "first_pod": downloads(checked, first),
                "scale_out": downloads(first, self.big_gets(artifact)),
            }
            reports = []
            for each in pods:
                found = fetch_report(each)
                reports.append(str(found.result) if found else None)
            out["scale_out"] = scale_summary(cache, gets, reports, TARGET_DOWNLOADS[cache])
            print(
                f"  scale-out to {SCALE_TO} pods, node cache {cache}: "
                f"{out['scale_out']['pod_downloads']} pod downloads (target {TARGET_DOWNLOADS[cache]}), "
                f"check {gets['check']}",
                flush=True,
            )
        self.remove(name)
        return out

    def remove(self, model: str) -> None:
        """Delete the Deployment and wait for its model pods to go, so the next run has the node."""
        self.cluster.kubectl(
            "delete", DEPLOYMENTS, model, "-n", NAMESPACE, "--ignore-not-found", "--wait=false"
        )
        self.cluster.wait_for(
            f"{model} pods gone", lambda: not self.model_pods(model), timeout=self.timeout, interval=1
        )


def remove_cache_entries(digests: Sequence[str], root: Path = Path(NODE_CACHE)) -> list[str]:
    """Delete this run's entries from the node cache on this host (the local cluster's node), each under
    its lock as artifacts.md says; what could not be removed is returned."""
    left = []
    for digest in digests:
        entry = root / digest.replace(":", "-")
        lock = root / f"{entry.name}.lock"
        if not entry.exists():
            continue
        try:
            with lock.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                shutil.rmtree(entry)
            lock.unlink(missing_ok=True)
        except OSError as error:
            left.append(f"{entry}: {error.strerror}")
    return left


def run(cluster: Cluster, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    namespace = BenchNamespace(cluster, NAMESPACE, "artifacts", NAMESPACE_DELETION_SECONDS)
    namespace.clear_earlier_run()
    operator: OperatorProcess | None = None
    digests: list[str] = []
    rollouts: list[dict[str, Any]] = []
    scale_outs: list[dict[str, Any]] = []
    log_text = ""
    try:
        print(f"setting up namespace {NAMESPACE}: the CRDs, a versitygw store, the runtime", flush=True)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        namespace.create()
        store = start_object_store(cluster, NAMESPACE)
        store.create_bucket(BUCKET)
        store.make_secret(NAMESPACE, SECRET)
        cluster.apply(runtime_manifest())
        bench = Bench(cluster, store, args.timeout)

        def start_operator(cache: bool) -> OperatorProcess:
            env = {"MODELFLEET_ARTIFACT_NODE_CACHE": NODE_CACHE} if cache else {}
            proc = OperatorProcess(cluster, NAMESPACE, scratch / "operator.log", env=env)
            proc.start()
            return proc

        print("starting the operator (node cache off)", flush=True)
        operator = start_operator(cache=False)
        big_done = False
        for index, size in enumerate(args.sizes):
            scale = size == args.big and not big_done
            artifact = make_artifact(f"art-{index}-off", size, scratch)
            digests.append(artifact.digest)
            result = bench.rollout(artifact, "off", args.baseline_rounds, scale)
            rollouts.append(result)
            if scale:
                big_done = True
                scale_outs.append(result.pop("scale_out"))
        if not big_done:
            artifact = make_artifact("art-big-off", args.big, scratch)
            digests.append(artifact.digest)
            result = bench.rollout(artifact, "off", args.baseline_rounds, True)
            scale_outs.append(result.pop("scale_out"))
            rollouts.append(result)

        print("restarting the operator with the node cache on", flush=True)
        operator.kill(signal.SIGTERM)
        operator = start_operator(cache=True)
        artifact = make_artifact("art-big-on", args.big, scratch)
        digests.append(artifact.digest)
        result = bench.rollout(artifact, "on", args.baseline_rounds, True)
        scale_outs.append(result.pop("scale_out"))
        rollouts.append(result)
    finally:
        if operator is not None:
            operator.kill(signal.SIGTERM)
            log_text = operator.log()
        namespace.delete()
        if cluster.local and Path(NODE_CACHE).is_dir():
            for problem in remove_cache_entries(digests):
                print(f"  node cache entry left: {problem}", flush=True)
    return {
        "rollouts": rollouts,
        "scale_outs": scale_outs,
        "operator_log": log_counts(log_text),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    cluster = find_cluster()
    if cluster is None:
        raise SystemExit("no Kubernetes cluster answers: `make cluster-up`, or point KUBECONFIG at one")
    with single_run("artifacts"):
        started = datetime.now(UTC)
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="modelfleet-bench-artifacts-") as scratch:
            figures = run(cluster, args, Path(scratch))
    report = {
        "benchmark": "artifacts",
        "started": started.isoformat(),
        "machine": machine(load_before, kubernetes=cluster.server_version()),
        "settings": {
            "sizes": args.sizes,
            "big": args.big,
            "baseline_rounds": args.baseline_rounds,
            "timeout": args.timeout,
            "runtime_image": RUNTIME_IMAGE,
            "node_cache": NODE_CACHE,
        },
        **figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"artifacts-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, json_path.name)
    (args.out / "artifacts-latest.md").write_text(text)
    print(text)
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
