"""The cluster under test is real: a node with the pinned version, pods from this repo's image
answering HTTP through a ClusterIP Service and by DNS name, and garbage collection by owner."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from support.cluster import VERSIONS, Cluster

RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def model_server(namespace: str) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "iris-smoke"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "iris", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "server",
                                "image": "localhost/iris-server:1",
                                "imagePullPolicy": "IfNotPresent",
                                "env": [{"name": "MODELFLEET_MODEL_VERSION", "value": "smoke"}],
                                "ports": [{"containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/v2/health/ready", "port": 8080},
                                    "periodSeconds": 1,
                                },
                                "securityContext": RESTRICTED_CONTAINER,
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "iris", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]


def test_node_is_ready_with_the_pinned_version(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert nodes, "the cluster has no node"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready")
        assert ready == "True", f"node {node['metadata']['name']} is not Ready"
    if cluster.local:
        expected = VERSIONS["KUBERNETES_VERSION"]
        assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {expected}
        server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
        assert server == expected


def test_pod_from_our_image_answers_through_service_and_dns(cluster: Cluster, namespace: str) -> None:
    cluster.apply(model_server(namespace))
    cluster.kubectl("rollout", "status", "deploy/iris", "-n", namespace, "--timeout=120s")
    service = cluster.get("service", "iris", namespace)
    cluster_ip = service["spec"]["clusterIP"]

    # From this host, through kube-proxy's rules for the ClusterIP.
    def infer_from_host() -> dict[str, Any] | None:
        body = json.dumps(
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
                ]
            }
        ).encode()
        request = urllib.request.Request(
            f"http://{cluster_ip}:80/v2/models/iris/infer",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                result: dict[str, Any] = json.loads(response.read())
                return result
        except OSError:  # kube-proxy may take a moment to program the new Service
            return None

    result = cluster.wait_for("the model through the ClusterIP", infer_from_host, timeout=60)
    assert result["outputs"][0]["data"] == [0], "iris sample 0 is a setosa (class 0)"

    # From another pod, by the Service's DNS name (CoreDNS) and the ClusterIP.
    url = f"http://iris.{namespace}.svc.cluster.local/v2/health/ready"
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": "localhost/modelfleet:dev",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c"],
                    "args": [
                        "import socket, sys, urllib.request\n"
                        f"print('resolved', socket.gethostbyname('iris.{namespace}.svc.cluster.local'))\n"
                        f"r = urllib.request.urlopen('{url}', timeout=10)\n"
                        "print('status', r.status)\n"
                        "sys.exit(0 if r.status == 200 else 1)\n"
                    ],
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
        },
    }
    cluster.apply(client)

    def finished() -> str | None:
        phase: str | None = cluster.get("pod", "client", namespace)["status"].get("phase")
        return phase if phase in {"Succeeded", "Failed"} else None

    phase = cluster.wait_for("the client pod to finish", finished, timeout=120)
    logs = cluster.kubectl("logs", "client", "-n", namespace).stdout
    assert phase == "Succeeded", logs
    assert f"resolved {cluster_ip}" in logs
    assert "status 200" in logs


def test_deleting_an_owner_garbage_collects_its_dependents(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": namespace}}
    )
    owner = cluster.get("configmap", "owner", namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    for i in range(3):
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"dependent-{i}", "namespace": namespace, "ownerReferences": [ref]},
            }
        )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def dependents_gone() -> bool:
        names = cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "name").stdout.split()
        return not any(n.startswith("configmap/dependent-") for n in names)

    cluster.wait_for("the garbage collector to delete the dependents", dependents_gone, timeout=60)
