"""Builders of owned objects: names, labels, owner references, restricted pods, router config, RBAC, the
router's admin token Secret, its feedback token mount, its capture credentials and claim, and its
NetworkPolicy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from modelfleet.api import DeploymentSpec, ModelVersionSpec
from modelfleet.api.routerconfig import RouterConfig
from modelfleet.builders import (
    Owner,
    RouterAccess,
    build_router_admin_secret,
    build_router_config,
    build_router_configmap,
    build_router_deployment,
    build_router_network_policy,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_version_deployment,
    build_version_service,
    endpoint,
    fingerprint,
    owned_selector,
    peers,
    router_admin_token,
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
WITH_FEEDBACK = DeploymentSpec.model_validate(
    {
        "model": "iris",
        "version": "iris-v2",
        "feedback": {"tokenSecret": {"name": "iris-feedback", "key": "label-token"}},
    }
)
KEY = bytes(range(32))


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
        build_router_admin_secret(OWNER, router_admin_token(KEY, OWNER)),
        build_router_network_policy(OWNER, RouterAccess(operator_namespace="modelfleet-system")),
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
    assert container["args"] == [
        "router",
        "--configmap",
        "ml/iris-router",
        "--drain-delay",
        "3s",
        "--admin-token-file",
        "/etc/modelfleet/admin/token",
    ]
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


# --- the router's tokens and its NetworkPolicy -------------------------------------------------------------


def _volumes(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in _pods(manifest)["volumes"]}


def _mounts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = _pods(manifest)["containers"]
    return {mount["name"]: mount for mount in container["volumeMounts"]}


def test_without_spec_feedback_nothing_of_feedback_is_mounted_and_the_router_config_has_none() -> None:
    router = build_router_deployment(OWNER, SPEC)
    config = build_router_config(
        OWNER, SPEC, {"iris-v1": V1}, stable="iris-v1", canary="", canary_weight=0, mirror_percent=0
    )

    assert set(_volumes(router)) == {"tmp", "admin-token"}
    assert set(_mounts(router)) == {"tmp", "admin-token"}
    assert config.feedback is None
    data = json.loads(build_router_configmap(OWNER, config)["data"]["config.json"])
    assert data["feedback"] is None  # the router's feedback endpoint answers 404


def test_with_spec_feedback_the_named_key_alone_is_mounted_read_only_where_the_config_says() -> None:
    router = build_router_deployment(OWNER, WITH_FEEDBACK)
    config = build_router_config(
        OWNER, WITH_FEEDBACK, {"iris-v1": V1}, stable="iris-v1", canary="", canary_weight=0, mirror_percent=0
    )

    assert _volumes(router)["feedback-token"] == {
        "name": "feedback-token",
        # optional: a missing Secret lets the router start; it answers labels 503 until the Secret exists
        "secret": {
            "secretName": "iris-feedback",
            "items": [{"key": "label-token", "path": "token"}],
            "optional": True,
        },
    }
    mount = _mounts(router)["feedback-token"]
    assert mount == {"name": "feedback-token", "mountPath": "/etc/modelfleet/feedback", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount would never see the Secret change
    assert config.feedback is not None
    assert config.feedback.token_file == "/etc/modelfleet/feedback/token"
    assert (
        config.feedback.token_file
        == f"{mount['mountPath']}/{_volumes(router)['feedback-token']['secret']['items'][0]['path']}"
    )
    assert (config.feedback.max_predictions, config.feedback.max_pairs) == (10_000, 1000)
    data = json.loads(build_router_configmap(OWNER, config)["data"]["config.json"])
    assert data["feedback"] == {
        "tokenFile": "/etc/modelfleet/feedback/token",
        "maxPredictions": 10000,
        "maxPairs": 1000,
    }
    assert "label-token" not in json.dumps(data)  # the configuration names the file, never the Secret
    _assert_restricted(_pods(router))


def test_the_router_mounts_its_admin_token_secret_read_only_and_names_the_file() -> None:
    router = build_router_deployment(OWNER, SPEC)

    assert _volumes(router)["admin-token"] == {
        "name": "admin-token",
        "secret": {
            "secretName": "iris-router-admin",
            "items": [{"key": "token", "path": "token"}],
            "optional": True,
        },
    }
    assert _mounts(router)["admin-token"] == {
        "name": "admin-token",
        "mountPath": "/etc/modelfleet/admin",
        "readOnly": True,
    }
    (container,) = _pods(router)["containers"]
    assert container["args"][-2:] == ["--admin-token-file", "/etc/modelfleet/admin/token"]


def test_the_admin_token_is_the_operator_keys_hmac_of_the_deployment_and_the_same_at_every_build() -> None:
    token = router_admin_token(KEY, OWNER)
    expected = hmac.new(
        KEY, b"modelfleet router admin token\0ml\0iris\x000f1e2d3c", hashlib.sha256
    ).hexdigest()

    assert token == expected
    assert len(token) == 64
    assert router_admin_token(KEY, Owner(name="iris", namespace="ml", uid="0f1e2d3c")) == token
    others = {
        router_admin_token(KEY, Owner(name="iris", namespace="ml", uid="another-uid")),  # made again
        router_admin_token(KEY, Owner(name="iris", namespace="team-b", uid="0f1e2d3c")),
        router_admin_token(KEY, Owner(name="iris2", namespace="ml", uid="0f1e2d3c")),
        router_admin_token(bytes(32), OWNER),  # another operator key
    }
    assert token not in others
    assert len(others) == 4
    with pytest.raises(ValueError, match="at least 32 bytes"):
        router_admin_token(b"short", OWNER)


def test_the_admin_secret_holds_the_token_and_is_built_the_same_every_reconcile() -> None:
    token = router_admin_token(KEY, OWNER)
    secret = build_router_admin_secret(OWNER, token)

    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    assert secret["metadata"]["name"] == "iris-router-admin"
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    assert set(secret["data"]) == {"token"}
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    # a reconcile builds exactly the same manifest: the applier sends it once, the token never rotates
    again = build_router_admin_secret(OWNER, router_admin_token(KEY, OWNER))
    assert json.dumps(again, sort_keys=True) == json.dumps(secret, sort_keys=True)


def test_the_router_deployment_fingerprints_its_admin_secret_without_restarting_pods_for_a_new_one() -> None:
    token = router_admin_token(KEY, OWNER)
    with_token = build_router_deployment(OWNER, SPEC, admin_token=token)
    rotated = build_router_deployment(OWNER, SPEC, admin_token=router_admin_token(bytes(32), OWNER))

    secret = build_router_admin_secret(OWNER, token)
    expected = hashlib.sha256(json.dumps(secret, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    shown = with_token["metadata"]["annotations"]["modelfleet.io/admin-secret-sha256"]
    assert shown == expected[:16] == fingerprint(secret)
    assert token not in json.dumps(with_token)
    assert secret["data"]["token"] not in json.dumps(with_token)
    assert rotated["metadata"]["annotations"] != with_token["metadata"]["annotations"]
    assert rotated["spec"]["template"] == with_token["spec"]["template"]  # the pods stay as they are
    assert "annotations" not in build_router_deployment(OWNER, SPEC)["metadata"]


def test_the_network_policy_opens_the_traffic_port_to_all_and_the_admin_port_to_operator_and_prometheus() -> (
    None
):
    policy = build_router_network_policy(OWNER, RouterAccess(operator_namespace="modelfleet-system"))
    router_pods = build_router_deployment(OWNER, SPEC)["spec"]["template"]["metadata"]["labels"]

    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert policy["metadata"]["name"] == "iris-router"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= router_pods.items()
    other_pods = build_version_deployment(OWNER, "iris-v1", V1, 1)["spec"]["template"]["metadata"]["labels"]
    assert not policy["spec"]["podSelector"]["matchLabels"].items() <= other_pods.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (to the versions, the API server) is free
    assert policy["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 8080}]},
        {
            "ports": [{"protocol": "TCP", "port": 9090}],
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "modelfleet-system"}
                    },
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "modelfleet",
                            "app.kubernetes.io/component": "operator",
                        }
                    },
                },
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                },
            ],
        },
    ]


def test_the_network_policy_takes_the_peers_it_is_given() -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"team": "observability"}}, "podSelector": {}}
    gateway = {"ipBlock": {"cidr": "10.0.0.0/8"}}
    policy = build_router_network_policy(
        OWNER, RouterAccess(operator_namespace="ops", admin_from=(scraper,), traffic_from=(gateway,))
    )

    traffic, admin = policy["spec"]["ingress"]
    assert traffic == {"ports": [{"protocol": "TCP", "port": 8080}], "from": [gateway]}
    assert admin["from"][1:] == [scraper]
    assert admin["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("app=prometheus", "must be a list of NetworkPolicy peers"),
        ([{}], r"adminFrom\[0\] must be a NetworkPolicy peer"),
        ([{"podSelector": {}}, {"matchLabels": {"app": "x"}}], r"adminFrom\[1\] has matchLabels"),
        ([{"podSelector": "app=x"}], r"adminFrom\[0\].podSelector must be an object"),
    ],
)
def test_network_policy_peers_are_checked_before_any_is_applied(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        peers(value, "adminFrom")
    assert peers([{"podSelector": {"matchLabels": {"app": "vmagent"}}}], "adminFrom") == (
        {"podSelector": {"matchLabels": {"app": "vmagent"}}},
    )


# --- payload capture ---------------------------------------------------------------------------------------


def _with_capture(destination: dict[str, Any], **capture: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "model": "iris",
            "version": "iris-v2",
            "capture": {"percent": 5, "destination": destination, "redact": ["email", "ssn"], **capture},
        }
    )


def _config_of(spec: DeploymentSpec) -> RouterConfig:
    return build_router_config(
        OWNER, spec, {"iris-v1": V1}, stable="iris-v1", canary="", canary_weight=0, mirror_percent=0
    )


def test_without_spec_capture_the_router_has_no_capture_env_volume_or_configuration() -> None:
    router = build_router_deployment(OWNER, SPEC)
    (container,) = _pods(router)["containers"]
    assert "env" not in container
    assert set(_volumes(router)) == {"tmp", "admin-token"}
    assert "fsGroup" not in _pods(router)["securityContext"]
    assert _config_of(SPEC).capture is None
    assert (
        json.loads(build_router_configmap(OWNER, _config_of(SPEC))["data"]["config.json"])["capture"] is None
    )


def test_s3_capture_gives_the_router_each_credential_key_as_optional_environment_and_names_no_secret() -> (
    None
):
    """Given spec.capture to s3://captures/iris/ with the Secret capture-store, then the router container
    gets the five keys of that Secret as environment, each optional (a missing Secret or key lets the
    router start; its batches are then refused and counted), and the router configuration carries the
    destination, the share and the names to redact, with the default bounds, but not the Secret."""
    spec = _with_capture({"uri": "s3://captures/iris/", "credentials": {"secretName": "capture-store"}})
    router = build_router_deployment(OWNER, spec)
    (container,) = _pods(router)["containers"]

    assert container["env"] == [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "capture-store", "key": key, "optional": True}}}
        for key in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
        )
    ]
    assert "envFrom" not in container  # the other keys of the Secret stay out of the router
    assert set(_volumes(router)) == {"tmp", "admin-token"}
    _assert_restricted(_pods(router))

    config = _config_of(spec)
    assert config.capture is not None
    data = json.loads(build_router_configmap(OWNER, config)["data"]["config.json"])
    assert data["capture"] == {
        "percent": 5.0,
        "uri": "s3://captures/iris/",
        "redact": ["email", "ssn"],
        "compression": "gzip",
        "batchRecords": 1000,
        "batchBytes": 8388608,
        "flushInterval": "10s",
        "bufferRecords": 10000,
        "bufferBytes": 33554432,
        "maxRecordBytes": 1048576,
    }
    assert "capture-store" not in json.dumps(data)


def test_s3_capture_without_credentials_adds_no_environment() -> None:
    router = build_router_deployment(OWNER, _with_capture({"uri": "s3://public-captures"}))
    (container,) = _pods(router)["containers"]
    assert "env" not in container


@pytest.mark.parametrize(
    ("uri", "directory"),
    [
        ("pvc://capture-claim/iris/prod", "file:///mnt/capture/iris/prod"),
        ("pvc://capture-claim/iris/", "file:///mnt/capture/iris"),
        ("pvc://capture-claim", "file:///mnt/capture"),
    ],
)
def test_pvc_capture_mounts_the_claim_read_write_and_the_configuration_points_under_it(
    uri: str, directory: str
) -> None:
    spec = _with_capture({"uri": uri, "credentials": {"secretName": "ignored-for-a-claim"}})
    router = build_router_deployment(OWNER, spec)
    pod = _pods(router)
    (container,) = pod["containers"]

    assert _volumes(router)["capture"] == {
        "name": "capture",
        "persistentVolumeClaim": {"claimName": "capture-claim"},
    }
    assert _mounts(router)["capture"] == {"name": "capture", "mountPath": "/mnt/capture"}  # read-write
    assert "env" not in container
    # files on the claim belong to the router's group, so the non-root router can write there
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    _assert_restricted(pod)
    config = _config_of(spec)
    assert config.capture is not None
    assert config.capture.uri == directory
    assert config.capture.uri.startswith(f"file://{_mounts(router)['capture']['mountPath']}")
