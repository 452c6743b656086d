"""The registry controllers against the real API server: a governed Model and its versions reach the
documented phases and conditions, react to approval, governance edits, deletions and serving.

The operator runs only the registry controllers; what a modelfleet Deployment serves is written into
its status by the test, as the Deployment controller would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster
from support.operator import OperatorProcess
from support.registry import (
    KopfProcess,
    condition,
    deployment,
    events,
    model,
    model_version,
    patch,
    state,
    write_status,
)

WAIT = "--timeout=60s"
MDEPLOY = "deployments.modelfleet.io"


@pytest.fixture
def registry(cluster: Cluster, crds: None, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The registry controllers alone, watching this test's namespace."""
    proc = KopfProcess(cluster, namespace, ["modelfleet.controllers.registry"], tmp_path / "registry.log")
    proc.start()
    try:
        yield proc
    finally:
        alive = proc.alive()
        proc.kill()
        assert alive, "the operator died:\n" + "\n".join(proc.log().splitlines()[-40:])
        assert "Traceback" not in proc.log(), proc.log()[-4000:]


def governed_registry(cluster: Cluster, namespace: str) -> None:
    """A Model that requires approval and allows only localhost/ images, and three versions:
    approved and allowed, not approved, and approved but outside the allow-list."""
    cluster.apply(
        [
            model("iris", require_approval=True, allowed_images=["localhost/"]),
            model_version(
                "iris-v1",
                "iris",
                "localhost/iris-server:1",
                approval={"approved": True, "by": "alice", "reason": "passed offline evaluation"},
            ),
            model_version("iris-v2", "iris", "localhost/iris-server:2", version="2"),
            model_version(
                "iris-evil", "iris", "docker.io/evil/iris:1", version="3", approval={"approved": True}
            ),
        ],
        namespace,
    )


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str) -> None:
    cluster.kubectl(
        "wait", "-n", namespace, f"modelversion/{name}", f"--for=jsonpath={{.status.phase}}={phase}", WAIT
    )


def has_event(cluster: Cluster, namespace: str, name: str, type_: str, reason: str) -> bool:
    return (type_, reason) in [(t, r) for t, r, _ in events(cluster, namespace, name)]


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return cluster.get(kind, name, namespace)


