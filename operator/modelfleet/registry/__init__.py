"""The registry's rules as pure functions: may a ModelVersion take traffic, and what the status of a
ModelVersion and of its Model say.

No Kubernetes client, no kopf: the controllers read the objects, call these, and write the result.
`servability` is the one check every controller uses: the registry controller to set a version's
`Ready` condition, the Deployment controller to decide whether it may roll a version out. A version's
production record (`status.history`) is kept by the rules in `modelfleet.registry.history`.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Literal, NamedTuple

from modelfleet.api import (
    ArtifactStatus,
    Condition,
    ConditionStatus,
    DeploymentStatus,
    Model,
    ModelStatus,
    ModelVersion,
    ModelVersionPhase,
    ModelVersionStatus,
    SourceStatus,
    get_condition,
    set_condition,
)
from modelfleet.registry.artifacts import CheckOutcome, Runtimes, choose_runtime
from modelfleet.registry.history import (
    DeploymentRecord,
    Mark,
    mark_changes,
    outcome_text,
    production_record,
    record_marks,
)
from modelfleet.registry.mlflow import DELETED_ANNOTATION

#: The condition of an artifact version that records the operator's check of its artifact.
ARTIFACT_VERIFIED = "ArtifactVerified"

#: Status lists (`versions`, `servingVersions`, `servedBy`) hold at most this many names (CRD maxItems).
STATUS_LIST_LIMIT = 1000
#: Status messages are at most this long (CRD maxLength of `status.message`).
MESSAGE_LIMIT = 1024


class Reason(StrEnum):
    """Why a version may or may not take traffic; also the reason of its `Ready` condition."""

    SERVABLE = "Servable"
    """It meets its Model's rules."""
    VERSION_NOT_FOUND = "VersionNotFound"
    """No ModelVersion of that name exists."""
    MODEL_NOT_FOUND = "ModelNotFound"
    """The Model it names does not exist."""
    MODEL_MISMATCH = "ModelMismatch"
    """It is a version of another Model than the one the Deployment serves."""
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    """Its image starts with none of the Model's `allowedImages`."""
    APPROVAL_REQUIRED = "ApprovalRequired"
    """The Model requires approval and the version is not approved."""
    DIGEST_REQUIRED = "DigestRequired"
    """The Model requires artifact digests and the version gives none."""
    NO_RUNTIME = "NoRuntime"
    """No runtime serves the artifact's format (or the named runtime does not exist or serve it)."""
    DELETED_AT_SOURCE = "DeletedAtSource"
    """The registry of record (MLflow) no longer has the version: it is not rolled out again."""
    ARTIFACT_VERIFYING = "ArtifactVerifying"
    """The artifact has not been checked yet: the version waits, it is not refused."""
    ARTIFACT_UNREACHABLE = "ArtifactUnreachable"
    """The check could not read the artifact (store down, wrong credentials, no such object)."""
    DIGEST_MISMATCH = "DigestMismatch"
    """The artifact's content does not match artifact.digest."""
    ARTIFACT_TOO_LARGE = "ArtifactTooLarge"
    """The artifact is over the size limit."""
    FETCH_TIMEOUT = "FetchTimeout"
    """The check did not finish reading the artifact in time."""
    UNSUPPORTED_SCHEME = "UnsupportedScheme"
    """The artifact's URI scheme is not one the fetcher reads (yet)."""
    INVALID_ARTIFACT = "InvalidArtifact"
    """The artifact is not what its URI says (an empty prefix, say)."""
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    """The Secret named by artifact.credentials does not exist or lacks a key."""
    ARTIFACT_CHECK_FAILED = "ArtifactCheckFailed"
    """The check itself failed (its pod did not run or said nothing)."""


class Servability(NamedTuple):
    """The answer of `servability`: may the version take traffic, and if not, why."""

    servable: bool
    reason: Reason
    """CamelCase, for conditions and events."""
    message: str
    """One short sentence for people, naming the objects and the rule."""

    @property
    def pending(self) -> bool:
        """Not servable yet, but not refused: the version waits for something (its artifact check)."""
        return self.reason in (Reason.ARTIFACT_VERIFYING, Reason.MODEL_NOT_FOUND)


