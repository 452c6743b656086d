"""The registry's pure rules: servability, ModelVersion phases and conditions, Model status, events."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelfleet.api import (
    ConditionStatus,
    DeploymentStatus,
    FallbackStatus,
    Model,
    ModelStatus,
    ModelVersion,
    ModelVersionPhase,
    get_condition,
)
from modelfleet.registry import (
    Reason,
    Servability,
    model_notices,
    model_status,
    servability,
    served_changes,
    served_versions,
    serving_deployments,
    version_notices,
    version_status,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def model(name: str = "iris", *, require_approval: bool = False, allowed: list[str] | None = None) -> Model:
    return Model.from_k8s(
        {
            "metadata": {"name": name, "namespace": "ml", "generation": 1},
            "spec": {"governance": {"requireApproval": require_approval, "allowedImages": allowed or []}},
        }
    )


def version(
    name: str = "iris-v2",
    *,
    model_name: str = "iris",
    image: str = "localhost/iris-server:2",
    approval: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    generation: int = 1,
) -> ModelVersion:
    spec: dict[str, Any] = {"model": model_name, "version": "2", "image": image}
    if approval is not None:
        spec["approval"] = approval
    return ModelVersion.from_k8s(
        {
            "metadata": {"name": name, "namespace": "ml", "generation": generation},
            "spec": spec,
            "status": status or {},
        }
    )


# --- servability -----------------------------------------------------------------------------------


def test_a_version_of_a_model_without_rules_is_servable() -> None:
    result = servability(model(), version())
    assert result == Servability(True, Reason.SERVABLE, "ModelVersion iris-v2 meets the rules of Model iris")
    ok, reason, _ = result
    assert ok is True
    assert reason == "Servable"


def test_a_missing_version_is_not_servable_and_named() -> None:
    result = servability(model(), None, version_name="iris-v9")
    assert not result.servable
    assert result.reason == Reason.VERSION_NOT_FOUND
    assert result.message == "ModelVersion iris-v9 not found"


def test_a_version_whose_model_is_missing_is_not_servable() -> None:
    result = servability(None, version(model_name="ghost"))
    assert (result.servable, result.reason) == (False, Reason.MODEL_NOT_FOUND)
    assert "Model ghost not found" in result.message


def test_a_version_of_another_model_is_not_servable_under_this_one() -> None:
    result = servability(model("iris"), version(model_name="wine"))
    assert (result.servable, result.reason) == (False, Reason.MODEL_MISMATCH)
    assert result.message == "ModelVersion iris-v2 is a version of Model wine, not iris"


@pytest.mark.parametrize(
    ("allowed", "image", "servable"),
    [
        ([], "docker.io/anything:1", True),
        (["localhost/"], "localhost/iris-server:2", True),
        (["registry.example.com/ml/", "localhost/"], "localhost/iris-server:2", True),
        (["registry.example.com/ml/"], "registry.example.com/ml2/iris:1", False),
        (["localhost/"], "docker.io/localhost/iris:1", False),
    ],
)
def test_the_image_must_start_with_an_allowed_prefix(allowed: list[str], image: str, servable: bool) -> None:
    result = servability(model(allowed=allowed), version(image=image))
    assert result.servable is servable
    if not servable:
        assert result.reason == Reason.IMAGE_NOT_ALLOWED
        assert image in result.message
        assert allowed[0] in result.message


def test_the_allowed_prefixes_in_a_message_are_bounded() -> None:
    prefixes = [f"registry{i}.example.com/" for i in range(64)]
    result = servability(model(allowed=prefixes), version(image="x/y:1"))
    assert "and 61 more" in result.message
    assert len(result.message) < 300


@pytest.mark.parametrize(
    ("approval", "servable"),
    [
        (None, False),
        ({"approved": False}, False),
        ({"approved": False, "by": "bob", "reason": "worse on holdout"}, False),
        ({"approved": True, "by": "alice"}, True),
    ],
)
def test_approval_is_needed_only_when_the_model_requires_it(
    approval: dict[str, Any] | None, servable: bool
) -> None:
    assert servability(model(require_approval=False), version(approval=approval)).servable
    result = servability(model(require_approval=True), version(approval=approval))
    assert result.servable is servable
    assert result.reason == (Reason.SERVABLE if servable else Reason.APPROVAL_REQUIRED)


def test_a_refusal_names_who_refused_and_why() -> None:
    result = servability(
        model(require_approval=True),
        version(approval={"approved": False, "by": "bob", "reason": "worse on holdout"}),
    )
    assert result.message == "ModelVersion iris-v2: not approved (refused by bob: worse on holdout)"


def test_every_broken_rule_is_listed_and_the_image_comes_first() -> None:
    result = servability(model(require_approval=True, allowed=["localhost/"]), version(image="evil.io/x:1"))
    assert result.reason == Reason.IMAGE_NOT_ALLOWED
    assert "not in allowedImages" in result.message
    assert "requires approval" in result.message


# --- who serves what -------------------------------------------------------------------------------


def test_stable_always_serves_and_canary_only_with_weight() -> None:
    assert served_versions(DeploymentStatus()) == frozenset()
    assert served_versions(DeploymentStatus(stable_version="v1", canary_version="v2")) == {"v1"}
    both = DeploymentStatus(stable_version="v1", canary_version="v2", canary_weight=10)
    assert served_versions(both) == {"v1", "v2"}
    first = DeploymentStatus(canary_version="v2", canary_weight=100)
    assert served_versions(first) == {"v2"}


def test_the_fallback_version_serves_only_while_the_fallback_is_engaged() -> None:
    engaged = DeploymentStatus(
        stable_version="v1", fallback=FallbackStatus(active=True, version="rules", reason="v1 fails")
    )
    assert served_versions(engaged) == {"v1", "rules"}
    static = DeploymentStatus(stable_version="v1", fallback=FallbackStatus(active=True, version=""))
    assert served_versions(static) == {"v1"}
    released = DeploymentStatus(stable_version="v1", fallback=FallbackStatus(reason="released: v1 passed"))
    assert served_versions(released) == {"v1"}


def test_serving_changes_name_what_started_or_stopped() -> None:
    v1, v12 = frozenset({"v1"}), frozenset({"v1", "v2"})
    assert served_changes(("iris", v1), ("iris", v1)) == (set(), set())
    assert served_changes(None, None) == (set(), set())
    assert served_changes(None, ("iris", v1)) == ({"iris"}, {"v1"})
    assert served_changes(("iris", v1), ("iris", v12)) == ({"iris"}, {"v2"})
    assert served_changes(("iris", v12), None) == ({"iris"}, {"v1", "v2"})
    # The Deployment now serves another Model: both Models, every version either side.
    assert served_changes(("iris", v1), ("wine", frozenset({"w1"}))) == ({"iris", "wine"}, {"v1", "w1"})
    # A Deployment that serves nothing yet still concerns its Model once.
    assert served_changes(None, ("iris", frozenset())) == ({"iris"}, set())


def test_serving_deployments_are_sorted() -> None:
    serving = {"iris-eu": {"v1"}, "iris": {"v1", "v2"}, "other": {"v3"}}
    assert serving_deployments("v1", serving) == ("iris", "iris-eu")
    assert serving_deployments("v9", serving) == ()


# --- ModelVersion status ---------------------------------------------------------------------------


def conditions(status: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


def test_a_servable_version_is_ready_and_approved() -> None:
    status = version_status(
        model(require_approval=True), version(approval={"approved": True, "by": "alice"}), (), now=T0
    )
    assert status.phase == ModelVersionPhase.READY
    assert conditions(status) == {"Ready": ("True", "Servable"), "Approved": ("True", "Approved")}
    assert status.observed_generation == 1
    assert all(c.observed_generation == 1 and c.last_transition_time == T0 for c in status.conditions)
    assert status.served_by == ()


def test_without_required_approval_approved_says_not_required() -> None:
    status = version_status(model(), version(), (), now=T0)
    assert conditions(status)["Approved"] == ("True", "ApprovalNotRequired")


def test_an_unapproved_version_is_rejected() -> None:
    status = version_status(model(require_approval=True), version(), (), now=T0)
    assert status.phase == ModelVersionPhase.REJECTED
    assert conditions(status) == {
        "Ready": ("False", "ApprovalRequired"),
        "Approved": ("False", "ApprovalRequired"),
    }
    assert "requires approval" in status.message


def test_an_image_outside_the_allow_list_is_rejected_even_when_approved() -> None:
    status = version_status(
        model(allowed=["localhost/"]), version(image="docker.io/x:1", approval={"approved": True}), (), now=T0
    )
    assert status.phase == ModelVersionPhase.REJECTED
    assert conditions(status) == {"Ready": ("False", "ImageNotAllowed"), "Approved": ("True", "Approved")}


def test_a_version_of_a_missing_model_is_pending() -> None:
    status = version_status(None, version(model_name="ghost"), (), now=T0)
    assert status.phase == ModelVersionPhase.PENDING
    assert conditions(status) == {
        "Ready": ("False", "ModelNotFound"),
        "Approved": ("Unknown", "ModelNotFound"),
    }


def test_a_served_version_is_serving_then_retired_then_serving_again() -> None:
    m = model()
    serving = version_status(m, version(), ["iris-eu", "iris"], now=T0)
    assert serving.phase == ModelVersionPhase.SERVING
    assert serving.served_by == ("iris", "iris-eu")
    assert conditions(serving)["Ready"] == ("True", "Serving")
    assert "iris, iris-eu" in serving.message

    retired = version_status(m, version(status=serving.to_k8s()), (), now=T1)
    assert retired.phase == ModelVersionPhase.RETIRED
    assert conditions(retired)["Ready"] == ("True", "Retired")
    # Ready stayed True, so its transition time did not move.
    ready = get_condition(retired.conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == T0

    still = version_status(m, version(status=retired.to_k8s()), (), now=T1)
    assert still.phase == ModelVersionPhase.RETIRED
    again = version_status(m, version(status=retired.to_k8s()), ["iris"], now=T1)
    assert again.phase == ModelVersionPhase.SERVING


def test_a_version_that_never_served_is_not_retired() -> None:
    ready = version_status(model(), version(), (), now=T0)
    assert (
        version_status(model(), version(status=ready.to_k8s()), (), now=T1).phase == ModelVersionPhase.READY
    )


def test_rules_win_over_serving_and_the_deployments_stay_listed() -> None:
    status = version_status(model(require_approval=True), version(), ["iris"], now=T0)
    assert status.phase == ModelVersionPhase.REJECTED
    assert status.served_by == ("iris",)


def test_a_governance_change_moves_the_transition_time() -> None:
    before = version_status(model(), version(), (), now=T0)
    after = version_status(model(require_approval=True), version(status=before.to_k8s()), (), now=T1)
    ready = get_condition(after.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.last_transition_time) == (ConditionStatus.FALSE, T1)


def test_the_same_inputs_give_the_same_status() -> None:
    first = version_status(model(), version(), ["iris"], now=T0)
    second = version_status(model(), version(status=first.to_k8s()), ["iris"], now=T1)
    assert second == first


def test_observed_generation_follows_the_object() -> None:
    status = version_status(model(), version(generation=7), (), now=T0)
    assert status.observed_generation == 7
    assert {c.observed_generation for c in status.conditions} == {7}


# --- Model status ----------------------------------------------------------------------------------


def test_model_status_lists_versions_and_serving_versions_sorted() -> None:
    status = model_status(model(), ["iris-v2", "iris-v1", "iris-v1"], ["iris-v1"], now=T0)
    assert status.versions == ("iris-v1", "iris-v2")
    assert status.serving_versions == ("iris-v1",)
    assert status.observed_generation == 1
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (
        ConditionStatus.TRUE,
        "Registered",
        "2 versions, 1 serving: iris-v1",
    )


def test_model_status_lists_are_bounded() -> None:
    names = [f"v{i:05d}" for i in range(1200)]
    status = model_status(model(), names, [], now=T0)
    assert len(status.versions) == 1000
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None
    assert "first 1000" in ready.message


# --- events ----------------------------------------------------------------------------------------


def test_a_new_version_announces_its_verdict_once() -> None:
    empty = version().status
    ready = version_status(model(), version(), (), now=T0)
    assert [(n.type, n.reason) for n in version_notices(empty, ready)] == [("Normal", "Servable")]
    assert version_notices(ready, ready) == []


def test_a_rejection_is_a_warning_with_its_reason() -> None:
    empty = version().status
    rejected = version_status(
        model(require_approval=True, allowed=["localhost/"]), version(image="x/y:1"), (), now=T0
    )
    notices = version_notices(empty, rejected)
    assert [(n.type, n.reason) for n in notices] == [
        ("Warning", "ImageNotAllowed"),
        ("Warning", "ApprovalRequired"),
    ]
    assert "x/y:1" in notices[0].message


def test_approval_and_serving_changes_are_announced() -> None:
    m = model(require_approval=True)
    rejected = version_status(m, version(), (), now=T0)
    approved = version_status(
        m, version(approval={"approved": True, "by": "alice"}, status=rejected.to_k8s()), (), now=T1
    )
    reasons = [n.reason for n in version_notices(rejected, approved)]
    assert reasons == ["Servable", "Approved"]

    serving = version_status(m, version(approval={"approved": True}, status=approved.to_k8s()), ["a"], now=T1)
    assert [n.reason for n in version_notices(approved, serving)] == ["Serving"]
    wider = version_status(
        m, version(approval={"approved": True}, status=serving.to_k8s()), ["a", "b"], now=T1
    )
    notices = version_notices(serving, wider)
    assert [(n.reason, n.message) for n in notices] == [("Serving", "serving in Deployment a, b")]


def test_model_events_say_what_changed() -> None:
    first = model_status(model(), ["v1"], [], now=T0)
    assert [n.reason for n in model_notices(ModelStatus(), first)] == ["Registered"]
    assert model_notices(first, first) == []

    second = model_status(model(), ["v2", "v3"], ["v2"], now=T1)
    notices = model_notices(first, second, spec_changed=True)
    assert [(n.reason, n.message) for n in notices] == [
        ("VersionAdded", "added v2, v3 (2 versions)"),
        ("VersionRemoved", "removed v1 (2 versions)"),
        ("VersionsReevaluated", "spec changed: re-evaluated 2 versions"),
        ("ServingChanged", "serving: v2"),
    ]
    assert all(n.type == "Normal" for n in notices)


def test_the_rules_import_no_cluster_client() -> None:
    code = (
        "import sys, modelfleet.registry\n"
        "print(sorted(m for m in ('kopf', 'kubernetes', 'requests') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
