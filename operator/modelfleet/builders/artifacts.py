"""Manifests for artifact versions: the fetch init container of a model pod, and the short-lived pod that
checks an artifact before anything rolls it out. Pure functions, like the other builders.

Both run the operator image's `modelfleet fetch`, with the version's credentials Secret (if any) as
environment: the Secret reaches the fetcher's container only, never the operator, the model server,
a log or a status. The fetcher writes its report to /dev/termination-log, which the kubelet puts in the
container's status (`state.terminated.message`), where the operator reads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from modelfleet.api.common import API_VERSION
from modelfleet.api.modelversion import Artifact
from modelfleet.api.runtime import MODEL_DIR

Manifest = dict[str, Any]

MODELS_VOLUME = "models"
CACHE_VOLUME = "artifact-cache"
PVC_ROOT = "/mnt/pvc"
CACHE_MOUNT = "/var/cache/modelfleet/artifacts"
REPORT_PATH = "/dev/termination-log"
COMPONENT_ARTIFACT_CHECK = "artifact-check"
MODEL_VERSION_LABEL = "modelfleet.io/model-version"
MODEL_VERSION_ANNOTATION = "modelfleet.io/model-version"
#: Kept in the check pod's annotations, so that a check of an older spec is told from the current one.
CHECK_DIGEST_ANNOTATION = "modelfleet.io/artifact-check"

_RESTRICTED: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class FetchSettings:
    """How the operator is set up to fetch artifacts (its command-line options, the chart's values)."""

    image: str
    """The operator image, which carries `modelfleet fetch`."""
    max_bytes: int = 20 * 1024**3
    """The largest artifact a pod or a check downloads."""
    timeout_seconds: int = 1800
    """The longest a download may take."""
    check_max_bytes: int = 20 * 1024**3
    """The largest artifact the pre-rollout check reads; a larger one is refused as ArtifactTooLarge."""
    node_cache: str = ""
    """A host path for the per-node cache of artifacts by digest; empty: no cache (the default)."""
    node_cache_max_bytes: int = 0
    """The node cache's size limit (least recently used entries go); 0: no limit."""


def _pvc_claim(uri: str) -> str:
    """The claim of a pvc://CLAIM/PATH URI; empty for other schemes."""
    if not uri.startswith("pvc://"):
        return ""
    return uri[len("pvc://") :].split("/", 1)[0]


def fetch_args(
    artifact: Artifact, settings: FetchSettings, *, dest: str, check: bool, cache: bool
) -> list[str]:
    """The fetcher's arguments. Into a pod (`dest`): what a restarted init container left is replaced.
    A check (`check`) downloads into a scratch directory of its own and deletes it."""
    args = ["fetch", "--uri", artifact.uri]
    args += ["--report", REPORT_PATH] if check else ["--dest", dest, "--replace", "--report", REPORT_PATH]
    if artifact.digest:
        args += ["--digest", artifact.digest]
    limit = settings.check_max_bytes if check else settings.max_bytes
    args += ["--max-bytes", str(limit), "--timeout", str(settings.timeout_seconds)]
    if cache and artifact.digest:
        args += ["--cache-dir", CACHE_MOUNT]
        if settings.node_cache_max_bytes > 0:
            args += ["--cache-max-bytes", str(settings.node_cache_max_bytes)]
    if _pvc_claim(artifact.uri):
        args += ["--pvc-root", PVC_ROOT]
    if check:
        args.append("--check")
    return args


def _credentials(artifact: Artifact) -> list[Manifest]:
    if artifact.credentials is None:
        return []
    return [{"secretRef": {"name": artifact.credentials.secret_name}}]


def _pvc_volume(artifact: Artifact) -> tuple[list[Manifest], list[Manifest]]:
    """(volumes, mounts) that give the fetcher the claim of a pvc:// artifact, read-only."""
    claim = _pvc_claim(artifact.uri)
    if not claim:
        return [], []
    volume = {"name": "artifact-pvc", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    mount = {"name": "artifact-pvc", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True}
    return [volume], [mount]


def fetch_init_container(artifact: Artifact, settings: FetchSettings) -> tuple[Manifest, list[Manifest]]:
    """The init container that puts the artifact at /mnt/models before the server starts, and the
    volumes it needs besides the `models` emptyDir and `tmp` (the node cache, a claim)."""
    cache = bool(settings.node_cache and artifact.digest)
    pvc_volumes, pvc_mounts = _pvc_volume(artifact)
    mounts: list[Manifest] = [
        {"name": MODELS_VOLUME, "mountPath": MODEL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        *pvc_mounts,
    ]
    volumes: list[Manifest] = [*pvc_volumes]
    if cache:
        mounts.append({"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT})
        volumes.append(
            {"name": CACHE_VOLUME, "hostPath": {"path": settings.node_cache, "type": "DirectoryOrCreate"}}
        )
    container: Manifest = {
        "name": "fetch",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": fetch_args(artifact, settings, dest=MODEL_DIR, check=False, cache=cache),
        "securityContext": _RESTRICTED,
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": mounts,
    }
    env_from = _credentials(artifact)
    if env_from:
        container["envFrom"] = env_from
    return container, volumes


def check_pod_name(version: str) -> str:
    """The name of a version's check pod: `<version>-artifact-check`, shortened when too long."""
    name = f"{version}-artifact-check"
    if len(name) <= 63:
        return name
    return f"{version[:45].rstrip('-.')}-{hashlib.sha256(version.encode()).hexdigest()[:8]}-check"


def check_label(version: str) -> str:
    """The modelfleet.io/model-version label value of a version's check pod (at most 63 characters)."""
    return (
        version
        if len(version) <= 63
        else f"{version[:54]}-{hashlib.sha256(version.encode()).hexdigest()[:8]}"
    )


def build_artifact_check_pod(
    namespace: str, version: str, uid: str, artifact: Artifact, settings: FetchSettings
) -> Manifest:
    """The pod that checks one version's artifact: downloads it (bounded), verifies the digest, reports,
    and removes what it read. Owned by the ModelVersion, so deleting the version removes it."""
    pvc_volumes, pvc_mounts = _pvc_volume(artifact)
    container: Manifest = {
        "name": "check",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": fetch_args(artifact, settings, dest="", check=True, cache=False),
        "securityContext": _RESTRICTED,
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *pvc_mounts],
    }
    env_from = _credentials(artifact)
    if env_from:
        container["envFrom"] = env_from
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": check_pod_name(version),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "modelfleet",
                "app.kubernetes.io/component": COMPONENT_ARTIFACT_CHECK,
                "app.kubernetes.io/managed-by": "modelfleet",
                MODEL_VERSION_LABEL: check_label(version),
            },
            "annotations": {
                MODEL_VERSION_ANNOTATION: version,
                CHECK_DIGEST_ANNOTATION: artifact.uri + "@" + (artifact.digest or ""),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelVersion",
                    "name": version,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": settings.timeout_seconds + 60,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *pvc_volumes],
        },
    }
