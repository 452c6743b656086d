"""The Monitor controller: one measurement per `interval`, written to the Monitor's status.

Each Monitor has a loop that, every interval, measures the version under judgement (its Deployment's
canary during a rollout, else the stable version):

- router metrics (`errorRate`, `latency`, `fallbackRate`): every router pod's /metrics is scraped
  (pod IP, admin port 9090) and compared with the previous scrape, kept in memory; losing it (an
  operator restart) costs one window, taken as the new baseline;
- `predictionDrift`: the routers' /predictions samples of the canary against the stable version's;
- `prometheus`: the query against a real Prometheus' HTTP API (`/api/v1/query`, bounded by a timeout).

`modelfleet.analysis.assess` judges the window; the Monitor's status gets the measurement as
`lastMeasurement` and at the head of the bounded `measurements` list, which the Deployment controller
feeds to the rollout decision. A provider that cannot answer gives an Error verdict for its metrics,
never a Pass; fewer than `minRequests` requests give Inconclusive, never a Pass or a Fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from modelfleet import metrics
from modelfleet.analysis import (
    ExpositionError,
    ProviderError,
    Scrape,
    VersionTraffic,
    Window,
    assess,
    overall_verdict,
    parse_exposition,
    summarize,
    window_traffic,
)
from modelfleet.api import Deployment, InvalidResourceError, Monitor, set_condition
from modelfleet.api.monitor import (
    MEASUREMENT_HISTORY_LIMIT,
    Measurement,
    MetricType,
    MonitorPhase,
    MonitorStatus,
    Verdict,
)
from modelfleet.builders import COMPONENT_ROUTER, ROUTER_ADMIN_PORT, owned_selector
from modelfleet.controllers import deployment as deployment_controller
from modelfleet.controllers import kube
from modelfleet.controllers.loops import Gone, Key, Loops

log = logging.getLogger("modelfleet.monitor")

MF = f"{kube.GROUP}/{kube.VERSION}"
SCRAPE_TIMEOUT = 2.0
PROMETHEUS_TIMEOUT = 3.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

_previous: dict[Key, Scrape] = {}
"""The last scrape of each Monitor's router pods: the start of the next window."""
_session: aiohttp.ClientSession | None = None


def _http() -> aiohttp.ClientSession:
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, force_close=True),
            headers={"User-Agent": "modelfleet-operator"},
        )
    return _session


PHASES = {
    Verdict.PASS: MonitorPhase.PASSING,
    Verdict.FAIL: MonitorPhase.FAILING,
    Verdict.INCONCLUSIVE: MonitorPhase.INCONCLUSIVE,
    Verdict.ERROR: MonitorPhase.INCONCLUSIVE,
}


# --- providers ---------------------------------------------------------------------------------------


async def _fetch(url: str, seconds: float) -> bytes:
    async with _http().get(url, timeout=aiohttp.ClientTimeout(total=seconds)) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise RuntimeError("answer too large")
        return body


def _router_pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
    """(pod name, pod IP) of the running router pods of a Deployment."""
    pods = kube.list_objects("v1", "Pod", namespace, owned_selector(deployment, COMPONENT_ROUTER))
    return running_pods(pods)


def running_pods(pods: list[kube.Obj]) -> list[tuple[str, str]]:
    """(name, IP) of the pods that are running, have an address and are not being deleted."""
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        if (
            status.get("phase") == "Running"
            and status.get("podIP")
            and not pod["metadata"].get("deletionTimestamp")
        ):
            out.append((str(pod["metadata"]["name"]), str(status["podIP"])))
    return sorted(out)


NO_ROUTERS = "no router pod is running yet: nothing to measure"


