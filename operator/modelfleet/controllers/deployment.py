"""The Deployment controller: read, decide, write.

Each modelfleet Deployment has one loop (`modelfleet.controllers.loops`). A reconcile reads the
Deployment, its ModelVersions and Model, the readiness of its versions' pods and its Monitor's recent
measurements, resolves the version the spec asks for (spec.version, or the Model's alias that
spec.versionFrom follows: `modelfleet.rollout.resolve_target`), asks the pure
`modelfleet.rollout.decide` for the next status and actions, applies the
owned objects (server-side apply), writes the status (only when it changed, and only if the object did
not change since it was read), consumes the manual-control annotations and posts the Events.

The loop is woken by changes of the Deployment (spec or annotations), of its versions' apps/v1
Deployments (pods getting ready), of its ModelVersions and Model (its status too: an alias that
moved), by new Monitor measurements, by a
change somebody else made to an owned object, and when the decision asks to come back (`requeue_after`:
a pause ending, a deadline, a warm version expiring). Nothing that matters lives in memory: the status
is the state machine.

Each Deployment's routers also get the Secret `<name>-router-admin` with their admin token (derived from
the operator's key, `modelfleet.controllers.adminkey`: the same at every reconcile, never read back) and a
NetworkPolicy keeping their admin port to the operator and Prometheus. Neither is needed for a rollout: an
API server that refuses them (RBAC not updated) is logged once and the reconcile goes on. Secrets are not
watched (that would mean reading every Secret of the namespace), so a hand-deleted admin Secret is
applied again when a router refuses the token (`restore_admin_secret`), or by the next operator process.

`DeploymentController` is constructed with its router image, its clock and its loops; what it keeps in
memory (`Applier`: what was applied; which objects each Deployment depends on) is a cache that one
reconcile rebuilds. The operator builds it at start-up (`modelfleet.controllers.main`) and the kopf
handlers below find it in kopf's `memo`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf

from modelfleet import metrics
from modelfleet.api import (
    Deployment,
    InvalidResourceError,
    Model,
    ModelVersion,
    Monitor,
)
from modelfleet.builders import (
    COMPONENT_MODEL,
    DEFAULT_ROUTER_IMAGE,
    PROMETHEUS_PEER,
    Owner,
    RouterAccess,
    build_router_admin_secret,
    build_router_config,
    build_router_configmap,
    build_router_deployment,
    build_router_network_policy,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_version_deployment,
    build_version_service,
    endpoint,
    peers,
    router_admin_secret_name,
    router_admin_token,
    router_name,
)
from modelfleet.builders.artifacts import FetchSettings
from modelfleet.controllers import events, kube, leader
from modelfleet.controllers.cache import Cache, Packed
from modelfleet.controllers.loops import Gone, Key, Loops
from modelfleet.registry import servability
from modelfleet.registry.artifacts import Server, server_of
from modelfleet.rollout import (
    SERVABLE,
    ConsumeAnnotation,
    EnsureVersion,
    Event,
    MonitorObservation,
    Observation,
    Servability,
    SetTraffic,
    addressed_versions,
    decide,
    resolve_target,
)
from modelfleet.rollout.observe import (
    MANUAL_ANNOTATIONS,
    deployment_signature,
    gating_monitor,
    live_matches,
    object_mark,
    owned_signature,
    ready_replicas,
    version_of,
)

log = logging.getLogger("modelfleet.deployment")

MF = f"{kube.GROUP}/{kube.VERSION}"
ROUTER_IMAGE_VARIABLE = "MODELFLEET_ROUTER_IMAGE"
RESYNC_SECONDS = 600.0
"""Without any change, a Deployment is reconciled again this often (a safety net, not the trigger)."""
ADDRESS_WAIT_SECONDS = 5.0
"""A deleted owned Service is created again at its old address if the API server frees it within this."""
CONFLICT_RETRY_SECONDS = 0.2
#: After its own status write, a reconcile that finds the cache still showing the object as it was
#: before the write comes back this soon, rather than decide on it (its write would be refused)...
CACHE_WAIT_SECONDS = 0.1
#: ... for this long at most (a watch that lost the event relists; the resourceVersion check guards).
CACHE_WAIT_LIMIT_SECONDS = 5.0


def fetch_settings_from_environment(image: str) -> FetchSettings:
    """How artifacts are fetched, from the operator's environment (the chart sets it): the fetcher
    image (MODELFLEET_FETCH_IMAGE, else `image`), MODELFLEET_ARTIFACT_MAX_BYTES,
    MODELFLEET_ARTIFACT_TIMEOUT (seconds), MODELFLEET_ARTIFACT_NODE_CACHE (a host path; unset: off) and
    MODELFLEET_ARTIFACT_NODE_CACHE_MAX_BYTES (its size limit; unset: none)."""
    defaults = FetchSettings(image=image)

    def number(variable: str, default: int) -> int:
        text = os.environ.get(variable, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{variable}={text!r} is not a whole number") from None
        if value < 1:
            raise ValueError(f"{variable}={text!r} must be at least 1")
        return value

    max_bytes = number("MODELFLEET_ARTIFACT_MAX_BYTES", defaults.max_bytes)
    return FetchSettings(
        image=os.environ.get("MODELFLEET_FETCH_IMAGE", "").strip() or image,
        max_bytes=max_bytes,
        check_max_bytes=max_bytes,
        timeout_seconds=number("MODELFLEET_ARTIFACT_TIMEOUT", defaults.timeout_seconds),
        node_cache=os.environ.get("MODELFLEET_ARTIFACT_NODE_CACHE", "").strip(),
        node_cache_max_bytes=number("MODELFLEET_ARTIFACT_NODE_CACHE_MAX_BYTES", 0),
    )


def default_router_image() -> str:
    """The router image: MODELFLEET_ROUTER_IMAGE, else the image this operator ships in."""
    return os.environ.get(ROUTER_IMAGE_VARIABLE, "").strip() or DEFAULT_ROUTER_IMAGE


NETWORK_POLICY_VARIABLE = "MODELFLEET_ROUTER_NETWORK_POLICY"


def router_access_from_environment() -> RouterAccess:
    """Who may reach the router pods, from the operator's environment (the chart sets it): the
    operator's namespace (POD_NAMESPACE, else its service account's, else `default`) and
    MODELFLEET_ROUTER_NETWORK_POLICY, the JSON of the chart's routerNetworkPolicy value, e.g.
    `{"enabled": true, "adminFrom": [<NetworkPolicyPeer>...], "trafficFrom": []}` (unset: enabled, the
    admin port open to Prometheus pods, the traffic port to anyone). A malformed value stops the
    operator at start with the reason, rather than every reconcile."""
    namespace = leader.default_namespace()
    text = os.environ.get(NETWORK_POLICY_VARIABLE, "").strip()
    if not text:
        return RouterAccess(operator_namespace=namespace)
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"{NETWORK_POLICY_VARIABLE} is not JSON: {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"{NETWORK_POLICY_VARIABLE} must be a JSON object with enabled, adminFrom, trafficFrom"
        )
    unknown = sorted(set(value) - {"enabled", "adminFrom", "trafficFrom"})
    if unknown:
        raise ValueError(
            f"{NETWORK_POLICY_VARIABLE} has {', '.join(unknown)}: it takes enabled, adminFrom, trafficFrom"
        )
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{NETWORK_POLICY_VARIABLE}: enabled must be true or false")
    return RouterAccess(
        operator_namespace=namespace,
        admin_from=peers(value.get("adminFrom", [dict(PROMETHEUS_PEER)]), "adminFrom"),
        traffic_from=peers(value.get("trafficFrom", []), "trafficFrom"),
        network_policy=enabled,
    )


# --- applying owned objects ------------------------------------------------------------------------

ObjectKey = tuple[str, str, str]
"""(namespace, apiVersion/kind, name) of an owned object."""


def _manifest_key(manifest: kube.Obj) -> ObjectKey:
    """Interned: the applier keeps a key per owned object, tens of thousands of them."""
    meta = manifest["metadata"]
    kind = sys.intern(f"{manifest['apiVersion']}/{manifest['kind']}")
    return sys.intern(meta["namespace"]), kind, meta["name"]


def _manifest_digest(manifest: kube.Obj) -> bytes:
    """What tells one manifest from another in the Applier's memory: 16 bytes of its sha256."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).digest()[:16]


