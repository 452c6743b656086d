"""Manifests of the objects a modelfleet Deployment owns, as pure functions of the custom resources.

Every object carries an ownerReference to the modelfleet Deployment (deleting it cleans up) and the
standard labels. Every pod passes the Pod Security `restricted` profile: non-root, seccomp
RuntimeDefault, all capabilities dropped, no privilege escalation, read-only root filesystem with a
writable emptyDir at /tmp.

Who may read a router's admin paths that show user data: the holder of its admin token, kept in the
Secret `<deployment>-router-admin` (`build_router_admin_secret`) that the router pods mount read-only.
The token is derived from a key of the operator's own (`router_admin_token`), so every reconcile, and
every operator process holding the same key, builds the same Secret: nothing is generated per reconcile,
and the operator never reads the Secret back. Where the cluster enforces NetworkPolicies,
`build_router_network_policy` also keeps the admin port to the operator's pods and Prometheus.

Payload capture (`spec.capture`) reaches the routers the same way: the router configuration names the
destination (`capture_uri`), never a credential. For s3:// the keys of `destination.credentials` become
the router container's environment, each key optional (the operator never reads the Secret); for
pvc://CLAIM/PATH the claim is mounted read-write at `CAPTURE_DIR`, owned by the router's group
(`fsGroup`), and the configuration points at PATH under it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelfleet.api.common import API_VERSION
from modelfleet.api.deployment import DeploymentSpec
from modelfleet.api.modelversion import ModelVersionSpec
from modelfleet.api.routerconfig import CONFIG_KEY, Role, RouterConfig, Version
from modelfleet.api.routerconfig import Capture as RouterCapture
from modelfleet.api.routerconfig import Fallback as RouterFallback
from modelfleet.api.routerconfig import Feedback as RouterFeedback
from modelfleet.api.runtime import MODEL_DIR
from modelfleet.builders.artifacts import MODELS_VOLUME, FetchSettings, fetch_init_container
from modelfleet.registry.artifacts import Server, image_server

Manifest = dict[str, Any]

FIELD_MANAGER = "modelfleet"
MANAGED_BY = "modelfleet"
COMPONENT_MODEL = "model"
COMPONENT_ROUTER = "router"
DEPLOYMENT_LABEL = "modelfleet.io/deployment"
VERSION_ANNOTATION = "modelfleet.io/version"
VERSION_LABEL = "modelfleet.io/version"
DEFAULT_ROUTER_IMAGE = "localhost/modelfleet:dev"
ROUTER_TRAFFIC_PORT = 8080
ROUTER_ADMIN_PORT = 9090
ROUTER_DRAIN_DELAY = "3s"  # well inside the pod's 15 s grace period, with the 10 s for requests under way
ENDPOINT_PORT = 80
_DNS_LABEL_MAX = 63
ADMIN_TOKEN_KEY = "token"
"""The key of the Secret `<deployment>-router-admin` that holds the router's admin token."""
ADMIN_TOKEN_DIR = "/etc/modelfleet/admin"
ADMIN_TOKEN_FILE = f"{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}"
"""Where a router pod finds its admin token (`--admin-token-file`)."""
ADMIN_SECRET_ANNOTATION = "modelfleet.io/admin-secret-sha256"
"""On the router's apps/v1 Deployment: 16 hex digits of the SHA-256 of the admin Secret's manifest (token
and all) applied before it, which tells a restarted operator that the Secret is as it should be."""
FEEDBACK_TOKEN_DIR = "/etc/modelfleet/feedback"
FEEDBACK_TOKEN_FILE = f"{FEEDBACK_TOKEN_DIR}/token"
"""Where a router pod finds the key of spec.feedback.tokenSecret (the router configuration's tokenFile)."""
CAPTURE_DIR = "/mnt/capture"
"""Where a router pod mounts the claim of a pvc:// capture destination (read-write)."""
CAPTURE_CREDENTIAL_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
)
"""The keys of a capture destination's credentials Secret the router container gets as environment."""
ROUTER_GROUP = 65532
"""The group the router image runs as (Dockerfile `USER 65532:65532`): a capture claim's files are its."""
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "modelfleet", "app.kubernetes.io/component": "operator"}
"""The labels of the operator's pods (the chart's), which the routers' NetworkPolicy lets in."""
PROMETHEUS_PEER: Mapping[str, Any] = {
    "namespaceSelector": {},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
"""Prometheus pods in any namespace (prometheus-operator and the kube-prometheus stack label them so)."""


@dataclass(frozen=True)
class Owner:
    """The modelfleet Deployment that owns the objects."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> Manifest:
        return {
            "apiVersion": API_VERSION,
            "kind": "Deployment",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _dns_label(text: str) -> str:
    """`text` as an RFC 1035 label (Service names): lower case, [a-z0-9-], starts with a letter, at most
    63 characters; shortened with a hash suffix so that different inputs stay different."""
    cleaned = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-") or "x"
    if not cleaned[0].isalpha():
        cleaned = f"v-{cleaned}"
    if cleaned == text and len(cleaned) <= _DNS_LABEL_MAX:
        return cleaned
    suffix = _short_hash(text)
    return f"{cleaned[: _DNS_LABEL_MAX - len(suffix) - 1].rstrip('-')}-{suffix}"


def _label_value(text: str) -> str:
    """`text` as a label value (at most 63 characters), shortened with a hash suffix when too long."""
    if len(text) <= _DNS_LABEL_MAX:
        return text
    suffix = _short_hash(text)
    return f"{text[: _DNS_LABEL_MAX - len(suffix) - 1].rstrip('-._')}-{suffix}"


def version_object_name(deployment: str, version: str) -> str:
    """Name of the apps/v1 Deployment and Service of one version, e.g. `iris-iris-v2`."""
    return _dns_label(f"{deployment}-{version}")


def router_name(deployment: str) -> str:
    """Name of the router's Deployment, ConfigMap, ServiceAccount, Role, RoleBinding and NetworkPolicy."""
    return _dns_label(f"{deployment}-router")


def router_admin_secret_name(deployment: str) -> str:
    """Name of the Secret that holds the router's admin token, e.g. `iris-router-admin`."""
    return _dns_label(f"{deployment}-router-admin")


def service_name(deployment: str) -> str:
    """Name of the router Service, which is the Deployment's endpoint."""
    return _dns_label(deployment)


def endpoint(deployment: str, namespace: str) -> str:
    """Where clients send inference requests, e.g. `http://iris.ml.svc:80`."""
    return f"http://{service_name(deployment)}.{namespace}.svc:{ENDPOINT_PORT}"


def version_url(deployment: str, namespace: str, version: str, port: int) -> str:
    """The URL of one version's Service, as the router reaches it."""
    return f"http://{version_object_name(deployment, version)}.{namespace}.svc:{port}"


def labels(deployment: str, component: str, version: str | None = None) -> dict[str, str]:
    """The standard labels of an owned object."""
    out = {
        "app.kubernetes.io/name": "modelfleet",
        "app.kubernetes.io/instance": _label_value(deployment),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        DEPLOYMENT_LABEL: _label_value(deployment),
    }
    if version is not None:
        out["app.kubernetes.io/version"] = _label_value(version)
        out[VERSION_LABEL] = _label_value(version)
    return out


def owned_selector(deployment: str, component: str | None = None) -> str:
    """A label selector for the objects of one modelfleet Deployment (of one component)."""
    parts = [f"app.kubernetes.io/managed-by={MANAGED_BY}", f"{DEPLOYMENT_LABEL}={_label_value(deployment)}"]
    if component:
        parts.append(f"app.kubernetes.io/component={component}")
    return ",".join(parts)


def _selector(deployment: str, component: str, version: str | None = None) -> dict[str, str]:
    out = {DEPLOYMENT_LABEL: _label_value(deployment), "app.kubernetes.io/component": component}
    if version is not None:
        out[VERSION_LABEL] = _label_value(version)
    return out


def _metadata(
    owner: Owner, name: str, object_labels: Mapping[str, str], version: str | None = None
) -> Manifest:
    out: Manifest = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(object_labels),
        "ownerReferences": [owner.reference()],
    }
    if version is not None:
        # the label value may be shortened; the annotation keeps the whole version name
        out["annotations"] = {VERSION_ANNOTATION: version}
    return out


