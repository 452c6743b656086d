"""MLflow as the registry of record, as pure rules: what a snapshot of an MLflow registered model means for
the ModelVersions mirrored from it, and what the operator writes back to MLflow.

The sync controller reads a `Snapshot` (the registered model's versions, aliases and the runs behind them)
with the MLflow adapter, and calls `plan_sync` with the ModelVersions it finds in the watch cache. The
plan says which ModelVersions to apply (new ones, and approval or retirement changes of existing ones),
what the Model's `status.source` says, and which tags to set or delete on the MLflow versions. Nothing here
talks to MLflow or to the API server.

Names: MLflow version N of the Model `iris` becomes the ModelVersion `iris-vN`, labelled
`modelfleet.io/source=mlflow`. A version deleted in MLflow is never deleted here: it is marked (annotation
`modelfleet.io/mlflow-deleted`), which retires it once nothing serves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from modelfleet.api import (
    Condition,
    Model,
    ModelVersion,
    ModelVersionPhase,
    ProductionResult,
    SourceStatus,
    format_time,
    set_condition,
)
from modelfleet.api.common import ApiModel
from modelfleet.api.modelversion import ARTIFACT_SCHEMES

#: Label on every ModelVersion the sync made, and its value for MLflow.
SOURCE_LABEL = "modelfleet.io/source"
SOURCE_MLFLOW = "mlflow"
#: Annotations of a mirrored version: the registered model and version number it mirrors.
REGISTERED_MODEL_ANNOTATION = "modelfleet.io/mlflow-registered-model"
MLFLOW_VERSION_ANNOTATION = "modelfleet.io/mlflow-version"
#: Set (to the time it was noticed) when the MLflow version no longer exists.
DELETED_ANNOTATION = "modelfleet.io/mlflow-deleted"
#: The field manager of the sync's applies: its fields (approval from the MLflow tag) are its own.
SYNC_FIELD_MANAGER = "modelfleet-mlflow"

#: MLflow tags read: approval, and who approved.
APPROVED_TAG = "modelfleet.io/approved"
APPROVED_BY_TAG = "modelfleet.io/approved-by"
#: MLflow tags written back on each mirrored version.
PHASE_TAG = "modelfleet.io/phase"
DEPLOYMENTS_TAG = "modelfleet.io/deployments"
ROLLBACK_REASON_TAG = "modelfleet.io/rollback-reason"
WRITTEN_TAGS = (PHASE_TAG, DEPLOYMENTS_TAG, ROLLBACK_REASON_TAG)

#: MLflow's run tags for the source code.
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_REPO_TAG = "mlflow.source.git.repoURL"
SOURCE_NAME_TAG = "mlflow.source.name"

#: lastSyncTime of a sync that changed nothing is written at most this often.
SYNC_TIME_REFRESH_SECONDS = 300.0
#: The condition of `status.source`.
SYNCED = "Synced"
#: Bounds of the lineage copied from a run (the CRD's limits).
PARAMS_LIMIT = 100
METRICS_LIMIT = 64
DATASETS_LIMIT = 16
PARAM_VALUE_LIMIT = 256
SIGNATURE_LIMIT = 32768
#: MLflow tag values are at most 5000 characters (MLflow's own limit is larger; keep them readable).
TAG_VALUE_LIMIT = 5000
#: Kubernetes object names are at most 253 characters.
NAME_LIMIT = 253


class SyncReason(StrEnum):
    """The reason of the `Synced` condition."""

    SYNCED = "Synced"
    """The registered model was read and mirrored."""
    UNREACHABLE = "Unreachable"
    """The tracking server did not answer; nothing changed."""
    UNAUTHORIZED = "Unauthorized"
    """The tracking server refused the credentials."""
    NOT_FOUND = "NotFound"
    """The tracking server has no registered model of that name."""
    BAD_RESPONSE = "BadResponse"
    """The tracking server answered something the operator could not read."""
    CREDENTIALS_MISSING = "CredentialsMissing"
    """The credentials Secret does not exist or has none of the expected keys."""
    PARTIAL = "VersionsSkipped"
    """The registered model was mirrored, but some versions could not be (see the message)."""


# --- what the MLflow adapter reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A dataset input of a run."""

    name: str = ""
    digest: str = ""
    source: str = ""
    context: str = ""


