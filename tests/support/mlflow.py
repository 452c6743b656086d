"""A real MLflow tracking server in the cluster: `mlflow server` (3.17.2, from the MLServer runtime image,
which carries the full MLflow) as a Pod and a Service, SQLite on a volume, artifacts in the real S3 store.

For tests, the demo and the benchmarks. `start_mlflow(cluster, namespace, store)` makes a bucket in the
object store (`tests/support/objectstore.py`), starts the server and waits until it answers, and returns
an `MlflowServer` with:
- `tracking_uri`: the URL pods and the operator use (the Service's DNS name), and `host_uri`: the URL
  this machine uses (the pod's IP, which the host reaches on the local cluster);
- `client_env()`: the environment the MLflow client on this machine needs to log models (the tracking
  URI, and the object store's credentials and host endpoint, since the client writes artifacts to S3
  itself: the server runs with `--no-serve-artifacts`);
- `artifact_root`: `s3://BUCKET`, where every model version's files are, so a version's download URI is
  an s3:// URI the fetcher reads with the store's credentials.

`--allowed-hosts` names the Service (short, namespaced and full DNS names) and the pod's own IP, the only
Host headers the server accepts. The image is `localhost/modelfleet-mlserver:dev` (images/build.sh
mlserver); nothing is pulled.

From a shell (the demo), with tests/ on the path:
    PYTHONPATH=tests python -m support.mlflow start NAMESPACE --store-name objectstore
    PYTHONPATH=tests python -m support.mlflow stop NAMESPACE
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from support.cluster import Cluster, find_cluster
from support.objectstore import ObjectStore

IMAGE = "localhost/modelfleet-mlserver:dev"
WEBHOOK_EVENTS = [
    "model_version.created",
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
    "model_version_tag.deleted",
]
"""The registry events the operator's webhook receiver acts on: what a webhook for it subscribes to."""
PORT = 5000
BUCKET = "mlflow"
READY_PATH = "/health"


@dataclass(frozen=True)
class MlflowServer:
    cluster: Cluster = field(repr=False)
    namespace: str
    name: str
    pod_ip: str
    store: ObjectStore = field(repr=False)
    host_ip: str = ""
    """The address of the pod's node, where pods reach a process on that node (the local cluster's node is
    this machine: the operator the tests run is there)."""
    bucket: str = BUCKET
    port: int = PORT

    @property
    def tracking_uri(self) -> str:
        """The URL for pods and the operator: the Service's DNS name."""
        return f"http://{self.name}.{self.namespace}.svc:{self.port}"

    @property
    def host_uri(self) -> str:
        """The URL for this machine: the pod's IP."""
        return f"http://{self.pod_ip}:{self.port}"

    @property
    def artifact_root(self) -> str:
        return f"s3://{self.bucket}"

    def client_env(self) -> dict[str, str]:
        """Environment of an MLflow client on this machine that logs and registers models."""
        return {
            "MLFLOW_TRACKING_URI": self.host_uri,
            "MLFLOW_S3_ENDPOINT_URL": self.store.host_endpoint,
            "AWS_ACCESS_KEY_ID": self.store.access_key,
            "AWS_SECRET_ACCESS_KEY": self.store.secret_key,
            "AWS_DEFAULT_REGION": self.store.region,
        }

    def stop(self) -> None:
        stop_mlflow(self.cluster, self.namespace, self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "tracking_uri": self.tracking_uri,
            "host_uri": self.host_uri,
            "artifact_root": self.artifact_root,
        }


@contextlib.contextmanager
def mlflow_client(server: MlflowServer) -> Iterator[Any]:
    """MLflow's own client on this machine, as a data scientist's notebook has it: the tracking server
    and, through the environment, the store's credentials (the client writes artifacts itself)."""
    import boto3
    from mlflow.store.artifact import s3_artifact_repo

    import mlflow

    # MLflow keeps its boto3 clients (lru_cache) keyed without the credentials it reads from the
    # environment, and boto3's default session keeps the credentials it first found: either would sign
    # with the keys of an earlier store
    s3_artifact_repo._cached_get_s3_client.cache_clear()
    boto3.DEFAULT_SESSION = None
    saved = {name: os.environ.get(name) for name in server.client_env()}
    os.environ.update(server.client_env())
    mlflow.set_tracking_uri(server.host_uri)
    try:
        yield mlflow.MlflowClient()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def allowed_hosts(name: str, namespace: str, port: int = PORT) -> list[str]:
    """The Host headers the server accepts, without the pod's IP (added when it starts)."""
    names = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    return [f"{n}:{port}" for n in names] + names