POD_SECURITY_CONTEXT: Manifest = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_TMP_VOLUME: Manifest = {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
_TMP_MOUNT: Manifest = {"name": "tmp", "mountPath": "/tmp"}


def _server(spec: ModelVersionSpec | Server) -> Server:
    return spec if isinstance(spec, Server) else image_server(spec)


#: The emptyDir that holds an artifact: sized for the largest artifact the operator lets a pod fetch.
def _models_volume(settings: FetchSettings) -> Manifest:
    return {"name": MODELS_VOLUME, "emptyDir": {"sizeLimit": str(settings.max_bytes)}}


def build_version_deployment(
    owner: Owner,
    version: str,
    spec: ModelVersionSpec | Server,
    replicas: int,
    fetch: FetchSettings | None = None,
) -> Manifest:
    """The apps/v1 Deployment that runs one version's model server: the version's image, or for an
    artifact version its runtime, with an init container (`fetch`) that puts the artifact at
    /mnt/models first and refuses to start the server when the digest does not match."""
    server = _server(spec)
    object_labels = labels(owner.name, COMPONENT_MODEL, version)
    mounts: list[Manifest] = [_TMP_MOUNT]
    volumes: list[Manifest] = [_TMP_VOLUME]
    init_containers: list[Manifest] = []
    if server.artifact is not None:
        if fetch is None:
            raise ValueError(f"version {version} is an artifact version: the fetch settings are needed")
        init, extra = fetch_init_container(server.artifact, fetch)
        init_containers.append(init)
        volumes += [_models_volume(fetch), *extra]
        mounts.append({"name": MODELS_VOLUME, "mountPath": MODEL_DIR, "readOnly": True})
    container: Manifest = {
        "name": "model",
        "image": server.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": server.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": server.readiness_path, "port": server.port},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": mounts,
    }
    if server.args:
        container["args"] = list(server.args)
    if server.env:
        container["env"] = [env.to_k8s() for env in server.env]
    if server.resources is not None:
        container["resources"] = server.resources.to_k8s()
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "terminationGracePeriodSeconds": 10,
        "containers": [container],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    template_meta: Manifest = {"labels": object_labels}
    if server.runtime:
        template_meta["annotations"] = {"modelfleet.io/runtime": server.runtime}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, version_object_name(owner.name, version), object_labels, version),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": _selector(owner.name, COMPONENT_MODEL, version)},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def build_version_service(owner: Owner, version: str, spec: ModelVersionSpec | Server) -> Manifest:
    """The Service in front of one version's pods; the router sends its traffic there."""
    port = _server(spec).port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            owner,
            version_object_name(owner.name, version),
            labels(owner.name, COMPONENT_MODEL, version),
            version,
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(owner.name, COMPONENT_MODEL, version),
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def build_router_config(
    owner: Owner,
    spec: DeploymentSpec,
    versions: Mapping[str, ModelVersionSpec | Server],
    *,
    stable: str,
    canary: str,
    canary_weight: int,
    mirror_percent: int,
    previous: str = "",
    fallback: str = "",
    fallback_active: bool = False,
) -> RouterConfig:
    """The router's configuration for a traffic split. `versions` must hold stable (and canary, and
    previous: the warm former stable version, which takes no traffic but answers when stable fails, and
    fallback: spec.fallback.version, kept warm, the chain's last version). `fallback_active` sends what
    would go to stable to the fallback version (or, without one, to spec.fallback.response)."""
    if stable not in versions:
        raise ValueError(f"no ModelVersion spec for the stable version {stable}")
    if canary and canary not in versions:
        raise ValueError(f"no ModelVersion spec for the canary version {canary}")
    if previous and previous not in versions:
        raise ValueError(f"no ModelVersion spec for the previous version {previous}")
    if fallback and fallback not in versions:
        raise ValueError(f"no ModelVersion spec for the fallback version {fallback}")
    if not 0 <= canary_weight <= 100:
        raise ValueError(f"canary weight {canary_weight} is not within 0..100")

    def version(name: str, weight: int, role: Role) -> Version:
        server = _server(versions[name])
        return Version.model_validate(
            {
                "name": name,
                "url": version_url(owner.name, owner.namespace, name, server.port),
                "weight": weight,
                "role": role,
                "protocol": server.protocol.value,
            }
        )

    entries = [version(stable, 100 - canary_weight if canary else 100, "stable")]
    if canary:
        entries.append(version(canary, canary_weight, "canary"))
    fallback = "" if fallback in {stable, canary} else fallback
    if previous and previous not in {stable, canary, fallback}:
        entries.append(version(previous, 0, "previous"))
    if fallback:
        entries.append(version(fallback, 0, "fallback"))
    # spec.fallback.version is the version with role fallback; the rest of spec.fallback is the router's
    settings = spec.fallback.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"version"})
    # the router reads the token from the Secret key the router pods mount; the document names the file
    feedback = RouterFeedback(token_file=FEEDBACK_TOKEN_FILE) if spec.feedback is not None else None
    capture = (
        RouterCapture(
            percent=spec.capture.percent,
            uri=capture_uri(spec.capture.destination.uri),
            redact=list(spec.capture.redact),
        )
        if spec.capture is not None
        else None
    )
    return RouterConfig(
        deployment=owner.name,
        versions=entries,
        mirror_percent=mirror_percent if canary else 0,
        fallback=RouterFallback.model_validate({**settings, "active": fallback_active}),
        feedback=feedback,
        capture=capture,
    )


