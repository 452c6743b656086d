"""Pod Security `restricted`, judged by the API server: every pod the chart renders and every pod the
operator creates (model servers and routers, from `modelfleet.builders`) is admitted in a namespace
that enforces the profile.

Each pod template is sent as a Pod with `kubectl create --dry-run=server`, so the PodSecurity admission
plugin decides (it judges Pods; for Deployments it would only warn). A deliberately weak pod is refused
in the same namespace, which shows the check is live.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from modelfleet.api import DeploymentSpec, ModelVersionSpec
from modelfleet.builders import Owner, build_router_deployment, build_version_deployment
from support.cluster import REPO, VERSIONS, Cluster, KubectlError
from support.tools import helm_binary

HELM = helm_binary()
ENFORCE = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="module")
def restricted(cluster: Cluster) -> Iterator[str]:
    name = cluster.new_namespace(prefix="mf-pss", labels=ENFORCE)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


def as_pod(name: str, namespace: str, template: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(template["spec"])
    # The service account does not matter to Pod Security; `default` exists in every namespace.
    spec["serviceAccountName"] = "default"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": template["metadata"].get("labels", {})},
        "spec": spec,
    }


def admit(cluster: Cluster, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))


def chart_pod_templates(namespace: str, *sets: str) -> list[tuple[str, dict[str, Any]]]:
    assert HELM is not None
    args = [arg for s in sets for arg in ("--set", s)]
    rendered = subprocess.run(
        [
            HELM,
            "template",
            "pss",
            str(REPO / "charts" / "modelfleet"),
            "--namespace",
            namespace,
            "--kube-version",
            VERSIONS["KUBERNETES_VERSION"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    out = []
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((doc["metadata"]["name"], doc["spec"]["template"]))
        elif doc and doc["kind"] == "Pod":
            out.append((doc["metadata"]["name"], {"metadata": doc["metadata"], "spec": doc["spec"]}))
    return out


@pytest.mark.skipif(HELM is None, reason="no helm: run `cluster/build.sh helm`")
@pytest.mark.parametrize(
    "sets",
    [(), ("leaderElection.enabled=false", "metrics.enabled=false"), ("replicas=2", "verbose=true")],
    ids=["defaults", "no-leader-election", "two-replicas"],
)
def test_every_pod_the_chart_renders_is_admitted(
    cluster: Cluster, restricted: str, sets: tuple[str, ...]
) -> None:
    templates = chart_pod_templates(restricted, *sets)
    assert templates, "the chart renders no pod"
    for name, template in templates:
        admit(cluster, as_pod(f"chart-{name}"[:63], restricted, template))


OWNER = Owner(name="iris", namespace="ml", uid="00000000-0000-0000-0000-000000000001")
VERSION_SPECS = {
    "plain": {"model": "iris", "version": "1", "image": "localhost/iris-server:1"},
    "with-args-env-resources": {
        "model": "iris",
        "version": "2",
        "image": "localhost/iris-server:2",
        "port": 9000,
        "protocol": "v1",
        "args": ["--workers", "2"],
        "env": [{"name": "MODELFLEET_FAULT_LATENCY", "value": "0.3s"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    },
}


@pytest.mark.parametrize("spec", list(VERSION_SPECS), ids=str)
def test_every_model_server_pod_the_operator_creates_is_admitted(
    cluster: Cluster, restricted: str, spec: str
) -> None:
    version = ModelVersionSpec.model_validate(VERSION_SPECS[spec])
    deployment = build_version_deployment(OWNER, f"iris-{spec}", version, replicas=2)
    admit(cluster, as_pod(f"model-{spec}", restricted, deployment["spec"]["template"]))


@pytest.mark.parametrize(
    "router",
    [{}, {"replicas": 2, "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "128Mi"}}}],
    ids=["defaults", "with-resources"],
)
def test_every_router_pod_the_operator_creates_is_admitted(
    cluster: Cluster, restricted: str, router: dict[str, Any]
) -> None:
    spec = DeploymentSpec.model_validate({"model": "iris", "version": "iris-v1", "router": router})
    deployment = build_router_deployment(OWNER, spec)
    admit(cluster, as_pod(f"router-{len(router)}", restricted, deployment["spec"]["template"]))


def test_a_pod_that_breaks_the_profile_is_refused(cluster: Cluster, restricted: str) -> None:
    weak = {
        "metadata": {"labels": {}},
        "spec": {"containers": [{"name": "c", "image": "localhost/iris-server:1"}]},
    }
    with pytest.raises(KubectlError) as refused:
        admit(cluster, as_pod("weak", restricted, weak))
    assert 'violates PodSecurity "restricted:latest"' in refused.value.stderr
    assert "runAsNonRoot" in refused.value.stderr
