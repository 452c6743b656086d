"""Router metrics: errorRate, latency, fallbackRate and predictionDrift, from the router pods themselves.

During a rollout the same scrapes give the stable version's traffic too (`Reading.stable_traffic`), the
other side of the ratio bounds.

Every router pod's /metrics and /predictions (pod IP, admin port 9090) is scraped each window and
compared with the previous scrape of the same Monitor, kept here; losing it (an operator restart) costs
one window, taken as the new baseline. Pods that do not answer leave the window partial, judged on the
pods that did; no pod answering is an Error; no router pod running yet is nothing to measure
(Inconclusive), never an Error.

How the pods are found and asked, and the admin token /predictions needs, are `routeradmin`'s, shared
with the sampled metrics' provider: a router that refuses the token gives no prediction samples, and
`refused` is told, so that the Secret is applied again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import aiohttp

from modelfleet.analysis import ExpositionError, Scrape, VersionTraffic, parse_exposition, window_traffic
from modelfleet.analysis.assessment import TRAFFIC_METRICS
from modelfleet.api.monitor import Metric
from modelfleet.builders import ROUTER_ADMIN_PORT
from modelfleet.providers import Key, Reading, Target
from modelfleet.providers.http import Http, HttpStatusError
from modelfleet.providers.routeradmin import (
    NO_ROUTERS,
    REFUSALS,
    SCRAPE_TIMEOUT,
    AdminToken,
    Pods,
    Refused,
    RouterAdmin,
    admin_url,
    bearer,
    running_pods,
)

__all__ = ["NO_ROUTERS", "RouterMetrics", "Scraped", "running_pods", "scrape_routers"]


class Scraped(NamedTuple):
    """What one scrape of a Deployment's router pods gave."""

    scrape: Scrape | None
    """The /metrics of the pods that answered; None when none did (or none runs)."""
    predictions: dict[str, list[Any]]
    """Prediction samples by version, from every pod that showed them."""
    error: str
    """Why no pod answered, when none did."""
    partial: str
    """Which pods did not answer, when some did."""
    refused: tuple[str, ...] = ()
    """`pod: HTTP <status>` of the pods that refused the admin token for /predictions."""


async def scrape_routers(
    http: Http,
    pods: list[tuple[str, str]],
    now: datetime,
    port: int = ROUTER_ADMIN_PORT,
    token: str | None = None,
) -> Scraped:
    """Every router pod's /metrics and /predictions (the latter with `Authorization: Bearer <token>`
    when a token is given). The scrape holds the pods that answered /metrics; `partial` names those that
    did not. Only when no pod answered is there no scrape, and the error says why. No pod to scrape
    gives neither: no scrape, no error (nothing runs yet). A pod that refuses the token for
    /predictions still counts for the traffic metrics, and is named in `refused`."""
    if not pods:
        return Scraped(None, {}, "", "")

    async def one(pod: str, ip: str) -> tuple[str, str, Any, int]:
        text = (await http.get_bytes(admin_url(ip, port, "/metrics"), SCRAPE_TIMEOUT)).decode()
        refused = 0
        try:
            answer = await http.get_bytes(admin_url(ip, port, "/predictions"), SCRAPE_TIMEOUT, bearer(token))
            predictions = answer.decode()
        except HttpStatusError as error:
            predictions = "{}"  # drift only: its metric says so when samples are missing
            refused = error.status if error.status in REFUSALS else 0
        except (aiohttp.ClientError, TimeoutError, RuntimeError):
            predictions = "{}"
        return pod, text, predictions, refused

    results = await asyncio.gather(*(one(pod, ip) for pod, ip in pods), return_exceptions=True)
    samples = {}
    predictions: dict[str, list[Any]] = {}
    failures: list[str] = []
    refusals: list[str] = []
    for (pod, ip), result in zip(pods, results, strict=True):
        if isinstance(result, BaseException):
            why = str(result) or type(result).__name__
            failures.append(f"scrape of router pod {pod} ({ip}:{port}) failed: {why}")
            continue
        _, text, prediction_text, refused = result
        if refused:
            refusals.append(f"{pod}: HTTP {refused}")
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
        return Scraped(None, {}, "; ".join(failures)[:512], "", tuple(refusals))
    partial = ""
    if failures:
        partial = f"{len(samples)} of {len(pods)} router pods answered; " + "; ".join(failures)
    return Scraped(Scrape(now, samples), predictions, "", partial[:1024], tuple(refusals))


class RouterMetrics:
    """The provider of the router-based metric types."""

    def __init__(
        self,
        pods: Pods,
        http: Http,
        port: int = ROUTER_ADMIN_PORT,
        admin_token: AdminToken | None = None,
        refused: Refused | None = None,
    ) -> None:
        self.routers = RouterAdmin(pods, http, port, admin_token, refused)
        """How the router pods are found and asked; the sampled metrics' provider shares it."""
        self.http = http
        self.port = port
        self.admin_token = admin_token
        """Gives the routers' admin token for /predictions; None: none is sent (a router without one)."""
        self._previous: dict[Key, Scrape] = {}
        """The last scrape of each Monitor's router pods: the start of its next window."""

    def handles(self, metric: Metric) -> bool:
        return metric.type in TRAFFIC_METRICS

    async def measure(self, target: Target, metrics: Sequence[Metric], now: datetime) -> Reading:
        pods = await self.routers.running(target)
        token = await self.routers.token(target) if pods else None
        scrape, predictions, error, partial, refusals = await scrape_routers(
            self.http, pods, now, self.port, token
        )
        if refusals and token:
            self.routers.report_refusals(target, "/predictions", refusals, "no prediction samples from them")
        pending = NO_ROUTERS if not pods else ""
        traffic: VersionTraffic | None = None
        stable: VersionTraffic | None = None
        if scrape is not None:
            previous = self._previous.get(target.monitor)
            self._previous[target.monitor] = scrape
            if previous is None:
                return Reading(baseline=True)  # the first scrape is the baseline of the first window
            per_version = window_traffic(previous, scrape, deployment=target.deployment)
            seconds = (scrape.time - previous.time).total_seconds()

            def of(version: str) -> VersionTraffic:
                return per_version.get(version) or VersionTraffic(version=version, seconds=seconds)

            traffic = of(target.version)
            stable = of(target.reference) if target.reference else None
        return Reading(
            traffic=traffic,
            stable_traffic=stable,
            traffic_error=error,
            traffic_pending=pending,
            partial=partial,
            predictions=predictions.get(target.version, ()),
            reference_predictions=predictions.get(target.reference, ()) if target.reference else None,
        )

    def forget(self, monitor: Key) -> None:
        self._previous.pop(monitor, None)

    async def close(self) -> None:
        await self.http.close()
