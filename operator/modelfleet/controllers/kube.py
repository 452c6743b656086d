"""Shared Kubernetes API helpers for the controllers: one client, plain dicts in and out.

The official `kubernetes` client is synchronous; the async helpers run it in a worker thread so the
operator's event loop never waits on the API server. The operator gives its event loop a pool of
`api_threads()` threads (MODELFLEET_API_THREADS, default 32) and the client as many connections: with
asyncio's default of min(32, CPUs + 4) threads, six on a 2-core machine, no more than six reconciles
could wait on the API server at once. Objects are applied with server-side apply under the field
manager `modelfleet`, which makes creating and updating one idempotent step.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

from kubernetes import client, config

from modelfleet.builders import FIELD_MANAGER

Obj = dict[str, Any]

GROUP = "modelfleet.io"
VERSION = "v1alpha1"
REQUEST_TIMEOUT = (5.0, 30.0)

# kind -> resource (plural) for the kinds the operator touches
PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "NetworkPolicy": "networkpolicies",
    "Pod": "pods",
    "Secret": "secrets",
    "Event": "events",
    "Monitor": "monitors",
    "Model": "models",
    "ModelVersion": "modelversions",
    "Runtime": "runtimes",
    "ClusterRuntime": "clusterruntimes",
}
#: Kinds without a namespace.
CLUSTER_SCOPED = frozenset({"ClusterRuntime"})

API_THREADS_VARIABLE = "MODELFLEET_API_THREADS"
DEFAULT_API_THREADS = 32

_lock = threading.Lock()
_client: client.ApiClient | None = None


def api_threads() -> int:
    """Threads (and client connections) for API calls: MODELFLEET_API_THREADS, else 32."""
    text = os.environ.get(API_THREADS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_API_THREADS
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{API_THREADS_VARIABLE}={text!r} is not a whole number") from None
    if not 1 <= value <= 512:
        raise ValueError(f"{API_THREADS_VARIABLE}={text!r} must be between 1 and 512")
    return value


class NotFound(Exception):
    """The object does not exist (any more)."""


class Conflict(Exception):
    """The object changed since it was read (optimistic concurrency), or an apply conflicted."""


def api_client() -> client.ApiClient:
    """The shared API client: in-cluster credentials when running as a pod, else the kubeconfig."""
    global _client
    with _lock:
        if _client is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = api_threads()  # one connection per thread, reused
            _client = client.ApiClient(configuration)
            _client.user_agent = "modelfleet-operator"
        return _client


def path(api_version: str, kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    """The REST path of an object (or of its collection when `name` is empty); `namespace` is ignored
    for a cluster-scoped kind."""
    plural = PLURALS.get(kind)
    if plural is None:
        raise ValueError(f"unknown kind {kind}")
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = f"{base}/{plural}" if kind in CLUSTER_SCOPED else f"{base}/namespaces/{namespace}/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


class ApiError(Exception):
    """The API server refused a request; `status` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def request(
    method: str,
    resource_path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> Any:
    """One API call; the decoded JSON answer. Raises NotFound, Conflict or ApiError."""
    api = api_client()
    _, url, headers, payload, _ = api.param_serialize(
        method=method,
        resource_path=resource_path,
        query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(
        method, url, header_params=headers, body=payload, _request_timeout=REQUEST_TIMEOUT
    )
    data: bytes | None = response.read()  # type: ignore[no-untyped-call]
    if response.status >= 400:
        raise refusal(method, resource_path, response.status, _reason(data, response.reason))
    return json.loads(data) if data else None


def refusal(method: str, resource_path: str, status: int, message: str) -> Exception:
    """The exception `request` raises for an API server's refusal: NotFound for 404, Conflict for a
    409 or 422 to a PATCH or PUT (an apply or update that conflicts or is invalid), else ApiError."""
    if status == 404:
        return NotFound(f"{resource_path}: {message}")
    if status in (409, 422) and method in ("PATCH", "PUT"):
        return Conflict(message)
    return ApiError(status, message)


def api_ready() -> bool:
    """Does the API server answer /readyz with 200? Only then is its discovery complete: kopf resolves
    the kinds it watches once, at start, and one it could not resolve would never be watched."""
    api = api_client()
    _, url, headers, _, _ = api.param_serialize(
        method="GET", resource_path="/readyz", header_params={}, auth_settings=["BearerToken"]
    )
    try:
        response = api.call_api("GET", url, header_params=headers, _request_timeout=(3.0, 5.0))
        response.read()  # type: ignore[no-untyped-call]
    except Exception:  # refused, reset, timed out: not ready
        return False
    return bool(response.status == 200)


def _reason(data: bytes | None, default: str) -> str:
    try:
        return str(json.loads(data or b"").get("message", default))
    except (AttributeError, TypeError, ValueError):
        return str(default)


def get(api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
    """The object, or None when it does not exist."""
    try:
        out: Obj = request("GET", path(api_version, kind, namespace, name))
    except NotFound:
        return None
    return out


def list_objects(api_version: str, kind: str, namespace: str, selector: str = "") -> list[Obj]:
    query = [("labelSelector", selector)] if selector else []
    answer = request("GET", path(api_version, kind, namespace), query=query)
    items: list[Obj] = answer.get("items", [])
    kind_ok = {"apiVersion": api_version, "kind": kind}
    return [{**kind_ok, **item} for item in items]


def apply(manifest: Obj, field_manager: str = FIELD_MANAGER) -> Obj:
    """Server-side apply (field manager `modelfleet` unless given, conflicts forced): create or update in
    one step."""
    meta = manifest["metadata"]
    out: Obj = request(
        "PATCH",
        path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]),
        query=[("fieldManager", field_manager), ("force", "true")],
        body=manifest,
        content_type="application/apply-patch+yaml",
    )
    return out


def create(manifest: Obj) -> bool:
    """Create an object (POST; only the `create` permission is needed); False when one of that name
    already exists."""
    meta = manifest["metadata"]
    try:
        request("POST", path(manifest["apiVersion"], manifest["kind"], meta["namespace"]), body=manifest)
    except ApiError as error:
        if error.status == 409:
            return False
        raise
    return True


def delete(api_version: str, kind: str, namespace: str, name: str) -> bool:
    """Delete with background propagation; False when it was already gone."""
    try:
        request(
            "DELETE",
            path(api_version, kind, namespace, name),
            body={"propagationPolicy": "Background"},
        )
    except NotFound:
        return False
    return True


def replace_status(kind: str, namespace: str, name: str, status: Obj, resource_version: str) -> Obj:
    """Write a custom resource's whole status, only if the object is still at `resource_version`
    (else Conflict: it changed since it was read, decide again)."""
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "add", "path": "/status", "value": status},
    ]
    out: Obj = request(
        "PATCH",
        path(f"{GROUP}/{VERSION}", kind, namespace, name, "status"),
        body=patch,
        content_type="application/json-patch+json",
    )
    return out


def remove_annotations(kind: str, namespace: str, name: str, annotations: list[str]) -> None:
    """Remove annotations from a custom resource (a merge patch setting them to null)."""
    if not annotations:
        return
    request(
        "PATCH",
        path(f"{GROUP}/{VERSION}", kind, namespace, name),
        body={"metadata": {"annotations": dict.fromkeys(annotations)}},
        content_type="application/merge-patch+json",
    )


async def run(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking helper of this module in a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)
