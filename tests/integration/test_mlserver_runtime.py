"""The MLServer runtime image (`localhost/modelfleet-mlserver:dev`, images/build.sh mlserver) serves a
model artifact placed in /mnt/models before it starts: one pod per format (sklearn, xgboost, lightgbm,
mlflow), each in a namespace that enforces Pod Security `restricted`, its artifact trained by an init
container of the same image (nothing is pulled). Requests are Open Inference Protocol v2: plain JSON,
and NVIDIA's tritonclient with its defaults (binary tensors both ways)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from support.cluster import Cluster

IMAGE = "localhost/modelfleet-mlserver:dev"
FORMATS = ["sklearn", "xgboost", "lightgbm", "mlflow"]
ENFORCE = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
# Rows of iris: a setosa (class 0) and a virginica (class 2).
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])

# Trains an iris model of the format into the artifact folder, as a training job would.
TRAIN = """
import os, sys
from sklearn.datasets import load_iris
X, y = load_iris(return_X_y=True)
fmt, out = sys.argv[1], sys.argv[2]
if fmt == "sklearn":
    import joblib
    from sklearn.linear_model import LogisticRegression
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), os.path.join(out, "model.joblib"))
elif fmt == "xgboost":
    import xgboost
    xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y).save_model(os.path.join(out, "model.json"))
elif fmt == "lightgbm":
    import lightgbm
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
    lightgbm.train(params, lightgbm.Dataset(X, y), 20).save_model(os.path.join(out, "model.txt"))
elif fmt == "mlflow":
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(max_iter=1000).fit(X, y)
    signature = infer_signature(X, model.predict(X))
    mlflow.sklearn.save_model(model, os.path.join(out, "model"), signature=signature)
print("trained", fmt, sorted(os.listdir(out)))
"""

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def runtime_pod(name: str, fmt: str) -> dict[str, Any]:
    mounts = [{"name": "models", "mountPath": "/mnt/models"}, {"name": "tmp", "mountPath": "/tmp"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mlserver-runtime-test"}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [
                {
                    "name": "place-artifact",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", TRAIN, fmt, "/mnt/models"],
                    "securityContext": RESTRICTED,
                    "volumeMounts": mounts,
                }
            ],
            "containers": [
                {
                    "name": "server",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "env": [
                        {"name": "MODELFLEET_MODEL_FORMAT", "value": fmt},
                        {"name": "MODELFLEET_MODEL_NAME", "value": "iris"},
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": 8080},
                        "periodSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "256Mi"},
                        "limits": {"memory": "1Gi"},
                    },
                    "securityContext": RESTRICTED,
                    # The server only reads its artifact.
                    "volumeMounts": [{**mounts[0], "readOnly": True}, mounts[1]],
                }
            ],
            "volumes": [{"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    }


class Servers:
    """The four runtime pods, started together; `address(fmt)` waits for one to be ready."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.started = time.monotonic()
        self.ready_after: dict[str, float] = {}
        for fmt in FORMATS:
            cluster.apply(runtime_pod(f"mlserver-{fmt}", fmt), namespace)

    def address(self, fmt: str) -> str:
        name = f"mlserver-{fmt}"

        def ready() -> str | None:
            pod = self.cluster.get("pod", name, self.namespace)
            status = pod.get("status", {})
            for c in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
                waiting = c.get("state", {}).get("waiting", {})
                if waiting.get("reason") in {
                    "ErrImageNeverPull",
                    "CrashLoopBackOff",
                    "CreateContainerConfigError",
                }:
                    pytest.fail(
                        f"{name}: {waiting['reason']}: {waiting.get('message', '')}\n{self.logs(name)}"
                    )
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            return status.get("podIP") if conditions.get("Ready") == "True" else None

        try:
            ip: str = self.cluster.wait_for(f"{name} ready", ready, timeout=300)
        except TimeoutError:
            pytest.fail(f"{name} not ready in 300 s\n{self.logs(name)}")
        self.ready_after.setdefault(fmt, time.monotonic() - self.started)
        return f"{ip}:8080"

    def logs(self, name: str) -> str:
        out = []
        for container in ("place-artifact", "server"):
            result = self.cluster.kubectl("logs", name, "-n", self.namespace, "-c", container, check=False)
            out.append(f"--- {container} ---\n{(result.stdout + result.stderr)[-3000:]}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def servers(cluster: Cluster) -> Iterator[Servers]:
    namespace = cluster.new_namespace(prefix="mf-mlserver", labels=ENFORCE)
    try:
        found = Servers(cluster, namespace)
        yield found
        print(f"\nMLServer runtime pods ready after (s, from apply): {found.ready_after}")
    finally:
        cluster.delete_namespace(namespace)


def post(address: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://{address}{path}", data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def classes(fmt: str, output: np.ndarray) -> list[int]:
    """Predicted classes: lightgbm's booster answers probabilities, the others classes."""
    if fmt == "lightgbm":
        assert output.shape == (2, 3)
        return [int(i) for i in output.argmax(axis=1)]
    return [int(v) for v in output.flatten()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_json_inference_request_gets_the_iris_classes(servers: Servers, fmt: str) -> None:
    address = servers.address(fmt)
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": ROWS.flatten().tolist()}]}

    status, answer = post(address, "/v2/models/iris/infer", json.dumps(body).encode())

    assert status == 200, answer
    (output,) = json.loads(answer)["outputs"]
    assert classes(fmt, np.array(output["data"]).reshape(output["shape"])) == [0, 2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_tritonclient_with_its_defaults_gets_the_iris_classes(servers: Servers, fmt: str) -> None:
    client = triton.InferenceServerClient(servers.address(fmt), connection_timeout=30, network_timeout=30)
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    tensor = triton.InferInput("x", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS)  # binary_data=True: the tensor goes as raw bytes

    result = client.infer("iris", [tensor])

    (output,) = result.get_response()["outputs"]
    assert "binary_data_size" in output["parameters"], "the answer came back in JSON, not binary"
    assert classes(fmt, result.as_numpy(output["name"])) == [0, 2]


def test_tritonclient_gets_one_output_binary_and_another_json(servers: Servers) -> None:
    client = triton.InferenceServerClient(servers.address("sklearn"), network_timeout=30)
    tensor = triton.InferInput("x", list(ROWS.shape), "FP64")
    tensor.set_data_from_numpy(ROWS)
    outputs = [
        triton.InferRequestedOutput("predict_proba", binary_data=True),
        triton.InferRequestedOutput("predict", binary_data=False),
    ]

    result = client.infer("iris", [tensor], outputs=outputs)

    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "binary_data_size" in by_name["predict_proba"]["parameters"]
    assert by_name["predict"]["data"] == [0, 2]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (2, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert list(proba.argmax(axis=1)) == [0, 2]


def test_a_broken_binary_request_is_refused_with_400_and_the_reason(servers: Servers) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP64", "parameters": {"binary_data_size": 64}}
            ]
        }
    ).encode()
    status, answer = post(
        servers.address("sklearn"),
        "/v2/models/iris/infer",
        header + b"\0" * 10,
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 400
    assert "runs past the end of the body" in json.loads(answer)["error"]


def test_the_server_describes_the_model_it_loaded(servers: Servers) -> None:
    address = servers.address("sklearn")
    with urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=10) as ready:
        assert ready.status == 200
    with urllib.request.urlopen(f"http://{address}/v2/models/iris", timeout=10) as response:
        metadata = json.loads(response.read())
    assert metadata["name"] == "iris"
    with urllib.request.urlopen(f"http://{address}/v2/models/iris/ready", timeout=10) as response:
        assert response.status == 200
