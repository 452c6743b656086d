"""The plugin's side of the API server: connect as kubectl would, read and annotate modelfleet.io
objects, and turn client failures into one-line errors a user can act on."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from modelfleet.api import GROUP, VERSION

#: Plural of each kind, as in the API paths.
PLURALS = {
    "Deployment": "deployments",
    "Monitor": "monitors",
    "ModelVersion": "modelversions",
    "Model": "models",
}
REQUEST_TIMEOUT = 15.0
"""Seconds for one ordinary request (connect and read)."""


class PluginError(Exception):
    """A failure the user can act on; printed as `error: <message>`, exit code 1."""


def _server_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    return str(error.reason or f"HTTP {error.status}")


def _not_found_object(error: ApiException) -> bool:
    """True when a 404 names an object (it does not exist); False when the resource type is unknown."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return False
    details = body.get("details") if isinstance(body, Mapping) else None
    return isinstance(details, Mapping) and bool(details.get("name"))


def explain_api_error(error: ApiException, kind: str, name: str | None, namespace: str, verb: str) -> str:
    """One line saying what went wrong and what to do, from an API error of `verb` on `kind` `name`."""
    what = f"{kind} {name!r}" if name else f"{kind}s"
    resource = f"{PLURALS.get(kind, kind.lower() + 's')}.{GROUP}"
    if error.status == 404:
        if name and _not_found_object(error):
            return (
                f"{kind} {name!r} not found in namespace {namespace!r}"
                f" (`kubectl get {resource} -n {namespace}` lists them)"
            )
        return (
            f"the API server does not know {resource}: the modelfleet CRDs are not installed"
            " (kubectl apply --server-side -f crds/, or install the Helm chart)"
        )
    if error.status == 403:
        return f"permission denied: cannot {verb} {what} in namespace {namespace!r}: {_server_message(error)}"
    if error.status == 401:
        return "unauthorized: the API server refused the credentials of this kubeconfig context"
    if error.status == 409:
        return f"conflict while trying to {verb} {what}: {_server_message(error)}; try again"
    return f"cannot {verb} {what}: {error.status} {_server_message(error)}"


def explain_connection_error(error: BaseException, server: str) -> str:
    """One line for a failure to reach the API server at all."""
    reason: object = error
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        reason = error.reason
    text = str(reason)
    for marker, short in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("timed out", "timed out"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted"),
        ("No route to host", "no route to host"),
    ):
        if marker in text:
            text = short
            break
    return f"cannot reach the Kubernetes API server at {server}: {text} (is the cluster up? see --kubeconfig)"


@dataclass(frozen=True)
class Target:
    """Where to connect: the kubeconfig file(s), the context and the namespace (as kubectl resolves them)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


class Kube:
    """Reads and annotates modelfleet.io objects in one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.server = str(api_client.configuration.host)

    def _call(self, verb: str, kind: str, name: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(GROUP, VERSION, self.namespace, PLURALS[kind], *args, **kwargs)
        except ApiException as error:
            if error.status == 0 or error.status is None:
                raise PluginError(explain_connection_error(error, self.server)) from None
            raise PluginError(explain_api_error(error, kind, name, self.namespace, verb)) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise PluginError(explain_connection_error(error, self.server)) from None

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._call(
            "get", kind, name, self.api.get_namespaced_custom_object, name, _request_timeout=REQUEST_TIMEOUT
        )
        return out

    def get_or_none(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, name)
        except PluginError as error:
            if "not found in namespace" in str(error):
                return None
            raise

    def list(self, kind: str, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """The objects of `kind` in the namespace, and the list's resourceVersion (to watch from)."""
        kwargs: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT}
        if field_selector:
            kwargs["field_selector"] = field_selector
        out = self._call("list", kind, None, self.api.list_namespaced_custom_object, **kwargs)
        return list(out.get("items") or []), str((out.get("metadata") or {}).get("resourceVersion", ""))

    def annotate(self, kind: str, name: str, key: str, value: str) -> dict[str, Any]:
        """Set one annotation with a merge patch (other annotations untouched)."""
        body = {"metadata": {"annotations": {key: value}}}
        out: dict[str, Any] = self._call(
            "patch",
            kind,
            name,
            self.api.patch_namespaced_custom_object,
            name,
            body,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return out

    def watch(
        self, kind: str, resource_version: str, field_selector: str | None, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Raw watch events ({type, object}) of `kind` from `resource_version`, with bookmarks, until the
        server ends the watch after `timeout_seconds`. Raises ApiException (410 when too old) and
        connection errors unchanged: the caller decides whether to list again."""
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
            "_preload_content": False,
            "_request_timeout": (REQUEST_TIMEOUT, timeout_seconds + 30),
        }
        if field_selector:
            kwargs["field_selector"] = field_selector
        response: Any = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], **kwargs
        )
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event.get("object") or {}
                            raise ApiException(
                                status=int(status.get("code") or 500),
                                reason=f"{status.get('reason', '')}: {status.get('message', '')}",
                            )
                        yield event
        finally:
            response.close()
            response.release_conn()


def connect(target: Target) -> Kube:
    """A client for the cluster kubectl would talk to: --kubeconfig, else KUBECONFIG, else
    ~/.kube/config, else the in-cluster service account; the context's namespace unless -n is given."""
    kubeconfig = target.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    configuration = client.Configuration()
    namespace = target.namespace
    try:
        paths = [p for p in kubeconfig.split(os.pathsep) if p]
        if any(os.path.exists(p) for p in paths):
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=target.context, client_configuration=configuration
            )
            if namespace is None:
                contexts, active = config.list_kube_config_contexts(kubeconfig)  # type: ignore[no-untyped-call]
                chosen = next((c for c in contexts if c["name"] == target.context), None) or active
                namespace = (chosen or {}).get("context", {}).get("namespace")
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and not target.kubeconfig:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            if namespace is None:
                with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                    namespace = f.read().strip()
        else:
            where = target.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise PluginError(
                f"no cluster configured: kubeconfig {where} does not exist"
                " (set KUBECONFIG or pass --kubeconfig)"
            )
    except ConfigException as error:
        text = str(error).removeprefix("Invalid kube-config file. ")
        if target.context and target.context in text:
            text = f"context {target.context!r} is not in the kubeconfig"
        raise PluginError(f"cannot use kubeconfig {kubeconfig}: {text}") from None
    except OSError as error:
        raise PluginError(f"cannot read the cluster configuration: {error}") from None
    configuration.retries = 1
    return Kube(client.ApiClient(configuration), namespace or "default")
