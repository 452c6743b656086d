"""The Deployment controller and who may reach its routers: the admin token Secret it applies (derived from
the operator's key, so the same at every reconcile and after a restart, and never read back), the
NetworkPolicy, the feedback token mount, the capture destination, and what happens when the API server
refuses them. The API server is replaced by recorders: what the controller sends is what the tests look
at."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from modelfleet.builders import RouterAccess, fingerprint, router_admin_token
from modelfleet.builders.manifests import Owner
from modelfleet.controllers import events, kube, main
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.deployment import Applier, DeploymentController, router_access_from_environment
from modelfleet.controllers.monitor import MonitorController
from modelfleet.providers import Target
from modelfleet.providers.router import RouterMetrics

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = bytes(range(100, 132))
OWNER = Owner(name="iris", namespace="ml", uid="u-1")
Obj = dict[str, Any]


def deployment(**spec: Any) -> Obj:
    return {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {"model": "iris", "version": "iris-v1", **spec},
        "status": {},
    }


READY_V1 = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "iris-iris-v1",
        "namespace": "ml",
        "generation": 1,
        "labels": {"app.kubernetes.io/component": "model"},
        "annotations": {"modelfleet.io/version": "iris-v1"},
    },
    "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
}
"""The version's apps/v1 Deployment with its one pod ready, as the watch cache shows it."""


def cache(body: Obj, ready: bool = False) -> Cache:
    indexes: dict[str, Any] = {index: {} for index in INDEXES}
    indexes["cached_deployments"] = {("ml", "iris"): [body]}
    indexes["cached_owned_deployments"] = {("ml", "iris"): [READY_V1] if ready else []}
    indexes["cached_models"] = {
        ("ml", "iris"): [
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "iris"},
                "spec": {},
            }
        ]
    }
    indexes["cached_model_versions"] = {
        ("ml", "iris-v1"): [
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": "iris-v1", "namespace": "ml"},
                "spec": {"model": "iris", "version": "1", "image": "localhost/iris-server:1"},
            }
        ]
    }
    return Cache(indexes)


class Loops:
    def __init__(self) -> None:
        self.woken: list[tuple[str, str]] = []

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key == ("ml", "iris")

    def keys(self) -> list[tuple[str, str]]:
        return [("ml", "iris")]

    def wake(self, namespace: str, name: str) -> None:
        self.woken.append((namespace, name))

    def stop(self, namespace: str, name: str) -> None:
        pass

    async def stop_all(self) -> None:
        pass


class ApiServer:
    """Records the controller's writes; `refuse` names kinds whose applies it refuses (403)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[Obj] = []
        self.deleted: list[tuple[str, str, str, str]] = []
        self.refuse: set[str] = set()
        self.statuses: list[Obj] = []
        self.version = 10
        monkeypatch.setattr(kube, "replace_status", lambda *args: self.statuses.append(args[3]) or {})
        monkeypatch.setattr(kube, "remove_annotations", lambda *args: None)
        monkeypatch.setattr(kube, "delete", self.delete)
        monkeypatch.setattr(events, "post", lambda *args: None)

    def apply(self, manifest: Obj) -> Obj:
        if manifest["kind"] in self.refuse:
            raise kube.ApiError(403, f"{manifest['kind'].lower()}s is forbidden: cannot patch")
        self.applied.append(manifest)
        self.version += 1
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": str(self.version)}}

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append((api_version, kind, namespace, name))
        return True

    def kinds(self) -> list[str]:
        return [m["kind"] for m in self.applied]

    def one(self, kind: str) -> Obj:
        (found,) = [
            m for m in self.applied if m["kind"] == kind and m["metadata"]["name"].startswith("iris-router")
        ]
        return found


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    return ApiServer(monkeypatch)


ACCESS = RouterAccess(operator_namespace="modelfleet-system")


def controller(
    api: ApiServer, body: Obj | None = None, key: bytes | None = KEY, access: RouterAccess = ACCESS
) -> DeploymentController:
    subject = DeploymentController(
        cache(body or deployment()),
        router_image="localhost/modelfleet:test",
        clock=lambda: NOW,
        loops=Loops(),
        admin_key=lambda: key,
        access=access,
    )
    subject.applier = Applier(send=api.apply)
    return subject


def token_of(secret: Obj) -> str:
    return base64.b64decode(secret["data"]["token"]).decode()


def again(subject: DeploymentController, api: ApiServer, body: Obj | None = None) -> None:
    """Reconcile once more, as after the status the last reconcile wrote reached the watch cache, with
    the version's pod ready: the Deployment serves iris-v1 and its router gets its configuration."""
    seen = copy.deepcopy(body or deployment())
    seen["status"] = api.statuses[-1] if api.statuses else {}
    seen["metadata"]["resourceVersion"] = str(len(api.statuses) + 100)
    subject.cache = cache(seen, ready=True)
    subject.reconcile_sync("ml", "iris")


