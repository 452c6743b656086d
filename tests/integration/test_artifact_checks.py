"""Artifact versions are checked before anything rolls them out, by a pod of their own with their own
Secret; what it finds becomes the version's status, with no secret in any message.

Against the real API server and kubelet: the check pod runs the operator image's `modelfleet fetch
--check`, and the kubelet hands its report (the termination message) back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.cluster import Cluster
from support.registry import API_VERSION, condition, state

SECRET_VALUE = "s3cr3t-value-that-must-never-show"
DIGEST = "sha256:" + "0" * 64


def artifact_version(
    name: str, *, uri: str, fmt: str = "sklearn", secret: str | None = None
) -> dict[str, Any]:
    artifact: dict[str, Any] = {"uri": uri, "format": fmt, "digest": DIGEST}
    if secret:
        artifact["credentials"] = {"secretName": secret}
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {"model": "iris", "version": name.rsplit("-", 1)[-1], "artifact": artifact},
    }


def runtime(name: str, formats: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Runtime",
        "metadata": {"name": name},
        "spec": {"formats": formats, "image": "localhost/modelfleet-mlserver:dev"},
    }


def secret(name: str, endpoint: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {
            "AWS_ACCESS_KEY_ID": "modelfleet-test",
            "AWS_SECRET_ACCESS_KEY": SECRET_VALUE,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
        },
    }


def events_text(cluster: Cluster, namespace: str) -> str:
    return cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout


@pytest.mark.timeout(300)
def test_an_unreachable_store_rejects_the_version_and_is_checked_again(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    # the store's endpoint is the check pod's own loopback, where nothing listens: refused at once
    cluster.apply(
        [
            {"apiVersion": API_VERSION, "kind": "Model", "metadata": {"name": "iris"}, "spec": {}},
            runtime("mlserver-sklearn", ["sklearn"]),
            secret("s3-creds", "http://127.0.0.1:9"),
            artifact_version("iris-v4", uri="s3://models/iris/4/", secret="s3-creds"),
        ],
        namespace,
    )

    def runtime_ready() -> dict[str, Any] | None:
        found = cluster.get("runtime", "mlserver-sklearn", namespace)
        return found if state(found, "Ready")[0] == "True" else None

    rt = cluster.wait_for("the Runtime to be Ready", runtime_ready, timeout=60)
    assert "serves sklearn with localhost/modelfleet-mlserver:dev" in condition(rt, "Ready")["message"]

    def rejected() -> dict[str, Any] | None:
        mv = cluster.get("modelversion", "iris-v4", namespace)
        return mv if state(mv, "ArtifactVerified") == ("False", "ArtifactUnreachable") else None

    mv = cluster.wait_for("the check to find the store unreachable", rejected, timeout=150, interval=1)
    assert mv["status"]["phase"] == "Rejected"
    assert state(mv, "Ready") == ("False", "ArtifactUnreachable")
    assert "s3://models/iris/4/" in mv["status"]["message"]
    assert mv["status"]["artifact"]["runtime"] == "Runtime/mlserver-sklearn"
    first = mv["status"]["artifact"]["checks"]
    assert first >= 1
    # the check pod is gone once its report is read
    cluster.wait_for(
        "the check pod to be removed",
        lambda: cluster.get_or_none("pod", "iris-v4-artifact-check", namespace) is None,
        timeout=30,
    )
    # a store that may come back is checked again, after a delay
    again = cluster.wait_for(
        "a second check",
        lambda: (
            (m := cluster.get("modelversion", "iris-v4", namespace))["status"]["artifact"]["checks"] > first
            and m
        ),
        timeout=90,
        interval=1,
    )
    assert again["status"]["phase"] in ("Pending", "Rejected")
    shown = json.dumps(again) + events_text(cluster, namespace) + operator.log()
    assert SECRET_VALUE not in shown


@pytest.mark.timeout(300)
def test_a_missing_secret_and_a_missing_runtime_are_said_plainly(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    cluster.apply(
        [
            {"apiVersion": API_VERSION, "kind": "Model", "metadata": {"name": "iris"}, "spec": {}},
            runtime("mlserver-sklearn", ["sklearn"]),
            artifact_version("iris-v5", uri="s3://models/iris/5/", secret="no-such-secret"),
            artifact_version("iris-v6", uri="https://models.example.com/iris.onnx", fmt="onnx"),
        ],
        namespace,
    )

    def reason(name: str, condition_type: str, wanted: tuple[str, str]) -> dict[str, Any] | None:
        mv = cluster.get("modelversion", name, namespace)
        return mv if state(mv, condition_type) == wanted else None

    v5 = cluster.wait_for(
        "the missing Secret to be named",
        lambda: reason("iris-v5", "ArtifactVerified", ("False", "CredentialsNotFound")),
        timeout=150,
        interval=1,
    )
    assert "no-such-secret" in condition(v5, "ArtifactVerified")["message"]
    assert v5["status"]["phase"] == "Rejected"
    v6 = cluster.wait_for(
        "no runtime for onnx", lambda: reason("iris-v6", "Ready", ("False", "NoRuntime")), timeout=60
    )
    assert "no Runtime or ClusterRuntime serves format onnx" in v6["status"]["message"]
    assert v6["status"]["phase"] == "Rejected"
