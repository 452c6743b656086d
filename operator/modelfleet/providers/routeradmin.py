"""The router pods' admin port, as every provider that reads it reaches it: which pods run, the admin token,
the timeouts, and what a refusal of the token sets off.

A Deployment's running router pods come from the watch cache (`Pods`); each is asked at its pod IP on the
admin port (9090) with a short timeout (`SCRAPE_TIMEOUT`). /metrics is open; /predictions, /inputs and
/feedback ask for the Deployment's router admin token, which `AdminToken` gives (derived from the
operator's key, never read from the Secret). A router that refuses it (401, 403, or 503 while it cannot
read its token file: the Secret deleted or edited by hand) is named, and `Refused` is told, so that the
Secret is applied again.

`RouterAdmin.read_json` asks every running pod for one admin path and hands back each pod's JSON answer,
or why there is none, for the providers to merge as their metric needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from modelfleet.builders import ROUTER_ADMIN_PORT, router_admin_secret_name
from modelfleet.providers import Target
from modelfleet.providers.http import Http, HttpStatusError

log = logging.getLogger("modelfleet.providers.routeradmin")

SCRAPE_TIMEOUT = 2.0
NO_ROUTERS = "no router pod is running yet: nothing to measure"
REFUSALS = frozenset({401, 403, 503})
"""Answers of a router that did not take the admin token: none, another one, or none it can read."""

Pods = Callable[[str, str], Awaitable[list[tuple[str, str]]]]
"""(namespace, deployment) -> (name, IP) of its running router pods."""
AdminToken = Callable[[Target], Awaitable[str | None]]
"""The admin token of the target Deployment's routers, or None while it is not known."""
Refused = Callable[[str, str], None]
"""(namespace, deployment): one of its routers refused the admin token."""


def running_pods(pods: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(name, IP) of the pods that are running, have an address and are not being deleted."""
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        if (
            status.get("phase") == "Running"
            and status.get("podIP")
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
        ):
            out.append((str(pod["metadata"]["name"]), str(status["podIP"])))
    return sorted(out)


def admin_url(ip: str, port: int, path: str) -> str:
    """The URL of `path` (with its query) on a router pod's admin port; IPv6 addresses bracketed."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{path}"


def bearer(token: str | None) -> dict[str, str] | None:
    """The header that carries the admin token, when there is one."""
    return {"Authorization": f"Bearer {token}"} if token else None


@dataclass(frozen=True)
class AdminAnswers:
    """What every running router pod answered for one admin path."""

    path: str
    """The path asked for (without its query), e.g. /inputs."""
    pods: tuple[str, ...] = ()
    """The running pods that were asked; none: no router pod runs yet."""
    answers: Mapping[str, Any] = field(default_factory=dict)
    """The JSON document of each pod that answered, by pod name."""
    failures: Mapping[str, str] = field(default_factory=dict)
    """Why each other pod gave no answer, by pod name (`refused` ones included)."""
    refused: tuple[str, ...] = ()
    """`pod: HTTP <status>` of the pods that refused the admin token."""

    @property
    def error(self) -> str:
        """Why no pod answered, when pods run and none did; else empty."""
        if self.answers or not self.pods:
            return ""
        return f"no router pod answered {self.path}: " + "; ".join(
            f"{pod}: {why}" for pod, why in sorted(self.failures.items())
        )

    @property
    def partial(self) -> str:
        """`1 of 2 router pods answered`, when some did and some did not; else empty."""
        if not self.answers or not self.failures:
            return ""
        return f"{len(self.answers)} of {len(self.pods)} router pods answered {self.path}"


class RouterAdmin:
    """How providers reach a Deployment's router pods' admin port: pod discovery, admin token, timeouts."""

    def __init__(
        self,
        pods: Pods,
        http: Http,
        port: int = ROUTER_ADMIN_PORT,
        admin_token: AdminToken | None = None,
        refused: Refused | None = None,
    ) -> None:
        self.pods = pods
        self.http = http
        self.port = port
        self.admin_token = admin_token
        """Gives the routers' admin token for the protected paths; None: none is sent (a router without
        one)."""
        self.refused = refused
        """Told when a router refused the admin token it was sent."""

    async def running(self, target: Target) -> list[tuple[str, str]]:
        """(name, IP) of the target Deployment's running router pods."""
        return await self.pods(target.namespace, target.deployment)

    async def token(self, target: Target) -> str | None:
        """The admin token to send to the target Deployment's routers, or None."""
        return await self.admin_token(target) if self.admin_token is not None else None

    async def get(self, ip: str, path: str, token: str | None = None) -> bytes:
        """One admin path of one pod: the body of a 200 answer; HttpStatusError for another status, and the
        HTTP client's errors (aiohttp.ClientError, TimeoutError, RuntimeError) as they come."""
        return await self.http.get_bytes(admin_url(ip, self.port, path), SCRAPE_TIMEOUT, bearer(token))

    def report_refusals(self, target: Target, path: str, refusals: Sequence[str], without: str) -> None:
        """Some router pods refused the admin token they were sent for `path`: log it (`without`: what the
        window lacks meanwhile) and have the admin Secret applied again."""
        log.warning(
            "%s/%s: router pods refused the admin token for %s (%s): the Secret %s is applied again; %s "
            "meanwhile",
            target.namespace,
            target.deployment,
            path,
            ", ".join(refusals),
            router_admin_secret_name(target.deployment),
            without,
        )
        if self.refused is not None:
            self.refused(target.namespace, target.deployment)

    async def read_json(
        self,
        target: Target,
        path: str,
        query: Callable[[str], str] | None = None,
        without: str = "no samples from them",
    ) -> AdminAnswers:
        """Every running router pod's JSON answer for the protected admin `path`, with the admin token;
        `query` gives each pod's query string (e.g. `after=12`) by pod name. Refusals of the token are
        reported (`report_refusals`)."""
        pods = await self.running(target)
        if not pods:
            return AdminAnswers(path)
        token = await self.token(target)

        async def one(pod: str, ip: str) -> Any:
            asked = f"{path}?{query(pod)}" if query is not None else path
            return json.loads(await self.get(ip, asked, token))

        results = await asyncio.gather(*(one(pod, ip) for pod, ip in pods), return_exceptions=True)
        answers: dict[str, Any] = {}
        failures: dict[str, str] = {}
        refused: list[str] = []
        for (pod, ip), result in zip(pods, results, strict=True):
            if isinstance(result, HttpStatusError):
                failures[pod] = f"HTTP {result.status}"
                if result.status in REFUSALS:
                    refused.append(f"{pod}: HTTP {result.status}")
            elif isinstance(result, ValueError):  # json.JSONDecodeError, UnicodeDecodeError
                failures[pod] = "the answer is not JSON"
            elif isinstance(result, aiohttp.ClientError | TimeoutError | RuntimeError):
                why = str(result) or type(result).__name__
                failures[pod] = f"{ip}:{self.port} did not answer: {why}"[:256]
            elif isinstance(result, Exception):
                failures[pod] = f"{ip}:{self.port}: {type(result).__name__}"
            elif isinstance(result, BaseException):
                raise result
            else:
                answers[pod] = result
        if refused and token:
            self.report_refusals(target, path, refused, without)
        return AdminAnswers(path, tuple(pod for pod, _ in pods), answers, failures, tuple(refused))