def serving(api: ApiServer, body: Obj | None = None, **options: Any) -> DeploymentController:
    """A controller whose Deployment serves iris-v1 (two reconciles: its pods, then its traffic)."""
    subject = controller(api, body, **options)
    subject.reconcile_sync("ml", "iris")
    again(subject, api, body)
    return subject


def test_a_reconcile_applies_the_admin_secret_before_the_router_that_mounts_it(api: ApiServer) -> None:
    controller(api).reconcile_sync("ml", "iris")

    secret = api.one("Secret")
    assert secret["metadata"]["name"] == "iris-router-admin"
    assert token_of(secret) == router_admin_token(KEY, OWNER)
    kinds = api.kinds()
    assert kinds.index("Secret") < kinds.index("Deployment")
    router = next(
        m for m in api.applied if m["kind"] == "Deployment" and m["metadata"]["name"] == "iris-router"
    )
    assert router["metadata"]["annotations"] == {"modelfleet.io/admin-secret-sha256": fingerprint(secret)}
    volumes = {v["name"]: v for v in router["spec"]["template"]["spec"]["volumes"]}
    assert volumes["admin-token"]["secret"]["secretName"] == "iris-router-admin"
    assert api.one("NetworkPolicy")["spec"]["ingress"][1]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "modelfleet-system"}
    }


def test_the_token_stays_the_same_across_reconciles_and_is_sent_once(api: ApiServer) -> None:
    subject = controller(api)
    subject.reconcile_sync("ml", "iris")
    first = token_of(api.one("Secret"))
    api.applied.clear()

    for _ in range(3):
        again(subject, api)

    assert "ConfigMap" in api.kinds()  # the reconciles did run: the router got its traffic split
    assert "Secret" not in api.kinds()  # nothing new to send: the token was not made again
    assert first == router_admin_token(KEY, OWNER)


def test_a_restarted_operator_with_the_same_key_sends_neither_the_secret_nor_the_router_again(
    api: ApiServer,
) -> None:
    serving(api)
    applied = copy.deepcopy(api.applied)
    api.applied.clear()

    restarted = controller(api)
    # the watches' first listing: every owned object the operator watches, as the API server keeps it
    for manifest in applied:
        if manifest["kind"] == "Secret":
            continue  # Secrets are not watched: the operator never reads them
        live = copy.deepcopy(manifest)
        live["metadata"] |= {"resourceVersion": "41", "uid": "x", "generation": 1}
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        assert not restarted.applier.changed_by_others(None, "ml", api_version, kind, live)
    again(restarted, api)

    assert api.applied == []


def test_a_new_key_changes_every_token_in_place_without_restarting_the_router_pods(api: ApiServer) -> None:
    controller(api).reconcile_sync("ml", "iris")
    old_router = api.one("Deployment")
    old = token_of(api.one("Secret"))
    api.applied.clear()

    rotated = controller(api, key=bytes(range(32)))
    live = copy.deepcopy(old_router) | {"status": {}}
    rotated.applier.changed_by_others(None, "ml", "apps/v1", "Deployment", live)
    rotated.reconcile_sync("ml", "iris")

    new = token_of(api.one("Secret"))
    assert new != old
    router = api.one("Deployment")
    assert router["metadata"]["annotations"] != old_router["metadata"]["annotations"]
    assert router["spec"]["template"] == old_router["spec"]["template"]


