"""MLflow as the registry of record, end to end: a real MLflow tracking server (SQLite, artifacts in the real
S3 store) in the cluster, models logged and registered from this test with MLflow's own client, the
operator mirroring them and rolling out whatever the alias `champion` points at, with real traffic.

Given iris version 1 logged with a run (params, metric, git commit) and approved by tag, when `champion`
points at it, a ModelVersion with that lineage appears and serves. When `champion` moves to version 2, a
bad build whose predictions drift, it is rolled back and MLflow shows the tags `modelfleet.io/phase:
RolledBack` and the reason; the alias still pointing at it starts nothing. When `champion` moves to a good
version 3 and back to 1 mid-rollout, the rollout ends. When it moves to 3 again and the tracking server
goes away mid-rollout, the rollout completes on what was last seen: nothing serving depends on MLflow.
Clients see no error throughout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import helpers
import pytest
from helpers import API_VERSION, Fleet

from support.cluster import Cluster
from support.iris_artifacts import train
from support.mlflow import WEBHOOK_EVENTS, MlflowServer, mlflow_client, start_mlflow
from support.net import free_port
from support.objectstore import ObjectStore, start_object_store

mlflow = pytest.importorskip("mlflow", reason="mlflow is in the dev extras: make venv")

RUNTIME_IMAGE = "localhost/modelfleet-mlserver:dev"


@pytest.fixture
def store(cluster: Cluster, namespace: str) -> ObjectStore:
    found = start_object_store(cluster, namespace)
    found.make_secret(namespace, "s3-creds")
    return found


@pytest.fixture
def server(cluster: Cluster, namespace: str, store: ObjectStore) -> MlflowServer:
    return start_mlflow(cluster, namespace, store)


@pytest.fixture
def registry(server: MlflowServer) -> Iterator[Any]:
    """MLflow's own client, as a data scientist's notebook has it: tracking server and artifact store."""
    with mlflow_client(server) as client:
        yield client


def log_and_register(build: int, *, commit: str) -> str:
    """Train build `build` of the iris classifier, log it with a run and register it as `iris`; returns
    the MLflow version number."""
    import numpy as np
    from mlflow.models import infer_signature

    model = train(build)
    sample = np.array([[5.1, 3.5, 1.4, 0.2], [6.1, 2.8, 4.7, 1.2]])
    mlflow.set_experiment("iris")
    with mlflow.start_run():
        mlflow.log_params({"build": build, "max_iter": 1000})
        mlflow.log_metric("accuracy", 0.97 if build != 3 else 0.61)
        mlflow.set_tags({"mlflow.source.git.commit": commit})
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(sample, model.predict(sample)),
            pip_requirements=["scikit-learn"],
            registered_model_name="iris",
        )
    version: str = str(logged.registered_model_version)
    return version


def mlflow_model(server: MlflowServer) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": "iris"},
        "spec": {
            "governance": {"requireApproval": True},
            "source": {
                "mlflow": {
                    # the operator runs on this machine in the tests: it reaches the server as the host does
                    "trackingUri": server.host_uri,
                    "registeredModel": "iris",
                    "pollInterval": "5s",
                    "runtime": "mlserver-mlflow",
                    "artifactCredentials": {"secretName": "s3-creds"},
                }
            },
        },
    }


def runtime() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Runtime",
        "metadata": {"name": "mlserver-mlflow"},
        "spec": {"formats": ["mlflow"], "image": RUNTIME_IMAGE},
    }


def following_champion() -> dict[str, Any]:
    deployment = helpers.deployment(
        steps=[
            {"setWeight": 25},
            {"pause": {"duration": "20s"}},
            {"setWeight": 50},
            {"pause": {"duration": "10s"}},
        ],
        monitor="iris-quality",
    )
    del deployment["spec"]["version"]
    deployment["spec"]["versionFrom"] = {"mlflowAlias": "champion"}
    return deployment


def version_of(fleet: Fleet, name: str) -> dict[str, Any]:
    return dict(fleet.cluster.get("modelversion", name, fleet.namespace))


def wait_version(fleet: Fleet, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    return dict(
        fleet.cluster.wait_for(
            f"{name} {phase}",
            lambda: (
                (mv := fleet.cluster.get_or_none("modelversion", name, fleet.namespace))
                and (mv.get("status") or {}).get("phase") == phase
                and mv
            ),
            timeout=timeout,
            interval=0.5,
        )
    )


def tags(registry: Any, version: str) -> dict[str, str]:
    found: dict[str, str] = dict(registry.get_model_version("iris", version).tags)
    return found


def test_the_registry_of_record_drives_rollouts_and_hears_back(
    fleet: Fleet, store: ObjectStore, server: MlflowServer, registry: Any
) -> None:
    # version 1: logged, registered, approved by tag, champion
    v1 = log_and_register(1, commit="c0ffee1")
    registry.set_model_version_tag("iris", v1, "modelfleet.io/approved", "true")
    registry.set_model_version_tag("iris", v1, "modelfleet.io/approved-by", "alice")
    registry.set_registered_model_alias("iris", "champion", v1)

    monitor = helpers.monitor(
        metrics=[
            {"name": "errors", "type": "errorRate", "max": 0.05},
            {"name": "drift", "type": "predictionDrift", "max": 0.25},
        ]
    )
    fleet.apply(mlflow_model(server), runtime(), monitor, following_champion())
    mirrored = wait_version(fleet, f"iris-v{v1}", "Serving", timeout=240)
    spec = mirrored["spec"]
    assert spec["artifact"]["format"] == "mlflow"
    assert spec["artifact"]["uri"].startswith("s3://mlflow/")
    assert spec["lineage"]["source"]["commit"] == "c0ffee1"
    assert spec["lineage"]["params"] == {"build": "1", "max_iter": "1000"}
    assert spec["lineage"]["metrics"] == {"accuracy": 0.97}
    assert spec["lineage"]["signature"]["inputs"]
    assert spec["approval"]["by"] == "alice"
    assert mirrored["metadata"]["labels"]["modelfleet.io/source"] == "mlflow"
    assert mirrored["status"]["artifact"]["digest"].startswith("sha256:")
    healthy = fleet.wait_status(
        "iris-v1 Healthy", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == f"iris-v{v1}"
    )
    assert healthy["targetVersion"] == f"iris-v{v1}"
    fleet.watch = helpers.StatusWatch(fleet.cluster, fleet.namespace, "iris", fleet.timeline)
    fleet.load = helpers.Load(helpers.service_ip(fleet.cluster, fleet.namespace, "iris"), rate=30)
    fleet.load.start()
    fleet.serving_since = helpers.wait_until_serving(fleet.load, f"iris-v{v1}")
    fleet.cluster.wait_for(
        "MLflow tags of version 1",
        lambda: (
            tags(registry, v1).get("modelfleet.io/phase") == "Serving"
            and tags(registry, v1).get("modelfleet.io/deployments") == "iris"
        ),
        timeout=30,
    )

    # version 2: a bad build, approved, champion: rolled back, and MLflow hears why
    v2 = log_and_register(3, commit="bad0bad")
    registry.set_model_version_tag("iris", v2, "modelfleet.io/approved", "true")
    wait_version(fleet, f"iris-v{v2}", "Ready")
    registry.set_registered_model_alias("iris", "champion", v2)
    rolled_back = fleet.wait_status(
        "the bad build rolled back",
        lambda s: bool(s.get("history")) and s["history"][0]["version"] == f"iris-v{v2}",
        240,
    )
    entry = rolled_back["history"][0]
    assert entry["result"] == "RolledBack", entry
    assert entry["reason"].startswith("drift "), entry
    assert rolled_back["stableVersion"] == f"iris-v{v1}"
    shown = fleet.cluster.wait_for(
        "MLflow tags of the rolled-back version",
        lambda: (t := tags(registry, v2)).get("modelfleet.io/phase") == "RolledBack" and t,
        timeout=30,
    )
    assert shown["modelfleet.io/rollback-reason"].startswith("iris: drift "), shown
    record = version_of(fleet, f"iris-v{v2}")["status"]["history"]
    assert record[0]["result"] == "RolledBack"
    # the alias still points at it: nothing starts again
    time.sleep(12)
    held = fleet.status()
    assert (held["stableVersion"], held.get("canaryVersion", "")) == (f"iris-v{v1}", "")

    # version 3, good: the alias moves to it, then back to 1 mid-rollout: the rollout ends
    v3 = log_and_register(2, commit="900d900")
    registry.set_model_version_tag("iris", v3, "modelfleet.io/approved", "true")
    wait_version(fleet, f"iris-v{v3}", "Ready")
    registry.set_registered_model_alias("iris", "champion", v3)
    fleet.wait_status("iris-v3 canary", lambda s: s.get("canaryVersion") == f"iris-v{v3}", 120)
    registry.set_registered_model_alias("iris", "champion", v1)
    ended = fleet.wait_status(
        "the rollout of iris-v3 ended",
        lambda s: not s.get("canaryVersion") and s["history"][0]["version"] == f"iris-v{v3}",
        60,
    )
    assert ended["history"][0]["result"] == "Superseded", ended["history"][0]
    assert "alias champion" in ended["history"][0]["reason"], ended["history"][0]
    assert ended["stableVersion"] == f"iris-v{v1}"

    # and to 3 again; the tracking server goes away mid-rollout: the rollout completes all the same
    registry.set_registered_model_alias("iris", "champion", v3)
    fleet.wait_status("iris-v3 canary again", lambda s: s.get("canaryVersion") == f"iris-v{v3}", 120)
    fleet.cluster.kubectl("delete", "pod", server.name, "-n", fleet.namespace, "--wait=false")
    fleet.cluster.wait_for(
        "the Model says MLflow is unreachable",
        lambda: any(
            c["type"] == "Synced" and c["status"] == "False" and c["reason"] == "Unreachable"
            for c in (fleet.cluster.get("model", "iris", fleet.namespace).get("status") or {})
            .get("source", {})
            .get("conditions", [])
        ),
        timeout=60,
    )
    promoted = fleet.wait_status(
        "iris-v3 promoted without MLflow",
        lambda s: s.get("stableVersion") == f"iris-v{v3}" and s.get("phase") == "Healthy",
        180,
    )
    assert promoted["targetVersion"] == f"iris-v{v3}"
    model_status = fleet.cluster.get("model", "iris", fleet.namespace)["status"]
    assert model_status["source"]["aliases"]["champion"] == f"iris-v{v3}"  # what was last seen, kept

    fleet.load.stop()
    assert fleet.client_errors() == [], fleet.load.codes(since=fleet.serving_since)
    assert store.secret_key not in fleet.operator.log()
    helpers.record_result(
        "mlflow_registry_of_record",
        {"requests": len(fleet.load.answers), "served": dict(fleet.load.served_by())},
    )


WEBHOOK_SECRET = "e2e-webhook-secret-3b9d"


@pytest.mark.local_cluster  # MLflow's pod calls the operator on this machine: the local cluster's node
def test_mlflow_webhooks_bring_a_new_version_and_an_alias_move_within_seconds(
    fleet: Fleet, store: ObjectStore, server: MlflowServer, registry: Any
) -> None:
    """Given a Model that polls MLflow only once an hour and takes MLflow's webhooks, and the tracking server
    in the cluster calling the operator's receiver, when a new version is registered and approved and
    `champion` moves to it, then its ModelVersion appears and its canary starts within seconds: only a
    signed webhook delivery could have woken the sync."""
    port = free_port("0.0.0.0")
    fleet.operator.env["MODELFLEET_WEBHOOK_PORT"] = str(port)
    fleet.operator.restart()
    fleet.cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "mlflow-webhook"},
                "stringData": {"secret": WEBHOOK_SECRET},
            }
        ],
        fleet.namespace,
    )
    v1 = log_and_register(1, commit="c0ffee1")
    registry.set_model_version_tag("iris", v1, "modelfleet.io/approved", "true")
    registry.set_registered_model_alias("iris", "champion", v1)
    model = mlflow_model(server)
    model["spec"]["source"]["mlflow"]["pollInterval"] = "1h"
    model["spec"]["source"]["mlflow"]["webhook"] = {"secretName": "mlflow-webhook", "key": "secret"}
    deployment = helpers.deployment(steps=[{"setWeight": 50}, {"pause": {"duration": "10s"}}])
    del deployment["spec"]["version"]
    deployment["spec"]["versionFrom"] = {"mlflowAlias": "champion"}
    fleet.apply(model, runtime(), deployment)
    fleet.wait_status(
        "iris-v1 Healthy",
        lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == f"iris-v{v1}",
        240,
    )

    url = f"http://{server.host_ip}:{port}/mlflow/webhooks/{fleet.namespace}/iris"
    webhook = registry.create_webhook(
        name="modelfleet", url=url, events=WEBHOOK_EVENTS, secret=WEBHOOK_SECRET
    )
    time.sleep(1.5)  # the server's cache of webhooks (MLFLOW_WEBHOOK_CACHE_TTL, 1 s here)
    tested = registry.test_webhook(webhook.webhook_id)
    assert tested.success, f"MLflow could not deliver to {url}: {tested}"

    registered = time.monotonic()
    v2 = log_and_register(2, commit="900d900")
    registry.set_model_version_tag("iris", v2, "modelfleet.io/approved", "true")
    fleet.cluster.wait_for(
        f"iris-v{v2} mirrored by webhook",
        lambda: fleet.cluster.get_or_none("modelversion", f"iris-v{v2}", fleet.namespace),
        timeout=30,
        interval=0.25,
    )
    mirrored = time.monotonic() - registered
    wait_version(fleet, f"iris-v{v2}", "Ready")

    moved = time.monotonic()
    registry.set_registered_model_alias("iris", "champion", v2)
    fleet.wait_status("iris-v2 canary", lambda s: s.get("canaryVersion") == f"iris-v{v2}", 30)
    canary = time.monotonic() - moved
    promoted = fleet.wait_status(
        "iris-v2 promoted",
        lambda s: s.get("stableVersion") == f"iris-v{v2}" and s.get("phase") == "Healthy",
        120,
    )
    assert promoted["targetVersion"] == f"iris-v{v2}"
    assert WEBHOOK_SECRET not in fleet.operator.log()
    helpers.record_result(
        "mlflow_webhooks",
        {
            "secondsFromRegisterToModelVersion": round(mirrored, 2),
            "secondsFromAliasToCanary": round(canary, 2),
        },
    )
