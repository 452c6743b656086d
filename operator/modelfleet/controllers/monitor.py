"""The Monitor controller: one measurement per `interval`, written to the Monitor's status.

Each Monitor has a loop that, every interval, measures the version under judgement (its Deployment's
canary during a rollout, else the stable version) through the providers of its metrics
(`modelfleet.providers`: the router pods' metrics, the sampled metrics from the router pods' input
samples and ground truth, Prometheus), merges their readings into one window,
has the pure `modelfleet.analysis.assess` judge it (during a rollout against the stable version's values
in the same window too, for ratio bounds), and writes the Monitor's whole new status
(`modelfleet.analysis.monitor_status`): the measurement as `lastMeasurement` and at the head of the
bounded `measurements` list, which the Deployment controller feeds to the rollout decision. A provider
that cannot answer gives an Error verdict for its metrics, never a Pass; fewer than `minRequests`
requests give Inconclusive, never a Pass or a Fail.

`MonitorController` is constructed with its providers, a way to wake a Deployment and its clock; the
operator builds it at start-up (`modelfleet.controllers.main`) and the kopf handlers below find it in
kopf's `memo`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf

from modelfleet import metrics
from modelfleet.analysis import assess, monitor_status, overall_verdict, summarize
from modelfleet.api import Deployment, InvalidResourceError, ModelVersion, Monitor
from modelfleet.api.monitor import MonitorStatus, Verdict
from modelfleet.builders import Owner, router_admin_token
from modelfleet.controllers import kube
from modelfleet.controllers.cache import Cache
from modelfleet.controllers.loops import Gone, Key, Loops
from modelfleet.controllers.secrets import read_secret
from modelfleet.providers import Provider, Reading, Target, window
from modelfleet.providers.http import Http
from modelfleet.providers.prometheus import Prometheus
from modelfleet.providers.reference import ReferenceProfiles, SecretUnreadable
from modelfleet.providers.router import RouterMetrics, running_pods
from modelfleet.providers.sampled import SampledMetrics

log = logging.getLogger("modelfleet.monitor")

MF = f"{kube.GROUP}/{kube.VERSION}"


async def reference_secret(namespace: str, name: str) -> Mapping[str, str] | None:
    """A reference profile's credentials Secret, read as the MLflow sync reads its Secrets (`get` only);
    SecretUnreadable saying why, never with what it holds."""
    try:
        return await read_secret(namespace, name)
    except kube.ApiError as error:
        if error.status == 403:
            raise SecretUnreadable(
                f"the operator may not read Secret {name} (the chart's referenceProfiles.readSecrets)"
            ) from None
        raise SecretUnreadable(f"Secret {name} not read: HTTP {error.status}") from None


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


class MonitorController:
    """Measures every Monitor on its own loop through `providers`; `clock` gives the time of a window."""

    def __init__(
        self,
        cache: Cache,
        providers: Sequence[Provider],
        wake_deployment: Callable[[str, str], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cache = cache
        """Where every read comes from: the watch caches; the API server sees only status writes."""
        self.providers = list(providers)
        self.wake_deployment = wake_deployment
        """Reconcile a Deployment soon: after a new measurement, or when its gate came or went."""
        self.clock = clock
        self.loops = Loops("monitor", self.measure, resync=60.0)
        self.seen: dict[Key, tuple[Any, ...]] = {}
        """What of each Monitor last woke its loop (uid, generation): its own status writes do not."""

    @classmethod
    def default(
        cls,
        cache: Cache,
        wake_deployment: Callable[[str, str], None],
        admin_key: Callable[[], bytes | None] | None = None,
        admin_refused: Callable[[str, str], None] | None = None,
    ) -> MonitorController:
        """The router-metrics, sampled-metrics and Prometheus providers, sharing one HTTP client; the first
        two reach the router pods alike. With `admin_key` (the operator's `AdminKey`) the router scrapes
        send each Deployment's admin token, derived, never read from its Secret; `admin_refused` hears of
        routers that refused it. Reference profiles are read with the credentials Secret their
        ModelVersion names (`get`, granted by the chart's `referenceProfiles.readSecrets`)."""

        async def router_pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
            return running_pods(cache.router_pods(namespace, deployment))

        async def admin_token(target: Target) -> str | None:
            if admin_key is None or not target.uid:
                return None
            key = await kube.run(admin_key)  # read once per process, then kept
            if key is None:
                return None
            return router_admin_token(key, Owner(target.deployment, target.namespace, target.uid))

        def model_version(namespace: str, name: str) -> ModelVersion | None:
            body = cache.model_version(namespace, name)
            if body is None:
                return None
            try:
                return ModelVersion.from_k8s(body)
            except InvalidResourceError as error:
                log.warning("%s", error)
                return None

        http = Http()
        routers = RouterMetrics(router_pods, http, admin_token=admin_token, refused=admin_refused)
        references = ReferenceProfiles(reference_secret)
        sampled = SampledMetrics(routers.routers, references, model_version)
        return cls(cache, [routers, sampled, Prometheus(http)], wake_deployment)

    async def stop(self) -> None:
        await self.loops.stop_all()
        for provider in self.providers:
            await provider.close()

    def forget(self, key: Key) -> None:
        for provider in self.providers:
            provider.forget(key)

    async def measure(self, namespace: str, name: str) -> float | None:
        started = time.perf_counter()
        try:
            delay = await self._measure(namespace, name)
        finally:
            metrics.RECONCILE_DURATION.labels("monitor").observe(time.perf_counter() - started)
        if delay is None:
            return None
        return max(delay - (time.perf_counter() - started), 0.05)

    async def _measure(self, namespace: str, name: str) -> float | None:
        key = (namespace, name)
        # observe
        body = self.cache.monitor(namespace, name)
        if body is None:
            self.forget(key)
            raise Gone(f"{namespace}/{name}")
        try:
            monitor = Monitor.from_k8s(body)
        except InvalidResourceError as error:
            log.warning("%s", error)
            return None
        spec = monitor.spec
        found = self.cache.deployment(namespace, spec.deployment)
        now = self.clock()

        async def idle(message: str, reason: str) -> float:
            self.forget(key)
            status = monitor_status(
                monitor, now, measurement=None, message=message, ready=False, reason=reason
            )
            await kube.run(_write_status, namespace, name, monitor, status)
            return spec.interval

        if found is None:
            return await idle(f"Deployment {spec.deployment} not found", "DeploymentNotFound")
        try:
            deployment = Deployment.from_k8s(found)
        except InvalidResourceError as error:
            return await idle(str(error), "DeploymentInvalid")
        served = deployment.status
        target = Target.of(
            key, spec.deployment, served.stable_version, served.canary_version, deployment.metadata.uid
        )
        if target is None:
            return await idle(f"Deployment {spec.deployment} serves no version yet", "NothingToMeasure")
        version = target.version

        jobs = []
        for provider in self.providers:
            handled = [m for m in spec.metrics if provider.handles(m)]
            if handled:
                jobs.append(provider.measure(target, handled, now))
        readings: list[Reading] = list(await asyncio.gather(*jobs))
        if any(reading.baseline for reading in readings):
            return spec.interval  # a provider's first look is the baseline of the first window

        # decide
        measurement = assess(spec, window(version, readings, stable=target.reference or ""), now)
        verdict = overall_verdict(measurement)
        message = f"{version}: {verdict.value}: {summarize(measurement)}"
        if measurement.partial:
            message += f" (partial sample: {measurement.partial})"
        status = monitor_status(
            monitor, now, measurement=measurement, message=message, ready=True, reason="Measuring"
        )

        # apply
        metrics.MEASUREMENTS.labels(verdict.value).inc()
        await kube.run(_write_status, namespace, name, monitor, status)
        if verdict != Verdict.PASS:
            log.info("%s/%s: %s", namespace, name, message)
        self.wake_deployment(namespace, spec.deployment)
        return spec.interval

    def on_event(self, type: str, body: kopf.Body, namespace: str, name: str) -> None:
        """A watch event of a Monitor: start, wake or stop its loop; a new gate wakes its Deployment."""
        key = (namespace, name)
        target = str((body.get("spec") or {}).get("deployment", ""))
        if type == "DELETED":
            self.loops.stop(namespace, name)
            self.forget(key)
            self.seen.pop(key, None)
            if target:
                self.wake_deployment(namespace, target)
            return
        meta = body.get("metadata", {})
        signature = (meta.get("uid"), meta.get("generation"))
        if self.seen.get(key) == signature and key in self.loops:
            return  # a status write of this controller
        if self.seen.get(key, (None,))[0] != signature[0] and target and type:
            self.wake_deployment(namespace, target)  # a new gate for the Deployment
        self.seen[key] = signature
        self.loops.wake(namespace, name)


# --- kopf --------------------------------------------------------------------------------------------


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: MonitorController | None = getattr(memo, "monitors", None)
    if controller is not None:
        await controller.stop()


@kopf.on.event(kube.GROUP, kube.VERSION, "monitors")
async def _monitor_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace is not None:
        controller: MonitorController = memo.monitors
        controller.on_event(type, body, namespace, name)