@dataclass(frozen=True)
class Run:
    """The training run behind a version: what lineage takes from it."""

    run_id: str
    experiment_id: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[Dataset, ...] = ()


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of the registered model."""

    version: str
    """MLflow's version number, as text ("7")."""
    storage_uri: str
    """Where its files are (the download URI), e.g. s3://mlflow/1/models/m-.../artifacts."""
    status: str = "READY"
    """READY, PENDING_REGISTRATION or FAILED_REGISTRATION."""
    run_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    signature_inputs: str = ""
    signature_outputs: str = ""
    flavors: tuple[str, ...] | None = None
    """The MLmodel file's flavors; None when not read (a version mirrored before), () when the version
    has no MLmodel file."""


#: The flavor every MLflow model that a generic MLflow runtime can serve has.
PYFUNC_FLAVOR = "python_function"


@dataclass(frozen=True)
class Snapshot:
    """The registered model as the tracking server described it in one sync."""

    registered_model: str
    versions: tuple[RegisteredVersion, ...]
    aliases: Mapping[str, str]
    """alias -> version number."""
    runs: Mapping[str, Run] = field(default_factory=dict)
    """run id -> run, for the versions that have one."""


# --- what the sync does ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagChange:
    """A tag to set (value) or delete (value None) on an MLflow version."""

    version: str
    key: str
    value: str | None


@dataclass(frozen=True)
class SyncPlan:
    """What one sync does: ModelVersions to apply, the Model's source status, tags to write back."""

    apply: tuple[dict[str, Any], ...]
    """ModelVersion manifests for server-side apply (field manager SYNC_FIELD_MANAGER)."""
    source: SourceStatus
    tags: tuple[TagChange, ...]
    skipped: Mapping[str, str]
    """version number -> why it is not mirrored (yet)."""


def version_name(model: str, version: str) -> str:
    """The ModelVersion mirroring MLflow version `version` of the Model `model`."""
    return f"{model}-v{version}"


def _importable(version: RegisteredVersion, model: str) -> str:
    """Why the version cannot be mirrored (yet), or ''."""
    if version.status == "PENDING_REGISTRATION":
        return "registration pending in MLflow"
    if version.status == "FAILED_REGISTRATION":
        return "registration failed in MLflow"
    if not version.version.isdigit():
        return f"version {version.version[:40]!r} is not a number"
    if len(version_name(model, version.version)) > NAME_LIMIT:
        return "the ModelVersion name would be longer than 253 characters"
    if version.flavors is not None and PYFUNC_FLAVOR not in version.flavors:
        if not version.flavors:
            return "the version has no MLmodel file: not an MLflow model"
        listed = ", ".join(version.flavors[:5])
        return (
            f"its MLmodel has no {PYFUNC_FLAVOR} flavor ({listed}): no runtime can serve it as format mlflow"
        )
    uri = version.storage_uri
    if not uri:
        return "MLflow gives no storage location"
    if not uri.startswith(ARTIFACT_SCHEMES) or uri.startswith("models:/"):
        scheme = uri.split(":", 1)[0]
        return (
            f"storage location scheme {scheme[:20]}: is not one the fetcher reads (s3://, http(s)://, pvc://):"
            " run the tracking server with an object-store artifact root"
        )
    return ""


def directory_uri(uri: str) -> str:
    """An MLflow model's storage location is a directory (MLmodel and the flavor's files): for the
    fetcher, an s3:// or pvc:// location takes every object under it when it ends with /."""
    if uri.startswith(("s3://", "pvc://")) and not uri.endswith("/"):
        return uri + "/"
    return uri