def capture_claim(uri: str) -> str:
    """The claim of a pvc://CLAIM/PATH capture destination; empty for s3://."""
    return uri[len("pvc://") :].split("/", 1)[0] if uri.startswith("pvc://") else ""


def capture_uri(uri: str) -> str:
    """Where the router writes a capture destination: s3:// as it is, pvc://CLAIM/PATH as the directory
    PATH of the claim mounted at `CAPTURE_DIR` (file:///mnt/capture/PATH)."""
    if not uri.startswith("pvc://"):
        return uri
    path = uri[len("pvc://") :].partition("/")[2].strip("/")
    return f"file://{CAPTURE_DIR}/{path}" if path else f"file://{CAPTURE_DIR}"


def _capture_pod(spec: DeploymentSpec) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """(environment, volumes, mounts) the router container needs for spec.capture."""
    if spec.capture is None:
        return [], [], []
    destination = spec.capture.destination
    claim = capture_claim(destination.uri)
    if claim:
        volume = {"name": "capture", "persistentVolumeClaim": {"claimName": claim}}
        return [], [volume], [{"name": "capture", "mountPath": CAPTURE_DIR}]
    if destination.credentials is None:
        return [], [], []
    secret = destination.credentials.secret_name
    env = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for key in CAPTURE_CREDENTIAL_KEYS
    ]
    return env, [], []


