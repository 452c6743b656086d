"""Builders of owned objects: names, labels, owner references, restricted pods, router config, RBAC."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelfleet.api import DeploymentSpec, ModelVersionSpec
from modelfleet.api.routerconfig import RouterConfig
from modelfleet.builders import (
    Owner,
    build_router_config,
    build_router_configmap,
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_version_deployment,
    build_version_service,
    endpoint,
    owned_selector,
    version_object_name,
)

OWNER = Owner(name="iris", namespace="ml", uid="0f1e2d3c")
V1 = ModelVersionSpec.model_validate({"model": "iris", "version": "1", "image": "localhost/iris-server:1"})
V2 = ModelVersionSpec.model_validate(
    {
        "model": "iris",
        "version": "2",
        "image": "localhost/iris-server:2",
        "port": 9000,
        "readinessPath": "/ready",
        "args": ["--workers", "2"],
        "env": [{"name": "MODELFLEET_FAULT_SHIFT", "value": "1"}],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
    }
)
SPEC = DeploymentSpec.model_validate({"model": "iris", "version": "iris-v2", "router": {"replicas": 2}})


def _pods(manifest: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return pod


def _assert_restricted(pod: dict[str, Any]) -> None:
    """The Pod Security `restricted` profile, and a read-only root filesystem."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert all("hostPath" not in volume for volume in pod["volumes"])
    assert not pod.get("hostNetwork")


def test_every_object_is_owned_by_the_deployment_and_labelled() -> None:
    config = build_router_config(
        OWNER, SPEC, {"iris-v1": V1}, stable="iris-v1", canary="", canary_weight=0, mirror_percent=0
    )
    manifests = [
        build_version_deployment(OWNER, "iris-v2", V2, 2),
        build_version_service(OWNER, "iris-v2", V2),
        build_router_deployment(OWNER, SPEC),
        build_router_service(OWNER),
        build_router_service_account(OWNER),
        build_router_role(OWNER),
        build_router_role_binding(OWNER),
        build_router_configmap(OWNER, config),
    ]
    for manifest in manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "Deployment",
                "name": "iris",
                "uid": "0f1e2d3c",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "modelfleet"
        assert labels["app.kubernetes.io/instance"] == "iris"
        assert labels["modelfleet.io/deployment"] == "iris"
        assert labels["app.kubernetes.io/component"] in {"model", "router"}
        selector = dict(part.split("=") for part in owned_selector("iris").split(","))
        assert selector.items() <= labels.items()


