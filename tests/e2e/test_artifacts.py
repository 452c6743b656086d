"""Models, not images: artifact versions in a real S3 store (versitygw), checked before they roll out,
fetched into their pods and served by one MLServer runtime image, with real traffic through the router.

Given iris v1, v2 (good) and v3 (versicolor labelled as virginica) as model files in the store, when v2 rolls
out it is promoted; when v3 rolls out, its predictions drift and it is rolled back; clients see no error.
A version whose digest does not match is Rejected before any pod is made, and the Deployment keeps
serving what it has. With the node cache on, a scale-out to three pods downloads the artifact once.
NVIDIA's tritonclient, with its defaults, gets correct predictions through the router.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import helpers
import pytest
from helpers import API_VERSION, Fleet

from support.cluster import Cluster
from support.iris_artifacts import MODEL_FILE, Artifact, write
from support.objectstore import ObjectStore, start_object_store
from support.operator import OperatorProcess

BUCKET = "models"
RUNTIME_IMAGE = "localhost/modelfleet-mlserver:dev"
# rows 0, 50 and 100 of the iris data set: one flower of each species
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]


def runtime() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Runtime",
        "metadata": {"name": "mlserver-sklearn"},
        "spec": {"formats": ["sklearn"], "image": RUNTIME_IMAGE},
    }


def artifact_version(name: str, artifact: Artifact, *, digest: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "model": "iris",
            "version": name.rsplit("-", 1)[-1],
            "artifact": {
                "uri": f"s3://{BUCKET}/{name}/",
                "digest": digest or artifact.digest,
                "format": "sklearn",
                "credentials": {"secretName": "s3-creds"},
            },
        },
    }


def upload(store: ObjectStore, name: str, version: int, folder: Path) -> Artifact:
    """Train `version` into a folder of its own (with a note that makes its digest unique to this test,
    so no node cache of an earlier run holds it) and upload it under s3://models/<name>/."""
    target = folder / name
    target.mkdir(parents=True)
    (target / "NOTES.txt").write_text(f"iris {name}, test run {uuid.uuid4()}\n")
    artifact = write(version, target)
    store.upload_directory(BUCKET, name, target)
    return artifact


@pytest.fixture
def store(cluster: Cluster, namespace: str) -> ObjectStore:
    found = start_object_store(cluster, namespace)
    found.create_bucket(BUCKET)
    found.make_secret(namespace, "s3-creds")
    return found


def version_status(fleet: Fleet, name: str) -> dict[str, Any]:
    return dict(fleet.cluster.get("modelversion", name, fleet.namespace).get("status") or {})


