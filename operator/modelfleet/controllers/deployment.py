"""The Deployment controller: read, decide, write.

Each modelfleet Deployment has one loop (`modelfleet.controllers.loops`). A reconcile reads the
Deployment, its ModelVersions and Model, the readiness of its versions' pods and its Monitor's recent
measurements, asks the pure `modelfleet.rollout.decide` for the next status and actions, applies the
owned objects (server-side apply), writes the status (only when it changed, and only if the object did
not change since it was read), consumes the manual-control annotations and posts the Events.

The loop is woken by changes of the Deployment (spec or annotations), of its versions' apps/v1
Deployments (pods getting ready), of its ModelVersions and Model, by new Monitor measurements, and
when the decision asks to come back (`requeue_after`: a pause ending, a deadline, a warm version
expiring). Nothing that matters lives in memory: the status is the state machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

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
    Owner,
    build_router_config,
    build_router_configmap,
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_version_deployment,
    build_version_service,
    endpoint,
    owned_selector,
)
from modelfleet.controllers import events, kube
from modelfleet.controllers.loops import Gone, Key, Loops
from modelfleet.registry import servability
from modelfleet.rollout import (
    ConsumeAnnotation,
    EnsureVersion,
    Event,
    MonitorObservation,
    Observation,
    Servability,
    SetTraffic,
    addressed_versions,
    decide,
)
from modelfleet.rollout.observe import (
    MANUAL_ANNOTATIONS,
    deployment_signature,
    gating_monitor,
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
CONFLICT_RETRY_SECONDS = 0.2


def router_image() -> str:
    """The router image: MODELFLEET_ROUTER_IMAGE, else the image this operator ships in."""
    return os.environ.get(ROUTER_IMAGE_VARIABLE, "").strip() or DEFAULT_ROUTER_IMAGE


# --- in-memory caches: lose them and one reconcile rebuilds them ------------------------------------

_interest: dict[Key, frozenset[str]] = {}
"""Names of the ModelVersions (and `model:<name>`) each Deployment depends on, to wake it on change."""
_applied: dict[tuple[str, str, str], tuple[str, str]] = {}
"""Per (namespace, kind, name): the hash of the manifest last applied, and the mark of the object the
apply left behind (`_mark`). An unchanged manifest is not sent again while the object keeps its mark;
an event of the object with another mark is a change this controller did not make (a hand edit, a
deletion): the entry is dropped and the owner reconciled, which applies the manifest again."""
_seen: dict[Key, tuple[Any, ...]] = {}
"""What of each Deployment last woke its loop (uid, generation, annotations, deletion)."""
_owned_seen: dict[Key, tuple[str, int]] = {}
"""What a reconcile reads of each owned apps/v1 Deployment (version, ready pods), by its name."""


def _manifest_key(manifest: kube.Obj) -> tuple[str, str, str]:
    meta = manifest["metadata"]
    return meta["namespace"], f"{manifest['apiVersion']}/{manifest['kind']}", meta["name"]


_cluster_ips: dict[tuple[str, str, str], str] = {}
"""The cluster IP each owned Service got: a Service deleted by somebody else is created again with the
same address, so that clients, routers and DNS caches holding it keep working."""
_lost_services: set[tuple[str, str, str]] = set()
"""Owned Services deleted by somebody else, to be created again at their old cluster IP."""


def _apply(manifest: kube.Obj) -> None:
    key = _manifest_key(manifest)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    known = _applied.get(key)
    if known is not None and known[0] == digest:
        return
    address = _cluster_ips.get(key, "") if key in _lost_services else ""
    _lost_services.discard(key)
    applied: kube.Obj | None = None
    if address:
        try:
            applied = kube.apply({**manifest, "spec": {**manifest["spec"], "clusterIP": address}})
        except (kube.Conflict, kube.ApiError) as error:  # the address was taken meanwhile
            log.warning("%s %s: cluster IP %s not available again: %s", key[1], key[2], address, error)
    if applied is None:
        applied = kube.apply(manifest)
    _applied[key] = (digest, object_mark(applied or {}))
    cluster_ip = ((applied or {}).get("spec") or {}).get("clusterIP")
    if manifest["kind"] == "Service" and cluster_ip and cluster_ip != "None":
        _cluster_ips[key] = str(cluster_ip)


def _forget_applied(namespace: str, api_version: str, kind: str, name: str) -> None:
    key = (namespace, f"{api_version}/{kind}", name)
    _applied.pop(key, None)
    _cluster_ips.pop(key, None)
    _lost_services.discard(key)


def changed_by_others(
    type: str | None, namespace: str, api_version: str, kind: str, body: Mapping[str, Any]
) -> bool:
    """Did an event of an owned object bring a change this controller did not make? A deletion counts,
    and so does a change to an object whose mark differs from the one its last apply left; its own writes
    and status updates do not. An object it has not applied since it started is applied by the next
    reconcile anyway. A change forgets what was applied, so that the next reconcile applies it again."""
    key = (namespace, f"{api_version}/{kind}", str((body.get("metadata") or {}).get("name", "")))
    if type == "DELETED":
        if _applied.pop(key, None) is not None and key in _cluster_ips:
            _lost_services.add(key)
        return True
    known = _applied.get(key)
    if known is None or known[1] == object_mark(body):
        return False
    del _applied[key]
    return True


# --- reading -----------------------------------------------------------------------------------------


def _model_version(namespace: str, name: str) -> ModelVersion | None:
    body = kube.get(MF, "ModelVersion", namespace, name)
    if body is None:
        return None
    try:
        return ModelVersion.from_k8s(body)
    except InvalidResourceError as error:
        log.warning("%s", error)
        return None


def _model(namespace: str, name: str) -> Model | None:
    body = kube.get(MF, "Model", namespace, name)
    if body is None:
        return None
    try:
        return Model.from_k8s(body)
    except InvalidResourceError as error:
        log.warning("%s", error)
        return None


def _monitor(namespace: str, deployment: Deployment) -> MonitorObservation | None:
    """Read the Monitor(s) that may gate the rollout; `gating_monitor` decides which one does."""
    named = deployment.spec.strategy.canary.monitor
    if named:
        body = kube.get(MF, "Monitor", namespace, named)
        bodies = [body] if body is not None else []
    else:
        bodies = [
            m
            for m in kube.list_objects(MF, "Monitor", namespace)
            if (m.get("spec") or {}).get("deployment") == deployment.metadata.name
        ]
    monitors = []
    for body in bodies:
        try:
            monitors.append(Monitor.from_k8s(body))
        except InvalidResourceError as error:
            log.warning("%s", error)
    return gating_monitor(deployment.metadata.name, named or "", monitors)


# --- the reconcile -----------------------------------------------------------------------------------


async def reconcile(namespace: str, name: str) -> float | None:
    started = time.perf_counter()
    try:
        result: float | None = await kube.run(reconcile_sync, namespace, name)
        return result
    finally:
        metrics.RECONCILE_DURATION.labels("deployment").observe(time.perf_counter() - started)


def reconcile_sync(namespace: str, name: str) -> float | None:
    """One read-decide-write cycle. Returns when to come back if nothing changes (seconds)."""
    body = kube.get(MF, "Deployment", namespace, name)
    if body is None:
        raise Gone(f"{namespace}/{name}")
    try:
        deployment = Deployment.from_k8s(body)
    except InvalidResourceError as error:
        log.warning("%s", error)
        return None
    if deployment.metadata.deletion_timestamp is not None:
        return None  # garbage collection removes the owned objects
    spec, status = deployment.spec, deployment.status
    owner = Owner(name=name, namespace=namespace, uid=deployment.metadata.uid)

    wanted = {spec.version, status.stable_version, status.canary_version, status.previous_stable_version}
    versions = {v: _model_version(namespace, v) for v in sorted(wanted - {""})}
    model = _model(namespace, spec.model)
    _interest[(namespace, name)] = frozenset({*versions, f"model:{spec.model}"})
    check = servability(model, versions[spec.version], version_name=spec.version)

    owned = kube.list_objects("apps/v1", "Deployment", namespace, owned_selector(name, COMPONENT_MODEL))
    ready = {version_of(d): ready_replicas(d) for d in owned if version_of(d)}
    annotations = {a for a in MANUAL_ANNOTATIONS if deployment.metadata.annotations.get(a) == "true"}
    observation = Observation(
        generation=deployment.metadata.generation,
        servability=Servability(check.servable, "" if check.servable else check.message),
        ready_replicas=ready,
        annotations=annotations,
        monitor=_monitor(namespace, deployment),
        endpoint=endpoint(name, namespace),
    )
    decision = decide(spec, status, observation, datetime.now(UTC))

    # 1. the owned objects: router, versions in play, the traffic split; versions out of play removed
    for manifest in (
        build_router_service_account(owner),
        build_router_role(owner),
        build_router_role_binding(owner),
        build_router_service(owner),
        build_router_deployment(owner, spec, router_image()),
    ):
        _apply(manifest)
    ensured = {action.version: action.replicas for action in decision.of_type(EnsureVersion)}
    for version, replicas in ensured.items():
        mv = versions.get(version) or _model_version(namespace, version)
        if mv is None:
            log.warning(
                "%s/%s: ModelVersion %s not found, its pods are left as they are", namespace, name, version
            )
            continue
        _apply(build_version_service(owner, version, mv.spec))
        _apply(build_version_deployment(owner, version, mv.spec, replicas))
    for traffic in decision.of_type(SetTraffic):
        in_config = (traffic.stable, traffic.canary, traffic.previous)
        specs = {v: mv.spec for v in in_config if v and (mv := versions.get(v))}
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
            )
        except ValueError as error:
            log.warning("%s/%s: router configuration not changed: %s", namespace, name, error)
            continue
        _apply(build_router_configmap(owner, config))
    _remove_out_of_play(namespace, name, owned, set(ensured), addressed_versions(spec, decision.status))

    # 2. the status, only when it changed and only over the status that was read
    new_status = decision.status.to_k8s()
    if new_status != status.to_k8s():
        try:
            kube.replace_status(
                "Deployment", namespace, name, new_status, deployment.metadata.resource_version
            )
        except kube.Conflict:
            return CONFLICT_RETRY_SECONDS  # changed since read: decide again from what is there now
        old = {(h.version, h.result, h.finished_at) for h in status.history}
        for entry in decision.status.history:
            if (entry.version, entry.result, entry.finished_at) not in old:
                metrics.ROLLOUTS.labels(entry.result.value).inc()

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


def _remove_out_of_play(
    namespace: str, name: str, owned: list[kube.Obj], running: set[str], addressed: frozenset[str]
) -> None:
    """Delete the apps/v1 Deployments of versions no EnsureVersion names, and the Services of versions
    the Deployment no longer names at all (`addressed_versions`): a version's address outlives its pods."""
    services = kube.list_objects("v1", "Service", namespace, owned_selector(name, COMPONENT_MODEL))
    for obj in [*owned, *services]:
        version = version_of(obj)
        keep = running | addressed if obj["kind"] == "Service" else running
        if version and version not in keep:
            meta = obj["metadata"]
            if kube.delete(obj["apiVersion"], obj["kind"], namespace, meta["name"]):
                log.info(
                    "%s/%s: removed %s %s (version %s)", namespace, name, obj["kind"], meta["name"], version
                )
            _forget_applied(namespace, obj["apiVersion"], obj["kind"], meta["name"])


