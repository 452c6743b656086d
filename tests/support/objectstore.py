"""A real S3 object store in the cluster: versitygw (posix backend) as a Pod and a Service.

For tests, the demo and the benchmarks. `start_object_store(cluster, namespace)` starts it with fresh
root credentials, waits until it answers S3 requests, and returns an `ObjectStore` with:
- `endpoint`: the URL pods use (the Service's DNS name), and `host_endpoint`: the URL this machine uses
  (the pod's IP, which the host reaches on the local cluster);
- `access_key`, `secret_key`, `region`, and `client()`, a boto3 S3 client against `host_endpoint`;
- `create_bucket`, `upload_file`, `upload_directory`, `make_secret` (AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION in a Secret of any namespace);
- `get_requests(bucket, key)`: how many GETs of that object the store served, counted from versitygw's
  own S3 access log (its stdout). A ranged GET counts as one request: boto3's `download_file` splits
  objects over 8 MB into several.

The image is `localhost/versitygw:<VERSITYGW_VERSION>` (images/build.sh versitygw); nothing is pulled.
It runs as 65532, read-only root filesystem, with buckets and its IAM folder on emptyDir volumes, so
the store lives as long as its pod.

From a shell (the demo), with tests/ on the path (the folder also holds a module named `operator`,
which must not shadow the standard library's, so run it as a module, not as a script):
    PYTHONPATH=tests python -m support.objectstore start NAMESPACE [--name NAME]   # the store as JSON
    PYTHONPATH=tests python -m support.objectstore stop NAMESPACE [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from support.cluster import VERSIONS, Cluster, KubectlError, find_cluster

IMAGE = f"localhost/versitygw:{VERSIONS['VERSITYGW_VERSION']}"
PORT = 7070
REGION = "us-east-1"
HEALTH_PATH = "/health"

# versitygw's S3 access log line (s3log/file.go): bucket owner, bucket, [time], remote IP, requester,
# request id, operation, key, request URI, HTTP status, error code, then sizes, times, user agent...
_ACCESS_LOG = re.compile(
    r"^(?P<owner>\S+) (?P<bucket>\S+) \[(?P<time>[^\]]*)\] (?P<ip>\S+) (?P<requester>\S+) (?P<id>\S+) "
    r"(?P<operation>s3_\w+) (?P<key>\S+) (?P<uri>\S+) (?P<status>\d{3}) (?P<error>\S+) "
)


@dataclass(frozen=True)
class AccessRecord:
    """One request in the store's access log."""

    operation: str  # s3_GetObject, s3_PutObject, s3_HeadObject, ...
    bucket: str
    key: str  # "-" when the request names no object
    status: int
    error: str  # "-" when none
    requester: str  # the access key, "-" when it was not accepted


def parse_access_log(text: str) -> list[AccessRecord]:
    """The S3 requests in versitygw's access log (other lines of its output are left out)."""
    records = []
    for line in text.splitlines():
        match = _ACCESS_LOG.match(line)
        if match:
            records.append(
                AccessRecord(
                    operation=match["operation"],
                    bucket=match["bucket"],
                    key=match["key"],
                    status=int(match["status"]),
                    error=match["error"],
                    requester=match["requester"],
                )
            )
    return records


@dataclass
class ObjectStore:
    cluster: Cluster = field(repr=False)
    namespace: str
    name: str
    access_key: str
    secret_key: str = field(repr=False)
    pod_ip: str
    region: str = REGION
    port: int = PORT

    @property
    def endpoint(self) -> str:
        """The URL for pods: the Service's DNS name."""
        return f"http://{self.name}.{self.namespace}.svc.cluster.local:{self.port}"

    @property
    def host_endpoint(self) -> str:
        """The URL for this machine: the pod's IP."""
        return f"http://{self.pod_ip}:{self.port}"

    def client(
        self, access_key: str | None = None, secret_key: str | None = None, *, endpoint_url: str | None = None
    ) -> Any:
        """A boto3 S3 client against the store from the host (other credentials: to see them refused;
        endpoint_url=store.endpoint: to sign URLs that pods use)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.host_endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",  # also for presigned URLs (boto3 signs those SigV2 otherwise)
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def upload_file(self, bucket: str, key: str, path: Path | str) -> str:
        """Upload one file; returns its key."""
        self.client().upload_file(str(path), bucket, key)
        return key

    def upload_bytes(self, bucket: str, key: str, data: bytes) -> str:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)
        return key

    def upload_directory(self, bucket: str, prefix: str, folder: Path | str) -> list[str]:
        """Upload every file under `folder` to `prefix` + its relative path; returns the keys, sorted."""
        root = Path(folder)
        base = prefix.strip("/")
        client = self.client()
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            key = f"{base}/{relative}" if base else relative
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return sorted(keys)

    def credentials_env(
        self, *, access_key: str | None = None, secret_key: str | None = None
    ) -> dict[str, str]:
        """The environment an S3 client in a pod reads."""
        return {
            "AWS_ACCESS_KEY_ID": access_key or self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
        }

    def make_secret(
        self,
        namespace: str,
        name: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> str:
        """A Secret in `namespace` with the store's credentials and in-cluster endpoint; returns its name."""
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": self.credentials_env(access_key=access_key, secret_key=secret_key),
        }
        self.cluster.apply(manifest)
        return name

    def access_log(self) -> list[AccessRecord]:
        """Every S3 request the store has answered since its pod started."""
        out = self.cluster.kubectl("logs", self.name, "-n", self.namespace, "-c", "versitygw", timeout=60)
        return parse_access_log(out.stdout)

    def get_requests(self, bucket: str, key: str, *, successful: bool = True) -> int:
        """GET requests of the object `bucket/key` (only those answered 2xx unless successful=False)."""
        return sum(
            1
            for r in self.access_log()
            if r.operation == "s3_GetObject"
            and r.bucket == bucket
            and r.key == key
            and (not successful or 200 <= r.status < 300)
        )

    def stop(self) -> None:
        stop_object_store(self.cluster, self.namespace, self.name)

    def describe(self) -> dict[str, Any]:
        """What a shell script needs, as plain data (credentials included)."""
        data = {k: v for k, v in asdict(self).items() if k != "cluster"}
        return {**data, "endpoint": self.endpoint, "host_endpoint": self.host_endpoint}


