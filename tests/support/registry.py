"""Helpers for the registry's integration tests: manifests, a registry-only operator, status reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from support.cluster import Cluster
from support.operator import OperatorProcess

API_VERSION = "modelfleet.io/v1alpha1"


def model(
    name: str, *, require_approval: bool = False, allowed_images: list[str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {
            "description": "Iris species classifier",
            "owner": "team-a",
            "task": "classification",
            "governance": {"requireApproval": require_approval, "allowedImages": allowed_images or []},
        },
    }


def model_version(
    name: str, model_name: str, image: str, *, version: str = "1", approval: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": model_name, "version": version, "image": image}
    if approval is not None:
        spec["approval"] = approval
    return {"apiVersion": API_VERSION, "kind": "ModelVersion", "metadata": {"name": name}, "spec": spec}


def deployment(name: str, model_name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"model": model_name, "version": version},
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition of this type in obj's status, or {}."""
    for item in obj.get("status", {}).get("conditions", []):
        if item.get("type") == type_:
            return dict(item)
    return {}


def state(obj: dict[str, Any], type_: str) -> tuple[str, str]:
    """(status, reason) of the condition of this type, or ("", "")."""
    found = condition(obj, type_)
    return found.get("status", ""), found.get("reason", "")


def patch(cluster: Cluster, kind: str, name: str, namespace: str, change: dict[str, Any]) -> None:
    """A merge patch of the object, as `kubectl patch --type=merge` by a user."""
    cluster.kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(change))


def write_status(cluster: Cluster, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
    """Merge `status` into the object's status subresource, as a controller would."""
    cluster.kubectl(
        "patch",
        kind,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about the object called `name`, oldest first."""
    out = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "json",
    )
    return [(e["type"], e["reason"], e["message"]) for e in json.loads(out.stdout)["items"]]


def KopfProcess(cluster: Cluster, namespace: str, modules: list[str], log_path: Path) -> OperatorProcess:
    """An operator process running only some handler modules (`kopf run -m ...`), in one namespace.

    The registry's tests write a modelfleet Deployment's status themselves to say what it serves; the
    Deployment controller must not run beside them, so they run the registry controllers alone.
    """
    command = [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace]
    # modelfleet.controllers.main holds the operator-wide settings (progress in annotations).
    for module in ["modelfleet.controllers.main", *modules]:
        command += ["-m", module]
    return OperatorProcess(cluster, namespace, log_path, command)
