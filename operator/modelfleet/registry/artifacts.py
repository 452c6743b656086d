"""The registry's rules for artifact versions: which runtime serves one, what its server looks like, and
what the operator's check of the artifact means for the version.

Pure functions of the objects: the controllers read them from the watch caches and pass them in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from modelfleet.api import (
    MODEL_DIR,
    Artifact,
    ArtifactStatus,
    ModelVersionSpec,
    Protocol,
    RuntimeSpec,
)
from modelfleet.api.modelversion import EnvVar, ResourceRequirements
from modelfleet.fetch.report import parse_report


class CheckReason(StrEnum):
    """The outcome of the operator's check of an artifact (the fetcher's report), as condition reasons."""

    VERIFIED = "Verified"
    ARTIFACT_UNREACHABLE = "ArtifactUnreachable"
    DIGEST_MISMATCH = "DigestMismatch"
    ARTIFACT_TOO_LARGE = "ArtifactTooLarge"
    FETCH_TIMEOUT = "FetchTimeout"
    UNSUPPORTED_SCHEME = "UnsupportedScheme"
    INVALID_ARTIFACT = "InvalidArtifact"
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    CHECK_FAILED = "ArtifactCheckFailed"


#: Outcomes worth another check later: the store may come back, the Secret may be created. The others
#: are final for an immutable version.
RETRIED = frozenset(
    {
        CheckReason.ARTIFACT_UNREACHABLE,
        CheckReason.FETCH_TIMEOUT,
        CheckReason.CREDENTIALS_NOT_FOUND,
        CheckReason.CHECK_FAILED,
    }
)
#: Delays before the next check of a version whose last check is retried, by the number of checks run.
CHECK_BACKOFF = (
    timedelta(seconds=15),
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=2),
    timedelta(minutes=5),
)


@dataclass(frozen=True)
class CheckOutcome:
    """What one check of an artifact found (from the fetcher's report, or the pod when it has none)."""

    reason: CheckReason
    message: str = ""
    size: int | None = None
    files: int | None = None
    digest: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == CheckReason.VERIFIED


def check_due(status: ArtifactStatus | None, last: CheckReason | None, now: datetime) -> timedelta | None:
    """How long until the artifact should be checked (again): zero when now, None when never.

    Never checked: now. Verified, or failed for a reason a later check cannot change: never. Failed
    for a reason that may pass (store unreachable, Secret missing): after a backoff that grows with
    the checks run so far.
    """
    if status is None or status.checks == 0 or last is None:
        return timedelta(0)
    if last not in RETRIED:
        return None
    delay = CHECK_BACKOFF[min(status.checks - 1, len(CHECK_BACKOFF) - 1)]
    started = status.last_check_at or now
    return max(started + delay - now, timedelta(0))


# --- runtimes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime chosen for an artifact version."""

    kind: str
    """Runtime or ClusterRuntime."""
    name: str
    spec: RuntimeSpec

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Runtimes:
    """The runtimes a version may use: the Runtimes of its namespace and every ClusterRuntime, by name."""

    namespaced: Mapping[str, RuntimeSpec] = field(default_factory=dict)
    cluster: Mapping[str, RuntimeSpec] = field(default_factory=dict)


def choose_runtime(spec: ModelVersionSpec, runtimes: Runtimes) -> RuntimeChoice | str:
    """The runtime that serves `spec.artifact`, or why there is none (a message for people).

    A named runtime is the Runtime of that name, else the ClusterRuntime; it must list the format.
    Without a name: the first Runtime by name that lists the format, else the first ClusterRuntime by
    name that does and is not hidden by a Runtime of the same name.
    """
    artifact = spec.artifact
    if artifact is None:
        return "an image version has no runtime"
    fmt = artifact.format
    if spec.runtime:
        name = spec.runtime
        if name in runtimes.namespaced:
            choice = RuntimeChoice("Runtime", name, runtimes.namespaced[name])
        elif name in runtimes.cluster:
            choice = RuntimeChoice("ClusterRuntime", name, runtimes.cluster[name])
        else:
            return f"runtime {name} not found (no Runtime in this namespace, no ClusterRuntime)"
        if not choice.spec.serves(fmt):
            listed = ", ".join(choice.spec.formats)
            return f"{choice.ref} does not serve format {fmt} (it lists {listed})"
        return choice
    for name in sorted(runtimes.namespaced):
        if runtimes.namespaced[name].serves(fmt):
            return RuntimeChoice("Runtime", name, runtimes.namespaced[name])
    for name in sorted(runtimes.cluster):
        if name not in runtimes.namespaced and runtimes.cluster[name].serves(fmt):
            return RuntimeChoice("ClusterRuntime", name, runtimes.cluster[name])
    return f"no Runtime or ClusterRuntime serves format {fmt}"


# --- what runs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """The model server of one version, as its pods run it: the version's own image, or a runtime with
    the artifact fetched before it starts."""

    image: str
    port: int
    protocol: Protocol
    readiness_path: str
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    resources: ResourceRequirements | None = None
    artifact: Artifact | None = None
    """The artifact to fetch into /mnt/models first; None for an image version."""
    runtime: str = ""
    """Kind/name of the runtime, for an artifact version."""


def image_server(spec: ModelVersionSpec) -> Server:
    """The server of an image version: its image, as the version says."""
    if spec.image is None:
        raise ValueError("not an image version")
    return Server(
        image=spec.image,
        port=spec.serving_port,
        protocol=spec.serving_protocol,
        readiness_path=spec.serving_readiness_path,
        args=spec.args,
        env=spec.env,
        resources=spec.resources,
    )


def artifact_server(
    spec: ModelVersionSpec, choice: RuntimeChoice, model_name: str, verified_digest: str = ""
) -> Server:
    """The server of an artifact version: the runtime's, with the version's args, env and resources
    added, and the artifact's whereabouts in the environment. An artifact registered without a digest
    is fetched with `verified_digest`, the one its check computed, so that what serves is exactly what
    was checked."""
    if spec.artifact is None:
        raise ValueError("not an artifact version")
    artifact = spec.artifact
    if not artifact.digest and verified_digest:
        artifact = artifact.model_copy(update={"digest": verified_digest})
    runtime = choice.spec
    given = {e.name for e in spec.env}
    env = (
        EnvVar(name="MODELFLEET_MODEL_DIR", value=MODEL_DIR),
        EnvVar(name="MODELFLEET_MODEL_NAME", value=model_name),
        EnvVar(name="MODELFLEET_MODEL_FORMAT", value=spec.artifact.format),
        *(e for e in runtime.env if e.name not in given),
        *spec.env,
    )
    return Server(
        image=runtime.image,
        port=runtime.port,
        protocol=runtime.protocol,
        readiness_path=runtime.serving_readiness_path,
        args=(*runtime.args, *spec.args),
        env=env,
        resources=spec.resources if spec.resources is not None else runtime.resources,
        artifact=artifact,
        runtime=choice.ref,
    )


def server_of(
    spec: ModelVersionSpec, runtimes: Runtimes, model_name: str, verified_digest: str = ""
) -> Server | str:
    """The server of a version, or why an artifact version has none; `verified_digest`: the digest
    its artifact check computed (status.artifact.digest), pinned when the spec gives none."""
    if spec.artifact is None:
        return image_server(spec)
    choice = choose_runtime(spec, runtimes)
    if isinstance(choice, str):
        return choice
    return artifact_server(spec, choice, model_name, verified_digest)


# --- reading a check pod ----------------------------------------------------------------------------

#: Waiting reasons of a check container that mean it will not start by itself.
_STUCK = {
    "CreateContainerConfigError": CheckReason.CREDENTIALS_NOT_FOUND,
    "ErrImageNeverPull": CheckReason.CHECK_FAILED,
    "ImagePullBackOff": CheckReason.CHECK_FAILED,
    "ErrImagePull": CheckReason.CHECK_FAILED,
    "InvalidImageName": CheckReason.CHECK_FAILED,
}


def outcome_of_report(text: str) -> CheckOutcome | None:
    """The outcome in a fetcher report (`modelfleet.fetch.report`); None if the text is not one."""
    try:
        report = parse_report(text)
    except ValueError:
        return None
    if report.ok:
        reason = CheckReason.VERIFIED
    else:
        known = {r.value for r in CheckReason}
        reason = (
            CheckReason(report.reason.value) if report.reason.value in known else CheckReason.CHECK_FAILED
        )
    return CheckOutcome(
        reason=reason,
        message=report.message[:1024],
        size=report.size,
        files=report.files,
        digest=report.digest,
    )


def check_outcome(pod: Mapping[str, Any]) -> CheckOutcome | None:
    """What a check pod found, once it has something to say; None while it is still at work."""
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    state = (containers[0].get("state") or {}) if containers else {}
    terminated = state.get("terminated")
    if terminated:
        outcome = outcome_of_report(str(terminated.get("message") or ""))
        if outcome is not None:
            return outcome
        return CheckOutcome(
            CheckReason.CHECK_FAILED,
            f"the check ended ({terminated.get('reason') or 'exit'} {terminated.get('exitCode')})"
            " without a report",
        )
    waiting = state.get("waiting") or {}
    stuck = _STUCK.get(str(waiting.get("reason") or ""))
    if stuck is not None:
        message = str(waiting.get("message") or waiting.get("reason"))
        return CheckOutcome(stuck, f"the check pod cannot start: {message}"[:1024])
    if status.get("phase") == "Failed":
        reason = str(status.get("reason") or "")
        if reason == "DeadlineExceeded":
            return CheckOutcome(CheckReason.FETCH_TIMEOUT, "the check did not finish in time")
        return CheckOutcome(
            CheckReason.CHECK_FAILED, f"the check pod failed: {status.get('message') or reason}"
        )
    return None