def server_manifests(
    namespace: str, name: str, store: ObjectStore, bucket: str = BUCKET
) -> list[dict[str, Any]]:
    """The MLflow Pod and its Service."""
    labels = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/instance": name}
    webhook_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    hosts = ",".join(allowed_hosts(name, namespace))
    script = (
        'exec mlflow server --host 0.0.0.0 --port "$PORT"'
        " --backend-store-uri sqlite:////data/mlflow.db"
        f" --default-artifact-root s3://{bucket} --no-serve-artifacts"
        f' --allowed-hosts "{hosts},$POD_IP:$PORT,$POD_IP"'
        " --workers 1"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "mlflow",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", script],
                    "env": [
                        {"name": "PORT", "value": str(PORT)},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "HOME", "value": "/tmp"},
                        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": store.endpoint},
                        {"name": "AWS_ACCESS_KEY_ID", "value": store.access_key},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": store.secret_key},
                        {"name": "AWS_DEFAULT_REGION", "value": store.region},
                        # webhooks to the operator, which the tests run on this machine: plain HTTP to a
                        # private address (MLflow calls public HTTPS addresses only by default), secrets
                        # kept with a fixed key, and the server's cache of webhooks kept 1 s, not 60
                        {"name": "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "value": "true"},
                        {"name": "MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "value": "http,https"},
                        {"name": "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", "value": webhook_key},
                        {"name": "MLFLOW_WEBHOOK_CACHE_TTL", "value": "1"},
                    ],
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": READY_PATH, "port": PORT},
                        "periodSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]},
    }
    return [pod, service]


def start_mlflow(
    cluster: Cluster, namespace: str, store: ObjectStore, name: str = "mlflow", *, timeout: float = 180
) -> MlflowServer:
    """Start the tracking server in `namespace`, artifacts in `store`; return once its REST API answers."""
    try:
        store.create_bucket(BUCKET)
    except Exception as error:  # an existing bucket (a second server on one store) is fine
        if "BucketAlready" not in type(error).__name__ and "BucketAlready" not in str(error):
            raise
    cluster.apply(server_manifests(namespace, name, store))

    def pod_ip() -> str | None:
        pod = cluster.get("pod", name, namespace)
        status = pod.get("status", {})
        for container in status.get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting", {})
            if waiting.get("reason") in {"ErrImageNeverPull", "CrashLoopBackOff"}:
                raise RuntimeError(
                    f"MLflow {namespace}/{name}: {waiting['reason']}: {waiting.get('message', '')}"
                    f" (is {IMAGE} built? images/build.sh mlserver)"
                )
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        ip: str | None = status.get("podIP")
        return ip if ready else None

    try:
        ip = cluster.wait_for(f"MLflow {namespace}/{name} ready", pod_ip, timeout=timeout)
    except (TimeoutError, RuntimeError):
        logs = cluster.kubectl("logs", name, "-n", namespace, check=False).stdout[-3000:]
        print(f"--- {namespace}/{name} log ---\n{logs}", file=sys.stderr)
        raise
    host_ip = str(cluster.get("pod", name, namespace).get("status", {}).get("hostIP", ""))
    server = MlflowServer(cluster, namespace, name, ip, store, host_ip=host_ip)
    deadline = time.monotonic() + 30
    url = f"{server.host_uri}/api/2.0/mlflow/registered-models/search?max_results=1"
    while True:  # ready means /health answers; wait until the REST API does, as the host calls it
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                json.load(answer)
            return server
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop_mlflow(cluster: Cluster, namespace: str, name: str = "mlflow") -> None:
    """Delete the server's Pod and Service (its database goes with the pod)."""
    cluster.kubectl(
        "delete", "pod,service", name, "-n", namespace, "--ignore-not-found", "--wait=false", check=False
    )


def main(argv: Sequence[str] | None = None) -> int:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m support.mlflow", description=summary)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("namespace")
    parser.add_argument("--name", default="mlflow")
    parser.add_argument(
        "--store-json", help="the object store as `python -m support.objectstore start` printed it"
    )
    args = parser.parse_args(argv)
    cluster = find_cluster()
    if cluster is None:
        print("support.mlflow: no cluster answers (make cluster-up)", file=sys.stderr)
        return 1
    if args.action == "stop":
        stop_mlflow(cluster, args.namespace, args.name)
        return 0
    if not args.store_json:
        parser.error("start needs --store-json")
    data = json.loads(args.store_json)
    store = ObjectStore(
        cluster,
        data["namespace"],
        data["name"],
        data["access_key"],
        data["secret_key"],
        pod_ip=data["pod_ip"],
    )
    server = start_mlflow(cluster, args.namespace, store, args.name)
    print(json.dumps(server.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