def wait_version(fleet: Fleet, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
    return dict(
        fleet.cluster.wait_for(
            f"{name} {phase}",
            lambda: (s := version_status(fleet, name)).get("phase") == phase and s,
            timeout=timeout,
            interval=0.5,
        )
    )


def test_artifact_versions_roll_out_and_a_drifting_one_is_rolled_back(
    fleet: Fleet, store: ObjectStore, tmp_path: Path
) -> None:
    artifacts = {f"iris-v{v}": upload(store, f"iris-v{v}", v, tmp_path) for v in (1, 2, 3)}
    fleet.apply(helpers.model(), runtime(), *(artifact_version(name, a) for name, a in artifacts.items()))
    for name in artifacts:
        checked = wait_version(fleet, name, "Ready")
        assert checked["artifact"]["digest"] == artifacts[name].digest
        assert checked["artifact"]["runtime"] == "Runtime/mlserver-sklearn"
        assert checked["artifact"]["size"] == artifacts[name].size
    load = fleet.serve_v1(
        helpers.monitor(
            metrics=[
                {"name": "errors", "type": "errorRate", "max": 0.05},
                {"name": "drift", "type": "predictionDrift", "max": 0.25},
            ]
        ),
        monitor="iris-quality",
        rate=40,
    )
    pod = json.loads(
        fleet.cluster.kubectl(
            "get", "pods", "-n", fleet.namespace, "-l", "modelfleet.io/version=iris-v1", "-o", "json"
        ).stdout
    )["items"][0]
    assert [c["image"] for c in pod["spec"]["containers"]] == [RUNTIME_IMAGE]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["fetch"]

    fleet.set_version("iris-v2")
    promoted = fleet.wait_status(
        "iris-v2 promoted", lambda s: s.get("stableVersion") == "iris-v2" and s.get("phase") == "Healthy", 180
    )
    assert promoted["history"][0]["result"] == "Promoted"

    fleet.set_version("iris-v3")
    rolled_back = fleet.wait_status(
        "iris-v3 rolled back",
        lambda s: s.get("history") and s["history"][0]["version"] == "iris-v3" and s.get("canaryWeight") == 0,
        180,
    )
    entry = rolled_back["history"][0]
    assert entry["result"] == "RolledBack", entry
    assert entry["reason"].startswith("drift "), entry
    assert rolled_back["stableVersion"] == "iris-v2"
    assert fleet.measured("iris-v3", "errors", "Pass")  # it answered every request: its predictions moved
    load.stop()
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    helpers.record_result(
        "artifact_rollout", {"requests": len(load.answers), "served": dict(load.served_by())}
    )


def test_a_digest_mismatch_is_rejected_before_any_pod_and_serving_goes_on(
    fleet: Fleet, store: ObjectStore, tmp_path: Path
) -> None:
    good = upload(store, "iris-v1", 1, tmp_path)
    bad = upload(store, "iris-v2", 2, tmp_path)
    wrong = "sha256:" + ("0" if bad.digest[-1] != "0" else "1") * 64
    fleet.apply(
        helpers.model(),
        runtime(),
        artifact_version("iris-v1", good),
        artifact_version("iris-v2", bad, digest=wrong),
    )
    rejected = wait_version(fleet, "iris-v2", "Rejected")
    ready = next(c for c in rejected["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DigestMismatch", ready
    assert bad.digest in ready["message"], ready  # it names what the artifact really is
    wait_version(fleet, "iris-v1", "Ready")
    load = fleet.serve_v1(rate=20)

    fleet.set_version("iris-v2")
    held = fleet.wait_status(
        "iris-v2 not rolled out",
        lambda s: "iris-v2" in s.get("message", "") and "not rolled out" in s["message"],
        60,
    )
    assert (held["stableVersion"], held["canaryVersion"], held["canaryWeight"]) == ("iris-v1", "", 0)
    assert (
        "DigestMismatch" in held["message"] or "not match" in held["message"] or "digest" in held["message"]
    )
    owned = fleet.cluster.kubectl(
        "get", "deployments.apps", "-n", fleet.namespace, "-l", "modelfleet.io/version=iris-v2", "-o", "name"
    ).stdout.split()
    assert owned == [], "a pod template was made for the rejected version"
    load.stop()
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    # the secret's value shows nowhere
    shown = fleet.cluster.kubectl("get", "events,modelversions", "-n", fleet.namespace, "-o", "yaml").stdout
    assert store.secret_key not in shown
    assert store.secret_key not in fleet.operator.log()


def test_tritonclient_gets_correct_predictions_through_the_router(
    fleet: Fleet, store: ObjectStore, tmp_path: Path
) -> None:
    import numpy as np
    import tritonclient.http as triton

    fleet.apply(
        helpers.model(), runtime(), artifact_version("iris-v1", upload(store, "iris-v1", 1, tmp_path))
    )
    wait_version(fleet, "iris-v1", "Ready")
    fleet.serve_v1(rate=5)
    ip = helpers.service_ip(fleet.cluster, fleet.namespace, "iris")
    client = triton.InferenceServerClient(url=f"{ip}:80")
    rows = np.array(FLOWERS, dtype=np.float64)
    data = triton.InferInput("input-0", list(rows.shape), "FP64")
    data.set_data_from_numpy(rows)  # the binary tensor extension, tritonclient's default
    answer = client.infer("iris", [data])
    (output,) = answer.get_response()["outputs"]
    assert answer.as_numpy(output["name"]).reshape(-1).tolist() == [0, 1, 2]


@pytest.fixture
def cached_operator(cluster: Cluster, crds: None, namespace: str, tmp_path: Path) -> Any:
    proc = OperatorProcess(
        cluster,
        namespace,
        tmp_path / "operator.log",
        env={"MODELFLEET_ARTIFACT_NODE_CACHE": "/var/cache/modelfleet/artifacts"},
    )
    proc.start()
    yield proc
    proc.kill()


def test_a_scale_out_with_the_node_cache_downloads_once(
    cluster: Cluster, namespace: str, cached_operator: Any, store: ObjectStore, tmp_path: Path
) -> None:
    fleet = Fleet(cluster, namespace, cached_operator)
    artifact = upload(store, "iris-v1", 1, tmp_path)
    fleet.apply(helpers.model(), runtime(), artifact_version("iris-v1", artifact))
    wait_version(fleet, "iris-v1", "Ready")
    checked = store.get_requests(BUCKET, f"iris-v1/{MODEL_FILE}")
    assert checked == 1  # the check downloads it once, never through the cache
    fleet.apply(helpers.model(), helpers.deployment(version="iris-v1"))
    fleet.wait_status("iris-v1 Healthy", lambda s: s.get("phase") == "Healthy", 180)
    fleet.patch("iris", {"spec": {"replicas": 3}})

    def ready_pods() -> int:
        found = cluster.kubectl(
            "get", "deployments.apps", "-n", namespace, "-l", "modelfleet.io/version=iris-v1", "-o", "json"
        ).stdout
        return int(json.loads(found)["items"][0]["status"].get("readyReplicas") or 0)

    cluster.wait_for("three ready iris-v1 pods", lambda: ready_pods() == 3, timeout=180, interval=1)
    pods = store.get_requests(BUCKET, f"iris-v1/{MODEL_FILE}") - checked
    assert pods == 1, f"{pods} downloads for 3 pods with the node cache"
    helpers.record_result("artifact_node_cache", {"pods": 3, "downloads": pods})
