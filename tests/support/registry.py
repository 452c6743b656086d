"""Helpers for the registry's integration tests: manifests, a registry-only operator, status reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.cluster import Cluster

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


class KopfProcess:
    """An operator process running only some handler modules (`kopf run -m ...`), in one namespace.

    The registry's tests write a modelfleet Deployment's status themselves to say what it serves; the
    Deployment controller must not run beside them, so they run the registry controllers alone.
    """

    def __init__(self, cluster: Cluster, namespace: str, modules: list[str], log_path: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.modules = modules
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", self.namespace]
        # modelfleet.controllers.main holds the operator-wide settings (progress in annotations).
        for module in ["modelfleet.controllers.main", *self.modules]:
            args += ["-m", module]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.cluster.env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
