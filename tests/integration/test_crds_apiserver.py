"""The generated CRDs against a real kube-apiserver: accepted, defaulting as the models do, and
refusing bad input with the messages the CEL rules and schemas give.

The CRDs are installed under a throw-away API group for the run, so no running operator reacts to
the objects made here and the real modelfleet.io CRDs are left alone.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.cluster import Cluster, KubectlError, find_cluster  # noqa: E402

from modelfleet.api import (  # noqa: E402
    Deployment,
    DeploymentPhase,
    DeploymentStatus,
    HistoryEntry,
    InvalidResourceError,
    Model,
    ModelVersion,
    Monitor,
    RolloutResult,
    crdgen,
)
from modelfleet.api.common import Resource  # noqa: E402

pytestmark = pytest.mark.integration

RESOURCES: dict[str, type[Resource[Any, Any]]] = {
    "Model": Model,
    "ModelVersion": ModelVersion,
    "Deployment": Deployment,
    "Monitor": Monitor,
}


class Api:
    def __init__(self, cluster: Cluster, group: str, namespace: str) -> None:
        self.cluster = cluster
        self.group = group
        self.namespace = namespace

    def manifest(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{self.group}/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }

    def dry_run(
        self, kind: str, spec: dict[str, Any], verb: str = "create", name: str = "x"
    ) -> dict[str, Any]:
        """The object as the API server would store it; raises KubectlError when refused."""
        text = yaml.safe_dump(self.manifest(kind, name, spec))
        out = self.cluster.kubectl(verb, "--dry-run=server", "-o", "json", "-f", "-", input=text)
        stored: dict[str, Any] = json.loads(out.stdout)
        return stored

    def create(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        self.cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(self.manifest(kind, name, spec)))

    def resource(self, kind: str) -> str:
        return f"{kind.lower()}s.{self.group}"


def test_crd_files_are_accepted_by_the_api_server(cluster: Cluster) -> None:
    for path in sorted((REPO / "crds").glob("*.yaml")):
        out = cluster.kubectl("apply", "--dry-run=server", "-f", str(path)).stdout
        assert "(server dry run)" in out, path


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    found = find_cluster()
    if found is None:
        pytest.skip("no Kubernetes API server: run `make cluster-up` or set KUBECONFIG")
    return found


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[Api]:
    group = f"t{uuid.uuid4().hex[:8]}.apitest.modelfleet.example"
    crds = []
    for kind in crdgen.KINDS:
        crd = crdgen.crd(kind)
        crd["metadata"]["name"] = f"{kind.plural}.{group}"
        crd["spec"]["group"] = group
        del crd["spec"]["names"]["shortNames"], crd["spec"]["names"]["categories"]
        crds.append(crd)
    cluster.apply(crds)
    names = [c["metadata"]["name"] for c in crds]
    try:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
        namespace = cluster.new_namespace("mf-crdtest")
        try:
            yield Api(cluster, group, namespace)
        finally:
            cluster.delete_namespace(namespace)
    finally:
        cluster.kubectl("delete", "crd", "--wait=false", "--ignore-not-found", *names, check=False)


API_MD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("Model", {"governance": {"requireApproval": True, "allowedImages": ["localhost/"]}}),
    (
        "ModelVersion",
        {
            "model": "iris",
            "version": "2",
            "image": "localhost/iris-server:2",
            "resources": {
                "limits": {"cpu": "1", "memory": "1Gi"},
                "requests": {"cpu": "100m", "memory": 256},
            },
            "env": [
                {"name": "A", "value": "b"},
                {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "m"}}},
            ],
            "lineage": {
                "source": {"repository": "https://git.example.com/ml/iris", "commit": "3f2a9c1"},
                "metrics": {"accuracy": 0.973, "f1": 0.968},
            },
            "approval": {"approved": True, "by": "alice"},
        },
    ),
    ("Deployment", {"model": "iris", "version": "iris-v2"}),
    (
        "Deployment",
        {
            "model": "iris",
            "version": "iris-v2",
            "replicas": 2,
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 10}, {"pause": {}}, {"pause": {"duration": "1m"}}],
                    "monitor": "q",
                }
            },
            "fallback": {"circuitBreaker": {"errorRate": 1}, "response": {"body": "{}"}},
        },
    ),
    (
        "Monitor",
        {
            "deployment": "iris",
            "metrics": [
                {"name": "errors", "type": "errorRate", "max": 0.05},
                {"name": "p99", "type": "latency", "quantile": 0.99, "max": 0.5},
                {"name": "kpi", "type": "prometheus", "prometheus": {"query": "up"}, "min": 1},
            ],
        },
    ),
]


@pytest.mark.parametrize(("kind", "spec"), API_MD_SPECS)
def test_the_server_defaults_specs_as_the_models_do(api: Api, kind: str, spec: dict[str, Any]) -> None:
    stored = api.dry_run(kind, spec)
    resource = RESOURCES[kind]
    assert resource.from_k8s(stored).spec == resource.from_k8s({"spec": spec}).spec


BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    (
        "Deployment",
        {"model": "iris", "version": "v", "strategy": {"canary": {"steps": [{"setWeight": 1, "pause": {}}]}}},
        "a step has exactly one of setWeight or pause",
    ),
    (
        "Deployment",
        {"model": "iris", "version": "v", "strategy": {"canary": {"steps": [{}]}}},
        "a step has exactly one of setWeight or pause",
    ),
    (
        "Deployment",
        {"model": "iris", "version": "v", "strategy": {"canary": {"steps": [{"setWeight": 101}]}}},
        "should be less than or equal to 100",
    ),
    ("Deployment", {"model": "iris", "version": "v", "replicas": 101}, "should be less than or equal to 100"),
    (
        "Deployment",
        {"model": "iris", "version": "v", "fallback": {"timeout": "0s"}},
        "timeout must be greater than zero",
    ),
    (
        "Deployment",
        {"model": "iris", "version": "v", "fallback": {"circuitBreaker": {"openFor": "0m"}}},
        "openFor must be greater than zero",
    ),
    (
        "Deployment",
        {"model": "iris", "version": "v", "fallback": {"circuitBreaker": {"errorRate": 0}}},
        "should be greater than 0",
    ),
    ("Deployment", {"model": "iris", "version": "v", "progressDeadline": "10 minutes"}, "should match"),
    ("Deployment", {"model": "iris"}, "exactly one of version and versionFrom must be set"),
    (
        "Monitor",
        {"deployment": "d", "metrics": [{"name": "p", "type": "latency", "max": 1}]},
        "quantile is required for type latency",
    ),
    (
        "Monitor",
        {"deployment": "d", "metrics": [{"name": "p", "type": "prometheus", "max": 1}]},
        "prometheus.query is required for type prometheus",
    ),
    (
        "Monitor",
        {"deployment": "d", "metrics": [{"name": "e", "type": "errorRate"}]},
        "a metric needs min, max, minRatioToStable or maxRatioToStable",
    ),
    (
        "Monitor",
        {"deployment": "d", "metrics": [{"name": "e", "type": "errorRate", "min": 2, "max": 1}]},
        "min must not exceed max",
    ),
    (
        "Monitor",
        {"deployment": "d", "metrics": [{"name": "e", "type": "errorRate", "max": 1}] * 2},
        "metric names must be unique",
    ),
    ("Monitor", {"deployment": "d", "metrics": []}, "should have at least 1 items"),
    (
        "ModelVersion",
        {"model": "iris", "version": "2", "image": "x:1", "protocol": "grpc"},
        "Unsupported value",
    ),
    (
        "ModelVersion",
        {"model": "iris", "version": "2", "image": "x:1", "resources": {"limits": {"cpu": "lots"}}},
        "should match",
    ),
]


@pytest.mark.parametrize(("kind", "spec", "message"), BAD_SPECS)
def test_bad_specs_are_refused_by_the_server_and_the_models(
    api: Api, kind: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        api.dry_run(kind, spec)
    assert message in refused.value.stderr
    with pytest.raises(InvalidResourceError):
        RESOURCES[kind].from_k8s({"spec": spec})


def test_model_version_fields_are_immutable(api: Api) -> None:
    spec: dict[str, Any] = {
        "model": "iris",
        "version": "2",
        "image": "localhost/iris:2",
        "lineage": {"source": {"commit": "abc"}},
    }
    api.create("ModelVersion", "iris-v2", spec)
    changes = {
        "model": ("iris2", "model is immutable"),
        "version": ("3", "version is immutable"),
        "image": ("localhost/iris:3", "image is immutable"),
        "port": (9000, "port is immutable"),
        "protocol": ("v1", "protocol is immutable"),
        "lineage": ({"source": {"commit": "def"}}, "lineage is immutable"),
    }
    for field, (value, message) in changes.items():
        with pytest.raises(KubectlError) as refused:
            api.dry_run("ModelVersion", {**spec, field: value}, verb="replace", name="iris-v2")
        assert message in refused.value.stderr, field
    without_lineage = {k: v for k, v in spec.items() if k != "lineage"}
    with pytest.raises(KubectlError, match="lineage is immutable"):
        api.dry_run("ModelVersion", without_lineage, verb="replace", name="iris-v2")
    approved = api.dry_run(
        "ModelVersion", {**spec, "approval": {"approved": True}}, verb="replace", name="iris-v2"
    )
    assert approved["spec"]["approval"]["approved"] is True


def test_a_full_status_written_by_the_models_reads_back_the_same(api: Api) -> None:
    api.create("Deployment", "iris", {"model": "iris", "version": "iris-v2"})
    now = "2024-05-01T10:00:00.123456Z"
    status = DeploymentStatus.model_validate(
        {
            "observedGeneration": 1,
            "phase": "Progressing",
            "targetVersion": "iris-v2",
            "stableVersion": "iris-v1",
            "canaryVersion": "iris-v2",
            "canaryWeight": 20,
            "currentStep": 1,
            "stepStartedAt": now,
            "analysis": {
                "failures": 1,
                "lastVerdict": "Fail",
                "lastMeasuredAt": now,
                "lastResults": [
                    {
                        "name": "errors",
                        "value": None,
                        "threshold": "<= 0.05",
                        "verdict": "Error",
                        "message": "no data",
                    }
                ],
            },
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Progressing", "lastTransitionTime": now}
            ],
        }
    )
    status = status.model_copy(
        update={
            "history": status.with_history(HistoryEntry(version="iris-v0", result=RolloutResult.PROMOTED))
        }
    )
    patch = json.dumps({"status": status.to_k8s(drop_none=False)})
    api.cluster.kubectl(
        "patch",
        api.resource("Deployment"),
        "iris",
        "-n",
        api.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    stored = api.cluster.get(api.resource("Deployment"), "iris", api.namespace)
    read = Deployment.from_k8s(stored).status
    assert read == status
    assert read.phase == DeploymentPhase.PROGRESSING
    wide = api.cluster.kubectl("get", api.resource("Deployment"), "iris", "-n", api.namespace).stdout
    assert wide.split("\n")[0].split() == ["NAME", "TARGET", "STABLE", "CANARY", "WEIGHT", "PHASE", "AGE"]
    assert wide.split("\n")[1].split()[:6] == ["iris", "iris-v2", "iris-v1", "iris-v2", "20", "Progressing"]


def test_an_empty_status_with_nulls_is_stored_by_a_full_replace(api: Api) -> None:
    api.create("Deployment", "empty", {"model": "iris", "version": "iris-v2"})
    stored = api.cluster.get(api.resource("Deployment"), "empty", api.namespace)
    stored["status"] = DeploymentStatus().to_k8s(drop_none=False)
    assert stored["status"]["phase"] is None
    api.cluster.kubectl("replace", "--subresource=status", "-f", "-", input=json.dumps(stored))
    read = api.cluster.get(api.resource("Deployment"), "empty", api.namespace)
    assert Deployment.from_k8s(read).status == DeploymentStatus()