def _names(items: Sequence[str], limit: int = 5) -> str:
    """`a, b, c` or `a, b, c and 7 more`."""
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def servability(
    model: Model | None,
    version: ModelVersion | None,
    *,
    version_name: str = "",
    runtimes: Runtimes | None = None,
    conditions: Sequence[Condition] | None = None,
) -> Servability:
    """May `version` take traffic under `model`'s governance?

    Pass the Model the caller serves (a Deployment's `spec.model`) or, for the version's own status,
    the Model the version names; None when it does not exist. `version_name` names a version that
    could not be found, for the message. For an artifact version, `runtimes` are those it may use
    (none when not given) and its artifact check is read from `conditions` (default: its status's).
    When several rules are broken, `reason` is the first of ModelNotFound, ModelMismatch,
    DigestRequired, NoRuntime, ImageNotAllowed, the artifact check's, ApprovalRequired and `message`
    lists them all.
    """
    if version is None:
        name = version_name or "(unnamed)"
        return Servability(False, Reason.VERSION_NOT_FOUND, f"ModelVersion {name} not found")
    name = version.metadata.name or version_name or "(unnamed)"
    if model is None:
        return Servability(
            False, Reason.MODEL_NOT_FOUND, f"ModelVersion {name}: Model {version.spec.model} not found"
        )
    if version.spec.model != model.metadata.name:
        return Servability(
            False,
            Reason.MODEL_MISMATCH,
            f"ModelVersion {name} is a version of Model {version.spec.model}, not {model.metadata.name}",
        )
    problems: list[tuple[Reason, str]] = []
    governance = model.spec.governance
    spec = version.spec
    image, whose = spec.image or "", "image"
    if spec.artifact is not None:
        if governance.require_digest and not spec.artifact.digest:
            problems.append(
                (
                    Reason.DIGEST_REQUIRED,
                    f"Model {model.metadata.name} requires artifact digests"
                    " and spec.artifact.digest is empty",
                )
            )
        choice = choose_runtime(spec, runtimes or Runtimes())
        if isinstance(choice, str):
            problems.append((Reason.NO_RUNTIME, choice))
        else:
            image, whose = choice.spec.image, f"the image of {choice.ref}"
    if image and not governance.image_allowed(image):
        problems.append(
            (
                Reason.IMAGE_NOT_ALLOWED,
                f"{whose} {image} is not in allowedImages of Model {model.metadata.name}"
                f" ({_names(governance.allowed_images, 3)})",
            )
        )
    if spec.artifact is not None:
        checks = version.status.conditions if conditions is None else conditions
        checked = get_condition(checks, ARTIFACT_VERIFIED)
        if checked is not None and checked.status == ConditionStatus.FALSE:
            known = {r.value for r in Reason}
            reason = Reason(checked.reason) if checked.reason in known else Reason.ARTIFACT_CHECK_FAILED
            problems.append((reason, checked.message or f"artifact check failed: {checked.reason}"))
        elif (checked is None or checked.status != ConditionStatus.TRUE) and not problems:
            problems.append((Reason.ARTIFACT_VERIFYING, f"artifact {spec.artifact.uri} not checked yet"))
    approval_problem = _approval_problem(model, version)
    if approval_problem:
        problems.append((Reason.APPROVAL_REQUIRED, approval_problem))
    deleted = version.metadata.annotations.get(DELETED_ANNOTATION, "")
    if deleted:
        problems.insert(0, (Reason.DELETED_AT_SOURCE, f"deleted in MLflow (noticed {deleted})"))
    if problems:
        text = f"ModelVersion {name}: " + "; ".join(message for _, message in problems)
        return Servability(False, problems[0][0], _clip(text))
    return Servability(
        True, Reason.SERVABLE, f"ModelVersion {name} meets the rules of Model {model.metadata.name}"
    )


def _approval_problem(model: Model, version: ModelVersion) -> str:
    """Why the version lacks a required approval; empty when it needs none or has one."""
    approval = version.spec.approval
    if not model.spec.governance.require_approval or (approval is not None and approval.approved):
        return ""
    if approval is not None and approval.by:
        return f"not approved (refused by {approval.by}" + (
            f": {approval.reason})" if approval.reason else ")"
        )
    return f"Model {model.metadata.name} requires approval and spec.approval.approved is not true"


