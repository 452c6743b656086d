"""The read side of the operator's Kubernetes access: watch caches, not a GET or LIST per reconcile.

kopf watches every kind the controllers read and keeps the objects in its indexes (`kopf.index`), which
it fills from the watch streams before any handler runs, so a reconcile reads memory. Writes stay with
`modelfleet.controllers.kube` (server-side apply, the status subresource, Events). A cached object may
be a few milliseconds behind a write; every status write is guarded by the resourceVersion it read, so a
decision taken on a stale object is refused by the API server and taken again.

What is cached: the modelfleet kinds (ClusterRuntimes and Runtimes too); the apps/v1 Deployments and
Services the operator owns; the router pods (for scraping) and the artifact check pods. Objects are kept
without their managedFields; owned objects and router pods with their metadata and status only. Each is
kept as compact JSON (`Packed`), about a fifth of the memory of the dicts it decodes to, and every read
decodes a fresh copy (a reader cannot change what the next one sees).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kopf

from modelfleet.api import InvalidResourceError, Runtime, RuntimeSpec
from modelfleet.builders import COMPONENT_ROUTER, DEPLOYMENT_LABEL, MANAGED_BY, labels
from modelfleet.builders.artifacts import COMPONENT_ARTIFACT_CHECK, MODEL_VERSION_ANNOTATION
from modelfleet.registry.artifacts import Runtimes

GROUP, VERSION = "modelfleet.io", "v1alpha1"
Key = tuple[str, str]
Obj = dict[str, Any]
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
INDEXES = (
    "cached_deployments",
    "cached_model_versions",
    "cached_models",
    "cached_monitors",
    "cached_monitors_by_deployment",
    "cached_owned_deployments",
    "cached_owned_services",
    "cached_router_pods",
    "cached_runtimes",
    "cached_cluster_runtimes",
    "cached_check_pods",
)


class Packed:
    """An object kept as compact JSON. A decoded Kubernetes object takes about five times its JSON size
    in Python dicts and strings; an operator with 10,000 Deployments caches some 30,000 objects."""

    __slots__ = ("data",)

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.data = json.dumps(obj, separators=(",", ":")).encode()

    def unpack(self) -> Obj:
        out: Obj = json.loads(self.data)
        return out

    def __eq__(self, other: object) -> bool:  # kopf replaces an index value only when it differs
        return isinstance(other, Packed) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Packed({len(self.data)} bytes)"


def unpack(value: Packed | Obj) -> Obj:
    """The object a cache entry holds (entries built by hand, as tests do, may be plain dicts)."""
    return value.unpack() if isinstance(value, Packed) else value


def _plain(body: Mapping[str, Any], api_version: str, kind: str) -> Obj:
    """The object as the API server sent it, without managedFields, with its apiVersion and kind."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "apiVersion": api_version, "kind": kind, "metadata": meta}


def _slim(body: Mapping[str, Any], api_version: str, kind: str, status: tuple[str, ...] = ()) -> Obj:
    """Metadata and status only (of the status, only the fields named, when some are): what the
    controllers read of the objects they own. A pod template is most of an object's memory, and an
    operator with 10,000 Deployments caches tens of thousands of owned objects."""
    plain = _plain(body, api_version, kind)
    kept = dict(body.get("status") or {})
    if status:
        kept = {k: v for k, v in kept.items() if k in status}
    return {"apiVersion": api_version, "kind": kind, "metadata": plain["metadata"], "status": kept}


def _owner(body: Mapping[str, Any]) -> str:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(ref.get("name", ""))
    return ""