def run_link(tracking_uri: str, run: Run) -> str:
    """The tracking server's page of the run."""
    base = tracking_uri.rstrip("/")
    if run.experiment_id:
        return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    return f"{base}/#/runs/{run.run_id}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def lineage(tracking_uri: str, version: RegisteredVersion, run: Run | None) -> dict[str, Any]:
    """The `lineage` of a mirrored version, in YAML form (bounded as the CRD says)."""
    out: dict[str, Any] = {}
    if run is not None:
        out["run"] = {"id": run.run_id, "uri": _clip(run_link(tracking_uri, run), 1024)}
        commit, repo = run.tags.get(GIT_COMMIT_TAG, ""), run.tags.get(GIT_REPO_TAG, "")
        if commit or repo:
            source = {"commit": _clip(commit, 256), "repository": _clip(repo, 1024)}
            out["source"] = {k: v for k, v in source.items() if v}
        metrics = {k[:63]: float(v) for k, v in sorted(run.metrics.items())[:METRICS_LIMIT]}
        if metrics:
            out["metrics"] = metrics
        params = {k[:250]: _clip(str(v), PARAM_VALUE_LIMIT) for k, v in sorted(run.params.items())}
        if params:
            out["params"] = dict(list(params.items())[:PARAMS_LIMIT])
        datasets = [
            {
                k: v
                for k, v in {
                    "name": _clip(d.name, 256),
                    "digest": _clip(d.digest, 256),
                    "source": _clip(d.source, 1024),
                    "context": _clip(d.context, 256),
                }.items()
                if v
            }
            for d in run.datasets[:DATASETS_LIMIT]
        ]
        if datasets:
            out["datasets"] = datasets
    elif version.run_id:
        out["run"] = {"id": version.run_id}
    if version.signature_inputs or version.signature_outputs:
        signature = {
            "inputs": _clip(version.signature_inputs, SIGNATURE_LIMIT),
            "outputs": _clip(version.signature_outputs, SIGNATURE_LIMIT),
        }
        out["signature"] = {k: v for k, v in signature.items() if v}
    return out


def approval(version: RegisteredVersion) -> dict[str, Any] | None:
    """The approval the MLflow tags give, or None when they give none."""
    if version.tags.get(APPROVED_TAG, "").strip().lower() != "true":
        return None
    by = version.tags.get(APPROVED_BY_TAG, "").strip()
    out: dict[str, Any] = {"approved": True, "reason": f"MLflow tag {APPROVED_TAG}=true"}
    if by:
        out["by"] = _clip(by, 256)
    return out


def desired_version(
    model: Model, version: RegisteredVersion, run: Run | None, existing: ModelVersion | None, now: datetime
) -> dict[str, Any]:
    """The manifest the sync applies for one MLflow version. Immutable fields (artifact, runtime,
    lineage) are taken from the existing ModelVersion when there is one, so a later change in MLflow
    never asks the API server for a change it refuses."""
    source = model.spec.source.mlflow if model.spec.source is not None else None
    if source is None:
        raise ValueError("the Model has no MLflow source")
    namespace, name = model.metadata.namespace, version_name(model.metadata.name, version.version)
    spec: dict[str, Any]
    if existing is not None:
        spec = {"model": existing.spec.model, "version": existing.spec.version}
        if existing.spec.artifact is not None:
            spec["artifact"] = as_stored(existing.spec.artifact)
        if existing.spec.runtime is not None:
            spec["runtime"] = existing.spec.runtime
        if existing.spec.lineage is not None:
            spec["lineage"] = as_stored(existing.spec.lineage)
    else:
        artifact: dict[str, Any] = {"uri": directory_uri(version.storage_uri), "format": "mlflow"}
        if source.artifact_credentials is not None:
            artifact["credentials"] = {"secretName": source.artifact_credentials.secret_name}
        spec = {"model": model.metadata.name, "version": version.version, "artifact": artifact}
        if source.runtime is not None:
            spec["runtime"] = source.runtime
        found = lineage(source.tracking_uri, version, run)
        if found:
            spec["lineage"] = found
    given = approval(version)
    if given is not None:
        kept = existing.spec.approval if existing is not None else None
        if kept is not None and kept.approved and kept.time is not None and kept.by == given.get("by", ""):
            given["time"] = format_time(kept.time)  # unchanged approval: keep its time, so nothing changes
        else:
            given["time"] = format_time(now)
        spec["approval"] = given
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {SOURCE_LABEL: SOURCE_MLFLOW},
        "annotations": {
            REGISTERED_MODEL_ANNOTATION: source.registered_model,
            MLFLOW_VERSION_ANNOTATION: version.version,
        },
    }
    if version.description:
        metadata["annotations"]["modelfleet.io/description"] = _clip(version.description, 1024)
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": metadata,
        "spec": spec,
    }