# --- who serves what -------------------------------------------------------------------------------


def served_versions(status: DeploymentStatus) -> frozenset[str]:
    """The versions a Deployment sends live traffic to: its stable version, its canary at weight > 0, and
    its fallback version while the fallback serves the stable version's traffic."""
    versions = {status.stable_version} if status.stable_version else set()
    if status.canary_version and status.canary_weight > 0:
        versions.add(status.canary_version)
    if status.fallback.active and status.fallback.version:
        versions.add(status.fallback.version)
    return frozenset(versions)


Served = tuple[str, frozenset[str]]
"""What one Deployment serves: (its Model, the versions taking its traffic)."""


def served_changes(old: Served | None, new: Served | None) -> tuple[set[str], set[str]]:
    """(Models, versions) whose serving changed between two observations of one Deployment.

    None is a Deployment not seen before, or deleted. When the Deployment's Model changes, both
    Models and all versions concerned are named; otherwise only versions that started or stopped.
    """
    old_model, old_versions = old or ("", frozenset())
    new_model, new_versions = new or ("", frozenset())
    if old_model == new_model and old_versions == new_versions:
        return set(), set()
    models = {m for m in (old_model, new_model) if m}
    versions = old_versions ^ new_versions if old_model == new_model else old_versions | new_versions
    return models, set(versions)


class Observed(NamedTuple):
    """What the registry takes from one Deployment's status, to tell which events concern it."""

    model: str
    served: frozenset[str]
    """The versions taking its traffic."""
    marks: Mapping[str, Mark]
    """Version -> the mark of its record there (see `modelfleet.registry.history.record_marks`)."""


def observe(model: str, status: DeploymentStatus) -> Observed:
    """What the registry takes from a Deployment of `model` with this status."""
    return Observed(model, served_versions(status), record_marks(status))


def observed_changes(old: Observed | None, new: Observed | None) -> tuple[set[str], set[str]]:
    """(Models, versions) to reconcile between two observations of one Deployment (None: not seen
    before, or deleted): those whose serving changed (`served_changes`), and the versions whose record
    there may have changed (a new history entry naming them, stable no more or again)."""
    models, versions = served_changes(
        (old.model, old.served) if old is not None else None,
        (new.model, new.served) if new is not None else None,
    )
    marks = mark_changes(old.marks if old is not None else {}, new.marks if new is not None else {})
    return models, versions | marks


