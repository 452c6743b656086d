"""The MLflow sync as pure rules: which ModelVersions a snapshot of a registered model asks for, what the
Model's source status says, and which tags go back to MLflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelfleet.api import ConditionStatus, Model, ModelVersion, get_condition
from modelfleet.registry.mlflow import (
    DELETED_ANNOTATION,
    DEPLOYMENTS_TAG,
    MLFLOW_VERSION_ANNOTATION,
    PHASE_TAG,
    ROLLBACK_REASON_TAG,
    SOURCE_LABEL,
    SYNCED,
    Dataset,
    RegisteredVersion,
    Run,
    Snapshot,
    SyncReason,
    TagChange,
    failed_sync,
    plan_sync,
    version_name,
)

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
URI = "http://mlflow.mlflow.svc:5000"


def model(**source: Any) -> Model:
    mlflow = {"trackingUri": URI, "registeredModel": "iris", **source}
    return Model.from_k8s(
        {
            "metadata": {"name": "iris", "namespace": "ml", "generation": 3},
            "spec": {"source": {"mlflow": mlflow}},
        }
    )


def registered(number: str, **fields: Any) -> RegisteredVersion:
    fields.setdefault("storage_uri", f"s3://mlflow/1/models/m-{number}/artifacts")
    fields.setdefault("run_id", f"run{number}")
    return RegisteredVersion(version=number, **fields)


RUN = Run(
    run_id="run1",
    experiment_id="1",
    params={"max_depth": "3", "n_estimators": "10"},
    metrics={"accuracy": 0.97},
    tags={"mlflow.source.git.commit": "abc123", "mlflow.source.git.repoURL": "https://git.example/ml"},
    datasets=(Dataset(name="iris", digest="d41d8cd9", source="s3://data/iris.csv", context="training"),),
)


def applied(manifest: dict[str, Any]) -> ModelVersion:
    """The ModelVersion as the API server would hold it after the apply."""
    body = {**manifest, "metadata": {**manifest["metadata"], "generation": 1, "uid": "u"}}
    return ModelVersion.from_k8s(body)


def test_given_a_new_registered_version_when_synced_then_a_model_version_with_lineage_is_applied() -> None:
    snapshot = Snapshot("iris", (registered("1", signature_inputs='[{"name": "x"}]'),), {}, {"run1": RUN})

    plan = plan_sync(model(runtime="mlserver-mlflow"), snapshot, {}, T0)

    assert len(plan.apply) == 1
    manifest = plan.apply[0]
    assert manifest["metadata"]["name"] == "iris-v1"
    assert manifest["metadata"]["labels"] == {SOURCE_LABEL: "mlflow"}
    assert manifest["metadata"]["annotations"][MLFLOW_VERSION_ANNOTATION] == "1"
    spec = manifest["spec"]
    # the storage location is a directory: the fetcher takes every object under it
    assert spec["artifact"] == {"uri": "s3://mlflow/1/models/m-1/artifacts/", "format": "mlflow"}
    assert spec["runtime"] == "mlserver-mlflow"
    assert spec["lineage"]["run"] == {"id": "run1", "uri": f"{URI}/#/experiments/1/runs/run1"}
    assert spec["lineage"]["source"] == {"commit": "abc123", "repository": "https://git.example/ml"}
    assert spec["lineage"]["params"] == {"max_depth": "3", "n_estimators": "10"}
    assert spec["lineage"]["metrics"] == {"accuracy": 0.97}
    assert spec["lineage"]["datasets"] == [
        {"name": "iris", "digest": "d41d8cd9", "source": "s3://data/iris.csv", "context": "training"}
    ]
    assert spec["lineage"]["signature"] == {"inputs": '[{"name": "x"}]'}
    assert "approval" not in spec
    # and the API models accept it as it is
    assert applied(manifest).spec.lineage is not None


def test_given_a_synced_version_when_nothing_changed_in_mlflow_then_nothing_is_applied() -> None:
    snapshot = Snapshot("iris", (registered("1"),), {}, {"run1": RUN})
    first = plan_sync(model(), snapshot, {}, T0)
    existing = {"iris-v1": applied(first.apply[0])}

    again = plan_sync(model(), snapshot, existing, T1)

    assert again.apply == ()


def test_artifact_credentials_are_given_to_every_imported_version() -> None:
    snapshot = Snapshot("iris", (registered("1"),), {})
    plan = plan_sync(model(artifactCredentials={"secretName": "s3-creds"}), snapshot, {}, T0)
    assert plan.apply[0]["spec"]["artifact"]["credentials"] == {"secretName": "s3-creds"}


def test_approval_tag_in_mlflow_becomes_the_versions_approval_and_keeps_its_time() -> None:
    tags = {"modelfleet.io/approved": "true", "modelfleet.io/approved-by": "alice"}
    snapshot = Snapshot("iris", (registered("1", tags=tags),), {})

    first = plan_sync(model(), snapshot, {}, T0)
    approval = first.apply[0]["spec"]["approval"]
    assert approval == {
        "approved": True,
        "by": "alice",
        "reason": "MLflow tag modelfleet.io/approved=true",
        "time": "2026-05-01T10:00:00Z",
    }
    # seen again a minute later: the same approval, nothing to apply
    assert plan_sync(model(), snapshot, {"iris-v1": applied(first.apply[0])}, T1).apply == ()


def test_approval_tag_removed_in_mlflow_withdraws_the_approval_the_sync_gave() -> None:
    tagged = Snapshot("iris", (registered("1", tags={"modelfleet.io/approved": "true"}),), {})
    existing = {"iris-v1": applied(plan_sync(model(), tagged, {}, T0).apply[0])}

    untagged = Snapshot("iris", (registered("1"),), {})
    plan = plan_sync(model(), untagged, existing, T1)

    assert len(plan.apply) == 1
    assert "approval" not in plan.apply[0]["spec"]


def test_an_approval_made_by_hand_is_left_alone_when_mlflow_has_no_tag() -> None:
    manifest = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {}, T0).apply[0]
    by_hand = {"approved": True, "by": "bob", "reason": "reviewed", "time": "2026-05-01T09:00:00Z"}
    existing = {"iris-v1": applied({**manifest, "spec": {**manifest["spec"], "approval": by_hand}})}

    plan = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), existing, T1)

    assert plan.apply == ()


def test_immutable_fields_come_from_the_existing_version_even_when_mlflow_changed_them() -> None:
    first = plan_sync(model(), Snapshot("iris", (registered("1"),), {}, {"run1": RUN}), {}, T0)
    existing = {"iris-v1": applied(first.apply[0])}
    moved = Snapshot("iris", (registered("1", storage_uri="s3://other/place"),), {}, {})

    plan = plan_sync(model(runtime="another"), moved, existing, T1)

    assert plan.apply == ()  # the artifact, runtime and lineage of a version never change


@pytest.mark.parametrize(
    ("version", "why"),
    [
        (registered("2", status="PENDING_REGISTRATION"), "registration pending"),
        (registered("2", status="FAILED_REGISTRATION"), "registration failed"),
        (registered("2", storage_uri="mlflow-artifacts:/1/models/m-2/artifacts"), "scheme mlflow-artifacts"),
        (registered("2", storage_uri="file:///mlruns/1/models/m-2"), "scheme file"),
        (registered("2", storage_uri=""), "no storage location"),
    ],
)
def test_a_version_that_cannot_be_served_is_skipped_with_the_reason(
    version: RegisteredVersion, why: str
) -> None:
    plan = plan_sync(model(), Snapshot("iris", (registered("1"), version), {}), {}, T0)

    assert [m["metadata"]["name"] for m in plan.apply] == ["iris-v1"]
    assert why in plan.skipped["2"]
    synced = get_condition(plan.source.conditions, SYNCED)
    assert synced is not None
    assert synced.reason == SyncReason.PARTIAL.value
    assert "1 of 2 versions not mirrored: 2:" in synced.message


def test_a_version_name_taken_by_a_hand_made_model_version_is_not_overwritten() -> None:
    manifest = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {}, T0).apply[0]
    foreign = applied({**manifest, "metadata": {**manifest["metadata"], "labels": {}}})

    plan = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {"iris-v1": foreign}, T1)

    assert plan.apply == ()
    assert "not made by the sync" in plan.skipped["1"]


def test_a_version_deleted_in_mlflow_is_marked_never_removed_and_keeps_its_immutable_fields() -> None:
    first = plan_sync(
        model(), Snapshot("iris", (registered("1"), registered("2")), {}, {"run1": RUN}), {}, T0
    )
    existing = {m["metadata"]["name"]: applied(m) for m in first.apply}

    plan = plan_sync(model(), Snapshot("iris", (registered("2"),), {}), existing, T1)

    assert len(plan.apply) == 1
    mark = plan.apply[0]
    assert mark["metadata"]["name"] == "iris-v1"
    assert mark["metadata"]["annotations"][DELETED_ANNOTATION] == "2026-05-01T10:01:00Z"
    # exactly as first applied (as the API server holds them)
    assert mark["spec"]["artifact"] == first.apply[0]["spec"]["artifact"]
    assert mark["spec"]["lineage"] == first.apply[0]["spec"]["lineage"]
    # marked once: the next sync leaves it
    existing["iris-v1"] = applied(mark)
    assert plan_sync(model(), Snapshot("iris", (registered("2"),), {}), existing, T1).apply == ()


def test_a_version_back_in_mlflow_loses_its_deleted_mark() -> None:
    first = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {}, T0).apply[0]
    marked = {**first, "metadata": {**first["metadata"], "annotations": {**first["metadata"]["annotations"]}}}
    marked["metadata"]["annotations"][DELETED_ANNOTATION] = "2026-05-01T10:00:00Z"

    plan = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {"iris-v1": applied(marked)}, T1)

    assert len(plan.apply) == 1
    assert DELETED_ANNOTATION not in plan.apply[0]["metadata"]["annotations"]


def test_aliases_point_at_the_model_versions_and_the_source_status_says_synced() -> None:
    snapshot = Snapshot("iris", (registered("1"), registered("2")), {"champion": "2", "challenger": "1"})

    plan = plan_sync(model(), snapshot, {}, T0)

    assert plan.source.aliases == {"challenger": "iris-v1", "champion": "iris-v2"}
    assert plan.source.versions_seen == 2
    assert plan.source.last_sync_time == T0
    synced = get_condition(plan.source.conditions, SYNCED)
    assert synced is not None
    assert synced.status == ConditionStatus.TRUE
    assert synced.reason == "Synced"
    assert synced.observed_generation == 3


def test_versions_are_mirrored_in_numeric_order() -> None:
    snapshot = Snapshot("iris", tuple(registered(n) for n in ("10", "9", "1")), {})
    plan = plan_sync(model(), snapshot, {}, T0)
    assert [m["metadata"]["name"] for m in plan.apply] == ["iris-v1", "iris-v9", "iris-v10"]


def test_tags_written_back_follow_the_versions_status() -> None:
    manifests = plan_sync(model(), Snapshot("iris", (registered("1"), registered("2")), {}), {}, T0).apply
    serving = applied({**manifests[0], "status": {"phase": "Serving", "servedBy": ["iris", "iris-eu"]}})
    retired = applied({**manifests[1], "status": {"phase": "Retired"}})
    snapshot = Snapshot("iris", (registered("1", tags={PHASE_TAG: "Retired"}), registered("2")), {})

    plan = plan_sync(model(), snapshot, {"iris-v1": serving, "iris-v2": retired}, T1)

    assert set(plan.tags) == {
        TagChange("1", PHASE_TAG, "Serving"),
        TagChange("1", DEPLOYMENTS_TAG, "iris,iris-eu"),
        TagChange("2", PHASE_TAG, "Retired"),
    }


def test_tags_already_right_in_mlflow_are_not_written_again() -> None:
    manifest = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {}, T0).apply[0]
    serving = applied({**manifest, "status": {"phase": "Serving", "servedBy": ["iris"]}})
    tags = {PHASE_TAG: "Serving", DEPLOYMENTS_TAG: "iris"}

    plan = plan_sync(model(), Snapshot("iris", (registered("1", tags=tags),), {}), {"iris-v1": serving}, T1)

    assert plan.tags == ()


def test_a_tag_no_longer_true_is_deleted() -> None:
    manifest = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {}, T0).apply[0]
    ready = applied({**manifest, "status": {"phase": "Ready"}})
    tags = {PHASE_TAG: "Serving", DEPLOYMENTS_TAG: "iris", ROLLBACK_REASON_TAG: "old"}

    plan = plan_sync(model(), Snapshot("iris", (registered("1", tags=tags),), {}), {"iris-v1": ready}, T1)

    assert set(plan.tags) == {
        TagChange("1", PHASE_TAG, None),
        TagChange("1", DEPLOYMENTS_TAG, None),
        TagChange("1", ROLLBACK_REASON_TAG, None),
    }


def test_a_failed_sync_keeps_what_was_known_and_says_why() -> None:
    synced = plan_sync(model(), Snapshot("iris", (registered("1"),), {"champion": "1"}), {}, T0).source
    known = Model.from_k8s({**model().to_k8s(), "status": {"source": synced.to_k8s()}})

    source = failed_sync(known, SyncReason.UNREACHABLE, "tracking server did not answer in 10s", T1)

    assert source.aliases == {"champion": "iris-v1"}
    assert source.versions_seen == 1
    assert source.last_sync_time == T0
    condition = get_condition(source.conditions, SYNCED)
    assert condition is not None
    assert condition.status == ConditionStatus.FALSE
    assert condition.reason == "Unreachable"
    assert condition.message == "tracking server did not answer in 10s"


def test_version_names() -> None:
    assert version_name("iris", "7") == "iris-v7"


def _imported(status: dict[str, Any] | None = None, deleted: bool = True) -> ModelVersion:
    manifest = plan_sync(model(), Snapshot("iris", (registered("1"),), {}), {}, T0).apply[0]
    if deleted:
        manifest["metadata"]["annotations"][DELETED_ANNOTATION] = "2026-05-01T10:01:00Z"
    return applied({**manifest, "status": status or {}})


def test_a_version_deleted_in_mlflow_is_not_servable_any_more() -> None:
    from modelfleet.registry import Reason, servability

    check = servability(model(), _imported())

    assert not check.servable
    assert check.reason == Reason.DELETED_AT_SOURCE
    assert "deleted in MLflow (noticed 2026-05-01T10:01:00Z)" in check.message


def test_a_serving_version_deleted_in_mlflow_keeps_serving_and_retires_once_nothing_serves_it() -> None:
    from modelfleet.api import ModelVersionPhase
    from modelfleet.registry import version_status

    serving = version_status(model(), _imported({"phase": "Serving"}), ["iris"], now=T1)
    assert serving.phase == ModelVersionPhase.SERVING
    ready = get_condition(serving.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "DeletedAtSource"
    assert ready.message.startswith("serving in Deployment iris; ModelVersion iris-v1: deleted in MLflow")

    after = version_status(model(), _imported(serving.to_k8s()), [], now=T1)
    assert after.phase == ModelVersionPhase.RETIRED


def test_a_rolled_back_version_is_tagged_rolled_back_with_the_reason_from_its_record() -> None:
    manifest = plan_sync(model(), Snapshot("iris", (registered("2"),), {}), {}, T0).apply[0]
    record = [
        {
            "deployment": "iris",
            "result": "RolledBack",
            "reason": "error-rate 0.31 > 0.05",
            "startedAt": "2026-05-01T10:00:00Z",
            "finishedAt": "2026-05-01T10:02:00Z",
        },
        {"deployment": "iris-eu", "result": "Promoted", "finishedAt": "2026-04-01T10:00:00Z"},
    ]
    rolled_back = applied({**manifest, "status": {"phase": "Ready", "history": record}})

    plan = plan_sync(model(), Snapshot("iris", (registered("2"),), {}), {"iris-v2": rolled_back}, T1)

    assert set(plan.tags) == {
        TagChange("2", PHASE_TAG, "RolledBack"),
        TagChange("2", ROLLBACK_REASON_TAG, "iris: error-rate 0.31 > 0.05"),
    }


def test_the_phase_tag_is_written_after_the_others_of_its_version() -> None:
    """A reader who sees `RolledBack` (or `Serving`) finds the reason (or the Deployments) already there."""
    manifest = plan_sync(model(), Snapshot("iris", (registered("2"),), {}), {}, T0).apply[0]
    record = [{"deployment": "iris", "result": "RolledBack", "reason": "drift 0.4 > 0.25"}]
    rolled_back = applied({**manifest, "status": {"phase": "Ready", "history": record}})

    plan = plan_sync(model(), Snapshot("iris", (registered("2"),), {}), {"iris-v2": rolled_back}, T1)

    assert [change.key for change in plan.tags] == [ROLLBACK_REASON_TAG, PHASE_TAG]


@pytest.mark.parametrize(
    ("flavors", "why"),
    [((), "no MLmodel file"), (("sklearn",), "no python_function flavor (sklearn)")],
)
def test_a_version_that_is_not_a_servable_mlflow_model_is_skipped(flavors: tuple[str, ...], why: str) -> None:
    snapshot = Snapshot("iris", (registered("1", flavors=flavors),), {})
    plan = plan_sync(model(), snapshot, {}, T0)
    assert plan.apply == ()
    assert why in plan.skipped["1"]


def test_a_pyfunc_model_is_mirrored() -> None:
    snapshot = Snapshot("iris", (registered("1", flavors=("python_function", "sklearn")),), {})
    assert len(plan_sync(model(), snapshot, {}, T0).apply) == 1


def test_an_approval_added_later_reapplies_the_immutable_fields_exactly_as_stored() -> None:
    """The API server refuses `lineage` or `artifact` that differ in any way from what it holds, defaults
    added included (`datasets: []`, `repository: ""`): a later apply sends them byte for byte."""
    run = Run(
        run_id="run2", experiment_id="1", params={"build": "3"}, tags={"mlflow.source.git.commit": "bad0bad"}
    )
    first = plan_sync(model(), Snapshot("iris", (registered("2"),), {}, {"run2": run}), {}, T0).apply[0]
    stored = applied(first)
    approved = Snapshot(
        "iris", (registered("2", tags={"modelfleet.io/approved": "true"}),), {}, {"run2": run}
    )

    again = plan_sync(model(), approved, {"iris-v2": stored}, T1).apply

    assert len(again) == 1
    assert again[0]["spec"]["lineage"] == first["spec"]["lineage"]
    assert again[0]["spec"]["artifact"] == first["spec"]["artifact"]
    assert again[0]["spec"]["approval"]["approved"] is True


def test_a_sync_that_finds_nothing_new_leaves_the_source_status_alone_for_five_minutes() -> None:
    snapshot = Snapshot("iris", (registered("1"),), {"champion": "1"})
    synced = plan_sync(model(), snapshot, {}, T0).source
    known = Model.from_k8s({**model().to_k8s(), "status": {"source": synced.to_k8s()}})

    soon = plan_sync(known, snapshot, {}, T0 + timedelta(minutes=1)).source
    later = plan_sync(known, snapshot, {}, T0 + timedelta(minutes=6)).source
    moved = plan_sync(known, Snapshot("iris", (registered("1"),), {}), {}, T0 + timedelta(minutes=1)).source

    assert soon == known.status.source  # nothing to write
    assert later.last_sync_time == T0 + timedelta(minutes=6)
    assert moved.aliases == {}
    assert moved.last_sync_time == T0 + timedelta(minutes=1)
