"""The watch caches the controllers read: what each kopf index keeps, and how the Cache reads it."""

from __future__ import annotations

from typing import Any

import pytest

from modelfleet.controllers import cache
from modelfleet.controllers.cache import INDEXES, Cache

OWNER = [{"apiVersion": "modelfleet.io/v1alpha1", "kind": "Deployment", "name": "iris", "uid": "u"}]


def owned(name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"app.kubernetes.io/component": component, "modelfleet.io/deployment": "iris"},
            "ownerReferences": OWNER,
            "managedFields": [{"manager": "modelfleet"}],
        },
        **extra,
    }


def indexed(function: Any, bodies: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """What kopf would hold for `function` after seeing `bodies` (the index functions are plain)."""
    out: dict[Any, list[dict[str, Any]]] = {}
    for body in bodies:
        meta = body["metadata"]
        for key, value in function(namespace=meta["namespace"], name=meta["name"], body=body).items():
            out.setdefault(key, []).append(value)
    return out


def test_owned_objects_are_kept_by_owner_without_managed_fields_and_with_their_kind() -> None:
    kept = indexed(
        cache.cached_owned_deployments, [owned("iris-iris-v1", "model"), owned("iris-router", "router")]
    )
    reads = Cache({**{index: {} for index in INDEXES}, "cached_owned_deployments": kept})

    (version,) = reads.owned_deployments("ml", "iris", "model")
    assert version["metadata"]["name"] == "iris-iris-v1"
    assert "managedFields" not in version["metadata"]
    assert (version["apiVersion"], version["kind"]) == ("apps/v1", "Deployment")
    assert reads.owned_deployments("ml", "fraud", "model") == []


def test_owned_objects_and_router_pods_are_kept_without_their_spec() -> None:
    template = {
        "template": {"spec": {"containers": [{"name": "server", "image": "localhost/iris-server:1"}]}}
    }
    status = {"readyReplicas": 2, "updatedReplicas": 2, "observedGeneration": 3}
    (packed,) = indexed(
        cache.cached_owned_deployments, [owned("iris-iris-v1", "model", spec=template, status=status)]
    )[("ml", "iris")]
    kept = cache.unpack(packed)
    assert "spec" not in kept
    assert kept["status"] == status  # what ready_replicas reads
    assert kept["metadata"]["labels"]["app.kubernetes.io/component"] == "model"
    pod_status = {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"name": "router"}]}
    (packed_pod,) = indexed(
        cache.cached_router_pods, [owned("iris-router-abc", "router", spec={}, status=pod_status)]
    )[("ml", "iris")]
    pod = cache.unpack(packed_pod)
    assert pod["status"] == {"phase": "Running", "podIP": "10.0.0.5"}
    assert "spec" not in pod


def test_objects_owned_by_nothing_of_ours_are_not_kept() -> None:
    body = owned("x", "model")
    body["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}]
    assert cache.cached_owned_services(namespace="ml", body=body) == {}


def test_monitors_are_found_by_name_and_by_the_deployment_they_watch() -> None:
    monitors = [
        {"metadata": {"name": "iris-quality", "namespace": "ml"}, "spec": {"deployment": "iris"}},
        {"metadata": {"name": "fraud-quality", "namespace": "ml"}, "spec": {"deployment": "fraud"}},
    ]
    reads = Cache(
        {
            **{index: {} for index in INDEXES},
            "cached_monitors": indexed(cache.cached_monitors, monitors),
            "cached_monitors_by_deployment": indexed(cache.cached_monitors_by_deployment, monitors),
        }
    )
    found = reads.monitor("ml", "iris-quality")
    assert found is not None
    assert found["kind"] == "Monitor"
    assert [m["metadata"]["name"] for m in reads.monitors_of("ml", "iris")] == ["iris-quality"]
    assert reads.monitors_of("other", "iris") == []


def test_router_pods_are_found_by_their_deployment_label() -> None:
    pods = [owned("iris-router-abc", "router", status={"phase": "Running", "podIP": "10.0.0.5"})]
    reads = Cache(
        {**{index: {} for index in INDEXES}, "cached_router_pods": indexed(cache.cached_router_pods, pods)}
    )
    assert [p["metadata"]["name"] for p in reads.router_pods("ml", "iris")] == ["iris-router-abc"]


def test_cached_objects_are_packed_small_and_every_read_is_a_fresh_copy() -> None:
    status = {
        "phase": "Progressing",
        "conditions": [{"type": "Ready", "status": "False", "message": "x" * 200}],
    }
    body = {
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "managedFields": [{"manager": "a"}]},
        "spec": {"model": "iris", "version": "iris-v1"},
        "status": status,
    }
    (packed,) = indexed(cache.cached_deployments, [body])[("ml", "iris")]
    assert isinstance(packed, cache.Packed)
    assert packed == cache.Packed(cache.unpack(packed))  # kopf compares values before replacing one
    reads = Cache({**{index: {} for index in INDEXES}, "cached_deployments": {("ml", "iris"): [packed]}})
    first = reads.deployment("ml", "iris")
    assert first is not None
    assert first["status"] == status
    assert "managedFields" not in first["metadata"]
    first["status"]["phase"] = "changed by a reader"
    second = reads.deployment("ml", "iris")
    assert second is not None
    assert second["status"]["phase"] == "Progressing"


def test_a_cache_without_its_indexes_is_refused() -> None:
    with pytest.raises(ValueError, match="cached_deployments"):
        Cache({})