async def scrape_routers(
    pods: list[tuple[str, str]], now: datetime, port: int = ROUTER_ADMIN_PORT
) -> tuple[Scrape | None, dict[str, list[Any]], str, str]:
    """Every router pod's /metrics and /predictions: (scrape, predictions by version, error text, partial
    text). The scrape holds the pods that answered; `partial` names those that did not. Only when no pod
    answered is there no scrape, and the error says why. No pod to scrape gives neither: no scrape, no
    error (nothing runs yet)."""
    if not pods:
        return None, {}, "", ""

    async def one(pod: str, ip: str) -> tuple[str, str, Any]:
        host = f"[{ip}]" if ":" in ip else ip
        text = (await _fetch(f"http://{host}:{port}/metrics", SCRAPE_TIMEOUT)).decode()
        try:
            predictions = (await _fetch(f"http://{host}:{port}/predictions", SCRAPE_TIMEOUT)).decode()
        except (aiohttp.ClientError, TimeoutError, RuntimeError):
            predictions = "{}"  # drift only: its metric says so when samples are missing
        return pod, text, predictions

    results = await asyncio.gather(*(one(pod, ip) for pod, ip in pods), return_exceptions=True)
    samples = {}
    predictions: dict[str, list[Any]] = {}
    failures: list[str] = []
    for (pod, ip), result in zip(pods, results, strict=True):
        if isinstance(result, BaseException):
            why = str(result) or type(result).__name__
            failures.append(f"scrape of router pod {pod} ({ip}:{port}) failed: {why}")
            continue
        _, text, prediction_text = result
        try:
            samples[pod] = parse_exposition(text)
        except ExpositionError as error:
            failures.append(f"router pod {pod}: bad metrics: {error}")
            continue
        try:
            document = json.loads(prediction_text)
        except ValueError:
            document = {}
        if isinstance(document, dict):
            for version, values in document.items():
                if isinstance(values, list):
                    predictions.setdefault(str(version), []).extend(values)
    if not samples:
        return None, {}, "; ".join(failures)[:512], ""
    partial = ""
    if failures:
        partial = f"{len(samples)} of {len(pods)} router pods answered; " + "; ".join(failures)
    return Scrape(now, samples), predictions, "", partial[:1024]


async def query_prometheus(address: str, query: str) -> float | ProviderError:
    """The value of a PromQL query that returns one number; NaN when it returns no series."""
    url = f"{address.rstrip('/')}/api/v1/query"
    try:
        async with _http().get(
            url, params={"query": query}, timeout=aiohttp.ClientTimeout(total=PROMETHEUS_TIMEOUT)
        ) as response:
            document = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return ProviderError(f"prometheus {address} unreachable: {str(error) or type(error).__name__}"[:512])
    return prometheus_value(document)


def prometheus_value(document: Any) -> float | ProviderError:
    """One number from a Prometheus /api/v1/query answer."""
    if not isinstance(document, dict):
        return ProviderError("prometheus: answer is not a JSON object")
    if document.get("status") != "success":
        return ProviderError(
            f"prometheus: {document.get('errorType', 'error')}: {document.get('error', '')}"[:512]
        )
    data = document.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])  # type: ignore[index]
        if kind == "vector":
            if not result:
                return math.nan
            if len(result) > 1:
                return ProviderError(f"prometheus: query returned {len(result)} series, expected one")
            return float(result[0]["value"][1])
    except (TypeError, ValueError, IndexError, KeyError):
        return ProviderError("prometheus: malformed answer")
    return ProviderError(f"prometheus: result type {kind} is not a number")


# --- the measurement ---------------------------------------------------------------------------------


def _monitor_status(
    monitor: Monitor,
    now: datetime,
    *,
    measurement: Measurement | None,
    message: str,
    ready: bool,
    reason: str,
) -> MonitorStatus:
    old = monitor.status
    measurements = old.measurements
    phase = old.phase
    if measurement is not None:
        measurements = (measurement, *measurements)[:MEASUREMENT_HISTORY_LIMIT]
        phase = PHASES[overall_verdict(measurement)]
    conditions = set_condition(
        old.conditions,
        "Ready",
        ready,
        reason,
        message,
        now=now,
        observed_generation=monitor.metadata.generation,
    )
    return MonitorStatus(
        observed_generation=monitor.metadata.generation,
        phase=phase,
        last_measurement=measurement or old.last_measurement,
        measurements=measurements,
        message=message[:1024],
        conditions=conditions,
    )


def _write_status(namespace: str, name: str, monitor: Monitor, status: MonitorStatus) -> None:
    new = status.to_k8s()
    if new == monitor.status.to_k8s():
        return
    try:
        kube.replace_status("Monitor", namespace, name, new, monitor.metadata.resource_version)
    except kube.Conflict:
        # only this loop writes the status: the spec or metadata changed; write over the fresh object
        body = kube.get(MF, "Monitor", namespace, name)
        if body is not None:
            kube.replace_status("Monitor", namespace, name, new, body["metadata"]["resourceVersion"])


async def measure(namespace: str, name: str) -> float | None:
    started = time.perf_counter()
    try:
        delay = await _measure(namespace, name)
    finally:
        metrics.RECONCILE_DURATION.labels("monitor").observe(time.perf_counter() - started)
    if delay is None:
        return None
    return max(delay - (time.perf_counter() - started), 0.05)


