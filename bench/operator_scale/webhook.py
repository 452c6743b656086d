"""The podless mutating webhook: what the benchmark's Deployments own takes no pod and no Service address.

Served by the benchmark itself over HTTPS on 127.0.0.1 (the API server runs on the same host), with a
self-signed certificate made by openssl; scoped to the benchmark namespace, failing closed.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.operator_scale.objects import NAMESPACE, SERVING_PREFIX
from bench.runs import BENCH_LABEL
from support.cluster import Cluster

WEBHOOK = "modelfleet-bench-podless"


def podless_review(review: dict[str, Any]) -> dict[str, Any]:
    """The webhook's answer to an AdmissionReview: what the benchmark's Deployments own takes no room.

    - A Service becomes headless. Every modelfleet Deployment has a ClusterIP Service for its router,
      and a cluster's Service range is finite (the local cluster's /24 holds 254 addresses).
    - An apps/v1 Deployment is paused: the Deployment controller makes no ReplicaSet for it, so no pods.
      Router pods would not fit on the node; refused by the pod quota instead, their ReplicaSets would
      retry for many minutes and keep the owned objects' status changing, which is not the steady state
      to measure. Pausing adds a field the operator's manifest does not have, so the live object still
      holds every field the operator applies (its replicas too) and a restarted operator applies
      nothing again; scaling to 0 changed a field it applies, and every restart re-applied every
      router Deployment.

    The serving Deployments' objects are left as they are.
    """
    request = review["request"]
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    obj = request.get("object") or {}
    spec = obj.get("spec") or {}
    kind = request.get("kind", {}).get("kind")
    owner = (obj.get("metadata", {}).get("labels") or {}).get("modelfleet.io/deployment", "")
    patch: list[dict[str, Any]] = []
    if owner.startswith(SERVING_PREFIX):
        pass
    elif (
        kind == "Service"
        and request.get("operation") == "CREATE"
        and spec.get("type", "ClusterIP") == "ClusterIP"
        and spec.get("clusterIP") in (None, "")
    ):
        patch = [
            {"op": "add", "path": "/spec/clusterIP", "value": "None"},
            {"op": "add", "path": "/spec/clusterIPs", "value": ["None"]},
        ]
    elif kind == "Deployment" and spec.get("paused") is not True:
        patch = [{"op": "add", "path": "/spec/paused", "value": True}]
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def webhook_manifest(port: int, ca_pem: bytes) -> dict[str, Any]:
    """The MutatingWebhookConfiguration: Services and apps/v1 Deployments of the benchmark namespace only."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK, "labels": {BENCH_LABEL: "operator"}},
        "webhooks": [
            {
                "name": "podless.bench.modelfleet.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",  # never a ClusterIP or a pod by accident: no webhook, no object
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["services"],
                        "scope": "Namespaced",
                    },
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "resources": ["deployments"],
                        "scope": "Namespaced",
                    },
                ],
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/mutate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
    }


class PodlessWebhook:
    """`podless_review` served over HTTPS on 127.0.0.1 (the API server runs on this host)."""

    def __init__(self, scratch: Path) -> None:
        cert, key = scratch / "webhook.crt", scratch / "webhook.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            capture_output=True,
            check=True,
        )  # fmt: skip
        self.ca_pem = cert.read_bytes()
        self.calls = 0
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                answer = json.dumps(podless_review(json.loads(self.rfile.read(length)))).encode()
                with webhook.lock:
                    webhook.calls += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True).start()

    def manifest(self) -> dict[str, Any]:
        return webhook_manifest(self.port, self.ca_pem)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_webhook(cluster: Cluster) -> None:
    """A probe Service must come out headless, else stop before filling the cluster's Service range."""
    probe = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "bench-probe", "namespace": NAMESPACE},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "bench-probe"}},
    }
    deadline = time.monotonic() + 30
    while True:
        result = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(probe), check=False)
        if result.returncode == 0:
            cluster.kubectl("delete", "service", "bench-probe", "-n", NAMESPACE, "--ignore-not-found")
            if json.loads(result.stdout)["spec"].get("clusterIP") == "None":
                return
            raise SystemExit("the benchmark's webhook is not in effect: not creating Services")
        if time.monotonic() > deadline:
            raise SystemExit(f"the benchmark's webhook does not answer: {result.stderr.strip()}")
        time.sleep(1)