def serving_deployments(version: str, serving: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """Sorted names of the Deployments whose served versions (`serving`: Deployment -> versions) hold it."""
    return tuple(sorted(d for d, versions in serving.items() if version in versions))


# --- ModelVersion status ---------------------------------------------------------------------------


def version_status(
    model: Model | None,
    version: ModelVersion,
    served_by: Iterable[str],
    *,
    now: datetime,
    runtimes: Runtimes | None = None,
    check_started: bool = False,
    outcome: CheckOutcome | None = None,
    records: Iterable[DeploymentRecord] = (),
    present: Container[str] | None = None,
) -> ModelVersionStatus:
    """The whole new status of `version`, given its Model (None: not found) and the Deployments serving it.

    For an artifact version, `check_started` says a check of its artifact started now and `outcome` is
    what a finished check found (None: nothing new); the `ArtifactVerified` condition and
    `status.artifact` keep what the checks found. `records` are what the Deployments' statuses say of
    the version (one per Deployment naming it), merged into its production record (`status.history`,
    see `modelfleet.registry.history.production_record`; `present` holds the Deployments that exist,
    None when that is not known).

    Phase: Pending while the Model does not exist or the artifact is not checked yet; Rejected when
    it breaks the Model's rules or its artifact failed its check; else
    Serving when some Deployment serves it, Retired when it was Serving at the last evaluation and no
    longer is (a Retired version stays Retired until served again), Ready otherwise. A Ready or Retired
    version with a production record says its newest entry in words (`rolled back in iris: errors 0.31
    > 0.05`). Conditions keep their lastTransitionTime unless their status changes.
    """
    old = version.status
    generation = version.metadata.generation
    conditions: tuple[Condition, ...] = tuple(old.conditions)
    artifact = _artifact_status(version, runtimes, check_started, outcome, now)
    if outcome is not None:
        conditions = set_condition(
            conditions,
            ARTIFACT_VERIFIED,
            outcome.ok,
            outcome.reason.value,
            _clip(outcome.message or ("artifact verified" if outcome.ok else outcome.reason.value)),
            now=now,
            observed_generation=generation,
        )
    check = servability(model, version, runtimes=runtimes, conditions=conditions)
    serving = tuple(sorted(set(served_by)))[:STATUS_LIST_LIMIT]
    history = production_record(
        old.history, records, now=now, present=present, served_before=old.served_by, served_now=serving
    )
    latest = outcome_text(history[0]) if history else ""

    if check.reason == Reason.DELETED_AT_SOURCE:
        # never removed, and what serves keeps serving; retired once nothing serves it
        phase = ModelVersionPhase.SERVING if serving else ModelVersionPhase.RETIRED
        where = f"serving in Deployment {_names(serving)}; " if serving else ""
        ready = (ConditionStatus.FALSE, check.reason.value, f"{where}{check.message}: not rolled out again")
    elif not check.servable:
        phase = ModelVersionPhase.PENDING if check.pending else ModelVersionPhase.REJECTED
        ready = (ConditionStatus.FALSE, check.reason.value, check.message)
    elif serving:
        phase = ModelVersionPhase.SERVING
        ready = (ConditionStatus.TRUE, "Serving", f"serving in Deployment {_names(serving)}")
    elif old.phase in (ModelVersionPhase.SERVING, ModelVersionPhase.RETIRED):
        phase = ModelVersionPhase.RETIRED
        ready = (
            ConditionStatus.TRUE,
            "Retired",
            latest or "served before, no Deployment serves it now; it may be rolled out again",
        )
    else:
        phase = ModelVersionPhase.READY
        ready = (
            ConditionStatus.TRUE,
            Reason.SERVABLE.value,
            latest or f"{check.message}; it may be rolled out",
        )

    approved = _approved_condition(model, version)
    conditions = set_condition(
        conditions, "Ready", ready[0], ready[1], _clip(ready[2]), now=now, observed_generation=generation
    )
    conditions = set_condition(
        conditions,
        "Approved",
        approved[0],
        approved[1],
        _clip(approved[2]),
        now=now,
        observed_generation=generation,
    )
    return ModelVersionStatus(
        observed_generation=generation,
        phase=phase,
        served_by=serving,
        message=_clip(ready[2]),
        artifact=artifact,
        history=history,
        conditions=conditions,
    )


def _artifact_status(
    version: ModelVersion,
    runtimes: Runtimes | None,
    check_started: bool,
    outcome: CheckOutcome | None,
    now: datetime,
) -> ArtifactStatus | None:
    spec = version.spec
    if spec.artifact is None:
        return None
    old = version.status.artifact or ArtifactStatus()
    choice = choose_runtime(spec, runtimes or Runtimes())
    values = old.model_dump()
    values["runtime"] = "" if isinstance(choice, str) else choice.ref
    if check_started:
        values["checks"] = old.checks + 1
        values["last_check_at"] = now
    if outcome is not None and outcome.ok:
        values.update(size=outcome.size, files=outcome.files, digest=outcome.digest, verified_at=now)
    return ArtifactStatus.model_validate(values)


def _approved_condition(model: Model | None, version: ModelVersion) -> tuple[ConditionStatus, str, str]:
    if model is None:
        return ConditionStatus.UNKNOWN, Reason.MODEL_NOT_FOUND.value, f"Model {version.spec.model} not found"
    approval = version.spec.approval
    if approval is not None and approval.approved:
        by = f" by {approval.by}" if approval.by else ""
        why = f": {approval.reason}" if approval.reason else ""
        return ConditionStatus.TRUE, "Approved", f"approved{by}{why}"
    if not model.spec.governance.require_approval:
        return (
            ConditionStatus.TRUE,
            "ApprovalNotRequired",
            f"Model {model.metadata.name} does not require approval",
        )
    return ConditionStatus.FALSE, Reason.APPROVAL_REQUIRED.value, _approval_problem(model, version)


# --- Model status ----------------------------------------------------------------------------------


def model_status(
    model: Model,
    versions: Iterable[str],
    serving: Iterable[str],
    *,
    now: datetime,
    source: SourceStatus | None = None,
) -> ModelStatus:
    """The whole new status of `model`: its versions, those serving traffic, `Ready`, and, for a Model
    mirrored from a registry of record, `source`: the latest sync's (None: the status's own, which a
    restarted operator keeps until its first sync)."""
    all_versions = sorted(set(versions))
    serving_versions = sorted(set(serving))
    message = f"{_count(len(all_versions), 'version')}, {len(serving_versions)} serving"
    if serving_versions:
        message += f": {_names(serving_versions)}"
    if len(all_versions) > STATUS_LIST_LIMIT or len(serving_versions) > STATUS_LIST_LIMIT:
        message += f" (status lists the first {STATUS_LIST_LIMIT})"
    generation = model.metadata.generation
    conditions = set_condition(
        model.status.conditions, "Ready", True, "Registered", message, now=now, observed_generation=generation
    )
    return ModelStatus(
        observed_generation=generation,
        versions=tuple(all_versions[:STATUS_LIST_LIMIT]),
        serving_versions=tuple(serving_versions[:STATUS_LIST_LIMIT]),
        source=(source or model.status.source) if model.spec.source is not None else None,
        conditions=conditions,
    )


# --- Events ----------------------------------------------------------------------------------------


class Notice(NamedTuple):
    """A Kubernetes Event to post about a decision."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def version_notices(old: ModelVersionStatus, new: ModelVersionStatus) -> list[Notice]:
    """Events for what changed between two statuses of a version (none when nothing did)."""
    notices: list[Notice] = []
    old_ready, new_ready = get_condition(old.conditions, "Ready"), get_condition(new.conditions, "Ready")
    if new_ready is not None and (
        old_ready is None
        or (old_ready.status, old_ready.reason) != (new_ready.status, new_ready.reason)
        or (new_ready.status != ConditionStatus.TRUE and old_ready.message != new_ready.message)
    ):
        kind: Literal["Normal", "Warning"] = (
            "Normal" if new_ready.status == ConditionStatus.TRUE else "Warning"
        )
        notices.append(Notice(kind, new_ready.reason, new_ready.message))
    elif new.phase == ModelVersionPhase.SERVING and old.served_by != new.served_by:
        notices.append(Notice("Normal", "Serving", new.message))

    old_ok, new_ok = get_condition(old.conditions, "Approved"), get_condition(new.conditions, "Approved")
    if (
        new_ok is not None
        and (old_ok is None or (old_ok.status, old_ok.reason) != (new_ok.status, new_ok.reason))
        and new_ok.reason not in {n.reason for n in notices}
        and new_ok.status != ConditionStatus.UNKNOWN
        and (old_ok is not None or new_ok.reason != "ApprovalNotRequired")
    ):
        kind = "Normal" if new_ok.status == ConditionStatus.TRUE else "Warning"
        notices.append(Notice(kind, new_ok.reason, new_ok.message))
    return notices


def model_notices(old: ModelStatus, new: ModelStatus, *, spec_changed: bool = False) -> list[Notice]:
    """Events for what changed between two statuses of a Model (none when nothing did)."""
    notices: list[Notice] = []
    if get_condition(old.conditions, "Ready") is None:
        notices.append(
            Notice("Normal", "Registered", f"registered with {_count(len(new.versions), 'version')}")
        )
    else:
        added = sorted(set(new.versions) - set(old.versions))
        removed = sorted(set(old.versions) - set(new.versions))
        if added:
            notices.append(
                Notice(
                    "Normal",
                    "VersionAdded",
                    f"added {_names(added)} ({_count(len(new.versions), 'version')})",
                )
            )
        if removed:
            notices.append(
                Notice(
                    "Normal",
                    "VersionRemoved",
                    f"removed {_names(removed)} ({_count(len(new.versions), 'version')})",
                )
            )
        if spec_changed and new.versions:
            notices.append(
                Notice(
                    "Normal",
                    "VersionsReevaluated",
                    f"spec changed: re-evaluated {_count(len(new.versions), 'version')}",
                )
            )
    if set(old.serving_versions) != set(new.serving_versions):
        serving = _names(list(new.serving_versions)) or "none"
        notices.append(Notice("Normal", "ServingChanged", f"serving: {serving}"))
    return notices