async def _measure(namespace: str, name: str) -> float | None:
    key = (namespace, name)
    body = await kube.run(kube.get, MF, "Monitor", namespace, name)
    if body is None:
        _previous.pop(key, None)
        raise Gone(f"{namespace}/{name}")
    try:
        monitor = Monitor.from_k8s(body)
    except InvalidResourceError as error:
        log.warning("%s", error)
        return None
    spec = monitor.spec
    target = await kube.run(kube.get, MF, "Deployment", namespace, spec.deployment)
    now = datetime.now(UTC)

    async def idle(message: str, reason: str) -> float:
        _previous.pop(key, None)
        status = _monitor_status(monitor, now, measurement=None, message=message, ready=False, reason=reason)
        await kube.run(_write_status, namespace, name, monitor, status)
        return spec.interval

    if target is None:
        return await idle(f"Deployment {spec.deployment} not found", "DeploymentNotFound")
    try:
        deployment = Deployment.from_k8s(target)
    except InvalidResourceError as error:
        return await idle(str(error), "DeploymentInvalid")
    version = deployment.status.canary_version or deployment.status.stable_version
    reference = deployment.status.stable_version if deployment.status.canary_version else None
    if not version:
        return await idle(f"Deployment {spec.deployment} serves no version yet", "NothingToMeasure")

    router_metric_types = {m.type for m in spec.metrics} - {MetricType.PROMETHEUS}
    traffic: VersionTraffic | None = None
    traffic_error = traffic_pending = partial = ""
    predictions: dict[str, list[Any]] = {}
    if router_metric_types:
        pods = await kube.run(_router_pods, namespace, spec.deployment)
        scrape, predictions, traffic_error, partial = await scrape_routers(pods, now)
        if not pods:
            traffic_pending = NO_ROUTERS
        if scrape is not None:
            previous = _previous.get(key)
            _previous[key] = scrape
            if previous is None:
                return spec.interval  # the first scrape is the baseline of the first window
            per_version = window_traffic(previous, scrape, deployment=spec.deployment)
            seconds = (scrape.time - previous.time).total_seconds()
            traffic = per_version.get(version) or VersionTraffic(version=version, seconds=seconds)

    prometheus: dict[str, float | ProviderError] = {}
    queries = [m for m in spec.metrics if m.type == MetricType.PROMETHEUS and m.prometheus is not None]
    if queries:
        answers = await asyncio.gather(
            *(query_prometheus(m.prometheus.address, m.prometheus.query) for m in queries if m.prometheus)
        )
        prometheus = {m.name: answer for m, answer in zip(queries, answers, strict=True)}

    window = Window(
        version=version,
        traffic=traffic,
        traffic_error=traffic_error,
        traffic_pending=traffic_pending,
        partial=partial,
        predictions=predictions.get(version, ()),
        reference_predictions=predictions.get(reference, ()) if reference else None,
        prometheus=prometheus,
    )
    measurement = assess(spec, window, now)
    verdict = overall_verdict(measurement)
    metrics.MEASUREMENTS.labels(verdict.value).inc()
    message = f"{version}: {verdict.value}: {summarize(measurement)}"
    if measurement.partial:
        message += f" (partial sample: {measurement.partial})"
    status = _monitor_status(
        monitor, now, measurement=measurement, message=message, ready=True, reason="Measuring"
    )
    await kube.run(_write_status, namespace, name, monitor, status)
    if verdict != Verdict.PASS:
        log.info("%s/%s: %s", namespace, name, message)
    deployment_controller.wake(namespace, spec.deployment)
    return spec.interval


LOOPS = Loops("monitor", measure, resync=60.0)
_seen: dict[Key, tuple[Any, ...]] = {}


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    await LOOPS.stop_all()
    if _session is not None:
        await _session.close()


@kopf.on.event(kube.GROUP, kube.VERSION, "monitors")
async def _monitor_event(type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    if namespace is None:
        return
    key = (namespace, name)
    target = str((body.get("spec") or {}).get("deployment", ""))
    if type == "DELETED":
        LOOPS.stop(namespace, name)
        _previous.pop(key, None)
        _seen.pop(key, None)
        if target:
            deployment_controller.wake(namespace, target)
        return
    meta = body.get("metadata", {})
    signature = (meta.get("uid"), meta.get("generation"))
    if _seen.get(key) == signature and key in LOOPS:
        return  # a status write of this controller
    if _seen.get(key, (None,))[0] != signature[0] and target and type:
        deployment_controller.wake(namespace, target)  # a new gate for the Deployment
    _seen[key] = signature
    LOOPS.wake(namespace, name)
