"""The Helm chart against the real cluster: server-side dry run, install, upgrade, uninstall, and a model
served through the operator the chart installed.

The CRDs are cluster-scoped and shared with every other test: they come from the `crds` fixture and the
chart is installed with `--skip-crds` (Helm never deletes CRDs either). The installed operator watches
only its own test namespace (`watchNamespaces`), so it never competes with other tests' operators. That
namespace enforces Pod Security `restricted`, so the API server itself refuses any pod of the chart or
of the operator that breaks it.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from support.cluster import REPO, VERSIONS, Cluster
from support.tools import helm_binary

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from helpers import record_result

CHART = REPO / "charts" / "modelfleet"
HELM = helm_binary()
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm: run `cluster/build.sh helm`")
# enforce refuses pods; warn makes the API server warn about workloads (Deployments) whose pods would be
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}
INFER_BODY = {
    "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [6.1, 2.8, 4.7, 1.2]}]
}


def helm(cluster: Cluster, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    result = subprocess.run(
        [HELM, *args], capture_output=True, text=True, env=cluster.env, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture
def restricted_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.new_namespace(prefix="mf-helm", labels=RESTRICTED)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


class Release:
    """One installed release of the chart, watching only its own namespace; uninstalled at the end."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = f"rel-{namespace.rsplit('-', 1)[1]}"
        self.fullname = f"{self.name}-modelfleet"
        self.installed = False

    def install(self, *sets: str) -> str:
        out = helm(
            self.cluster,
            "install",
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            "--skip-crds",
            "--set",
            f"watchNamespaces={{{self.namespace}}}",
            *[arg for s in sets for arg in ("--set", s)],
            "--wait",
            "--timeout",
            "180s",
        ).stdout
        self.installed = True
        return out

    def upgrade(self, *sets: str) -> str:
        return helm(
            self.cluster,
            "upgrade",
            self.name,
            str(CHART),
            "--namespace",
            self.namespace,
            "--skip-crds",
            "--reuse-values",
            *[arg for s in sets for arg in ("--set", s)],
            "--wait",
            "--timeout",
            "180s",
        ).stdout

    def uninstall(self) -> None:
        helm(
            self.cluster, "uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "120s"
        )
        self.installed = False

    def operator_pods(self) -> list[dict[str, Any]]:
        pods = self.cluster.kubectl(
            "get",
            "pods",
            "-n",
            self.namespace,
            "-l",
            f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator",
            "-o",
            "json",
        ).stdout
        items: list[dict[str, Any]] = json.loads(pods)["items"]
        return items

    def lease_holder(self) -> str:
        lease = self.cluster.get("lease", "modelfleet-operator", self.namespace)
        return str(lease["spec"].get("holderIdentity") or "")

    def operator_log(self) -> str:
        return self.cluster.kubectl(
            "logs", "-n", self.namespace, f"deployment/{self.fullname}", "--tail=-1", check=False
        ).stdout


@pytest.fixture
def release(cluster: Cluster, crds: None, restricted_namespace: str) -> Iterator[Release]:
    installed = Release(cluster, restricted_namespace)
    try:
        yield installed
    finally:
        if installed.installed:
            subprocess.run(
                [HELM or "helm", "uninstall", installed.name, "-n", installed.namespace, "--wait"],
                env=cluster.env,
                capture_output=True,
                timeout=120,
                check=False,
            )


