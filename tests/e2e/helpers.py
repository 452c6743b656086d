"""Shared e2e helpers: test objects as dicts, status readers, result recording, and the `Fleet`.

The load generator is tests/support/load.py's `Load`: bounded background threads that send Open
Inference Protocol v2 requests to the router's ClusterIP Service from this host and record, for every
answer, the times, the status code and `X-Modelfleet-Served-By`, so tests can assert on exactly what
clients saw.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.cluster import Cluster
from support.load import IRIS_REQUEST, Answer, Load

API_VERSION = "modelfleet.io/v1alpha1"
RESULTS_FILE = Path(__file__).parent / ".results.json"


def model(name: str = "iris") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"task": "classification"},
    }


def model_version(
    name: str,
    image_tag: str = "1",
    *,
    env: dict[str, str] | None = None,
    model_name: str = "iris",
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An image version (iris-server:1, 2 and 3 are one image; the versions differ by configuration).
    `reference`: its spec.reference (uri, digest), the training-data profile of its dataDrift metric."""
    spec: dict[str, Any] = {
        "model": model_name,
        "version": name.rsplit("-", 1)[-1],
        "image": f"localhost/iris-server:{image_tag}",
    }
    spec["env"] = [{"name": "MODELFLEET_MODEL_VERSION", "value": spec["version"]}] + [
        {"name": k, "value": v} for k, v in (env or {}).items()
    ]
    if reference is not None:
        spec["reference"] = reference
    return {"apiVersion": API_VERSION, "kind": "ModelVersion", "metadata": {"name": name}, "spec": spec}


