"""Leader election with a `coordination.k8s.io/v1` Lease: one active operator among its replicas.

The rules follow client-go's leaderelection package:

- A candidate takes the Lease when it has no holder, or when the holder has not renewed it for
  `leaseDurationSeconds` as measured by the candidate's own monotonic clock from the moment it last saw
  the record change (clocks of different machines are never compared).
- The leader renews every `retry_period`. When it has not renewed successfully for `renew_deadline`, or
  finds another holder in the record, it has lost the Lease: it stops at once and the process exits
  non-zero (`EXIT_LEADERSHIP_LOST`), so the kubelet restarts the pod as a fresh candidate.
- `renew_deadline < lease_duration`, so a leader stops before anybody else may take over.
- On a clean shutdown the leader releases the Lease (empty holder) so a standby takes over at once.

The timing rules are pure functions (`observe`, `may_acquire`, `claim`, `renewal_overdue`), tested
without a cluster. `LeaderElector` runs them against a `LeaseStore`; `KubernetesLeaseStore` is the real
one. Every write is an update guarded by resourceVersion, so two candidates can never both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

LEASE_NAME = "modelfleet-operator"
EXIT_LEADERSHIP_LOST = 3
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

logger = logging.getLogger("modelfleet.leader")


# ---- pure timing logic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How long a Lease lasts, how long a leader keeps trying to renew it, how often it tries (seconds)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if self.retry_period <= 0:
            raise ValueError(f"retry period must be positive, not {self.retry_period}")
        if not self.renew_deadline > self.retry_period:
            raise ValueError(
                f"renew deadline ({self.renew_deadline}s) must be longer than the retry period "
                f"({self.retry_period}s)"
            )
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease duration ({self.lease_duration}s) must be longer than the renew deadline "
                f"({self.renew_deadline}s), or a new leader could start before the old one stops"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec. Times are the holder's wall-clock strings, kept opaque."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True)
class Observation:
    """The last record a candidate saw, and when it first saw it (its own monotonic clock)."""

    record: LeaseRecord
    observed_at: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """Remember `record`; the clock restarts only when the record differs from the one seen before."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def pod_of(identity: str) -> str:
    """The pod part of an identity (`<pod>_<random>`): what all the containers of one pod share."""
    return identity.rsplit("_", 1)[0] if "_" in identity else ""


def may_acquire(
    observation: Observation | None, identity: str, now: float, timing: Timing, *, pod: str = ""
) -> bool:
    """May `identity` write itself as holder? Yes when nobody holds the Lease, when it holds it already,
    when the holder let it expire (no change seen for the record's lease duration), or when the holder
    is an earlier container of this very pod (`pod`, empty outside a pod): the kubelet runs one container
    of a pod at a time, so a restarted container takes its own Lease at once instead of waiting it out."""
    if observation is None:
        return True
    record = observation.record
    if not record.holder or record.holder == identity:
        return True
    if pod and pod_of(record.holder) == pod:
        return True
    duration = record.lease_duration_seconds or timing.lease_duration
    return now >= observation.observed_at + duration


def claim(record: LeaseRecord | None, identity: str, wall_time: str, timing: Timing) -> LeaseRecord:
    """The record that makes `identity` the holder: a renewal when it holds it, else a takeover."""
    duration = max(1, round(timing.lease_duration))
    if record is not None and record.holder == identity:
        return replace(record, lease_duration_seconds=duration, renew_time=wall_time)
    transitions = 0 if record is None else record.transitions + 1  # as client-go counts them
    return LeaseRecord(
        holder=identity,
        lease_duration_seconds=duration,
        acquire_time=wall_time,
        renew_time=wall_time,
        transitions=transitions,
    )


def released(record: LeaseRecord, wall_time: str) -> LeaseRecord:
    """The record a leader writes on a clean shutdown: no holder, so a standby takes over at once."""
    return replace(record, holder="", lease_duration_seconds=1, renew_time=wall_time)


