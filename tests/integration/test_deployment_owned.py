"""The Deployment controller against the real API server: owned objects, garbage collection,
restarts, versions that may not be served."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import helpers

from support.cluster import Cluster

OWNED = [
    ("deployment.apps", "iris-iris-v1"),
    ("service", "iris-iris-v1"),
    ("deployment.apps", "iris-router"),
    ("service", "iris"),
    ("serviceaccount", "iris-router"),
    ("role", "iris-router"),
    ("rolebinding", "iris-router"),
    ("networkpolicy", "iris-router"),
    ("secret", "iris-router-admin"),
]


def _deploy_v1(cluster: Cluster, namespace: str, **options: Any) -> dict[str, Any]:
    cluster.apply([helpers.model(), helpers.model_version("iris-v1", "1")], namespace)
    cluster.apply(helpers.deployment(version="iris-v1", **options), namespace)
    return cluster.get("deployments.modelfleet.io", "iris", namespace)


def _all_owned(cluster: Cluster, namespace: str) -> list[dict[str, Any]] | None:
    objects = [cluster.get_or_none(kind, name, namespace) for kind, name in OWNED]
    return None if any(o is None for o in objects) else objects  # type: ignore[return-value]


def test_owned_objects_carry_owner_references_and_labels(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    owner = _deploy_v1(cluster, namespace)
    objects = cluster.wait_for("owned objects", lambda: _all_owned(cluster, namespace), timeout=60)
    for obj in objects:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "Deployment",
            "iris",
            owner["metadata"]["uid"],
            True,
        )
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "modelfleet"
        assert labels["modelfleet.io/deployment"] == "iris"
    version = cluster.get("deployment.apps", "iris-iris-v1", namespace)
    assert version["metadata"]["labels"]["modelfleet.io/version"] == "iris-v1"
    pod = version["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the fields are owned by the field manager modelfleet (server-side apply)
    shown = cluster.kubectl(
        "get", "deployment.apps", "iris-iris-v1", "-n", namespace, "-o", "json", "--show-managed-fields"
    ).stdout
    managers = {entry["manager"] for entry in json.loads(shown)["metadata"]["managedFields"]}
    assert "modelfleet" in managers
    status = cluster.wait_for(
        "endpoint in status",
        lambda: (cluster.get("deployments.modelfleet.io", "iris", namespace).get("status") or {}).get(
            "endpoint"
        ),
        timeout=30,
    )
    assert status == f"http://iris.{namespace}.svc:80"


def test_deleting_the_deployment_removes_everything_it_owns(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    _deploy_v1(cluster, namespace)
    cluster.wait_for("owned objects", lambda: _all_owned(cluster, namespace), timeout=60)
    cluster.kubectl(
        "delete", "deployments.modelfleet.io", "iris", "-n", namespace, "--wait=true", "--timeout=60s"
    )
    cluster.wait_for(
        "garbage collection of owned objects",
        lambda: all(cluster.get_or_none(kind, name, namespace) is None for kind, name in OWNED),
        timeout=90,
    )
    assert cluster.get_or_none("configmap", "iris-router", namespace) is None


def test_a_restarted_operator_takes_over_from_the_status(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    _deploy_v1(cluster, namespace)
    before = cluster.wait_for(
        "iris-v1 healthy",
        lambda: (s := helpers.status(cluster, namespace)).get("phase") == "Healthy" and s,
        timeout=120,
    )
    operator.restart()
    cluster.kubectl(
        "patch",
        "deployments.modelfleet.io",
        "iris",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 2}}),
    )
    cluster.wait_for(
        "2 replicas applied after the restart",
        lambda: cluster.get("deployment.apps", "iris-iris-v1", namespace)["spec"]["replicas"] == 2,
        timeout=60,
    )
    after = helpers.status(cluster, namespace)
    assert after["stableVersion"] == before["stableVersion"] == "iris-v1"
    assert after["history"] == before["history"]  # nothing re-decided from scratch


def test_a_version_that_may_not_be_served_is_not_rolled_out(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    model = helpers.model()
    model["spec"]["governance"] = {"allowedImages": ["localhost/iris-server:1"]}
    cluster.apply(
        [model, helpers.model_version("iris-v1", "1"), helpers.model_version("iris-v2", "2")], namespace
    )
    cluster.apply(helpers.deployment(version="iris-v1"), namespace)
    cluster.wait_for(
        "iris-v1 healthy", lambda: helpers.status(cluster, namespace).get("phase") == "Healthy", timeout=120
    )
    cluster.kubectl(
        "patch",
        "deployments.modelfleet.io",
        "iris",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"version": "iris-v2"}}),
    )
    status = cluster.wait_for(
        "a reason in status",
        lambda: (s := helpers.status(cluster, namespace)).get("observedGeneration") == 2 and s,
        timeout=30,
    )
    ready = helpers.condition(status, "Ready")
    assert ready["status"] == "False"
    assert "not in allowedImages" in ready["message"], ready
    assert status["stableVersion"] == "iris-v1"
    assert status.get("canaryVersion", "") == ""
    assert cluster.get_or_none("deployment.apps", "iris-iris-v2", namespace) is None