def build_router_configmap(owner: Owner, config: RouterConfig) -> Manifest:
    """The ConfigMap the router watches (key `config.json`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, router_name(owner.name), labels(owner.name, COMPONENT_ROUTER)),
        "data": {CONFIG_KEY: config.to_json()},
    }


def build_router_service_account(owner: Owner) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(owner, router_name(owner.name), labels(owner.name, COMPONENT_ROUTER)),
        "automountServiceAccountToken": False,
    }


def build_router_role(owner: Owner) -> Manifest:
    """The router may read and watch its own ConfigMap, and nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(owner, router_name(owner.name), labels(owner.name, COMPONENT_ROUTER)),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [router_name(owner.name)],
                # list and watch are asked with fieldSelector metadata.name=<name>, which resourceNames allows
                "verbs": ["get", "list", "watch"],
            }
        ],
    }


def build_router_role_binding(owner: Owner) -> Manifest:
    name = router_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(owner, name, labels(owner.name, COMPONENT_ROUTER)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }


def _secret_volume(volume: str, secret: str, key: str) -> Manifest:
    """One key of a Secret as the file `token`. Optional: a missing Secret (or key) leaves the file out
    rather than the pod waiting to start, and the router refuses what needs the token (503) meanwhile.
    The kubelet updates the file when the Secret changes (a whole-volume mount: no subPath)."""
    return {
        "name": volume,
        "secret": {"secretName": secret, "items": [{"key": key, "path": "token"}], "optional": True},
    }