def renewal_overdue(last_renewed: float, now: float, timing: Timing) -> bool:
    """Has the leader gone `renew_deadline` without a successful renewal? Then it must stop."""
    return now - last_renewed >= timing.renew_deadline


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime string, e.g. `2024-05-01T12:00:00.000000Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- the election loop ------------------------------------------------------------------------------


class LeaseConflict(Exception):
    """The Lease changed (or appeared) since it was read: somebody else wrote it first."""


class LeadershipLost(Exception):
    """This process is no longer the leader and must stop acting."""


class LeaseStore(Protocol):
    """Reads and writes one Lease. `update` and `create` raise LeaseConflict when they lose a race."""

    def get(self) -> tuple[LeaseRecord, str] | None:
        """The record and its resourceVersion, or None when the Lease does not exist."""
        ...

    def create(self, record: LeaseRecord) -> str:
        """Create the Lease; returns its resourceVersion."""
        ...

    def update(self, record: LeaseRecord, resource_version: str) -> str:
        """Replace the record if the Lease is still at `resource_version`; returns the new one."""
        ...


class LeaderElector:
    """Acquire, hold and release one Lease on behalf of `identity`.

    `clock` is monotonic seconds, `wall` the time written into the Lease, `sleep` an async sleep: all
    injectable so that the loop can be tested without waiting.
    """

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timing: Timing | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = lambda: micro_time(datetime.now(UTC)),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        same_pod: bool = False,
        create: bool = True,
    ) -> None:
        self.store = store
        self.create = create
        """Create the Lease when it is missing; False when it comes with the installation (the chart
        makes it, in the same release as this operator's Deployment, which may start first)."""
        self.identity = identity
        self.pod = pod_of(identity) if same_pod else ""
        """This candidate's pod, when an earlier container of it may hand its Lease on at once."""
        self.timing = timing or Timing()
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.observation: Observation | None = None
        self.last_renewed: float | None = None
        self._resource_version = ""
        self._record: LeaseRecord | None = None
        self._lock = threading.Lock()  # an attempt still running in its thread never races the release
        self._released = False

    @property
    def leading(self) -> bool:
        return self.last_renewed is not None

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this identity holds the Lease afterwards. API errors count as False."""
        try:
            return await asyncio.to_thread(self._locked_attempt)
        except LeadershipLost:
            self.last_renewed = None
            raise
        except LeaseConflict:
            logger.debug("lease write lost a race; will retry")
        except Exception as exc:  # the API server may be briefly unreachable: the deadline decides
            logger.warning("lease attempt failed: %s", _short(exc))
        return False

    def _locked_attempt(self) -> bool:
        with self._lock:
            if self._released:
                return False
            return self._attempt()

    def _attempt(self) -> bool:
        now = self.clock()
        found = self.store.get()
        if found is None and not self.create:
            return False  # not there yet: whoever installs the operator makes it
        if found is None:
            record = claim(None, self.identity, self.wall(), self.timing)
            self._resource_version = self.store.create(record)
            self._won(record, now)
            return True
        current, resource_version = found
        self.observation = observe(self.observation, current, now)
        if self.leading and current.holder != self.identity:
            raise LeadershipLost(f"the Lease is now held by {current.holder or 'nobody'}")
        if not may_acquire(self.observation, self.identity, now, self.timing, pod=self.pod):
            return False
        record = claim(current, self.identity, self.wall(), self.timing)
        self._resource_version = self.store.update(record, resource_version)
        if current.holder != self.identity:
            earlier = (
                " (an earlier container of this pod)"
                if self.pod and pod_of(current.holder) == self.pod
                else ""
            )
            logger.info("took over the lease from %s%s", current.holder or "nobody", earlier)
        self._won(record, now)
        return True

    def _won(self, record: LeaseRecord, now: float) -> None:
        self._record = record
        self.observation = Observation(record, now)
        self.last_renewed = now

    async def acquire(self) -> None:
        """Wait until this identity holds the Lease."""
        while not await self.try_acquire_or_renew():
            if self.observation is None and not self.create:
                logger.info("waiting for the lease to be created (it comes with the installation)")
            else:
                holder = self.observation.record.holder if self.observation else ""
                logger.info("waiting for the lease (held by %s)", holder or "nobody")
            await self.sleep(self.timing.retry_period)
        logger.info("acquired the lease as %s", self.identity)

    async def hold(self) -> None:
        """Renew until the Lease is lost, then raise LeadershipLost. Call after `acquire`."""
        if self.last_renewed is None:
            raise RuntimeError("hold() before acquire()")
        while True:
            await self.sleep(self.timing.retry_period)
            renewed = await self.try_acquire_or_renew()
            if not renewed and renewal_overdue(self.last_renewed, self.clock(), self.timing):
                self.last_renewed = None
                raise LeadershipLost(
                    f"could not renew the lease for {self.timing.renew_deadline:g}s (renew deadline)"
                )

    def release(self) -> None:
        """Give the Lease up if still held (best effort: it expires anyway)."""
        with self._lock:
            self._released = True
            if self._record is None or self.last_renewed is None:
                return
            self.last_renewed = None
            try:
                self.store.update(released(self._record, self.wall()), self._resource_version)
                logger.info("released the lease")
            except Exception as exc:
                logger.warning("could not release the lease: %s", _short(exc))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# ---- the real Lease, through the Kubernetes API -----------------------------------------------------


class KubernetesLeaseStore:
    """A Lease read and written with the official client; times are passed as strings unchanged."""

    def __init__(self, namespace: str, name: str = LEASE_NAME, request_timeout: float = 5.0) -> None:
        from kubernetes import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        self.api = client.CoordinationV1Api()
        self.exceptions = client.exceptions
        self.namespace = namespace
        self.name = name
        self.timeout = request_timeout
        self._metadata: dict[str, Any] = {}

    def _body(self, record: LeaseRecord, resource_version: str = "") -> dict[str, Any]:
        # An update keeps the metadata last read (labels and annotations of whoever created the Lease,
        # e.g. Helm's), so that only the spec belongs to the election.
        metadata: dict[str, Any] = dict(self._metadata) if resource_version else {}
        metadata.update(name=self.name, namespace=self.namespace)
        if resource_version:
            metadata["resourceVersion"] = resource_version
        else:
            metadata["labels"] = {
                "app.kubernetes.io/name": "modelfleet",
                "app.kubernetes.io/component": "operator",
            }
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.to_spec(),
        }

    def _write(self, call: Callable[..., Any], *args: Any) -> str:
        try:
            response = call(*args, _preload_content=False, _request_timeout=self.timeout)
        except self.exceptions.ApiException as exc:
            # 409: written by somebody else since it was read (or created meanwhile); 404: deleted
            if exc.status in (404, 409):
                raise LeaseConflict(str(exc.reason)) from exc
            raise
        return self._remember(json.loads(response.data))

    def _remember(self, lease: dict[str, Any]) -> str:
        metadata = lease.get("metadata") or {}
        self._metadata = {k: metadata[k] for k in ("labels", "annotations") if metadata.get(k)}
        return str(metadata["resourceVersion"])

    def get(self) -> tuple[LeaseRecord, str] | None:
        try:
            response: Any = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except self.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        lease = json.loads(response.data)
        return LeaseRecord.from_spec(lease.get("spec")), self._remember(lease)

    def create(self, record: LeaseRecord) -> str:
        return self._write(self.api.create_namespaced_lease, self.namespace, self._body(record))

    def update(self, record: LeaseRecord, resource_version: str) -> str:
        return self._write(
            self.api.replace_namespaced_lease,
            self.name,
            self.namespace,
            self._body(record, resource_version),
        )


def default_namespace() -> str:
    """The pod's own namespace when running in a cluster, else `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