def test_without_the_key_no_secret_is_made_and_the_routers_refuse_their_admin_paths(api: ApiServer) -> None:
    serving(api, key=None)

    assert "Secret" not in api.kinds()
    router = api.one("Deployment")
    assert "annotations" not in router["metadata"]
    (container,) = router["spec"]["template"]["spec"]["containers"]
    assert "--admin-token-file" in container["args"]  # still asked for: nobody reads user data meanwhile
    assert "ConfigMap" in api.kinds()


def test_refused_optional_objects_are_logged_once_and_the_rollout_goes_on(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api.refuse = {"Secret", "NetworkPolicy"}  # RBAC not updated with the chart

    with caplog.at_level(logging.WARNING, logger="modelfleet.deployment"):
        subject = serving(api)
        again(subject, api)

    assert {"Deployment", "Service", "ConfigMap"} <= set(api.kinds())
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "ml/iris: router Secret not applied: HTTP 403: secrets is forbidden: cannot patch",
        "ml/iris: router NetworkPolicy not applied: HTTP 403: networkpolicys is forbidden: cannot patch",
    ]


def test_a_router_refusing_the_token_gets_its_secret_applied_again_at_once(api: ApiServer) -> None:
    subject = serving(api)
    api.applied.clear()

    subject.restore_admin_secret("ml", "iris")  # the Secret was deleted by hand: the router answered 503
    assert subject.loops.woken == [("ml", "iris")]  # type: ignore[attr-defined]
    again(subject, api)

    assert api.kinds() == ["Secret"]
    assert token_of(api.one("Secret")) == router_admin_token(KEY, OWNER)  # the same token, restored


def test_a_deleted_deployment_leaves_nothing_of_its_admin_secret_behind(api: ApiServer) -> None:
    subject = serving(api)
    assert ("ml", "v1/Secret", "iris-router-admin") in subject.applier.applied

    subject.on_deployment("DELETED", deployment(), "ml", "iris")

    assert ("ml", "v1/Secret", "iris-router-admin") not in subject.applier.applied


def test_the_token_the_router_provider_sends_is_the_one_in_the_secret(api: ApiServer) -> None:
    controller(api).reconcile_sync("ml", "iris")
    monitors = MonitorController.default(cache(deployment()), lambda *_: None, admin_key=lambda: KEY)
    provider = monitors.providers[0]
    assert isinstance(provider, RouterMetrics)
    assert provider.admin_token is not None
    target = Target(("ml", "iris-quality"), "ml", "iris", "iris-v1", uid="u-1")

    sent = asyncio.run(provider.admin_token(target))

    assert sent == token_of(api.one("Secret"))
    assert asyncio.run(provider.admin_token(Target(("ml", "q"), "ml", "iris", "iris-v1"))) is None  # no uid


def test_without_a_network_policy_none_is_applied_and_one_left_by_an_earlier_run_is_removed(
    api: ApiServer,
) -> None:
    subject = controller(api, access=RouterAccess(operator_namespace="ops", network_policy=False))
    earlier = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "iris-router", "namespace": "ml", "resourceVersion": "3"},
    }
    subject.applier.changed_by_others(None, "ml", "networking.k8s.io/v1", "NetworkPolicy", earlier)

    subject.reconcile_sync("ml", "iris")
    again(subject, api)

    assert "NetworkPolicy" not in api.kinds()
    assert api.deleted == [("networking.k8s.io/v1", "NetworkPolicy", "ml", "iris-router")]  # once


