"""What the Deployment controller reads of the cluster, turned into the rollout's terms: pure functions
of plain objects (the dicts the API server returns), so that each rule is tested without a cluster.

- `resolve_target`: which ModelVersion the spec asks for (spec.version, or what versionFrom's alias
  points at), and why none when it points nowhere.
- `ready_replicas`: which pods of a version count as ready.
- `gating_monitor`: which Monitor gates a Deployment's rollout, and what the rollout sees of it.
- `deployment_signature`, `owned_signature`, `object_mark`: which changes of a Deployment and of the
  objects it owns wake its loop, and which are only its own writes or status churn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelfleet.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    DeploymentSpec,
    Model,
    Monitor,
)
from modelfleet.builders import VERSION_ANNOTATION
from modelfleet.rollout.types import MonitorObservation, Target

MANUAL_ANNOTATIONS = (PROMOTE_ANNOTATION, ABORT_ANNOTATION, RETRY_ANNOTATION)


def resolve_target(spec: DeploymentSpec, model: Model | None) -> Target:
    """The ModelVersion the Deployment's spec asks for. spec.version is taken as named; an alias
    (versionFrom.mlflowAlias) is looked up in `model`'s status.source.aliases, which its MLflow sync
    writes. When the alias resolves to none, the target has no version and says why: the Model is
    missing or not synced yet (pending: that may change on its own), has no MLflow source, or the alias
    points at no version."""
    if spec.version is not None:
        return Target(spec.version)
    alias = spec.alias
    if model is None:
        return Target(reason=f"alias {alias} unknown: Model {spec.model} not found", pending=True)
    if model.spec.source is None or model.spec.source.mlflow is None:
        return Target(reason=f"alias {alias} unknown: Model {spec.model} has no MLflow source")
    source = model.status.source
    version = source.aliases.get(alias, "") if source is not None else ""
    if version:
        return Target(version)
    if source is None or source.last_sync_time is None:
        return Target(
            reason=f"alias {alias} unknown: Model {spec.model} has not synced with MLflow yet", pending=True
        )
    return Target(reason=f"alias {alias} of Model {spec.model} points at no version")


def version_of(obj: Mapping[str, Any]) -> str:
    """The version an owned object belongs to (its `modelfleet.io/version` annotation), or ''."""
    return str((obj.get("metadata") or {}).get("annotations", {}).get(VERSION_ANNOTATION, ""))


def ready_replicas(apps_deployment: Mapping[str, Any]) -> int:
    """Ready pods of an apps/v1 Deployment that run its current template: during a rolling update, pods
    of the old template do not count once the Deployment controller has seen the new one."""
    status = apps_deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    generation = int((apps_deployment.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) >= generation:
        ready = min(ready, int(status.get("updatedReplicas") or 0))
    return ready


def gating_monitor(deployment: str, named: str, monitors: Sequence[Monitor]) -> MonitorObservation | None:
    """The Monitor that gates `deployment`'s rollout: the one its strategy names (`named`), else the
    first by name of those that watch it; None when there is none. A named Monitor that watches another
    Deployment never passes (no measurements): the rollout holds, it never goes ungated."""
    if named:
        chosen = next((m for m in monitors if m.metadata.name == named), None)
    else:
        chosen = min(
            (m for m in monitors if m.spec.deployment == deployment),
            key=lambda m: m.metadata.name,
            default=None,
        )
    if chosen is None:
        return None
    if chosen.spec.deployment != deployment:
        return MonitorObservation.of(chosen.metadata.name, chosen.spec, ())
    measurements = chosen.status.measurements
    if not measurements and chosen.status.last_measurement is not None:
        measurements = (chosen.status.last_measurement,)
    return MonitorObservation.of(chosen.metadata.name, chosen.spec, measurements)


def deployment_signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Deployment wakes its loop: identity, spec (generation), the manual-control annotations
    and deletion. Its status is not in it: status changes are the controller's own writes."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        tuple(annotations.get(a) for a in MANUAL_ANNOTATIONS),
        meta.get("deletionTimestamp"),
    )


def owned_signature(apps_deployment: Mapping[str, Any]) -> tuple[str, int]:
    """What a reconcile reads of an owned apps/v1 Deployment: its version and its ready pods. Other
    status churn (conditions, timestamps, pods not ready yet) wakes nobody."""
    return version_of(apps_deployment), ready_replicas(apps_deployment)


def live_matches(manifest: Any, live: Any) -> bool:
    """Does the live object already hold every field of the manifest, with the same values? The API
    server adds defaults and other writers' fields, so the live object is a superset of what was applied;
    lists must match item by item. A value it normalised (a quantity written another way) reads as a
    mismatch, which only costs one apply."""
    if isinstance(manifest, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and live_matches(value, live[key]) for key, value in manifest.items()
        )
    if isinstance(manifest, list):
        return (
            isinstance(live, list)
            and len(manifest) == len(live)
            and all(live_matches(want, have) for want, have in zip(manifest, live, strict=True))
        )
    return bool(manifest == live and type(manifest) is type(live))


def object_mark(obj: Mapping[str, Any]) -> str:
    """What changes when an object's desired state changes: the generation of objects that have one
    (apps/v1 Deployments: status updates leave it alone), else the resourceVersion. An event of an owned
    object whose mark differs from the one the controller's last apply left is somebody else's change."""
    meta = obj.get("metadata") or {}
    if meta.get("generation"):
        return f"g{meta['generation']}"
    return f"r{meta.get('resourceVersion', '')}"