def _deleted_manifest(model: Model, existing: ModelVersion, since: str, now: datetime) -> dict[str, Any]:
    """The sync's apply for a version that no longer exists in MLflow: the same immutable fields (an
    apply that left them out would ask to remove them), the mark, and no approval any more (the tag is
    gone with the version)."""
    number = existing.metadata.annotations.get(MLFLOW_VERSION_ANNOTATION, existing.spec.version)
    gone = RegisteredVersion(version=number, storage_uri="")
    manifest = desired_version(model, gone, None, existing, now)
    manifest["metadata"]["annotations"][DELETED_ANNOTATION] = since
    return manifest


def as_stored(value: ApiModel) -> dict[str, Any]:
    """A part of an object as the API server holds it: the fields it was given, no defaults added. An
    immutable field must be applied exactly so (`lineage: {run: ...}` with `datasets: []` added is a
    change the API server refuses)."""
    dumped: dict[str, Any] = value.model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )
    return dumped


def _applied_view(existing: ModelVersion) -> dict[str, Any]:
    """The parts of an existing ModelVersion the sync's manifest sets, to compare with a new manifest."""
    spec = as_stored(existing.spec)
    keep = {"model", "version", "artifact", "runtime", "lineage", "approval"}
    return {
        "labels": {k: v for k, v in existing.metadata.labels.items() if k == SOURCE_LABEL},
        "annotations": dict(existing.metadata.annotations),
        "spec": {k: v for k, v in spec.items() if k in keep},
    }


def _changed(manifest: Mapping[str, Any], existing: ModelVersion | None) -> bool:
    """Whether applying `manifest` would change `existing` (always, when there is none)."""
    if existing is None:
        return True
    view = _applied_view(existing)
    meta = manifest["metadata"]
    if any(view["labels"].get(k) != v for k, v in meta.get("labels", {}).items()):
        return True
    annotations = meta.get("annotations", {})
    if any(view["annotations"].get(k) != v for k, v in annotations.items()):
        return True
    if view["annotations"].get(DELETED_ANNOTATION) and DELETED_ANNOTATION not in annotations:
        return True  # back in MLflow: the mark goes
    wanted = dict(manifest["spec"])
    have = dict(view["spec"])
    if "approval" not in wanted:
        # the sync gives no approval: one made by hand (another field manager) stays; one the sync
        # gave (its reason names the tag) is withdrawn by the apply
        given = have.get("approval") or {}
        if str(given.get("reason", "")).startswith(f"MLflow tag {APPROVED_TAG}"):
            return True
        have.pop("approval", None)
    return wanted != have


def written_tags(version: ModelVersion) -> dict[str, str | None]:
    """The tags the operator keeps on the MLflow version, from the ModelVersion's status: its phase in
    MLflow's words, the Deployments serving it, and why its last rollout was rolled back. None: the tag
    should not be there. The phase comes last, so they are written in that order: whoever reads a
    phase (RolledBack, say) finds the other tags of that moment already there."""
    status = version.status
    history = status.history  # newest first
    last_rollback = next((h for h in history if h.result == ProductionResult.ROLLED_BACK), None)
    last = history[0] if history else None
    phase: str | None
    if status.phase == ModelVersionPhase.SERVING:
        phase = "Serving"
    elif last is not None and last.result == ProductionResult.ROLLED_BACK:
        phase = "RolledBack"
    elif status.phase == ModelVersionPhase.RETIRED:
        phase = "Retired"
    else:
        phase = None
    deployments = ",".join(status.served_by) or None
    reason: str | None = None
    if last_rollback is not None:
        reason = _clip(f"{last_rollback.deployment}: {last_rollback.reason}", TAG_VALUE_LIMIT)
    return {ROLLBACK_REASON_TAG: reason, DEPLOYMENTS_TAG: deployments, PHASE_TAG: phase}


def _source_condition(
    old: Sequence[Condition],
    ok: bool,
    reason: SyncReason,
    message: str,
    now: datetime,
    generation: int | None,
) -> tuple[Condition, ...]:
    return set_condition(
        tuple(old), SYNCED, ok, reason.value, _clip(message, 1024), now=now, observed_generation=generation
    )