def status_of(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(cluster.get(kind, name, namespace).get("status", {}))


def test_a_governed_registry_reaches_the_documented_phases(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    governed_registry(cluster, namespace)

    # kubectl wait works on the summary condition of both kinds.
    ready = ["wait", "-n", namespace, "--for=condition=Ready", WAIT]
    cluster.kubectl(*ready, "model/iris", "modelversion/iris-v1")
    wait_phase(cluster, namespace, "iris-v2", "Rejected")
    wait_phase(cluster, namespace, "iris-evil", "Rejected")

    v1 = get(cluster, "modelversion", "iris-v1", namespace)
    assert v1["status"]["phase"] == "Ready"
    assert v1["status"]["observedGeneration"] == v1["metadata"]["generation"]
    assert condition(v1, "Approved")["reason"] == "Approved"
    assert condition(v1, "Approved")["message"] == "approved by alice: passed offline evaluation"
    assert condition(v1, "Ready")["observedGeneration"] == v1["metadata"]["generation"]

    v2 = get(cluster, "modelversion", "iris-v2", namespace)
    assert state(v2, "Ready") == ("False", "ApprovalRequired")
    assert state(v2, "Approved") == ("False", "ApprovalRequired")
    assert "Model iris requires approval" in v2["status"]["message"]

    evil = get(cluster, "modelversion", "iris-evil", namespace)
    assert state(evil, "Ready") == ("False", "ImageNotAllowed")
    assert condition(evil, "Approved")["status"] == "True"
    message = evil["status"]["message"]
    assert "docker.io/evil/iris:1 is not in allowedImages of Model iris (localhost/)" in message

    # A rejected version is not Ready, so waiting for it fails rather than hangs.
    refused = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "modelversion/iris-v2", "--timeout=2s", check=False
    )
    assert refused.returncode != 0

    three = ["iris-evil", "iris-v1", "iris-v2"]
    iris = cluster.wait_for(
        "Model iris to list its three versions",
        lambda: (m := get(cluster, "model", "iris", namespace))["status"].get("versions") == three and m,
    )
    assert iris["status"].get("servingVersions", []) == []
    assert iris["status"]["observedGeneration"] == iris["metadata"]["generation"]
    assert condition(iris, "Ready")["reason"] == "Registered"
    assert condition(iris, "Ready")["message"] == "3 versions, 0 serving"

    # Printer columns show the registry at a glance.
    table = cluster.kubectl("get", "modelversions", "-n", namespace).stdout.splitlines()
    header = ["NAME", "MODEL", "VERSION", "IMAGE", "ARTIFACT", "PHASE", "APPROVED", "AGE", "MESSAGE"]
    assert table[0].split() == header
    rows = {line.split()[0]: line.split() for line in table[1:]}
    # the last column says why, in words
    assert " ".join(rows["iris-v2"]).endswith(
        "ModelVersion iris-v2: Model iris requires approval and spec.approval.approved is not true"
    ), rows["iris-v2"]
    assert rows["iris-v1"][1:6] == ["iris", "1", "localhost/iris-server:1", "Ready", "True"]
    assert rows["iris-v2"][1:6] == ["iris", "2", "localhost/iris-server:2", "Rejected", "False"]
    assert rows["iris-evil"][1:6] == ["iris", "3", "docker.io/evil/iris:1", "Rejected", "True"]
    models = cluster.kubectl("get", "mdl", "-n", namespace).stdout.splitlines()
    assert models[0].split() == ["NAME", "VERSIONS", "SERVING", "READY", "AGE"]
    assert models[1].split()[:4] == ["iris", '["iris-evil","iris-v1","iris-v2"]', "[]", "True"]
    wide = cluster.kubectl("get", "mdl", "-n", namespace, "-o", "wide").stdout
    assert "OWNER" in wide
    assert "team-a" in wide
    # The category lists the registry too.
    every = cluster.kubectl("get", "modelfleet", "-n", namespace).stdout
    assert "model.modelfleet.io/iris" in every
    assert "modelversion.modelfleet.io/iris-v2" in every

    # Every decision is an Event with a CamelCase reason.
    expected = [
        ("iris-v1", "Normal", "Servable"),
        ("iris-v2", "Warning", "ApprovalRequired"),
        ("iris-evil", "Warning", "ImageNotAllowed"),
        ("iris", "Normal", "Registered"),
    ]
    cluster.wait_for(
        "events on the versions and the Model",
        lambda: all(has_event(cluster, namespace, *item) for item in expected),
        timeout=30,
    )
    warning = next(m for t, r, m in events(cluster, namespace, "iris-evil") if r == "ImageNotAllowed")
    assert "docker.io/evil/iris:1" in warning


def test_approving_a_version_makes_it_ready(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    governed_registry(cluster, namespace)
    wait_phase(cluster, namespace, "iris-v2", "Rejected")
    before = condition(get(cluster, "modelversion", "iris-v2", namespace), "Ready")
    time.sleep(1.1)  # transition times have second precision

    approval = {"approved": True, "by": "carol", "reason": "A/B offline ok"}
    patch(cluster, "modelversion", "iris-v2", namespace, {"spec": {"approval": approval}})
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "modelversion/iris-v2", WAIT)
    v2 = get(cluster, "modelversion", "iris-v2", namespace)
    assert v2["status"]["phase"] == "Ready"
    assert condition(v2, "Approved")["message"] == "approved by carol: A/B offline ok"
    after = condition(v2, "Ready")
    assert after["lastTransitionTime"] > before["lastTransitionTime"]
    assert after["observedGeneration"] == v2["metadata"]["generation"] == 2
    cluster.wait_for(
        "an Approved event", lambda: has_event(cluster, namespace, "iris-v2", "Normal", "Approved")
    )


def test_a_governance_change_reevaluates_every_version(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    governed_registry(cluster, namespace)
    wait_phase(cluster, namespace, "iris-evil", "Rejected")
    wait_phase(cluster, namespace, "iris-v2", "Rejected")

    loose = {"requireApproval": False, "allowedImages": ["localhost/", "docker.io/evil/"]}
    patch(cluster, "model", "iris", namespace, {"spec": {"governance": loose}})
    wait_phase(cluster, namespace, "iris-evil", "Ready")
    wait_phase(cluster, namespace, "iris-v2", "Ready")
    v2 = get(cluster, "modelversion", "iris-v2", namespace)
    assert condition(v2, "Approved")["reason"] == "ApprovalNotRequired"

    # Tightening it again rejects the version whose image is no longer allowed, and only that one.
    patch(cluster, "model", "iris", namespace, {"spec": {"governance": {"allowedImages": ["localhost/"]}}})
    wait_phase(cluster, namespace, "iris-evil", "Rejected")
    assert get(cluster, "modelversion", "iris-v1", namespace)["status"]["phase"] == "Ready"
    assert get(cluster, "modelversion", "iris-v2", namespace)["status"]["phase"] == "Ready"
    iris = get(cluster, "model", "iris", namespace)
    assert iris["status"]["observedGeneration"] == iris["metadata"]["generation"] == 3
    cluster.wait_for(
        "a VersionsReevaluated event on the Model",
        lambda: any(r == "VersionsReevaluated" for _, r, _ in events(cluster, namespace, "iris")),
    )


def test_a_version_of_a_missing_model_waits_for_it(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    cluster.apply(model_version("wine-v1", "wine", "localhost/iris-server:1"), namespace)
    wait_phase(cluster, namespace, "wine-v1", "Pending")
    pending = get(cluster, "modelversion", "wine-v1", namespace)
    assert state(pending, "Ready") == ("False", "ModelNotFound")
    assert condition(pending, "Approved")["status"] == "Unknown"
    assert "Model wine not found" in pending["status"]["message"]
    cluster.wait_for(
        "a ModelNotFound warning",
        lambda: ("Warning", "ModelNotFound") in [(t, r) for t, r, _ in events(cluster, namespace, "wine-v1")],
    )

    cluster.apply(model("wine"), namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "modelversion/wine-v1", WAIT)
    cluster.wait_for(
        "Model wine to list wine-v1",
        lambda: get(cluster, "model", "wine", namespace)["status"].get("versions") == ["wine-v1"],
    )

    # Deleting the Model puts its version back to Pending.
    cluster.kubectl("delete", "model", "wine", "-n", namespace)
    wait_phase(cluster, namespace, "wine-v1", "Pending")


def test_new_and_deleted_versions_update_the_model(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    cluster.apply([model("iris"), model_version("iris-v1", "iris", "localhost/iris-server:1")], namespace)

    def versions() -> list[str]:
        return list(get(cluster, "model", "iris", namespace).get("status", {}).get("versions", []))

    cluster.wait_for("iris-v1 listed", lambda: versions() == ["iris-v1"])
    cluster.apply(model_version("iris-v2", "iris", "localhost/iris-server:2", version="2"), namespace)
    cluster.wait_for("iris-v2 listed", lambda: versions() == ["iris-v1", "iris-v2"])
    cluster.kubectl("delete", "modelversion", "iris-v1", "-n", namespace)
    cluster.wait_for("iris-v1 gone from the list", lambda: versions() == ["iris-v2"])
    reasons = [r for _, r, _ in events(cluster, namespace, "iris")]
    assert "VersionAdded" in reasons
    cluster.wait_for(
        "a VersionRemoved event",
        lambda: "VersionRemoved" in [r for _, r, _ in events(cluster, namespace, "iris")],
    )


def test_serving_versions_follow_the_deployments(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    cluster.apply(
        [
            model("iris"),
            model_version("iris-v1", "iris", "localhost/iris-server:1"),
            model_version("iris-v2", "iris", "localhost/iris-server:2", version="2"),
            deployment("iris", "iris", "iris-v2"),
            deployment("iris-eu", "iris", "iris-v1"),
        ],
        namespace,
    )
    wait_phase(cluster, namespace, "iris-v1", "Ready")

    # Both Deployments serve v1; iris starts a canary of v2, at weight 0 first (not serving yet).
    write_status(cluster, MDEPLOY, "iris-eu", namespace, {"stableVersion": "iris-v1"})
    canary = {"stableVersion": "iris-v1", "canaryVersion": "iris-v2", "canaryWeight": 0}
    write_status(cluster, MDEPLOY, "iris", namespace, canary)
    wait_phase(cluster, namespace, "iris-v1", "Serving")
    cluster.wait_for(
        "iris-v1 served by both",
        lambda: (
            status_of(cluster, "modelversion", "iris-v1", namespace).get("servedBy") == ["iris", "iris-eu"]
        ),
    )
    assert get(cluster, "modelversion", "iris-v2", namespace)["status"]["phase"] == "Ready"
    wide = cluster.kubectl("get", "mv", "iris-v1", "-n", namespace, "-o", "wide").stdout
    assert '["iris","iris-eu"]' in wide

    # The canary takes 20% of the traffic: now it serves.
    write_status(cluster, MDEPLOY, "iris", namespace, {"canaryWeight": 20})
    wait_phase(cluster, namespace, "iris-v2", "Serving")
    both = ["iris-v1", "iris-v2"]
    cluster.wait_for(
        "both versions serving on the Model",
        lambda: status_of(cluster, "model", "iris", namespace).get("servingVersions") == both,
    )

    # Promotion: v2 is stable in iris; iris-eu is deleted; v1 serves nowhere and is Retired.
    promoted = {"stableVersion": "iris-v2", "canaryVersion": "", "canaryWeight": 0}
    write_status(cluster, MDEPLOY, "iris", namespace, promoted)
    cluster.kubectl("delete", MDEPLOY, "iris-eu", "-n", namespace)
    wait_phase(cluster, namespace, "iris-v1", "Retired")
    v1 = get(cluster, "modelversion", "iris-v1", namespace)
    assert v1["status"].get("servedBy", []) == []
    assert state(v1, "Ready") == ("True", "Retired")
    cluster.wait_for(
        "only v2 serving on the Model",
        lambda: get(cluster, "model", "iris", namespace)["status"].get("servingVersions") == ["iris-v2"],
    )
    assert ("Normal", "Retired") in [(t, r) for t, r, _ in events(cluster, namespace, "iris-v1")]
    assert ("Normal", "ServingChanged") in [(t, r) for t, r, _ in events(cluster, namespace, "iris")]


def test_a_restarted_operator_keeps_statuses_and_catches_up(
    cluster: Cluster, namespace: str, registry: OperatorProcess
) -> None:
    governed_registry(cluster, namespace)
    wait_phase(cluster, namespace, "iris-v2", "Rejected")
    wait_phase(cluster, namespace, "iris-v1", "Ready")
    v1_before = get(cluster, "modelversion", "iris-v1", namespace)

    registry.kill()
    # While it is down: approve v2 and add a version.
    patch(cluster, "modelversion", "iris-v2", namespace, {"spec": {"approval": {"approved": True}}})
    cluster.apply(model_version("iris-v3", "iris", "localhost/iris-server:3", version="3"), namespace)
    registry.start()

    wait_phase(cluster, namespace, "iris-v2", "Ready")
    wait_phase(cluster, namespace, "iris-v3", "Rejected")
    cluster.wait_for(
        "iris-v3 listed",
        lambda: "iris-v3" in get(cluster, "model", "iris", namespace)["status"].get("versions", []),
    )
    # An unchanged version keeps its status as it was, transition times included.
    v1_after = get(cluster, "modelversion", "iris-v1", namespace)
    assert condition(v1_after, "Ready") == condition(v1_before, "Ready")
    assert v1_after["status"] == v1_before["status"]
