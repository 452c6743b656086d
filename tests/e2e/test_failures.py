"""Failures operators meet, under real traffic: manual abort and a quick retry, owned objects deleted or
edited by hand, a router pod killed mid-window or deleted mid-rollout, and the cluster's own components
restarted mid-rollout.

Each test records what clients saw (requests, errors, the longest gap between two good answers) in the
e2e results file. The component restarts need the project's local cluster (`cluster/restart.sh`); they
carry the `local_cluster` mark, which the full run deselects on any other cluster.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import helpers
import pytest
from helpers import Fleet, Load

from support.cluster import REPO

local_cluster = pytest.mark.local_cluster
STATIC_ANSWER = {
    "statusCode": 200,
    "contentType": "application/json",
    "body": '{"outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[1]}]}',
}
SLOW_STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "20s"}},
    {"setWeight": 50},
    {"pause": {"duration": "10s"}},
]


def clients_saw(load: Load, since: float, until: float | None = None) -> dict[str, Any]:
    """Requests sent in [since, until]: how many, their errors, and the longest gap between two good
    answers (seconds). A request sent earlier belongs to an earlier step even when its answer (or its
    error: a connect to an address that just went away fails after about 3 s) comes later."""
    end = until if until is not None else time.time()
    window = [r for r in load.snapshot() if since <= r.sent <= end]
    good = [r.time for r in window if 200 <= r.code < 300]
    gaps = [b - a for a, b in zip([since, *good], [*good, end], strict=True)]
    errors = [r for r in window if not 200 <= r.code < 300]
    return {
        "requests": len(window),
        "errors": len(errors),
        "errorKinds": sorted({r.describe()[:120] for r in errors}),
        # when the first errors were sent and answered, in seconds after `since`
        "errorTimes": [(round(r.sent - since, 2), round(r.time - since, 2)) for r in errors[:5]],
        "fallbacks": sum(1 for r in window if r.fallback),
        "longestGapSeconds": round(max(gaps, default=0.0), 2),
    }


def restart(component: str) -> float:
    """Restart one component of the local cluster (all state kept); the seconds it took."""
    started = time.time()
    result = subprocess.run(
        ["bash", str(REPO / "cluster" / "restart.sh"), component],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"cluster/restart.sh {component}: {result.stderr[-2000:]}"
    return time.time() - started


def promoted(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == version


def assert_steps_never_go_back(fleet: Fleet, canary: str, since: float) -> None:
    """Every status the watch saw since `since`: steps only forward, weights never ahead of their step."""
    seen = [(t, s) for t, s in fleet.timeline if t >= since]
    assert any(s.get("canaryVersion") == canary for _, s in seen), "the watch saw no status of the rollout"
    assert helpers.steps_never_go_back(seen, canary) == []
    assert helpers.weight_never_exceeds_its_step(seen, canary, SLOW_STEPS) == []


def serve_with_canary_ahead(fleet: Fleet, **options: Any) -> Load:
    return fleet.serve_v1(
        helpers.model_version("iris-v1", "1"),
        helpers.model_version("iris-v2", "2"),
        helpers.monitor(),
        monitor="iris-quality",
        **options,
    )


# --- manual control ----------------------------------------------------------------------------------


def test_abort_then_retry_within_seconds_then_promote_costs_clients_nothing(fleet: Fleet) -> None:
    load = serve_with_canary_ahead(fleet)
    started = time.time()
    fleet.set_version("iris-v2")
    fleet.wait_status("iris-v2 at 20%", lambda s: s.get("canaryWeight") == 20, 120)
    address = helpers.service_ip(fleet.cluster, fleet.namespace, "iris-iris-v2")

    fleet.patch("iris", {"metadata": {"annotations": {"modelfleet.io/abort": "true"}}})
    aborted = fleet.wait_status("aborted", lambda s: s.get("rolledBackVersion") == "iris-v2", 30)
    assert aborted["canaryWeight"] == 0
    time.sleep(3)  # within 10 s of the abort
    fleet.patch("iris", {"metadata": {"annotations": {"modelfleet.io/retry": "true"}}})
    fleet.wait_status("retrying", lambda s: s.get("canaryVersion") == "iris-v2", 30)
    # the version's address survived the abort: same Service, same cluster IP, nothing stale in DNS
    assert helpers.service_ip(fleet.cluster, fleet.namespace, "iris-iris-v2") == address

    fleet.patch("iris", {"metadata": {"annotations": {"modelfleet.io/promote": "true"}}})
    final = fleet.wait_status("iris-v2 promoted", promoted("iris-v2"), 120)
    promoted_at = time.time()
    time.sleep(12)  # the time DNS caches and the fallback chain are tested in
    load.stop()

    saw = clients_saw(load, fleet.serving_since)
    assert fleet.client_errors() == [], saw
    after = load.served_by(since=promoted_at + 2)
    assert set(after) == {"iris-v2"}, after
    assert final["history"][0]["result"] == "Promoted"
    helpers.record_result(
        "abort_retry_promote", {**saw, "secondsFromRolloutStartToPromotion": round(promoted_at - started, 1)}
    )


# --- self-healing --------------------------------------------------------------------------------------

OWNED = [
    # (kind for kubectl, name, does the deletion take pods or an address away from clients?)
    ("configmap", "iris-router", False),
    ("serviceaccount", "iris-router", False),
    ("role.rbac.authorization.k8s.io", "iris-router", False),
    ("rolebinding.rbac.authorization.k8s.io", "iris-router", False),
    ("networkpolicy.networking.k8s.io", "iris-router", False),
    # not the admin Secret: Secrets are not watched; a router refusing the token has it applied again
    ("service", "iris-iris-v1", False),
    ("service", "iris", False),
    ("deployment.apps", "iris-iris-v1", True),
    ("deployment.apps", "iris-router", True),
]


def _uid(fleet: Fleet, kind: str, name: str) -> str:
    obj = fleet.cluster.get_or_none(kind, name, fleet.namespace)
    return str(obj["metadata"]["uid"]) if obj else ""


def test_owned_objects_deleted_or_edited_by_hand_are_restored_within_seconds(fleet: Fleet) -> None:
    load = fleet.serve_v1(helpers.model_version("iris-v1", "1"))
    fleet.patch("iris", {"spec": {"fallback": {"response": STATIC_ANSWER}}})
    time.sleep(2)
    figures: dict[str, Any] = {}
    for kind, name, takes_pods in OWNED:
        before = _uid(fleet, kind, name)
        address = helpers.service_ip(fleet.cluster, fleet.namespace, name) if kind == "service" else ""
        deleted = time.time()
        fleet.cluster.kubectl("delete", kind, name, "-n", fleet.namespace, "--wait=false")
        fleet.cluster.wait_for(
            f"{kind}/{name} restored",
            lambda kind=kind, name=name, before=before: _uid(fleet, kind, name) not in ("", before),
            timeout=20,
            interval=0.1,
        )
        restored = time.time() - deleted
        if kind == "service":  # created again at its old address: clients and DNS caches keep working
            assert helpers.service_ip(fleet.cluster, fleet.namespace, name) == address
        if takes_pods:
            helpers.wait_until_serving(load, "iris-v1", timeout=90)
        time.sleep(3)
        saw = clients_saw(load, deleted)
        figures[f"{kind.split('.')[0]}/{name}"] = {"restoredSeconds": round(restored, 2), **saw}
        if not takes_pods:
            assert saw["errors"] == 0, (kind, name, saw)
        assert restored < 10, (kind, name, restored)

    # an edit by hand: the router's Service selector and the version's replica count are put back
    edited = time.time()
    fleet.cluster.kubectl(
        "patch", "service", "iris", "-n", fleet.namespace, "--type=merge",
        "-p", '{"spec": {"selector": {"app.kubernetes.io/component": "nothing"}}}',
    )  # fmt: skip
    fleet.cluster.kubectl("scale", "deployment.apps", "iris-iris-v1", "-n", fleet.namespace, "--replicas=3")

    def put_back() -> bool:
        svc = fleet.cluster.get("service", "iris", fleet.namespace)
        apps = fleet.cluster.get("deployment.apps", "iris-iris-v1", fleet.namespace)
        return (
            svc["spec"]["selector"].get("app.kubernetes.io/component") == "router"
            and apps["spec"]["replicas"] == 1
        )

    fleet.cluster.wait_for("hand edits undone", put_back, timeout=20, interval=0.1)
    figures["edits"] = {"undoneSeconds": round(time.time() - edited, 2), **clients_saw(load, edited)}
    time.sleep(2)
    load.stop()
    figures["whole test"] = clients_saw(load, fleet.serving_since)
    helpers.record_result("owned_objects_restored", figures)


# --- a router pod killed mid-window --------------------------------------------------------------------


def _router_processes(namespace: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-f", f"modelfleet router --configmap {namespace}/iris-router"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.split()


@local_cluster
def test_one_of_two_router_pods_killed_mid_window_leaves_the_rollout_judged(fleet: Fleet) -> None:
    """Given two router pods and a canary at 20%, when one router's process is SIGKILLed (the pod stays,
    its container is restarted, its scrapes fail meanwhile), then the Monitor judges the windows on the
    router that answered (partial, never Error), the rollout goes on to promotion, and clients lose only
    what reached the dead router in the seconds before it was back."""
    load = serve_with_canary_ahead(fleet, steps=SLOW_STEPS)
    fleet.patch("iris", {"spec": {"router": {"replicas": 2}}})
    fleet.cluster.wait_for("two router processes", lambda: len(_router_processes(fleet.namespace)) == 2, 90)
    fleet.cluster.wait_for(
        "two router pods ready",
        lambda: (
            (fleet.cluster.get("deployment.apps", "iris-router", fleet.namespace).get("status") or {}).get(
                "readyReplicas"
            )
            == 2
        ),
        timeout=90,
    )
    helpers.wait_until_serving(load, "iris-v1")
    started = time.time()
    fleet.set_version("iris-v2")
    fleet.wait_status("iris-v2 at 20%", lambda s: s.get("canaryWeight") == 20, 120)
    time.sleep(3)
    killed = time.time()
    subprocess.run(["kill", "-KILL", _router_processes(fleet.namespace)[0]], check=True)
    final = fleet.wait_status("iris-v2 promoted", promoted("iris-v2"), 180)
    load.stop()

    assert_steps_never_go_back(fleet, "iris-v2", started)
    assert final["history"][0]["result"] == "Promoted"
    measurements = fleet.monitor_status().get("measurements", [])
    of_canary = [m for m in measurements if m["version"] == "iris-v2"]
    verdicts = [r["verdict"] for m in of_canary for r in m["results"]]
    assert "Error" not in verdicts, of_canary
    saw = clients_saw(load, killed)
    # What clients lose to a router killed outright: the requests in flight on its connections, and the
    # new connections kube-proxy still sends to it until its container is back (its readiness probe has
    # not failed yet). Nothing after that: all errors fall within seconds of the kill.
    late = list(load.errors(since=killed + 15))
    assert late == [], late
    helpers.record_result(
        "router_pod_killed_mid_window",
        {
            **saw,
            "lastErrorSecondsAfterKill": round(
                max((r.time - killed for r in load.errors(since=killed)), default=0), 2
            ),
            "partialWindows": sum(1 for m in of_canary if m.get("partial")),
        },
    )


def test_one_of_two_router_pods_deleted_mid_rollout_costs_clients_nothing(fleet: Fleet) -> None:
    """Given two router pods and a canary at 20%, when one router pod is deleted (as a node drain, a
    scale-down or a router upgrade does), then its router serves on for its drain delay, closing each
    connection it answers, while its endpoint leaves every node's rules: clients see no error, a new pod
    takes its place, and the rollout goes on to promotion."""
    load = serve_with_canary_ahead(fleet, steps=SLOW_STEPS)
    fleet.patch("iris", {"spec": {"router": {"replicas": 2}}})

    def router_pods() -> list[str]:
        pods = fleet.cluster.kubectl(
            "get", "pods", "-n", fleet.namespace, "-l", "app.kubernetes.io/component=router", "-o", "name"
        ).stdout.split()
        return sorted(pods)

    def ready_routers() -> int:
        status = fleet.cluster.get("deployment.apps", "iris-router", fleet.namespace).get("status") or {}
        return int(status.get("readyReplicas") or 0)

    fleet.cluster.wait_for(
        "two router pods ready", lambda: ready_routers() == 2 and len(router_pods()) == 2, 90
    )
    helpers.wait_until_serving(load, "iris-v1")
    started = time.time()
    fleet.set_version("iris-v2")
    fleet.wait_status("iris-v2 at 20%", lambda s: s.get("canaryWeight") == 20, 120)
    victim = router_pods()[0]
    deleted = time.time()
    fleet.cluster.kubectl("delete", "-n", fleet.namespace, victim, "--wait=true", timeout=60)
    gone_after = time.time() - deleted
    fleet.cluster.wait_for(
        "a new router pod ready", lambda: ready_routers() == 2 and victim not in router_pods(), 90
    )
    final = fleet.wait_status("iris-v2 promoted", promoted("iris-v2"), 180)
    load.stop()

    saw = clients_saw(load, deleted)
    helpers.record_result("router_pod_deleted_mid_rollout", {**saw, "podGoneSeconds": round(gone_after, 1)})
    assert saw["errors"] == 0, saw
    assert saw["requests"] > 0
    assert_steps_never_go_back(fleet, "iris-v2", started)
    assert final["history"][0]["result"] == "Promoted"


# --- the cluster's own components restarted mid-rollout ------------------------------------------------


@local_cluster
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd", "kubelet"])
def test_a_component_restarted_mid_rollout_the_rollout_continues_and_completes(
    fleet: Fleet, component: str
) -> None:
    load = serve_with_canary_ahead(fleet, steps=SLOW_STEPS)
    started = time.time()
    fleet.set_version("iris-v2")
    fleet.wait_status("iris-v2 at 20%", lambda s: s.get("canaryWeight") == 20, 120)
    restarted_at = time.time()
    seconds = restart(component)
    final = fleet.wait_status("iris-v2 promoted", promoted("iris-v2"), 240)
    time.sleep(1)
    load.stop()

    assert_steps_never_go_back(fleet, "iris-v2", started)
    assert final["history"][0]["result"] == "Promoted"
    saw = clients_saw(load, restarted_at)
    assert fleet.client_errors() == [], saw  # the data plane never depended on the control plane
    helpers.record_result(f"{component}_restarted_mid_rollout", {**saw, "restartSeconds": round(seconds, 1)})


@local_cluster
def test_the_operator_restarted_during_an_api_server_outage_resumes_the_rollout(fleet: Fleet) -> None:
    load = serve_with_canary_ahead(fleet, steps=SLOW_STEPS)
    started = time.time()
    fleet.set_version("iris-v2")
    fleet.wait_status("iris-v2 at 20%", lambda s: s.get("canaryWeight") == 20, 120)
    outage = time.time()
    restarting = threading.Thread(target=lambda: restart("kube-apiserver"), daemon=True)
    restarting.start()
    fleet.cluster.wait_for(
        "the API server down", lambda: not fleet.cluster.api_answers(), timeout=30, interval=0.1
    )
    fleet.operator.kill(signal.SIGKILL)
    fleet.operator.start()  # it starts while the API server is away
    restarting.join(timeout=300)
    final = fleet.wait_status("iris-v2 promoted", promoted("iris-v2"), 240)
    time.sleep(1)
    load.stop()

    assert_steps_never_go_back(fleet, "iris-v2", started)
    assert final["history"][0]["result"] == "Promoted"
    saw = clients_saw(load, outage)
    assert fleet.client_errors() == [], saw
    helpers.record_result("operator_restarted_during_api_outage", saw)
