"""The Helm chart as `helm template` renders it: RBAC, scope, pod security, optional monitoring, values.

These need the helm binary (`cluster/build.sh helm`) but no cluster. The API server's own verdict on the
rendered objects is in tests/integration/test_helm.py and test_pod_security.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import REPO, VERSIONS
from support.tools import helm_binary, promtool_binary

CHART = REPO / "charts" / "modelfleet"
HELM = helm_binary()
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm: run `cluster/build.sh helm`")

Doc = dict[str, Any]


def helm_template(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run(
        [
            HELM,
            "template",
            "mf",
            str(CHART),
            "--namespace",
            "modelfleet-system",
            "--kube-version",
            VERSIONS["KUBERNETES_VERSION"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def render(*sets: str) -> list[Doc]:
    args = [arg for s in sets for arg in ("--set", s)]
    return [d for d in yaml.safe_load_all(helm_template(*args).stdout) if d]


def refused(*sets: str) -> str:
    args = [arg for s in sets for arg in ("--set", s)]
    result = helm_template(*args, check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    return result.stderr


def kinds(docs: list[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def operator_container(docs: list[Doc]) -> Doc:
    container: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


# The operator's rules in each namespace it watches: what the controllers and kopf do, nothing more.
EXPECTED_NAMESPACED_RULES = {
    ("modelfleet.io", "models"): {"get", "list", "watch", "patch"},
    # ModelVersions are also made: the MLflow sync mirrors a registered model's versions
    ("modelfleet.io", "modelversions"): {"get", "list", "watch", "create", "patch"},
    ("modelfleet.io", "deployments"): {"get", "list", "watch", "patch"},
    ("modelfleet.io", "monitors"): {"get", "list", "watch", "patch"},
    ("modelfleet.io", "runtimes"): {"get", "list", "watch", "patch"},
    ("modelfleet.io", "models/status"): {"patch"},
    ("modelfleet.io", "modelversions/status"): {"patch"},
    ("modelfleet.io", "deployments/status"): {"patch"},
    ("modelfleet.io", "monitors/status"): {"patch"},
    ("modelfleet.io", "runtimes/status"): {"patch"},
    ("modelfleet.io", "deployments/finalizers"): {"update"},
    ("modelfleet.io", "modelversions/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
    ("", "serviceaccounts"): {"list", "watch", "create", "patch"},
    ("rbac.authorization.k8s.io", "roles"): {"list", "watch", "create", "patch"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"list", "watch", "create", "patch"},
    # router pods are read; artifact check pods are also made and removed (never Secrets: a check
    # gets the credentials in its own pod)
    ("", "pods"): {"get", "list", "watch", "create", "delete"},
    ("", "events"): {"create", "patch"},
    # each Deployment's router admin token, written only: the operator derives it, it never reads Secrets
    ("", "secrets"): {"create", "patch"},
    # the routers' NetworkPolicy, watched so that a hand-deleted one is restored
    ("networking.k8s.io", "networkpolicies"): {"list", "watch", "create", "patch", "delete"},
}
EXPECTED_DISCOVERY_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("modelfleet.io", "clusterruntimes"): {"get", "list", "watch", "patch"},
    ("modelfleet.io", "clusterruntimes/status"): {"patch"},
}


def rule_table(role: Doc) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


def all_rules(docs: list[Doc]) -> list[Doc]:
    return [rule for d in docs if d["kind"] in ("Role", "ClusterRole") for rule in d["rules"]]


def test_default_render_has_the_operator_and_no_optional_monitoring() -> None:
    docs = render()
    assert kinds(docs) == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            # the key of the routers' admin tokens, in the release namespace
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "Lease",
            # the default ClusterRuntimes of the MLServer-based runtime image
            "ClusterRuntime",
            "ClusterRuntime",
            "ClusterRuntime",
            "ClusterRuntime",
        ]
    )


def test_operator_command_watches_all_namespaces_with_leader_election() -> None:
    container = operator_container(render())
    assert container["image"] == "localhost/modelfleet:dev"
    assert container["command"] == ["modelfleet"]
    assert container["args"][:5] == [
        "operator",
        "--all-namespaces",
        "--leader-elect",
        "--leader-election-namespace=modelfleet-system",
        "--leader-election-lease-provided",  # the release makes the Lease; the pod may start first
    ]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELFLEET_METRICS_PORT"] == "8000"
    assert env["MODELFLEET_ROUTER_IMAGE"] == "localhost/modelfleet:dev"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["limits"]["memory"]


def test_image_and_router_image_are_configurable() -> None:
    container = operator_container(
        render(
            "image.repository=registry.example.com/ml/modelfleet",
            "image.tag=0.1.0",
            "image.pullPolicy=Always",
            "routerImage=registry.example.com/ml/router:7",
        )
    )
    assert container["image"] == "registry.example.com/ml/modelfleet:0.1.0"
    assert container["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELFLEET_ROUTER_IMAGE"] == "registry.example.com/ml/router:7"


def test_cluster_wide_rbac_is_exactly_what_the_operator_needs() -> None:
    docs = render()
    assert rule_table(one(docs, "ClusterRole", "mf-modelfleet")) == EXPECTED_NAMESPACED_RULES
    assert rule_table(one(docs, "ClusterRole", "mf-modelfleet-discovery")) == EXPECTED_DISCOVERY_RULES
    binding = one(docs, "ClusterRoleBinding", "mf-modelfleet")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mf-modelfleet", "namespace": "modelfleet-system"}
    ]


@pytest.mark.parametrize(
    "sets", [("mlflow.readSecrets=true",), ("mlflow.readSecrets=true", "watchNamespaces={ml,team-b}")]
)
def test_mlflow_read_secrets_adds_get_on_secrets_and_nothing_else(sets: tuple[str, ...]) -> None:
    reads = [
        r
        for r in all_rules(render(*sets))
        if "secrets" in r["resources"] and "get" in r["verbs"] and "resourceNames" not in r
    ]
    namespaces = 2 if any("watchNamespaces" in s for s in sets) else 1
    assert len(reads) == namespaces
    for rule in reads:
        assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}


@pytest.mark.parametrize(
    "sets",
    [
        ("referenceProfiles.readSecrets=true",),
        ("referenceProfiles.readSecrets=true", "watchNamespaces={ml,team-b}"),
        ("referenceProfiles.readSecrets=true", "mlflow.readSecrets=true"),
    ],
)
def test_reference_profiles_read_secrets_adds_get_on_secrets_once(sets: tuple[str, ...]) -> None:
    reads = [
        r
        for r in all_rules(render(*sets))
        if "secrets" in r["resources"] and "get" in r["verbs"] and "resourceNames" not in r
    ]
    namespaces = 2 if any("watchNamespaces" in s for s in sets) else 1
    assert reads == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}] * namespaces


@pytest.mark.parametrize(
    "sets", [(), ("watchNamespaces={ml,team-b}",)], ids=["all-namespaces", "watch-namespaces"]
)
def test_rbac_has_no_wildcards_and_reads_no_secret_but_the_operators_own_key(sets: tuple[str, ...]) -> None:
    rules = all_rules(render(*sets))
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        if "secrets" in rule["resources"]:
            reads = {"get", "list", "watch"} & set(rule["verbs"])
            # the one Secret the operator reads is its own key, by name; the others it only writes
            assert not reads or (
                reads == {"get"} and rule["resourceNames"] == ["modelfleet-router-admin-key"]
            ), rule


@pytest.mark.parametrize(
    "sets", [(), ("watchNamespaces={ml,team-b}",)], ids=["all-namespaces", "watch-namespaces"]
)
def test_the_router_admin_key_is_made_and_read_in_the_release_namespace_only(sets: tuple[str, ...]) -> None:
    docs = render(*sets)
    role = one(docs, "Role", "mf-modelfleet-router-admin-key")
    assert role["metadata"]["namespace"] == "modelfleet-system"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["modelfleet-router-admin-key"],
            "verbs": ["get"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    binding = one(docs, "RoleBinding", "mf-modelfleet-router-admin-key")
    assert binding["metadata"]["namespace"] == "modelfleet-system"
    assert binding["roleRef"]["name"] == "mf-modelfleet-router-admin-key"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mf-modelfleet", "namespace": "modelfleet-system"}
    ]
    # the operator looks for its key in its own namespace: the pod's, from the downward API
    env = {e["name"]: e for e in operator_container(docs)["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_the_routers_network_policy_reaches_the_operator_as_its_values() -> None:
    default = {e["name"]: e.get("value") for e in operator_container(render())["env"]}
    assert json.loads(default["MODELFLEET_ROUTER_NETWORK_POLICY"]) == {
        "enabled": True,
        "adminFrom": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "trafficFrom": [],
    }
    custom = {
        e["name"]: e.get("value")
        for e in operator_container(
            render(
                "routerNetworkPolicy.adminFrom[0].podSelector.matchLabels.app=vmagent",
                "routerNetworkPolicy.trafficFrom[0].ipBlock.cidr=10.0.0.0/8",
            )
        )["env"]
    }
    assert json.loads(custom["MODELFLEET_ROUTER_NETWORK_POLICY"]) == {
        "enabled": True,
        "adminFrom": [{"podSelector": {"matchLabels": {"app": "vmagent"}}}],
        "trafficFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
    }
    off = {
        e["name"]: e.get("value")
        for e in operator_container(render("routerNetworkPolicy.enabled=false"))["env"]
    }
    assert json.loads(off["MODELFLEET_ROUTER_NETWORK_POLICY"])["enabled"] is False


def test_leader_election_role_is_limited_to_the_one_lease() -> None:
    docs = render()
    role = one(docs, "Role", "mf-modelfleet-leader-election")
    assert role["metadata"]["namespace"] == "modelfleet-system"
    assert role["rules"] == [  # no create: the release makes the Lease
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["modelfleet-operator"],
            "verbs": ["get", "update"],
        },
    ]
    lease = one(docs, "Lease")
    assert (lease["metadata"]["name"], lease["metadata"]["namespace"]) == (
        "modelfleet-operator",
        "modelfleet-system",
    )


def test_without_leader_election_there_is_no_lease_and_pods_never_overlap() -> None:
    docs = render("leaderElection.enabled=false")
    assert "Lease" not in kinds(docs)
    assert not [d for d in docs if d["metadata"]["name"].endswith("leader-election")]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in operator_container(docs)["args"]


def test_watch_namespaces_render_namespace_flags_and_a_role_per_namespace() -> None:
    docs = render("watchNamespaces={ml,team-b}")
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=ml", "--namespace=team-b"]
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "mf-modelfleet"
    }
    assert sorted(roles) == ["ml", "team-b"]
    for role in roles.values():
        assert rule_table(role) == EXPECTED_NAMESPACED_RULES
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "mf-modelfleet"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml", "team-b"]
    # only discovery stays cluster-wide
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert [d["metadata"]["name"] for d in cluster_roles] == ["mf-modelfleet-discovery"]


def test_every_rendered_pod_is_restricted() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
    assert all("hostPath" not in v for v in pod["volumes"])


@pytest.mark.parametrize(
    ("setting", "kind"),
    [
        ("metrics.serviceMonitor.enabled=true", "ServiceMonitor"),
        ("metrics.podMonitor.enabled=true", "PodMonitor"),
        ("prometheusRule.enabled=true", "PrometheusRule"),
    ],
)
def test_prometheus_operator_objects_only_when_enabled(setting: str, kind: str) -> None:
    assert kind not in kinds(render())
    docs = render(setting)
    assert kinds(docs).count(kind) == 1


def test_service_monitor_selects_the_metrics_service() -> None:
    docs = render("metrics.serviceMonitor.enabled=true")
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"


def test_prometheus_rules_query_only_exported_metrics() -> None:
    rule = one(render("prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true"), "PrometheusRule")
    expressions = " ".join(r["expr"] for r in rule["spec"]["groups"][0]["rules"])
    for metric in (
        "modelfleet_rollouts_total",
        "modelfleet_fallbacks_total",
        "modelfleet_requests_total",
        "modelfleet_circuit_open",
    ):
        assert metric in expressions


def test_metrics_off_removes_port_service_and_variable() -> None:
    docs = render("metrics.enabled=false")
    assert "Service" not in kinds(docs)
    container = operator_container(docs)
    assert "MODELFLEET_METRICS_PORT" not in {e["name"] for e in container["env"]}
    assert [p["name"] for p in container["ports"]] == ["health"]


def test_the_node_cache_and_its_limit_reach_the_operator_only_when_enabled() -> None:
    def env(*sets: str) -> dict[str, str]:
        return {e["name"]: e.get("value", "") for e in operator_container(render(*sets))["env"]}

    assert "MODELFLEET_ARTIFACT_NODE_CACHE" not in env()
    assert "MODELFLEET_ARTIFACT_NODE_CACHE_MAX_BYTES" not in env()
    on = env("artifacts.nodeCache.enabled=true")
    assert on["MODELFLEET_ARTIFACT_NODE_CACHE"] == "/var/cache/modelfleet/artifacts"
    assert on["MODELFLEET_ARTIFACT_NODE_CACHE_MAX_BYTES"] == str(50 << 30)
    unbounded = env("artifacts.nodeCache.enabled=true", "artifacts.nodeCache.maxBytes=0")
    assert "MODELFLEET_ARTIFACT_NODE_CACHE_MAX_BYTES" not in unbounded


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("artifacts.nodeCache.maxBytes=-1",), "minimum"),
        (("replicas=0",), "minimum: got 0, want 1"),
        (("image.pullPolicy=Sometimes",), "pullPolicy"),
        (("bogus=1",), "additional properties 'bogus' not allowed"),
        (("watchNamespaces={Not_A_Namespace}",), "watchNamespaces"),
        (("metrics.port=70000",), "maximum"),
        (("replicas=2", "leaderElection.enabled=false"), "replicas > 1 needs leaderElection.enabled=true"),
        (("watchNamespaces={ml,ml}",), "watchNamespaces: ml is listed twice"),
        (
            ("routerNetworkPolicy.adminFrom[0].matchLabels.app=prometheus",),  # a selector, not a peer
            "at '/routerNetworkPolicy/adminFrom/0': additional properties 'matchLabels' not allowed",
        ),
        (("routerNetworkPolicy.enabled=maybe",), "routerNetworkPolicy/enabled"),
        (
            ("metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"),
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(sets: tuple[str, ...], message: str) -> None:
    assert message in refused(*sets)


@pytest.mark.parametrize(
    "sets",
    [(), ("watchNamespaces={ml}", "prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true")],
    ids=["defaults", "everything-on"],
)
def test_helm_lint_is_clean(sets: tuple[str, ...]) -> None:
    assert HELM is not None
    args = [arg for s in sets for arg in ("--set", s)]
    result = subprocess.run(
        [HELM, "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.skipif(promtool_binary() is None, reason="no promtool (Debian package prometheus)")
def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = promtool_binary()
    assert promtool is not None
    rule = one(render("prometheusRule.enabled=true", "metrics.serviceMonitor.enabled=true"), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_mlflow_webhooks_get_a_port_and_a_service_only_when_enabled() -> None:
    off = render()
    assert not [d for d in off if d["metadata"]["name"].endswith("-webhooks")]
    assert "MODELFLEET_WEBHOOK_PORT" not in {e["name"] for e in operator_container(off)["env"]}

    on = render("mlflow.webhooks.enabled=true", "mlflow.webhooks.port=9555")
    service = one(on, "Service", "mf-modelfleet-webhooks")
    assert service["spec"]["ports"] == [
        {"name": "webhooks", "port": 9555, "targetPort": "webhooks", "protocol": "TCP"}
    ]
    operator = operator_container(on)
    assert {"name": "MODELFLEET_WEBHOOK_PORT", "value": "9555"} in operator["env"]
    assert {"name": "webhooks", "containerPort": 9555, "protocol": "TCP"} in operator["ports"]
    assert service["spec"]["selector"] == one(on, "Deployment")["spec"]["selector"]["matchLabels"]