class Applier:
    """Server-side apply of owned objects that sends a manifest only when it changed, and tells the
    controller's own writes from other changes.

    Per object it keeps the hash of the manifest last applied and the mark of what the apply left behind
    (`object_mark`): an event of the object with another mark is a change this controller did not make
    (a hand edit, a deletion), after which the next apply is sent again. It also keeps the cluster IP
    each owned Service got, so that one deleted by somebody else is created again at the same address.
    """

    def __init__(
        self,
        send: Callable[[kube.Obj], kube.Obj] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        address_wait: float = ADDRESS_WAIT_SECONDS,
    ) -> None:
        self.send = send if send is not None else kube.apply
        """The server-side apply itself (`kube.apply`)."""
        self.sleep = sleep
        self.address_wait = address_wait
        """How long a deleted Service's address is asked for again while the API server still holds it."""
        self.applied: dict[ObjectKey, tuple[bytes, str]] = {}
        self.cluster_ips: dict[ObjectKey, str] = {}
        self.lost_services: set[ObjectKey] = set()
        self.live: dict[ObjectKey, Packed] = {}
        """Owned objects seen on the watch and not applied since the operator started, until their first
        apply: one that already holds the manifest is not sent again (a restart re-applies nothing that
        is as it should be, and still repairs what was edited while the operator was down). Packed: at a
        restart this holds every owned object, pod templates and all, until its Deployment's reconcile."""

    def apply(self, manifest: kube.Obj) -> None:
        key = _manifest_key(manifest)
        digest = _manifest_digest(manifest)
        known = self.applied.get(key)
        if known is not None and known[0] == digest:
            return
        packed = self.live.pop(key, None)
        live = packed.unpack() if packed is not None else None
        if known is None and live is not None and live_matches(manifest, live):
            self.applied[key] = (digest, object_mark(live))
            self._remember_address(key, manifest, live)
            return
        address = self.cluster_ips.get(key, "") if key in self.lost_services else ""
        self.lost_services.discard(key)
        applied: kube.Obj | None = None
        if address:
            applied = self._at_address(key, manifest, address)
        if applied is None:
            applied = self.send(manifest)
        self.applied[key] = (digest, object_mark(applied or {}))
        # an event seen while the apply was on its way (the object it created, say) is older than the
        # apply: it must not stand for the live object at a later apply
        self.live.pop(key, None)
        self._remember_address(key, manifest, applied or {})

    def apply_unwatched(self, manifest: kube.Obj, witness: kube.Obj) -> None:
        """Apply an object of a kind the operator does not watch (a Secret: watching Secrets means reading
        every Secret of the namespace), only when its manifest changed since its last apply.

        After a restart nothing is known of it. It is then taken as applied when the live `witness` (a
        watched object that the same reconcile applies after it, and whose manifest tells its content
        apart, e.g. by a fingerprint) already holds the witness's manifest: the operator that applied the
        witness had applied this object first. So a restart sends neither again. A deletion of the object
        itself is not seen; `forget` it when somebody notices (a router refusing the admin token)."""
        key = _manifest_key(manifest)
        digest = _manifest_digest(manifest)
        known = self.applied.get(key)
        if known is not None and known[0] == digest:
            return
        if known is None:
            packed = self.live.get(_manifest_key(witness))
            if packed is not None and live_matches(witness, packed.unpack()):
                self.applied[key] = (digest, "")
                return
        self.send(manifest)
        self.applied[key] = (digest, "")

    def _at_address(self, key: ObjectKey, manifest: kube.Obj, address: str) -> kube.Obj | None:
        """The Service created again at its old address; None when that address is not to be had.

        The API server frees a deleted Service's address a moment after the deletion is seen (its
        IPAddress object goes on its own), so "already allocated" is asked again for a few seconds:
        clients and DNS caches still hold the old address, and a new one would strand them."""
        wanted = {**manifest, "spec": {**manifest["spec"], "clusterIP": address}}
        waited, delay = 0.0, 0.05
        while True:
            try:
                return self.send(wanted)
            except (kube.Conflict, kube.ApiError) as error:
                # an apply is a PATCH: the API server's 422 for a held address comes as a Conflict
                held = "already allocated" in str(error)
                if not held or waited >= self.address_wait:
                    log.warning("%s %s: cluster IP %s not available again: %s", *key[1:], address, error)
                    return None
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.5)

    def _remember_address(self, key: ObjectKey, manifest: kube.Obj, obj: Mapping[str, Any]) -> None:
        cluster_ip = (obj.get("spec") or {}).get("clusterIP")
        if manifest["kind"] == "Service" and cluster_ip and cluster_ip != "None":
            self.cluster_ips[key] = str(cluster_ip)

    def forget(self, namespace: str, api_version: str, kind: str, name: str) -> None:
        """The object was removed on purpose: nothing of it is kept."""
        key = (namespace, f"{api_version}/{kind}", name)
        self.applied.pop(key, None)
        self.cluster_ips.pop(key, None)
        self.lost_services.discard(key)
        self.live.pop(key, None)

    def changed_by_others(
        self, type: str | None, namespace: str, api_version: str, kind: str, body: Mapping[str, Any]
    ) -> bool:
        """Did an event of an owned object bring a change this controller did not make? A deletion
        counts, and so does a change to an object whose mark differs from the one its last apply left;
        its own writes and status updates do not. An object not applied since the operator started is
        compared with its manifest by the next reconcile (`live`). A change forgets what was applied, so
        the next reconcile applies it again."""
        key = (namespace, f"{api_version}/{kind}", str((body.get("metadata") or {}).get("name", "")))
        if type == "DELETED":
            self.live.pop(key, None)
            if self.applied.pop(key, None) is not None and key in self.cluster_ips:
                self.lost_services.add(key)
            return True
        known = self.applied.get(key)
        if known is None:
            meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
            self.live[key] = Packed({**body, "metadata": meta})
            return False
        if known[1] == object_mark(body):
            return False
        del self.applied[key]
        self.live.pop(key, None)
        return True