def test_with_spec_feedback_the_router_config_names_the_mounted_token_file(api: ApiServer) -> None:
    body = deployment(feedback={"tokenSecret": {"name": "iris-feedback", "key": "token"}})
    serving(api, body)

    config = json.loads(api.one("ConfigMap")["data"]["config.json"])
    assert config["feedback"]["tokenFile"] == "/etc/modelfleet/feedback/token"
    volumes = {v["name"]: v for v in api.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["feedback-token"]["secret"] == {
        "secretName": "iris-feedback",
        "items": [{"key": "token", "path": "token"}],
        "optional": True,
    }


def test_with_spec_capture_the_router_config_carries_it_and_the_router_pods_get_the_claim(
    api: ApiServer,
) -> None:
    """Given spec.capture to pvc://captures/iris, when the Deployment serves, then the router configuration
    captures 5% into the claim's directory with email redacted and the router pods mount the claim; when
    only the percent changes, the ConfigMap changes and the router's Deployment is not sent again (its
    pods keep running)."""
    capture = {"percent": 5, "destination": {"uri": "pvc://captures/iris"}, "redact": ["email"]}
    body = deployment(capture=capture)
    subject = serving(api, body)

    config = json.loads(api.one("ConfigMap")["data"]["config.json"])
    assert (config["capture"]["percent"], config["capture"]["uri"], config["capture"]["redact"]) == (
        5,
        "file:///mnt/capture/iris",
        ["email"],
    )
    pod = api.one("Deployment")["spec"]["template"]["spec"]
    assert {"name": "capture", "persistentVolumeClaim": {"claimName": "captures"}} in pod["volumes"]

    sent = len([m for m in api.applied if m["kind"] == "Deployment"])
    again(subject, api, deployment(capture={**capture, "percent": 50}))
    configs = [m for m in api.applied if m["kind"] == "ConfigMap"]
    assert json.loads(configs[-1]["data"]["config.json"])["capture"]["percent"] == 50
    assert len([m for m in api.applied if m["kind"] == "Deployment"]) == sent


def test_with_s3_capture_the_router_pods_get_the_credentials_as_environment(api: ApiServer) -> None:
    body = deployment(
        capture={
            "percent": 1,
            "destination": {"uri": "s3://captures/", "credentials": {"secretName": "store"}},
        }
    )
    serving(api, body)

    (container,) = api.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in container["env"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    }
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]} == {"store"}
    assert "Secret" not in {m["kind"] for m in api.applied if m["metadata"]["name"] == "store"}
    assert json.loads(api.one("ConfigMap")["data"]["config.json"])["capture"]["uri"] == "s3://captures/"


# --- the operator's settings --------------------------------------------------------------------------


def test_unset_the_routers_admin_port_is_open_to_prometheus_and_the_operator_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MODELFLEET_ROUTER_NETWORK_POLICY", raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "modelfleet-system")

    access = router_access_from_environment()

    assert access == RouterAccess(operator_namespace="modelfleet-system")
    assert access.admin_from == (
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
    )
    assert access.network_policy is True


def test_the_chart_value_sets_who_may_reach_the_routers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    scraper = {"namespaceSelector": {"matchLabels": {"team": "observability"}}}
    monkeypatch.setenv(
        "MODELFLEET_ROUTER_NETWORK_POLICY",
        json.dumps(
            {"enabled": True, "adminFrom": [scraper], "trafficFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}
        ),
    )

    access = router_access_from_environment()

    assert access == RouterAccess(
        operator_namespace="ops",
        admin_from=(scraper,),
        traffic_from=({"ipBlock": {"cidr": "10.0.0.0/8"}},),
    )
    monkeypatch.setenv("MODELFLEET_ROUTER_NETWORK_POLICY", '{"enabled": false}')
    assert router_access_from_environment().network_policy is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "is not JSON"),
        ("[]", "must be a JSON object"),
        ('{"enable": true}', "has enable: it takes enabled, adminFrom, trafficFrom"),
        ('{"enabled": "no"}', "enabled must be true or false"),
        ('{"adminFrom": {"podSelector": {}}}', "adminFrom must be a list of NetworkPolicy peers"),
    ],
)
def test_a_malformed_value_stops_the_operator_at_start_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("MODELFLEET_ROUTER_NETWORK_POLICY", value)
    with pytest.raises(ValueError, match=message):
        router_access_from_environment()


def test_network_policies_are_watched_like_the_other_owned_kinds_so_a_hand_deletion_is_repaired() -> None:
    main.load_handlers()
    watched = {h.selector.any_name for h in kopf.get_default_registry()._watching.get_all_handlers()}
    assert "networkpolicies" in watched
    assert ("networking.k8s.io", "v1", "networkpolicies") in main.OWNED_KINDS
    assert kube.path("networking.k8s.io/v1", "NetworkPolicy", "ml", "iris-router") == (
        "/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/iris-router"
    )