# --- the indexes kopf keeps -------------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, "deployments")
def cached_deployments(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    return {(namespace or "", name): Packed(_plain(body, f"{GROUP}/{VERSION}", "Deployment"))}


@kopf.index(GROUP, VERSION, "modelversions")
def cached_model_versions(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    return {(namespace or "", name): Packed(_plain(body, f"{GROUP}/{VERSION}", "ModelVersion"))}


@kopf.index(GROUP, VERSION, "models")
def cached_models(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    return {(namespace or "", name): Packed(_plain(body, f"{GROUP}/{VERSION}", "Model"))}


@kopf.index(GROUP, VERSION, "monitors")
def cached_monitors(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    return {(namespace or "", name): Packed(_plain(body, f"{GROUP}/{VERSION}", "Monitor"))}


@kopf.index(GROUP, VERSION, "monitors")
def cached_monitors_by_deployment(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    """(namespace, the Deployment it watches) -> Monitors."""
    deployment = (body.get("spec") or {}).get("deployment")
    if not isinstance(deployment, str) or not deployment:
        return {}
    return {(namespace or "", deployment): Packed(_plain(body, f"{GROUP}/{VERSION}", "Monitor"))}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def cached_owned_deployments(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    """(namespace, owning modelfleet Deployment) -> its apps/v1 Deployments."""
    owner = _owner(body)
    return {(namespace or "", owner): Packed(_slim(body, "apps/v1", "Deployment"))} if owner else {}


@kopf.index("", "v1", "services", labels=MANAGED)
def cached_owned_services(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    """(namespace, owning modelfleet Deployment) -> its Services."""
    owner = _owner(body)
    return {(namespace or "", owner): Packed(_slim(body, "v1", "Service"))} if owner else {}


@kopf.index("", "v1", "pods", labels={**MANAGED, "app.kubernetes.io/component": COMPONENT_ROUTER})
def cached_router_pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    """(namespace, the modelfleet.io/deployment label) -> router pods."""
    deployment = str((body.get("metadata") or {}).get("labels", {}).get(DEPLOYMENT_LABEL, ""))
    slim = _slim(body, "v1", "Pod", ("phase", "podIP"))
    return {(namespace or "", deployment): Packed(slim)} if deployment else {}


def _runtime_spec(body: Mapping[str, Any]) -> RuntimeSpec | None:
    try:
        return Runtime.from_k8s(body).spec
    except InvalidResourceError:  # the API server validates; only a CRD older than us gets here
        return None


@kopf.index(GROUP, VERSION, "runtimes")
def cached_runtimes(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    """namespace -> (name, spec) of its Runtimes."""
    spec = _runtime_spec(body)
    return {namespace or "": (name, spec)} if spec is not None else {}


@kopf.index(GROUP, VERSION, "clusterruntimes")
def cached_cluster_runtimes(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    """ "" -> (name, spec) of every ClusterRuntime."""
    spec = _runtime_spec(body)
    return {"": (name, spec)} if spec is not None else {}


@kopf.index("", "v1", "pods", labels={**MANAGED, "app.kubernetes.io/component": COMPONENT_ARTIFACT_CHECK})
def cached_check_pods(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Key, Packed]:
    """(namespace, ModelVersion) -> its artifact check pod."""
    version = str(((body.get("metadata") or {}).get("annotations") or {}).get(MODEL_VERSION_ANNOTATION, ""))
    return {(namespace or "", version): Packed(_plain(body, "v1", "Pod"))} if version else {}


# --- reading them ---------------------------------------------------------------------------------------


class Cache:
    """What the controllers read, from kopf's indexes (as a startup handler receives them)."""

    def __init__(self, indexes: Mapping[str, Any]) -> None:
        missing = [name for name in INDEXES if name not in indexes]
        if missing:
            raise ValueError(f"kopf did not pass the indexes {', '.join(missing)}")
        self._indexes = {name: indexes[name] for name in INDEXES}

    def _all(self, index: str, key: Key) -> list[Obj]:
        store = self._indexes[index].get(key)
        return [unpack(value) for value in store] if store is not None else []

    def _one(self, index: str, key: Key) -> Obj | None:
        found = self._all(index, key)
        return found[0] if found else None

    def deployment(self, namespace: str, name: str) -> Obj | None:
        return self._one("cached_deployments", (namespace, name))

    def model_version(self, namespace: str, name: str) -> Obj | None:
        return self._one("cached_model_versions", (namespace, name))

    def model(self, namespace: str, name: str) -> Obj | None:
        return self._one("cached_models", (namespace, name))

    def monitor(self, namespace: str, name: str) -> Obj | None:
        return self._one("cached_monitors", (namespace, name))

    def monitors_of(self, namespace: str, deployment: str) -> list[Obj]:
        """The Monitors in `namespace` that watch `deployment`."""
        return self._all("cached_monitors_by_deployment", (namespace, deployment))

    def owned_deployments(self, namespace: str, owner: str, component: str) -> list[Obj]:
        return [
            d
            for d in self._all("cached_owned_deployments", (namespace, owner))
            if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == component
        ]

    def owned_services(self, namespace: str, owner: str, component: str) -> list[Obj]:
        return [
            s
            for s in self._all("cached_owned_services", (namespace, owner))
            if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == component
        ]

    def runtimes(self, namespace: str) -> Runtimes:
        """The runtimes a version in `namespace` may use: its Runtimes and every ClusterRuntime."""
        namespaced = self._indexes["cached_runtimes"].get(namespace)
        cluster = self._indexes["cached_cluster_runtimes"].get("")
        return Runtimes(
            namespaced=dict(namespaced) if namespaced is not None else {},
            cluster=dict(cluster) if cluster is not None else {},
        )

    def check_pod(self, namespace: str, version: str) -> Obj | None:
        """The artifact check pod of a ModelVersion, if one exists."""
        return self._one("cached_check_pods", (namespace, version))

    def router_pods(self, namespace: str, deployment: str) -> list[Obj]:
        label = labels(deployment, COMPONENT_ROUTER)[DEPLOYMENT_LABEL]
        return self._all("cached_router_pods", (namespace, label))