def plan_sync(
    model: Model, snapshot: Snapshot, existing: Mapping[str, ModelVersion], now: datetime
) -> SyncPlan:
    """What to do after reading `snapshot`: `existing` holds the Model's ModelVersions (name -> version)."""
    mlflow = model.spec.source.mlflow if model.spec.source is not None else None
    if mlflow is None:
        raise ValueError("the Model has no MLflow source")
    name = model.metadata.name
    applies: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for version in sorted(snapshot.versions, key=lambda v: (len(v.version), v.version)):
        problem = _importable(version, name)
        if problem:
            skipped[version.version] = problem
            continue
        mv_name = version_name(name, version.version)
        seen.add(mv_name)
        have = existing.get(mv_name)
        if have is not None and have.metadata.labels.get(SOURCE_LABEL) != SOURCE_MLFLOW:
            skipped[version.version] = f"ModelVersion {mv_name} exists and was not made by the sync"
            continue
        # a version marked deleted that is back (restored in MLflow) loses the mark: the apply leaves it out
        manifest = desired_version(model, version, snapshot.runs.get(version.run_id), have, now)
        if _changed(manifest, have):
            applies.append(manifest)
    for mv_name, have in sorted(existing.items()):
        if mv_name in seen or have.metadata.labels.get(SOURCE_LABEL) != SOURCE_MLFLOW:
            continue
        if have.metadata.annotations.get(REGISTERED_MODEL_ANNOTATION) != mlflow.registered_model:
            continue
        if have.metadata.annotations.get(DELETED_ANNOTATION):
            continue
        if have.spec.version in skipped:
            continue  # still in MLflow, just not importable now
        applies.append(_deleted_manifest(model, have, format_time(now), now))

    aliases: dict[str, str] = {}
    for alias, number in sorted(snapshot.aliases.items())[:64]:
        aliases[alias] = version_name(name, number)
    tags: list[TagChange] = []
    current = {v.version: v for v in snapshot.versions}
    for _, have in sorted(existing.items()):
        if have.metadata.labels.get(SOURCE_LABEL) != SOURCE_MLFLOW:
            continue
        number = have.metadata.annotations.get(MLFLOW_VERSION_ANNOTATION, have.spec.version)
        registered = current.get(number)
        if registered is None:
            continue
        for key, value in written_tags(have).items():
            if registered.tags.get(key) != value and not (value is None and key not in registered.tags):
                tags.append(TagChange(number, key, value))
    old = model.status.source or SourceStatus()
    if skipped:
        listed = ", ".join(f"{v}: {why}" for v, why in sorted(skipped.items(), key=lambda i: i[0])[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        reason, message = (
            SyncReason.PARTIAL,
            f"{len(skipped)} of {len(snapshot.versions)} versions not mirrored: {listed}{more}",
        )
        ok = True
    else:
        reason, message = (
            SyncReason.SYNCED,
            (
                f"{len(snapshot.versions)} versions of {mlflow.registered_model}"
                f" mirrored from {mlflow.tracking_uri}"
            ),
        )
        ok = True
    conditions = _source_condition(old.conditions, ok, reason, message, now, model.metadata.generation)
    source = SourceStatus(
        last_sync_time=now,
        versions_seen=len(snapshot.versions),
        aliases=aliases,
        conditions=conditions,
    )
    # a sync that found nothing new leaves the status as it is for a while: a write every pollInterval
    # would wake every Deployment of the Model each time
    previous = old.last_sync_time
    unchanged = source.model_copy(update={"last_sync_time": previous}) == old
    if previous is not None and unchanged and (now - previous).total_seconds() < SYNC_TIME_REFRESH_SECONDS:
        source = old
    return SyncPlan(apply=tuple(applies), source=source, tags=tuple(tags), skipped=skipped)


def failed_sync(model: Model, reason: SyncReason, message: str, now: datetime) -> SourceStatus:
    """The source status after a sync that could not read the tracking server: what was known stays
    (aliases, versions seen, last sync time); the condition says why."""
    old = model.status.source or SourceStatus()
    conditions = _source_condition(old.conditions, False, reason, message, now, model.metadata.generation)
    return SourceStatus(
        last_sync_time=old.last_sync_time,
        versions_seen=old.versions_seen,
        aliases=dict(old.aliases),
        conditions=conditions,
    )
