"""The manifests the benchmark creates: its Models, ModelVersions and Deployments, the namespace's pod
quota and the FlowSchema that counts the operator's requests, the chart's RBAC, the operator's kubeconfig.

All pure but `chart_rbac`, which renders the chart with helm.
"""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from bench.operator_scale import ROOT
from bench.runs import BENCH_LABEL

NAMESPACE = "modelfleet-bench"
RELEASE = "modelfleet-bench"
SERVICE_ACCOUNT = RELEASE  # the chart names its objects after a release whose name holds "modelfleet"
FLOW_SCHEMA = "modelfleet-bench-operator"
FIELD_MANAGER = "modelfleet-bench"
QUOTA = "modelfleet-bench-pods"
SERVING_PREFIX = "serving-"
GROUP, VERSION = "modelfleet.io", "v1alpha1"
SERVING_IMAGE = "localhost/iris-server:1"
PODS_PER_SERVING_DEPLOYMENT = 2  # one router pod, one model pod; as many ClusterIP Services


def bench_objects(count: int, per_model: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Models (approval required), one unapproved ModelVersion each, and `count` Deployments of them.

    Every Deployment is valid and reconciles to a final status, but none is servable: no model pods.
    """
    if count < 0 or per_model < 1:
        raise ValueError("count must be at least 0, per_model at least 1")
    models, versions, deployments = [], [], []
    for m in range((count + per_model - 1) // per_model):
        model = f"bench-m{m:05d}"
        models.append(
            _manifest(
                "Model",
                model,
                {"owner": "bench", "task": "classification", "governance": {"requireApproval": True}},
            )
        )
        versions.append(
            _manifest(
                "ModelVersion",
                f"{model}-v1",
                {
                    "model": model,
                    "version": "1",
                    "image": SERVING_IMAGE,
                    "approval": {"approved": False, "by": "bench", "reason": "kept unservable on purpose"},
                },
            )
        )
    for d in range(count):
        model = f"bench-m{d // per_model:05d}"
        deployments.append(
            _manifest("Deployment", f"bench-d{d:05d}", {"model": model, "version": f"{model}-v1"})
        )
    return {"models": models, "modelversions": versions, "deployments": deployments}


def serving_objects(count: int) -> dict[str, list[dict[str, Any]]]:
    """One Model and approved ModelVersion, and `count` Deployments that serve it (one pod each)."""
    model = _manifest("Model", "serving", {"owner": "bench", "task": "classification"})
    version = _manifest(
        "ModelVersion",
        "serving-v1",
        {"model": "serving", "version": "1", "image": SERVING_IMAGE, "approval": {"approved": True}},
    )
    deployments = [
        _manifest(
            "Deployment",
            f"serving-d{d:03d}",
            {"model": "serving", "version": "serving-v1", "replicas": 1, "strategy": {"type": "Immediate"}},
        )
        for d in range(count)
    ]
    return {"models": [model], "modelversions": [version], "deployments": deployments}


def _manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "labels": {BENCH_LABEL: "operator"}},
        "spec": spec,
    }


def setup_manifests(serving: int) -> list[dict[str, Any]]:
    """The namespace's pod quota and the FlowSchema that gives the operator's requests their own count."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA, "namespace": NAMESPACE},
            "spec": {"hard": {"pods": str(PODS_PER_SERVING_DEPLOYMENT * serving)}},
        },
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": FLOW_SCHEMA, "labels": {BENCH_LABEL: "operator"}},
            "spec": {
                # before `service-accounts` (9000), which would otherwise take this ServiceAccount
                "matchingPrecedence": 8000,
                "priorityLevelConfiguration": {"name": "workload-low"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
                            }
                        ],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    ]


def token_kubeconfig(admin: dict[str, Any], token: str) -> dict[str, Any]:
    """A kubeconfig for the same API server as `admin` (a minified, flattened one) with a bearer token."""
    cluster = admin["clusters"][0]["cluster"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {
                "name": "bench",
                "context": {"cluster": "bench", "user": SERVICE_ACCOUNT, "namespace": NAMESPACE},
            }
        ],
        "current-context": "bench",
    }


def cluster_scoped(manifests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, name) of the cluster-scoped objects among the benchmark's own."""
    return [
        (m["kind"], m["metadata"]["name"])
        for m in manifests
        if m["kind"] in ("ClusterRole", "ClusterRoleBinding", "FlowSchema", "MutatingWebhookConfiguration")
    ]


def chart_rbac(helm_path: str, kube_version: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC for an operator watching the benchmark namespace."""
    rendered = subprocess.run(
        [
            helm_path,
            "template",
            RELEASE,
            str(ROOT / "charts" / "modelfleet"),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube_version,
            "--set",
            f"watchNamespaces={{{NAMESPACE}}}",
            "--set",
            "leaderElection.enabled=false",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if rendered.returncode != 0:
        raise SystemExit(f"helm template of the chart failed: {rendered.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    for doc in docs:
        doc["metadata"].setdefault("labels", {})[BENCH_LABEL] = "operator"
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            doc["metadata"]["namespace"] = NAMESPACE
    if not any(d["kind"] == "ServiceAccount" and d["metadata"]["name"] == SERVICE_ACCOUNT for d in docs):
        raise SystemExit(f"the chart renders no ServiceAccount {SERVICE_ACCOUNT}")
    return docs