def render(namespace: str, *sets: str) -> str:
    assert HELM is not None
    # `helm template` cannot look up the ClusterRuntimes another release owns (an install skips them);
    # the dry run validates the namespaced objects of this release
    args = ["--set", "defaultRuntimes.enabled=false", *[arg for s in sets for arg in ("--set", s)]]
    return subprocess.run(
        [
            HELM,
            "template",
            f"rel-{namespace.rsplit('-', 1)[1]}",
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            VERSIONS["KUBERNETES_VERSION"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


# ---- the rendered chart, judged by the API server -------------------------------------------------------


@pytest.mark.parametrize(
    "scope", ["all-namespaces", "watch-namespaces", "no-leader-election"], ids=lambda s: str(s)
)
def test_rendered_chart_passes_server_side_dry_run(
    cluster: Cluster, restricted_namespace: str, scope: str
) -> None:
    sets = {
        "all-namespaces": (),
        "watch-namespaces": (f"watchNamespaces={{{restricted_namespace}}}",),
        "no-leader-election": ("leaderElection.enabled=false", "metrics.enabled=false"),
    }[scope]
    rendered = render(restricted_namespace, *sets)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", restricted_namespace, "-f", "-", input=rendered
    )
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(docs), result.stdout
    assert "Warning" not in result.stderr, result.stderr  # e.g. a PodSecurity "would violate"


# ---- install, upgrade, uninstall -------------------------------------------------------------------------


def test_install_upgrade_and_uninstall_leave_nothing_behind(cluster: Cluster, release: Release) -> None:
    # install two replicas: both Ready (the standby answers its probes), exactly one leads
    notes = release.install("replicas=2")
    assert f"The operator watches the namespaces {release.namespace}." in notes
    assert f"kubectl -n {release.namespace} rollout status deployment/{release.fullname}" in notes
    first = {p["metadata"]["name"] for p in release.operator_pods()}
    assert len(first) == 2
    holder = cluster.wait_for("an operator to lead", release.lease_holder, timeout=60)
    (leader,) = [name for name in first if holder.startswith(f"{name}.")]
    (standby,) = first - {leader}
    cluster.wait_for(
        "the standby to wait",
        lambda: "waiting for the lease" in cluster.kubectl("logs", "-n", release.namespace, standby).stdout,
        timeout=30,
    )

    # upgrade: new pods replace the old ones one by one; each leader releases the Lease on its way out
    release.upgrade("verbose=true")
    history = json.loads(helm(cluster, "history", release.name, "-n", release.namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    def new_leader() -> str | None:
        pods = {
            p["metadata"]["name"]
            for p in release.operator_pods()
            if not p["metadata"].get("deletionTimestamp")
        }
        current = release.lease_holder()
        leading = [name for name in pods - first if current.startswith(f"{name}.")]
        return current if len(pods) == 2 and not pods & first and leading else None

    cluster.wait_for("an upgraded pod to lead", new_leader, timeout=120)
    lease = cluster.get("lease", "modelfleet-operator", release.namespace)
    # the operator's writes keep Helm's ownership of the Lease, so uninstall removes it
    assert lease["metadata"]["annotations"]["meta.helm.sh/release-name"] == release.name
    assert lease["spec"]["leaseTransitions"] >= 1

    # uninstall: no operator object of the release is left
    release.uninstall()
    cluster.wait_for("the operator pods to go", lambda: not release.operator_pods(), timeout=90)
    selector = f"app.kubernetes.io/instance={release.name}"
    left = cluster.kubectl(
        "get",
        "deployments.apps,serviceaccounts,roles,rolebindings,services,leases",
        "-n",
        release.namespace,
        "-l",
        selector,
        "-o",
        "name",
    ).stdout.split()
    assert left == []
    assert cluster.get_or_none("lease", "modelfleet-operator", release.namespace) is None
    cluster_wide = cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")
    assert cluster_wide.stdout.split() == []
    # the CRDs stay: Helm never deletes them, and other tests use them
    assert cluster.get_or_none("crd", "deployments.modelfleet.io") is not None


# ---- a model served through the installed operator (last: it needs every controller) --------------------


def infer(address: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    connection = http.client.HTTPConnection(address, 80, timeout=10)
    try:
        connection.request(
            "POST",
            "/v2/models/iris/infer",
            body=json.dumps(INFER_BODY),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = json.loads(response.read() or b"{}")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def test_model_is_served_through_the_installed_operator(cluster: Cluster, release: Release) -> None:
    release.install()
    ns = release.namespace
    cluster.apply(
        [
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "iris"},
                "spec": {"task": "classification", "governance": {"allowedImages": ["localhost/"]}},
            },
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": "iris-v1"},
                "spec": {"model": "iris", "version": "1", "image": "localhost/iris-server:1"},
            },
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "Deployment",
                "metadata": {"name": "iris"},
                "spec": {"model": "iris", "version": "iris-v1"},
            },
        ],
        namespace=ns,
    )

    def ready() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("deployments.modelfleet.io", "iris", ns).get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return status if conditions.get("Ready") == "True" else None

    try:
        status = cluster.wait_for("the modelfleet Deployment to be Ready", ready, timeout=240, interval=2)
    except TimeoutError:
        current = cluster.get_or_none("deployments.modelfleet.io", "iris", ns)
        print("status:", json.dumps((current or {}).get("status"), indent=1))
        print("operator log:", release.operator_log()[-4000:])
        raise
    assert status["stableVersion"] == "iris-v1"
    assert status["endpoint"] == f"http://iris.{ns}.svc:80"

    address = cluster.get("service", "iris", ns)["spec"]["clusterIP"]

    def answered() -> tuple[int, dict[str, str], dict[str, Any]] | None:
        try:
            answer = infer(address)
        except OSError:
            return None
        return answer if answer[0] == 200 else None

    code, headers, body = cluster.wait_for("an inference through the router Service", answered, timeout=60)
    assert code == 200
    assert headers["x-modelfleet-served-by"] == "iris-v1"
    assert body["outputs"][0]["name"] == "label"
    assert len(body["outputs"][0]["data"]) == 1

    log = release.operator_log()
    assert "forbidden" not in log.lower(), "the operator was refused an API call: RBAC misses a verb"


def can_i(
    cluster: Cluster, account: str, verb: str, resource: str, namespace: str | None, name: str = ""
) -> bool:
    """The API server's own authorizer answers (SubjectAccessReview through kubectl auth can-i).
    `resource` may name a subresource, `pods/exec` (kubectl would read `TYPE/NAME` as an object);
    `name` asks about one object of that resource."""
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    kind, _, subresource = resource.partition("/")
    sub = [f"--subresource={subresource}"] if subresource else []
    target = f"{kind}/{name}" if name else kind
    result = cluster.kubectl("auth", "can-i", verb, target, *sub, f"--as={account}", *where, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i answered {answer!r}: {result.stderr}"
    return answer == "yes"


def test_the_installed_operator_reads_no_secret_and_may_only_make_and_remove_pods(
    cluster: Cluster, release: Release
) -> None:
    """Least privilege, as the API server enforces it: an artifact check that needs credentials runs as a
    pod in the version's namespace with the Secret mounted, so the operator never reads a Secret but its
    own router admin key (by name), nor changes or execs into a pod it did not make. It may create the
    routers' admin Secrets, whose tokens it derives from that key, never reading them back."""
    release.install()
    ns = release.namespace
    deployment = cluster.get("deployment", release.fullname, ns)
    account = f"system:serviceaccount:{ns}:{deployment['spec']['template']['spec']['serviceAccountName']}"
    denied = [
        (verb, resource, where)
        for where in (ns, "default", None)
        for verb in ("get", "list", "watch")
        for resource in ("secrets",)
    ] + [
        ("patch", "pods", ns),
        ("update", "pods", ns),
        ("create", "pods/exec", ns),
        ("get", "pods/log", ns),  # a check reports through its termination message, not its log
        ("create", "pods", "default"),  # a namespace it does not watch
        ("create", "secrets", "default"),
        ("get", "secrets", ns, "iris-credentials"),  # a Secret of a user, by name
    ]
    allowed = [
        ("create", "pods", ns),
        ("delete", "pods", ns),
        ("list", "pods", ns),
        ("patch", "modelversions.modelfleet.io/status", ns),
        ("patch", "deployments.apps", ns),
        ("create", "secrets", ns),  # the routers' admin Secrets
        ("get", "secrets", ns, "modelfleet-router-admin-key"),  # its own key, in its own namespace
    ]
    granted = [case for case in denied if can_i(cluster, account, *case)]
    assert granted == [], f"the operator's account may {granted}"
    refused = [case for case in allowed if not can_i(cluster, account, *case)]
    assert refused == [], f"the operator's account may not {refused}, which it needs"


@pytest.mark.local_cluster
def test_a_crashed_operator_container_decides_again_without_waiting_out_its_lease(
    cluster: Cluster, release: Release
) -> None:
    """Given the installed operator leading with one replica, when its process is SIGKILLed (the
    container crashes and the kubelet starts it again in the same pod), then the new container takes
    the Lease of its own pod at once and reconciles a spec change made right after the crash."""
    release.install()
    ns = release.namespace
    cluster.apply(
        [
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "iris"},
                "spec": {},
            },
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": "iris-v1"},
                "spec": {"model": "iris", "version": "1", "image": "localhost/iris-server:1"},
            },
            {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "Deployment",
                "metadata": {"name": "iris"},
                "spec": {"model": "iris", "version": "iris-v1"},
            },
        ],
        namespace=ns,
    )

    def observed(generation: int) -> bool:
        status = cluster.get("deployments.modelfleet.io", "iris", ns).get("status") or {}
        return int(status.get("observedGeneration") or 0) >= generation

    cluster.wait_for("the first reconcile", lambda: observed(1), timeout=120)
    (pod,) = release.operator_pods()
    holder = release.lease_holder()
    assert holder.startswith(f"{pod['metadata']['name']}.{pod['metadata']['uid']}_"), holder
    found = subprocess.run(
        ["pgrep", "-f", f"modelfleet operator --namespace={ns} "], capture_output=True, text=True, check=False
    )
    (pid,) = found.stdout.split()

    subprocess.run(["kill", "-KILL", pid], check=True)
    crashed = time.monotonic()
    cluster.kubectl(
        "patch",
        "deployments.modelfleet.io",
        "iris",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec": {"replicas": 2}}',
    )
    cluster.wait_for(
        "the change reconciled by the restarted container", lambda: observed(2), timeout=60, interval=0.1
    )
    seconds = time.monotonic() - crashed

    # The kubelet reports the restart in the pod's status on its own schedule, which may come after
    # the new container has already decided: wait for the report rather than race it.
    def restarts() -> int:
        (now,) = release.operator_pods()
        assert now["metadata"]["uid"] == pod["metadata"]["uid"]  # the same pod, a new container
        return int(((now.get("status") or {}).get("containerStatuses") or [{}])[0].get("restartCount") or 0)

    cluster.wait_for("the kubelet to report the container restart", lambda: restarts() >= 1, timeout=60)
    assert restarts() == 1
    new_holder = release.lease_holder()
    assert new_holder != holder
    assert new_holder.rsplit("_", 1)[0] == holder.rsplit("_", 1)[0]
    assert "an earlier container of this pod" in release.operator_log()
    record_result("operator_container_restart", {"secondsFromCrashToDecision": round(seconds, 2)})