def deployment(
    name: str = "iris",
    version: str = "iris-v1",
    *,
    steps: list[dict[str, Any]] | None = None,
    monitor: str | None = None,
    strategy: str = "Canary",
    rollback_window: str = "10m",
    progress_deadline: str = "3m",
    circuit_breaker: bool = False,
    fallback_version: str | None = None,
    feedback_secret: str | None = None,
    capture: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`fallback_version`: spec.fallback.version (kept warm, the last of the fallback chain, and what
    serves stable's traffic under `onDegraded: Fallback`); `feedback_secret`: spec.feedback, the token
    under the key `token` of that Secret; `capture`: spec.capture as it is."""
    canary: dict[str, Any] = {
        "steps": steps
        or [
            {"setWeight": 20},
            {"pause": {"duration": "6s"}},
            {"setWeight": 50},
            {"pause": {"duration": "6s"}},
        ]
    }
    if monitor:
        canary["monitor"] = monitor
    fallback: dict[str, Any] = {"timeout": "2s", "retryOnStable": True}
    if not circuit_breaker:
        # the breaker would hide a failing canary from the monitor; tests of the monitor want it seen
        fallback["circuitBreaker"] = {
            "errorRate": 1.0,
            "minRequests": 1000000,
            "window": "10s",
            "openFor": "1s",
        }
    if fallback_version:
        fallback["version"] = fallback_version
    spec: dict[str, Any] = {
        "model": "iris",
        "version": version,
        "replicas": 1,
        "progressDeadline": progress_deadline,
        "strategy": {"type": strategy, "canary": canary, "rollbackWindow": rollback_window},
        "fallback": fallback,
    }
    if feedback_secret:
        spec["feedback"] = {"tokenSecret": {"name": feedback_secret, "key": "token"}}
    if capture:
        spec["capture"] = capture
    return {"apiVersion": API_VERSION, "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def monitor(
    name: str = "iris-quality",
    deployment_name: str = "iris",
    *,
    metrics: list[dict[str, Any]] | None = None,
    interval: str = "2s",
    failure_limit: int = 2,
    error_limit: int = 4,
    min_requests: int = 10,
    on_degraded: str = "Rollback",
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Monitor",
        "metadata": {"name": name},
        "spec": {
            "deployment": deployment_name,
            "interval": interval,
            "failureLimit": failure_limit,
            "errorLimit": error_limit,
            "minRequests": min_requests,
            "onDegraded": on_degraded,
            "metrics": metrics or [{"name": "errors", "type": "errorRate", "max": 0.05}],
        },
    }


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


# --- reading status ----------------------------------------------------------------------------------


def status(
    cluster: Cluster, namespace: str, name: str = "iris", kind: str = "deployments.modelfleet.io"
) -> Any:
    obj = cluster.get_or_none(kind, name, namespace)
    return (obj or {}).get("status") or {}


def condition(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions", []) if c.get("type") == type_), {})


def service_ip(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.get("service", name, namespace)["spec"]["clusterIP"])


def router_config(cluster: Cluster, namespace: str, name: str = "iris") -> dict[str, Any]:
    cm = cluster.get_or_none("configmap", f"{name}-router", namespace)
    return json.loads(cm["data"]["config.json"]) if cm else {}


def canary_weight_in_router(cluster: Cluster, namespace: str, name: str = "iris") -> int:
    config = router_config(cluster, namespace, name)
    return sum(int(v["weight"]) for v in config.get("versions", []) if v["role"] == "canary")


# --- load --------------------------------------------------------------------------------------------


def wait_until_serving(load: Load, version: str, timeout: float = 60) -> float:
    """Wait until the router answers 200 from `version` 10 times in a row (the endpoint is up); when."""
    return load.wait_serving(version, timeout).time


def record_result(name: str, values: dict[str, Any]) -> None:
    """Add figures to tests/e2e/.results.json (git-ignored) and print them for `pytest -s`."""
    try:
        data = json.loads(RESULTS_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    data[name] = {**values, "recordedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n[e2e result] {name}: {json.dumps(values, sort_keys=True)}")


class StatusWatch:
    """Every status a Deployment goes through, from a watch (`kubectl get --watch`), not from polling:
    a step or a weight held for less than a polling interval is seen too. Entries go into `timeline`
    as (time seen, status). A watch that ends (the API server restarted) is started again."""

    def __init__(
        self, cluster: Cluster, namespace: str, name: str, timeline: list[tuple[float, dict[str, Any]]]
    ) -> None:
        self.timeline = timeline
        kind = "deployments.modelfleet.io"
        self._command = [cluster.kubectl_path, "get", kind, name, "-n", namespace, "--watch", "-o", "json"]
        self._env = cluster.env
        self._stopped = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._process = subprocess.Popen(
                self._command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self._env
            )
            self._read(self._process)
            self._process.wait()
            self._stopped.wait(0.5)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    obj, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # an object not complete yet
                buffer = buffer.lstrip()[end:]
                self.timeline.append((time.time(), obj.get("status") or {}))

    def stop(self) -> None:
        self._stopped.set()
        if self._process is not None:
            self._process.terminate()
        self._thread.join(timeout=10)


def weight_never_exceeds_its_step(
    timeline: list[tuple[float, dict[str, Any]]], canary: str, steps: list[dict[str, Any]]
) -> list[str]:
    """Statuses in which `canary`'s weight is above the weight its current step allows; [] when none.
    After the last step the canary is promoted, so a canary never has a weight above the last setWeight."""
    from modelfleet.api.deployment import CanaryStep
    from modelfleet.rollout import step_weight

    parsed = [CanaryStep.model_validate(step) for step in steps]
    bad = []
    for t, s in timeline:
        if s.get("canaryVersion") != canary:
            continue
        step, weight = int(s.get("currentStep", 0)), int(s.get("canaryWeight", 0))
        allowed = step_weight(parsed, min(step, len(parsed) - 1))
        if weight > allowed:
            bad.append(f"{t:.2f}: step {step} weight {weight} > {allowed}")
    return bad


def steps_never_go_back(timeline: list[tuple[float, dict[str, Any]]], canary: str) -> list[int]:
    """The steps `canary` was seen at, in order, when they ever went back (a restarted rollout); []
    when they only went forward."""
    steps = [
        int(s.get("currentStep", 0))
        for _, s in sorted(timeline, key=lambda e: e[0])
        if s.get("canaryVersion") == canary
    ]
    return steps if steps != sorted(steps) else []


@dataclass
class Fleet:
    cluster: Cluster
    namespace: str
    operator: Any
    load: Load | None = None
    serving_since: float = 0.0
    """When the router first answered steadily: client errors are counted from then on."""
    timeline: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    watch: StatusWatch | None = None

    def apply(self, *objects: dict[str, Any]) -> None:
        self.cluster.apply(list(objects), self.namespace)

    def status(self, name: str = "iris") -> dict[str, Any]:
        out: dict[str, Any] = status(self.cluster, self.namespace, name)
        if self.watch is None:
            # Without a watch, the polled statuses are the timeline. With one, the watch alone writes
            # it: a polled status is older than the moment it is appended, and would come out of order.
            self.timeline.append((time.time(), out))
        return out

    def monitor_status(self, name: str = "iris-quality") -> dict[str, Any]:
        out: dict[str, Any] = status(self.cluster, self.namespace, name, "monitors.modelfleet.io")
        return out

    def set_version(self, version: str, name: str = "iris") -> None:
        self.patch(name, {"spec": {"version": version}})

    def patch(self, name: str, patch: dict[str, Any], kind: str = "deployments.modelfleet.io") -> None:
        self.cluster.kubectl(
            "patch", kind, name, "-n", self.namespace, "--type=merge", "-p", json.dumps(patch)
        )

    def wait_status(
        self, what: str, predicate: Any, timeout: float = 120, interval: float = 0.25
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            current = self.status()
            return current if predicate(current) else None

        try:
            out: dict[str, Any] = self.cluster.wait_for(what, check, timeout=timeout, interval=interval)
        except TimeoutError as error:
            raise AssertionError(f"{error}; status now: {self.status()}") from None
        return out

    def serve_v1(
        self,
        *objects: dict[str, Any],
        rate: float = 40.0,
        bodies: Sequence[bytes] = (IRIS_REQUEST,),
        **options: Any,
    ) -> Load:
        """Apply the objects and a Deployment of iris-v1 (`options`: `deployment`'s); wait until it
        serves; start the load, sending `bodies` in turn."""
        self.apply(model(), *objects)
        self.apply(deployment(version="iris-v1", **options))
        self.watch = StatusWatch(self.cluster, self.namespace, "iris", self.timeline)
        self.wait_status(
            "iris-v1 Healthy", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "iris-v1"
        )
        ip = service_ip(self.cluster, self.namespace, "iris")
        self.load = Load(ip, rate=rate, bodies=bodies)
        self.load.start()
        self.serving_since = wait_until_serving(self.load, "iris-v1")
        return self.load

    def measured(
        self, version: str, metric: str, verdict: str, monitor: str = "iris-quality"
    ) -> dict[str, Any]:
        """The newest result of `metric` on `version` with this verdict, among the Monitor's recent
        measurements (the Deployment's own analysis is reset when a rollout ends)."""
        for measurement in self.monitor_status(monitor).get("measurements", []):
            if measurement["version"] != version:
                continue
            for result in measurement["results"]:
                if result["name"] == metric and result["verdict"] == verdict:
                    return dict(result)
        raise AssertionError(f"no {verdict} of {metric} on {version} in {self.monitor_status(monitor)}")

    def wait_measured(
        self, version: str, metric: str, verdict: str, timeout: float = 90, monitor: str = "iris-quality"
    ) -> dict[str, Any]:
        """Wait until the Monitor has measured `metric` on `version` with this verdict; that result."""

        def check() -> dict[str, Any] | None:
            try:
                return self.measured(version, metric, verdict, monitor)
            except AssertionError:
                return None

        try:
            out: dict[str, Any] = self.cluster.wait_for(
                f"{metric} {verdict} on {version}", check, timeout=timeout, interval=0.5
            )
        except TimeoutError as error:
            raise AssertionError(f"{error}; monitor status now: {self.monitor_status(monitor)}") from None
        return out

    def client_errors(self) -> list[Answer]:
        """Errors of the requests sent once the router answered steadily (`serving_since`), as the demo
        counts them. A request already on its way before that moment belongs to the warm-up: its error
        is not counted here but recorded in the results file (`warm_up_errors`), so it stays visible."""
        assert self.load is not None
        errors = self.load.errors(since=self.serving_since)
        warm_up = [r for r in errors if r.sent < self.serving_since]
        if warm_up:
            record_result(
                "warm_up_errors",
                {"namespace": self.namespace, "errors": [r.describe()[:200] for r in warm_up]},
            )
        return [r for r in errors if r.sent >= self.serving_since]

    def weights_seen(self, canary: str) -> list[int]:
        """canaryWeight values while `canary` was the canary, in the order seen (repeats collapsed)."""
        out: list[int] = []
        for _, s in self.timeline:
            if s.get("canaryVersion") != canary:
                continue
            weight = int(s.get("canaryWeight", 0))
            if not out or out[-1] != weight:
                out.append(weight)
        return out