def default_identity() -> str:
    """`<pod>_<random>`: the pod's name and UID when running in one (POD_NAME, POD_UID from the downward
    API), else the hostname; the random suffix makes a restarted process a new candidate."""
    pod = os.environ.get("POD_NAME") or socket.gethostname()
    uid = os.environ.get("POD_UID", "").replace("_", "")
    if uid:
        pod = f"{pod}.{uid}"
    return f"{pod}_{uuid.uuid4().hex[:8]}"


def in_a_pod() -> bool:
    """Running as a pod with its own identity (POD_NAME and POD_UID set): only then may a restarted
    container take over the Lease of an earlier container of the same pod."""
    return bool(os.environ.get("POD_NAME") and os.environ.get("POD_UID"))


# ---- running the operator as leader -----------------------------------------------------------------


async def _standby_health(liveness_url: str) -> asyncio.Server | None:
    """While waiting for the Lease, answer the liveness URL with 200 so that the kubelet keeps a standby
    replica alive; closed before kopf binds the same address."""
    if not liveness_url:
        return None
    parts = urlsplit(liveness_url)
    host, port = parts.hostname or "0.0.0.0", parts.port or 80

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = b'{"leader": false}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, port, reuse_address=True)


async def run_as_leader(
    elector: LeaderElector,
    operator: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    *,
    liveness_url: str = "",
) -> int:
    """Acquire the Lease, then run `operator(stop_flag)` while renewing it.

    Returns 0 when the operator stops on its own (e.g. SIGTERM; the Lease is released), and
    EXIT_LEADERSHIP_LOST when the Lease is lost (the operator is cancelled at once).
    """
    standby = await _standby_health(liveness_url)
    try:
        await elector.acquire()
    finally:
        if standby is not None:
            standby.close()
            await standby.wait_closed()
    stop_flag = asyncio.Event()
    running = asyncio.create_task(operator(stop_flag), name="operator")
    holding = asyncio.create_task(elector.hold(), name="lease renewal")
    done, _ = await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding in done:
        exc = holding.exception()
        logger.error("leadership lost, stopping: %s", exc)
        stop_flag.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
        return EXIT_LEADERSHIP_LOST
    holding.cancel()
    with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
        await holding
    await asyncio.to_thread(elector.release)
    running.result()  # an operator crash propagates
    return 0