def store_manifests(namespace: str, name: str, access_key: str, secret_key: str) -> list[dict[str, Any]]:
    """The Secret with the root credentials, the versitygw Pod and its Service."""
    labels = {"app.kubernetes.io/name": "versitygw", "app.kubernetes.io/instance": name}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-root", "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {"ROOT_ACCESS_KEY_ID": access_key, "ROOT_SECRET_ACCESS_KEY": secret_key},
    }
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
                    "name": "versitygw",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "args": [
                        f"--port=:{PORT}",
                        f"--region={REGION}",
                        f"--health={HEALTH_PATH}",
                        "--access-log=stdout",  # one line per S3 request: get_requests counts them
                        "--quiet",  # no second, per-request line of the HTTP server
                        "--iam-dir=/iam",  # an unknown access key is 403 InvalidAccessKeyId, as on AWS
                        "posix",
                        "/buckets",
                    ],
                    "envFrom": [{"secretRef": {"name": f"{name}-root"}}],
                    "ports": [{"name": "s3", "containerPort": PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": HEALTH_PATH, "port": PORT},
                        "periodSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                    "volumeMounts": [
                        {"name": "buckets", "mountPath": "/buckets"},
                        {"name": "iam", "mountPath": "/iam"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "buckets", "emptyDir": {}},
                {"name": "iam", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "s3", "port": PORT, "targetPort": PORT}]},
    }
    return [secret, pod, service]


def start_object_store(
    cluster: Cluster, namespace: str, name: str = "objectstore", *, timeout: float = 120
) -> ObjectStore:
    """Start versitygw in `namespace` with fresh root credentials; return once it answers S3 requests."""
    access_key = "mf" + secrets.token_hex(8)
    secret_key = secrets.token_urlsafe(30)
    cluster.apply(store_manifests(namespace, name, access_key, secret_key))
    applied = time.monotonic()

    def pod_ip() -> str | None:
        pod = cluster.get("pod", name, namespace)
        status = pod.get("status", {})
        for container in status.get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting", {})
            reason = waiting.get("reason")
            # CreateContainerConfigError can be passing: a kubelet whose Secret cache has not synced
            # yet ("failed to sync secret cache", seen on a fresh cluster) retries on its own
            lasting = reason == "CreateContainerConfigError" and time.monotonic() - applied > 30
            if reason in {"ErrImageNeverPull", "CrashLoopBackOff"} or lasting:
                raise RuntimeError(
                    f"object store {namespace}/{name}: {waiting['reason']}: {waiting.get('message', '')} "
                    f"(is {IMAGE} built? images/build.sh versitygw)"
                )
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        ip: str | None = status.get("podIP")
        return ip if ready else None

    try:
        ip = cluster.wait_for(f"object store {namespace}/{name} ready", pod_ip, timeout=timeout)
    except (TimeoutError, RuntimeError):
        logs = cluster.kubectl("logs", name, "-n", namespace, check=False).stdout[-2000:]
        print(f"--- {namespace}/{name} log ---\n{logs}", file=sys.stderr)
        raise
    store = ObjectStore(cluster, namespace, name, access_key, secret_key, pod_ip=ip)
    deadline = time.monotonic() + 30
    while True:  # ready means its health path answers; wait until S3 requests with the credentials do
        try:
            store.client().list_buckets()
            return store
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop_object_store(cluster: Cluster, namespace: str, name: str = "objectstore") -> None:
    """Delete the store's Pod, Service and root-credentials Secret (its data goes with the pod)."""
    ns = ["-n", namespace, "--ignore-not-found", "--wait=false"]
    cluster.kubectl("delete", "pod,service", name, *ns, check=False)
    cluster.kubectl("delete", "secret", f"{name}-root", *ns, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m support.objectstore", description=summary)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("namespace")
    parser.add_argument("--name", default="objectstore")
    args = parser.parse_args(argv)
    cluster = find_cluster()
    if cluster is None:
        print("support.objectstore: no cluster answers (make cluster-up)", file=sys.stderr)
        return 1
    if args.action == "stop":
        stop_object_store(cluster, args.namespace, args.name)
        return 0
    try:
        store = start_object_store(cluster, args.namespace, args.name)
    except (TimeoutError, RuntimeError, KubectlError) as error:
        print(f"support.objectstore: {error}", file=sys.stderr)
        return 1
    print(json.dumps(store.describe(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