# --- reading, from the watch caches ----------------------------------------------------------------


def _parse(kind: Any, body: kube.Obj | None) -> Any:
    if body is None:
        return None
    try:
        return kind.from_k8s(body)
    except InvalidResourceError as error:
        log.warning("%s", error)
        return None


def _verified_digest(version: ModelVersion) -> str:
    """The digest the version's artifact check computed, if any (pinned when the spec gives none)."""
    checked = version.status.artifact
    return checked.digest if checked is not None else ""


def _monitor(cache: Cache, namespace: str, deployment: Deployment) -> MonitorObservation | None:
    """The Monitor(s) that may gate the rollout; `gating_monitor` decides which one does."""
    named = deployment.spec.strategy.canary.monitor
    if named:
        found = cache.monitor(namespace, named)
        bodies = [found] if found is not None else []
    else:
        bodies = cache.monitors_of(namespace, deployment.metadata.name)
    monitors = [m for m in (_parse(Monitor, body) for body in bodies) if m is not None]
    return gating_monitor(deployment.metadata.name, named or "", monitors)


# --- the controller ----------------------------------------------------------------------------------


def _owner_name(body: Mapping[str, Any]) -> str | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and str(ref.get("apiVersion", "")).startswith(f"{kube.GROUP}/"):
            return str(ref["name"])
    return None