LOOPS = Loops("deployment", reconcile, resync=RESYNC_SECONDS)


def wake(namespace: str, name: str) -> None:
    """Reconcile this Deployment soon (used by the Monitor controller after a new measurement)."""
    LOOPS.wake(namespace, name)


# --- kopf: what wakes the loops ----------------------------------------------------------------------


@kopf.on.startup()
async def _startup(logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    port = metrics.serve_from_environment()
    if port is not None:
        logger.info("operator metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    await LOOPS.stop_all()


@kopf.on.event(kube.GROUP, kube.VERSION, "deployments")
async def _deployment_event(type: str, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    if namespace is None:
        return
    key = (namespace, name)
    if type == "DELETED":
        LOOPS.stop(namespace, name)
        _seen.pop(key, None)
        _interest.pop(key, None)
        return
    signature = deployment_signature(body)
    if _seen.get(key) == signature and key in LOOPS:
        return  # only the status changed: that was this controller's own write
    _seen[key] = signature
    LOOPS.wake(namespace, name)


def _owner_name(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and str(ref.get("apiVersion", "")).startswith(f"{kube.GROUP}/"):
            return str(ref["name"])
    return None


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "modelfleet"})
async def _owned_deployment_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> None:
    if namespace is None:
        return
    edited = changed_by_others(type, namespace, "apps/v1", "Deployment", body)
    if type == "DELETED":
        _owned_seen.pop((namespace, name), None)
    else:
        seen = owned_signature(body)
        if not edited and _owned_seen.get((namespace, name)) == seen:
            return  # nothing a reconcile reads changed: conditions, timestamps, pods not ready yet
        _owned_seen[(namespace, name)] = seen
    owner = _owner_name(body)
    # the initial listing (no type) wakes nobody new: each Deployment's own listing starts its loop
    if owner and (type or (namespace, owner) in LOOPS):
        LOOPS.wake(namespace, owner)


def _owned_object_event(api_version: str, kind: str) -> Any:
    """A handler for one more owned kind: a change that this controller did not make (deleted, edited
    by hand) wakes the owner, whose reconcile applies the object again."""

    async def handler(type: str, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        if namespace is None or not changed_by_others(type, namespace, api_version, kind, body):
            return
        owner = _owner_name(body)
        if owner and (namespace, owner) in LOOPS:
            log.info(
                "%s/%s: %s %s %s; restoring it",
                namespace,
                owner,
                kind,
                body["metadata"]["name"],
                "deleted" if type == "DELETED" else "changed",
            )
            LOOPS.wake(namespace, owner)

    handler.__name__ = handler.__qualname__ = f"_owned_{kind.lower()}_event"
    return handler


_MANAGED = {"app.kubernetes.io/managed-by": "modelfleet"}
for _group, _version, _plural, _kind in (
    ("", "v1", "services", "Service"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
):
    kopf.on.event(_group, _version, _plural, labels=_MANAGED)(
        _owned_object_event(f"{_group}/{_version}" if _group else _version, _kind)
    )


def _wake_interested(namespace: str, interest: str) -> None:
    for key in LOOPS.keys():  # noqa: SIM118 (a copy: waking may add loops)
        if key[0] == namespace and interest in _interest.get(key, frozenset()):
            LOOPS.wake(*key)


@kopf.on.event(kube.GROUP, kube.VERSION, "modelversions")
async def _model_version_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
    if type and namespace:
        _wake_interested(namespace, name)


@kopf.on.event(kube.GROUP, kube.VERSION, "models")
async def _model_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
    if type and namespace:
        _wake_interested(namespace, f"model:{name}")