def test_version_deployment_runs_the_model_version_as_specified() -> None:
    manifest = build_version_deployment(OWNER, "iris-v2", V2, 3)
    assert manifest["metadata"]["name"] == "iris-iris-v2"
    assert manifest["metadata"]["labels"]["modelfleet.io/version"] == "iris-v2"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/version"] == "iris-v2"
    assert manifest["metadata"]["annotations"] == {"modelfleet.io/version": "iris-v2"}
    assert manifest["spec"]["replicas"] == 3
    selector = manifest["spec"]["selector"]["matchLabels"]
    assert selector.items() <= manifest["spec"]["template"]["metadata"]["labels"].items()
    assert selector["modelfleet.io/version"] == "iris-v2"
    pod = _pods(manifest)
    _assert_restricted(pod)
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "localhost/iris-server:2"
    assert container["args"] == ["--workers", "2"]
    assert container["env"] == [{"name": "MODELFLEET_FAULT_SHIFT", "value": "1"}]
    assert container["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}


def test_default_readiness_follows_the_protocol_and_optional_fields_are_left_out() -> None:
    (container,) = _pods(build_version_deployment(OWNER, "iris-v1", V1, 1))["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert "args" not in container
    assert "env" not in container
    assert "resources" not in container


def test_version_service_selects_only_that_versions_pods() -> None:
    service = build_version_service(OWNER, "iris-v2", V2)
    pods = build_version_deployment(OWNER, "iris-v2", V2, 1)["spec"]["template"]["metadata"]["labels"]
    other = build_version_deployment(OWNER, "iris-v1", V1, 1)["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pods.items()
    assert not selector.items() <= other.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": 9000, "protocol": "TCP"}]


def test_router_deployment_service_and_endpoint() -> None:
    manifest = build_router_deployment(OWNER, SPEC, "registry.example.com/modelfleet:1.0")
    assert manifest["metadata"]["name"] == "iris-router"
    assert manifest["spec"]["replicas"] == 2
    pod = _pods(manifest)
    _assert_restricted(pod)
    assert pod["serviceAccountName"] == "iris-router"
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/modelfleet:1.0"
    assert container["args"] == ["router", "--configmap", "ml/iris-router", "--drain-delay", "3s"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9090}
    service = build_router_service(OWNER)
    assert service["metadata"]["name"] == "iris"
    assert service["spec"]["ports"][0]["port"] == 80
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    assert service["spec"]["selector"].items() <= manifest["spec"]["template"]["metadata"]["labels"].items()
    assert endpoint("iris", "ml") == "http://iris.ml.svc:80"


def test_router_may_only_read_its_own_configmap() -> None:
    (rule,) = build_router_role(OWNER)["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["iris-router"],
        "verbs": ["get", "list", "watch"],
    }
    binding = build_router_role_binding(OWNER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "iris-router",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "iris-router", "namespace": "ml"}]


def test_router_config_splits_by_weight_and_carries_the_fallback() -> None:
    config = build_router_config(
        OWNER,
        SPEC,
        {"iris-v1": V1, "iris-v2": V2},
        stable="iris-v1",
        canary="iris-v2",
        canary_weight=20,
        mirror_percent=5,
    )
    versions = {v.name: v for v in config.versions}
    assert (versions["iris-v1"].weight, versions["iris-v1"].role) == (80, "stable")
    assert (versions["iris-v2"].weight, versions["iris-v2"].role) == (20, "canary")
    assert versions["iris-v2"].url == "http://iris-iris-v2.ml.svc:9000"
    assert config.mirror_percent == 5
    assert config.fallback.retry_on_stable is True
    assert config.fallback.timeout == 2.0
    # the ConfigMap holds exactly what the router reads
    data = build_router_configmap(OWNER, config)["data"]["config.json"]
    assert RouterConfig.model_validate(json.loads(data)) == config


HEURISTIC = ModelVersionSpec.model_validate(
    {"model": "iris", "version": "0", "image": "localhost/iris-rules:1", "protocol": "v1"}
)
FALLBACK_SPEC = DeploymentSpec.model_validate(
    {
        "model": "iris",
        "version": "iris-v2",
        "fallback": {"version": "iris-rules", "timeout": "1s", "response": {"body": "{}"}},
    }
)


def test_the_fallback_version_is_the_router_configs_last_version_at_weight_zero() -> None:
    """Given spec.fallback.version, when the router config is built for a split with a warm previous
    version, then the fallback version follows it with role fallback and weight 0, the rest of
    spec.fallback is the router's fallback, and the fallback is not active."""
    config = build_router_config(
        OWNER,
        FALLBACK_SPEC,
        {"iris-v1": V1, "iris-v2": V2, "iris-v0": V1, "iris-rules": HEURISTIC},
        stable="iris-v2",
        canary="",
        canary_weight=0,
        mirror_percent=0,
        previous="iris-v0",
        fallback="iris-rules",
    )

    assert [(v.name, v.weight, v.role, v.protocol) for v in config.versions] == [
        ("iris-v2", 100, "stable", "v2"),
        ("iris-v0", 0, "previous", "v2"),
        ("iris-rules", 0, "fallback", "v1"),
    ]
    assert config.versions[2].url == "http://iris-iris-rules.ml.svc:8080"
    assert config.fallback.timeout == 1.0
    assert config.fallback.active is False
    assert config.fallback.response is not None
    assert config.fallback.response.body == "{}"
    data = json.loads(build_router_configmap(OWNER, config)["data"]["config.json"])
    assert "version" not in data["fallback"]
    assert RouterConfig.model_validate(data) == config


def test_an_active_fallback_keeps_the_split_and_says_so() -> None:
    config = build_router_config(
        OWNER,
        FALLBACK_SPEC,
        {"iris-v1": V1, "iris-v2": V2, "iris-rules": HEURISTIC},
        stable="iris-v1",
        canary="iris-v2",
        canary_weight=20,
        mirror_percent=0,
        fallback="iris-rules",
        fallback_active=True,
    )

    assert [(v.name, v.weight, v.role) for v in config.versions] == [
        ("iris-v1", 80, "stable"),
        ("iris-v2", 20, "canary"),
        ("iris-rules", 0, "fallback"),
    ]
    assert config.fallback.active is True


def test_an_active_fallback_without_a_fallback_version_is_answered_by_the_response() -> None:
    config = build_router_config(
        OWNER,
        FALLBACK_SPEC,
        {"iris-v2": V2},
        stable="iris-v2",
        canary="",
        canary_weight=0,
        mirror_percent=0,
        fallback_active=True,
    )
    assert [v.role for v in config.versions] == ["stable"]
    assert (config.fallback.active, config.fallback_version) == (True, None)


def test_a_fallback_version_that_is_also_previous_is_listed_once_as_the_fallback() -> None:
    config = build_router_config(
        OWNER,
        FALLBACK_SPEC,
        {"iris-v2": V2, "iris-rules": HEURISTIC},
        stable="iris-v2",
        canary="",
        canary_weight=0,
        mirror_percent=0,
        previous="iris-rules",
        fallback="iris-rules",
    )
    assert [(v.name, v.role) for v in config.versions] == [("iris-v2", "stable"), ("iris-rules", "fallback")]


def test_a_fallback_version_that_serves_as_stable_or_canary_keeps_that_role_only() -> None:
    config = build_router_config(
        OWNER,
        FALLBACK_SPEC,
        {"iris-rules": HEURISTIC, "iris-v2": V2},
        stable="iris-rules",
        canary="iris-v2",
        canary_weight=10,
        mirror_percent=0,
        fallback="iris-rules",
    )
    assert [(v.name, v.role) for v in config.versions] == [("iris-rules", "stable"), ("iris-v2", "canary")]
    assert config.fallback_version is None


def test_a_fallback_version_without_its_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="no ModelVersion spec for the fallback version iris-rules"):
        build_router_config(
            OWNER,
            FALLBACK_SPEC,
            {"iris-v2": V2},
            stable="iris-v2",
            canary="",
            canary_weight=0,
            mirror_percent=0,
            fallback="iris-rules",
        )


def test_an_active_fallback_with_nothing_to_fall_back_to_is_refused() -> None:
    with pytest.raises(ValueError, match=r"fallback\.active needs a version with role fallback"):
        build_router_config(
            OWNER,
            SPEC,
            {"iris-v2": V2},
            stable="iris-v2",
            canary="",
            canary_weight=0,
            mirror_percent=0,
            fallback_active=True,
        )


def test_router_config_without_canary_sends_everything_to_stable_and_mirrors_nothing() -> None:
    config = build_router_config(
        OWNER, SPEC, {"iris-v1": V1}, stable="iris-v1", canary="", canary_weight=0, mirror_percent=30
    )
    assert [(v.name, v.weight, v.role) for v in config.versions] == [("iris-v1", 100, "stable")]
    assert config.mirror_percent == 0


def test_router_config_names_the_warm_previous_version_for_fallback_only() -> None:
    config = build_router_config(
        OWNER,
        SPEC,
        {"iris-v1": V1, "iris-v2": V2},
        stable="iris-v2",
        canary="",
        canary_weight=0,
        mirror_percent=0,
        previous="iris-v1",
    )
    assert [(v.name, v.weight, v.role) for v in config.versions] == [
        ("iris-v2", 100, "stable"),
        ("iris-v1", 0, "previous"),
    ]
    assert config.versions[1].url == "http://iris-iris-v1.ml.svc:8080"
    data = build_router_configmap(OWNER, config)["data"]["config.json"]
    assert RouterConfig.model_validate(json.loads(data)) == config


def test_router_config_keeps_a_canary_at_weight_zero_for_mirroring() -> None:
    config = build_router_config(
        OWNER,
        SPEC,
        {"iris-v1": V1, "iris-v2": V2},
        stable="iris-v1",
        canary="iris-v2",
        canary_weight=0,
        mirror_percent=10,
    )
    assert [(v.name, v.weight) for v in config.versions] == [("iris-v1", 100), ("iris-v2", 0)]


@pytest.mark.parametrize(
    ("versions", "stable", "canary", "weight", "message"),
    [
        ({}, "iris-v1", "", 0, "stable version iris-v1"),
        ({"iris-v1": V1}, "iris-v1", "iris-v2", 10, "canary version iris-v2"),
        ({"iris-v1": V1, "iris-v2": V2}, "iris-v1", "iris-v2", 101, "not within 0..100"),
    ],
)
def test_router_config_refuses_what_it_cannot_route(
    versions: dict[str, ModelVersionSpec], stable: str, canary: str, weight: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_router_config(
            OWNER, SPEC, versions, stable=stable, canary=canary, canary_weight=weight, mirror_percent=0
        )


def test_object_names_are_valid_service_names_and_stay_distinct() -> None:
    assert version_object_name("iris", "iris-v2") == "iris-iris-v2"
    dotted = version_object_name("iris", "iris.v2")
    long_a = version_object_name("iris", "a" * 80)
    long_b = version_object_name("iris", "a" * 79 + "b")
    for name in (dotted, long_a, long_b):
        assert len(name) <= 63
        assert name[0].isalpha()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert dotted != version_object_name("iris", "iris-v2")
    assert long_a != long_b


def test_long_version_names_fit_in_label_values_and_stay_whole_in_the_annotation() -> None:
    version = "v" * 100
    manifest = build_version_deployment(OWNER, version, V1, 1)
    assert len(manifest["metadata"]["labels"]["modelfleet.io/version"]) <= 63
    assert manifest["metadata"]["annotations"]["modelfleet.io/version"] == version