class LoopsLike(Protocol):
    def __contains__(self, key: Key) -> bool: ...
    def keys(self) -> list[Key]: ...
    def wake(self, namespace: str, name: str) -> None: ...
    def stop(self, namespace: str, name: str) -> None: ...
    async def stop_all(self) -> None: ...


class DeploymentController:
    """Reconciles every modelfleet Deployment on its own loop: observe, decide, apply."""

    def __init__(
        self,
        cache: Cache,
        router_image: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        loops: LoopsLike | None = None,
        fetch: FetchSettings | None = None,
        admin_key: Callable[[], bytes | None] | None = None,
        access: RouterAccess | None = None,
    ) -> None:
        self.cache = cache
        """Where every read comes from: the watch caches; the API server sees only writes."""
        self.router_image = router_image or default_router_image()
        self.fetch = fetch or fetch_settings_from_environment(self.router_image)
        """How artifact versions get their artifact (the fetch init container)."""
        self.admin_key = admin_key or (lambda: None)
        """The operator's key for the routers' admin tokens (`adminkey.AdminKey`); None while it cannot be
        had: then no admin Secret is applied and the routers refuse their admin paths to everyone."""
        self.access = access or router_access_from_environment()
        """Who may reach the router pods: their NetworkPolicy."""
        self.refused_writes: set[tuple[str, str, str]] = set()
        """(namespace, Deployment, kind) of the optional owned objects the API server refused, logged once."""
        self.clock = clock
        self.loops: LoopsLike = loops or Loops("deployment", self.reconcile, resync=RESYNC_SECONDS)
        self.applier = Applier()
        self.interest: dict[Key, frozenset[str]] = {}
        """Names of the ModelVersions (and `model:<name>`) each Deployment depends on, to wake it."""
        self.seen: dict[Key, tuple[Any, ...]] = {}
        """What of each Deployment last woke its loop (`deployment_signature`)."""
        self.owned_seen: dict[Key, tuple[str, int]] = {}
        """What a reconcile reads of each owned apps/v1 Deployment (`owned_signature`), by its name."""
        self.written: dict[Key, tuple[str, float]] = {}
        """Per Deployment whose status this controller just wrote: the resourceVersion it wrote over
        (while the cache still shows it, the write has not reached the cache) and until when to wait."""

    def wake(self, namespace: str, name: str) -> None:
        """Reconcile this Deployment soon (the Monitor controller calls it after a new measurement)."""
        self.loops.wake(namespace, name)

    async def stop(self) -> None:
        await self.loops.stop_all()

    async def reconcile(self, namespace: str, name: str) -> float | None:
        started = time.perf_counter()
        try:
            result: float | None = await kube.run(self.reconcile_sync, namespace, name)
            return result
        finally:
            metrics.RECONCILE_DURATION.labels("deployment").observe(time.perf_counter() - started)

    def reconcile_sync(self, namespace: str, name: str) -> float | None:
        """One observe-decide-apply cycle. Returns when to come back if nothing changes (seconds)."""
        # observe
        body = self.cache.deployment(namespace, name)
        if body is None:
            raise Gone(f"{namespace}/{name}")
        behind = self.written.get((namespace, name))
        if behind is not None:
            if body["metadata"].get("resourceVersion") == behind[0] and time.monotonic() < behind[1]:
                return CACHE_WAIT_SECONDS  # this controller's own write is not in the cache yet
            del self.written[(namespace, name)]
        try:
            deployment = Deployment.from_k8s(body)
        except InvalidResourceError as error:
            log.warning("%s", error)
            return None
        if deployment.metadata.deletion_timestamp is not None:
            return None  # garbage collection removes the owned objects
        status = deployment.status
        owner = Owner(name=name, namespace=namespace, uid=deployment.metadata.uid)

        model: Model | None = _parse(Model, self.cache.model(namespace, deployment.spec.model))
        target = resolve_target(deployment.spec, model)
        # what the rollout, the builders and the addresses read: spec.version is the version it asks for
        spec = target.resolved(deployment.spec)
        asked = spec.version or ""
        fallback = spec.fallback.version or ""
        wanted = {
            asked,
            status.stable_version,
            status.canary_version,
            status.previous_stable_version,
            fallback,
        }
        versions: dict[str, ModelVersion | None] = {
            v: _parse(ModelVersion, self.cache.model_version(namespace, v)) for v in sorted(wanted - {""})
        }
        self.interest[(namespace, name)] = frozenset({*versions, f"model:{spec.model}"})
        runtimes = self.cache.runtimes(namespace)
        # while an alias points nowhere, a rollout under way holds: its canary must stay servable
        checked = asked or status.canary_version
        served = SERVABLE
        if checked:
            check = servability(model, versions[checked], version_name=checked, runtimes=runtimes)
            served = Servability(
                check.servable, "" if check.servable else check.message, pending=check.pending
            )
        fallback_served = SERVABLE
        if fallback:  # kept warm, and routed to, only under the Model's rules like any version
            check = servability(model, versions[fallback], version_name=fallback, runtimes=runtimes)
            fallback_served = Servability(
                check.servable, "" if check.servable else check.message, pending=check.pending
            )
        servers: dict[str, Server] = {}
        for version_name, mv in versions.items():
            if mv is None:
                continue
            resolved = server_of(mv.spec, runtimes, spec.model, _verified_digest(mv))
            if isinstance(resolved, str):
                log.warning("%s/%s: %s: %s", namespace, name, version_name, resolved)
            else:
                servers[version_name] = resolved

        owned = self.cache.owned_deployments(namespace, name, COMPONENT_MODEL)
        ready = {version_of(d): ready_replicas(d) for d in owned if version_of(d)}
        annotations = {a for a in MANUAL_ANNOTATIONS if deployment.metadata.annotations.get(a) == "true"}
        observation = Observation(
            generation=deployment.metadata.generation,
            servability=served,
            fallback=fallback_served,
            target=target,
            ready_replicas=ready,
            annotations=annotations,
            monitor=_monitor(self.cache, namespace, deployment),
            endpoint=endpoint(name, namespace),
        )

        # decide
        decision = decide(spec, status, observation, self.clock())

        # apply: 1. the owned objects: router, versions in play, the traffic split; the rest removed
        key = self.admin_key()
        admin_token = router_admin_token(key, owner) if key is not None else ""
        router = build_router_deployment(owner, spec, self.router_image, admin_token)
        for manifest in (
            build_router_service_account(owner),
            build_router_role(owner),
            build_router_role_binding(owner),
            build_router_service(owner),
        ):
            self.applier.apply(manifest)
        if admin_token:  # before the router pods that mount it
            self._apply_optional(
                owner,
                lambda: self.applier.apply_unwatched(build_router_admin_secret(owner, admin_token), router),
            )
        self.applier.apply(router)
        self._router_network_policy(owner)
        ensured = {action.version: action.replicas for action in decision.of_type(EnsureVersion)}
        for version, replicas in ensured.items():
            server = servers.get(version)
            if server is None:
                mv = _parse(ModelVersion, self.cache.model_version(namespace, version))
                found = (
                    server_of(mv.spec, runtimes, spec.model, _verified_digest(mv)) if mv is not None else None
                )
                if found is None or isinstance(found, str):
                    log.warning(
                        "%s/%s: ModelVersion %s %s, its pods are left as they are",
                        namespace,
                        name,
                        version,
                        "not found" if found is None else f"has no server ({found})",
                    )
                    continue
                server = servers[version] = found
            self.applier.apply(build_version_service(owner, version, server))
            self.applier.apply(build_version_deployment(owner, version, server, replicas, self.fetch))
        for traffic in decision.of_type(SetTraffic):
            in_config = (traffic.stable, traffic.canary, traffic.previous, traffic.fallback)
            specs = {v: servers[v] for v in in_config if v and v in servers}
            routed_fallback = traffic.fallback if traffic.fallback in specs else ""
            try:
                config = build_router_config(
                    owner,
                    spec,
                    specs,
                    stable=traffic.stable,
                    canary=traffic.canary,
                    canary_weight=traffic.canary_weight,
                    mirror_percent=traffic.mirror_percent,
                    previous=traffic.previous if traffic.previous in specs else "",
                    fallback=routed_fallback,
                    fallback_active=traffic.fallback_active
                    and bool(routed_fallback or spec.fallback.response is not None),
                )
            except ValueError as error:
                log.warning("%s/%s: router configuration not changed: %s", namespace, name, error)
                continue
            self.applier.apply(build_router_configmap(owner, config))
        self._remove_out_of_play(
            namespace, name, owned, set(ensured), addressed_versions(spec, decision.status)
        )

        # 2. the status, only when it changed and only over the status that was read
        new_status = decision.status.to_k8s()
        if new_status != status.to_k8s():
            try:
                kube.replace_status(
                    "Deployment", namespace, name, new_status, deployment.metadata.resource_version
                )
                self.written[(namespace, name)] = (
                    deployment.metadata.resource_version,
                    time.monotonic() + CACHE_WAIT_LIMIT_SECONDS,
                )
            except kube.Conflict:
                return CONFLICT_RETRY_SECONDS  # changed since read: decide again from what is there now
            old = {(h.version, h.result, h.finished_at) for h in status.history}
            for entry in decision.status.history:
                if (entry.version, entry.result, entry.finished_at) not in old:
                    metrics.ROLLOUTS.labels(entry.result.value).inc()
        metrics.FALLBACK_ACTIVE.labels(namespace, name).set(1.0 if decision.status.fallback.active else 0.0)

        # 3. annotations acted on, and what happened
        kube.remove_annotations(
            "Deployment", namespace, name, [a.name for a in decision.of_type(ConsumeAnnotation)]
        )
        for event in decision.of_type(Event):
            try:
                events.post(body, event.type, event.reason, event.message)
            except ValueError as error:  # a malformed Event is a bug; it must not stop the rollout
                log.error("%s/%s: event %s not posted: %s", namespace, name, event.reason, error)
        if decision.requeue_after is None:
            return None
        return decision.requeue_after.total_seconds()

    def _apply_optional(self, owner: Owner, apply: Callable[[], None], kind: str = "Secret") -> None:
        """Apply an owned object the rollout does not need (the admin Secret, the NetworkPolicy): a refusal
        (RBAC not updated with the chart, a policy the API server rejects) is logged once per Deployment,
        and the reconcile goes on."""
        try:
            apply()
        except (kube.ApiError, kube.Conflict, kube.NotFound) as error:
            seen = (owner.namespace, owner.name, kind)
            if seen not in self.refused_writes:
                self.refused_writes.add(seen)
                log.warning("%s/%s: router %s not applied: %s", owner.namespace, owner.name, kind, error)
            return
        self.refused_writes.discard((owner.namespace, owner.name, kind))

    def _router_network_policy(self, owner: Owner) -> None:
        """Apply the routers' NetworkPolicy, or, when the operator is told to make none, remove the one an
        earlier run made (seen on the watch)."""
        if self.access.network_policy:
            policy = build_router_network_policy(owner, self.access)
            self._apply_optional(owner, lambda: self.applier.apply(policy), "NetworkPolicy")
            return
        key = (owner.namespace, "networking.k8s.io/v1/NetworkPolicy", router_name(owner.name))
        if key in self.applier.live or key in self.applier.applied:
            kube.delete("networking.k8s.io/v1", "NetworkPolicy", owner.namespace, router_name(owner.name))
            self.applier.forget(
                owner.namespace, "networking.k8s.io/v1", "NetworkPolicy", router_name(owner.name)
            )

    def restore_admin_secret(self, namespace: str, name: str) -> None:
        """A router of this Deployment refused the admin token (its Secret deleted or edited by hand, which
        the operator does not watch): apply the Secret again at the next reconcile, now."""
        self.applier.forget(namespace, "v1", "Secret", router_admin_secret_name(name))
        if (namespace, name) in self.loops:
            self.loops.wake(namespace, name)

    def _remove_out_of_play(
        self, namespace: str, name: str, owned: list[kube.Obj], running: set[str], addressed: frozenset[str]
    ) -> None:
        """Delete the apps/v1 Deployments of versions no EnsureVersion names, and the Services of versions
        the Deployment no longer names at all (`addressed_versions`): a version's address outlives its
        pods."""
        services = self.cache.owned_services(namespace, name, COMPONENT_MODEL)
        for obj in [*owned, *services]:
            version = version_of(obj)
            keep = running | addressed if obj["kind"] == "Service" else running
            if version and version not in keep:
                meta = obj["metadata"]
                if kube.delete(obj["apiVersion"], obj["kind"], namespace, meta["name"]):
                    log.info(
                        "%s/%s: removed %s %s (version %s)",
                        namespace,
                        name,
                        obj["kind"],
                        meta["name"],
                        version,
                    )
                self.applier.forget(namespace, obj["apiVersion"], obj["kind"], meta["name"])

    # what wakes the loops ------------------------------------------------------------------------------

    def on_deployment(self, type: str, body: Mapping[str, Any], namespace: str, name: str) -> None:
        key = (namespace, name)
        if type == "DELETED":
            self.loops.stop(namespace, name)
            self.seen.pop(key, None)
            self.interest.pop(key, None)
            self.written.pop(key, None)
            metrics.forget_deployment(namespace, name)
            # garbage collection removes the admin Secret; no watch event says so (Secrets are not watched)
            self.applier.forget(namespace, "v1", "Secret", router_admin_secret_name(name))
            self.refused_writes -= {(namespace, name, kind) for kind in ("Secret", "NetworkPolicy")}
            return
        signature = deployment_signature(body)
        if self.seen.get(key) == signature and key in self.loops:
            return  # only the status changed: that was this controller's own write
        self.seen[key] = signature
        self.loops.wake(namespace, name)

    def on_owned_deployment(self, type: str, body: Mapping[str, Any], namespace: str, name: str) -> None:
        edited = self.applier.changed_by_others(type, namespace, "apps/v1", "Deployment", body)
        if type == "DELETED":
            self.owned_seen.pop((namespace, name), None)
        else:
            seen = owned_signature(body)
            if not edited and self.owned_seen.get((namespace, name)) == seen:
                return  # nothing a reconcile reads changed: conditions, timestamps, pods not ready yet
            self.owned_seen[(namespace, name)] = seen
        owner = _owner_name(body)
        # the initial listing (no type) wakes nobody new: each Deployment's own listing starts its loop
        if owner and (type or (namespace, owner) in self.loops):
            self.loops.wake(namespace, owner)

    def on_owned_object(
        self, type: str, body: Mapping[str, Any], namespace: str, api_version: str, kind: str
    ) -> None:
        """A change this controller did not make to an owned object (deleted, edited by hand) wakes the
        owner, whose reconcile applies the object again."""
        if not self.applier.changed_by_others(type, namespace, api_version, kind, body):
            return
        owner = _owner_name(body)
        if owner and (namespace, owner) in self.loops:
            what = "deleted" if type == "DELETED" else "changed"
            log.info("%s/%s: %s %s %s; restoring it", namespace, owner, kind, body["metadata"]["name"], what)
            self.loops.wake(namespace, owner)

    def on_runtime(self, namespace: str | None) -> None:
        """A Runtime (of `namespace`) or a ClusterRuntime (None) changed: wake the Deployments that may
        use it, which apply their pods' template again."""
        for key in self.loops.keys():  # noqa: SIM118 (a copy: waking may add loops)
            if namespace is None or key[0] == namespace:
                self.loops.wake(*key)

    def on_dependency(self, namespace: str, interest: str) -> None:
        """A ModelVersion (`name`) or a Model (`model:<name>`) changed: wake the Deployments using it."""
        for key in self.loops.keys():  # noqa: SIM118 (a copy: waking may add loops)
            if key[0] == namespace and interest in self.interest.get(key, frozenset()):
                self.loops.wake(*key)