def build_router_deployment(
    owner: Owner, spec: DeploymentSpec, image: str = DEFAULT_ROUTER_IMAGE, admin_token: str = ""
) -> Manifest:
    """The router pods: `modelfleet router --configmap <ns>/<name>-router`, with the admin token of the
    Secret `<name>-router-admin` and, with spec.feedback, the key of its tokenSecret mounted read-only;
    with spec.capture, its destination's credentials as environment (s3://) or its claim (pvc://).
    `admin_token`, when known, is only fingerprinted, with the rest of its Secret, on the Deployment's
    metadata (not on its pods: a new token reaches them through the mounted Secret, without a restart)."""
    name = router_name(owner.name)
    object_labels = labels(owner.name, COMPONENT_ROUTER)
    mounts: list[Manifest] = [
        _TMP_MOUNT,
        {"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True},
    ]
    volumes: list[Manifest] = [
        _TMP_VOLUME,
        _secret_volume("admin-token", router_admin_secret_name(owner.name), ADMIN_TOKEN_KEY),
    ]
    if spec.feedback is not None:
        selector = spec.feedback.token_secret
        mounts.append({"name": "feedback-token", "mountPath": FEEDBACK_TOKEN_DIR, "readOnly": True})
        volumes.append(_secret_volume("feedback-token", selector.name, selector.key))
    capture_env, capture_volumes, capture_mounts = _capture_pod(spec)
    mounts += capture_mounts
    volumes += capture_volumes
    pod_security: Manifest = dict(POD_SECURITY_CONTEXT)
    if capture_volumes:  # the router, not root, writes on the claim
        pod_security.update({"fsGroup": ROUTER_GROUP, "fsGroupChangePolicy": "OnRootMismatch"})
    container: Manifest = {
        "name": "router",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # after SIGTERM the router serves on for the drain delay, closing each connection it answers,
        # while the endpoint of the terminating pod leaves every node's rules (clients lose nothing)
        "args": [
            "router",
            "--configmap",
            f"{owner.namespace}/{name}",
            "--drain-delay",
            ROUTER_DRAIN_DELAY,
            "--admin-token-file",
            ADMIN_TOKEN_FILE,
        ],
        "ports": [
            {"name": "http", "containerPort": ROUTER_TRAFFIC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ROUTER_ADMIN_PORT, "protocol": "TCP"},
        ],
        # tolerant of a busy node: a router taken out of its Service by a slow probe refuses every client
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": ROUTER_ADMIN_PORT},
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": ROUTER_ADMIN_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": mounts,
    }
    if capture_env:
        container["env"] = capture_env
    if spec.router.resources is not None:
        container["resources"] = spec.router.resources.to_k8s()
    metadata = _metadata(owner, name, object_labels)
    if admin_token:
        metadata["annotations"] = {
            ADMIN_SECRET_ANNOTATION: fingerprint(build_router_admin_secret(owner, admin_token))
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.router.replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": _selector(owner.name, COMPONENT_ROUTER)},
            "template": {
                "metadata": {
                    "labels": object_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(ROUTER_ADMIN_PORT),
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    # the router reads its ConfigMap through the API with this token
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": pod_security,
                    "terminationGracePeriodSeconds": 15,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def build_router_service(owner: Owner) -> Manifest:
    """The Service clients call: the Deployment's endpoint, port 80 to the routers' traffic port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, service_name(owner.name), labels(owner.name, COMPONENT_ROUTER)),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(owner.name, COMPONENT_ROUTER),
            "ports": [
                {"name": "http", "port": ENDPOINT_PORT, "targetPort": ROUTER_TRAFFIC_PORT, "protocol": "TCP"}
            ],
        },
    }


# --- who may reach a router: its admin token, its NetworkPolicy -------------------------------------------


def router_admin_token(key: bytes, owner: Owner) -> str:
    """The admin token of a Deployment's routers: HMAC-SHA256 of its namespace, name and uid under the
    operator's key, as 64 hex digits. The same key gives the same token at every reconcile and in every
    operator process; a Deployment made again under the same name (a new uid) gets another one."""
    if len(key) < 32:
        raise ValueError("the router admin key must be at least 32 bytes")
    message = "\0".join(("modelfleet router admin token", owner.namespace, owner.name, owner.uid))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def fingerprint(manifest: Manifest) -> str:
    """What may be shown of a manifest that holds a secret (an annotation): 16 hex digits of the SHA-256 of
    its JSON, which tells one manifest from another and gives nothing of the secret away."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[
        :16
    ]


def build_router_admin_secret(owner: Owner, token: str) -> Manifest:
    """The Secret `<name>-router-admin` holding the routers' admin token (key `token`), which the router
    pods mount and the admin paths /predictions, /inputs, /feedback and /config ask for."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(
            owner, router_admin_secret_name(owner.name), labels(owner.name, COMPONENT_ROUTER)
        ),
        "type": "Opaque",
        "data": {ADMIN_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


@dataclass(frozen=True)
class RouterAccess:
    """Who may reach the router pods where the cluster enforces NetworkPolicies (the chart's
    routerNetworkPolicy values). Peers are core NetworkPolicyPeer objects (podSelector,
    namespaceSelector, ipBlock)."""

    operator_namespace: str = "default"
    """The namespace of the operator's pods, whose scrapes reach the admin port."""
    admin_from: tuple[Mapping[str, Any], ...] = (PROMETHEUS_PEER,)
    """Who else may reach the admin port (9090): /metrics for Prometheus; the paths that show user data
    ask for the admin token whoever comes."""
    traffic_from: tuple[Mapping[str, Any], ...] = ()
    """Who may reach the traffic port (8080); empty: anyone, as without a NetworkPolicy."""
    network_policy: bool = True
    """Whether each Deployment's routers get a NetworkPolicy at all."""


def build_router_network_policy(owner: Owner, access: RouterAccess) -> Manifest:
    """The routers' NetworkPolicy: the traffic port from anyone (or `access.traffic_from`), the admin port
    only from the operator's pods and `access.admin_from`. Enforced only by a network plugin that
    implements NetworkPolicies; elsewhere the admin token is what protects the admin paths."""
    operator: Manifest = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": access.operator_namespace}},
        "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
    }
    traffic: Manifest = {"ports": [{"protocol": "TCP", "port": ROUTER_TRAFFIC_PORT}]}
    if access.traffic_from:
        traffic["from"] = [copy.deepcopy(dict(peer)) for peer in access.traffic_from]
    admin: Manifest = {
        "ports": [{"protocol": "TCP", "port": ROUTER_ADMIN_PORT}],
        "from": [operator, *(copy.deepcopy(dict(peer)) for peer in access.admin_from)],
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(owner, router_name(owner.name), labels(owner.name, COMPONENT_ROUTER)),
        "spec": {
            "podSelector": {"matchLabels": _selector(owner.name, COMPONENT_ROUTER)},
            "policyTypes": ["Ingress"],
            "ingress": [traffic, admin],
        },
    }


def peers(value: object, what: str) -> tuple[Mapping[str, Any], ...]:
    """`value` as a list of NetworkPolicyPeer objects, or a ValueError naming `what` and the fault."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"{what} must be a list of NetworkPolicy peers")
    out: list[Mapping[str, Any]] = []
    for index, peer in enumerate(value):
        if not isinstance(peer, Mapping) or not peer:
            raise ValueError(
                f"{what}[{index}] must be a NetworkPolicy peer (podSelector, namespaceSelector, ipBlock)"
            )
        unknown = sorted(set(peer) - {"podSelector", "namespaceSelector", "ipBlock"})
        if unknown:
            raise ValueError(
                f"{what}[{index}] has {', '.join(unknown)}: "
                "a peer has podSelector, namespaceSelector or ipBlock"
            )
        for name, selector in peer.items():
            if not isinstance(selector, Mapping):
                raise ValueError(f"{what}[{index}].{name} must be an object")
        out.append(peer)
    return tuple(out)