# --- kopf --------------------------------------------------------------------------------------------


@kopf.on.startup()
async def _startup(logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    port = metrics.serve_from_environment()
    if port is not None:
        logger.info("operator metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: DeploymentController | None = getattr(memo, "deployments", None)
    if controller is not None:
        await controller.stop()


@kopf.on.event(kube.GROUP, kube.VERSION, "deployments")
async def _deployment_event(
    type: str, body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    if namespace is not None:
        memo.deployments.on_deployment(type, body, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "modelfleet"})
async def _owned_deployment_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if namespace is not None:
        memo.deployments.on_owned_deployment(type, body, namespace, name)


def _owned_object_event(api_version: str, kind: str) -> Any:
    async def handler(type: str, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
        if namespace is not None:
            memo.deployments.on_owned_object(type, body, namespace, api_version, kind)

    handler.__name__ = handler.__qualname__ = f"_owned_{kind.lower()}_event"
    return handler


_MANAGED = {"app.kubernetes.io/managed-by": "modelfleet"}
for _group, _version, _plural, _kind in (
    ("", "v1", "services", "Service"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
):
    kopf.on.event(_group, _version, _plural, labels=_MANAGED)(
        _owned_object_event(f"{_group}/{_version}" if _group else _version, _kind)
    )


@kopf.on.event(kube.GROUP, kube.VERSION, "modelversions")
async def _model_version_event(
    type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    if type and namespace:
        memo.deployments.on_dependency(namespace, name)


@kopf.on.event(kube.GROUP, kube.VERSION, "models")
async def _model_event(type: str, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    if type and namespace:
        memo.deployments.on_dependency(namespace, f"model:{name}")


@kopf.on.event(kube.GROUP, kube.VERSION, "runtimes")
async def _runtime_event(type: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type and namespace:
        memo.deployments.on_runtime(namespace)


@kopf.on.event(kube.GROUP, kube.VERSION, "clusterruntimes")
async def _cluster_runtime_event(type: str, memo: kopf.Memo, **_: Any) -> None:
    if type:
        memo.deployments.on_runtime(None)
