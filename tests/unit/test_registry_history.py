"""A ModelVersion's production record (`status.history`): given Deployments whose statuses the rollout
state machine wrote, when the registry computes a version's status, then the record and the message
say what happened to the version in each Deployment."""

from __future__ import annotations

from datetime import datetime, timedelta

from rollout_world import ABORT, World, deployment_spec

from modelfleet.api import (
    DeploymentStatus,
    Model,
    ModelVersion,
    ModelVersionPhase,
    ModelVersionStatus,
    ProductionEntry,
    ProductionResult,
    Verdict,
)
from modelfleet.registry import observe, observed_changes, version_status
from modelfleet.registry.history import DeploymentRecord, deployment_records, production_record

PROMOTED, ROLLED_BACK = ProductionResult.PROMOTED, ProductionResult.ROLLED_BACK
ABORTED, RETIRED = ProductionResult.ABORTED, ProductionResult.RETIRED
IMMEDIATE = {"type": "Immediate"}


def model() -> Model:
    return Model.from_k8s({"metadata": {"name": "iris", "namespace": "ml", "generation": 1}, "spec": {}})


def version(name: str, status: ModelVersionStatus | None = None) -> ModelVersion:
    return ModelVersion.from_k8s(
        {
            "metadata": {"name": name, "namespace": "ml", "generation": 1},
            "spec": {"model": "iris", "version": name.rsplit("v", 1)[-1], "image": f"localhost/{name}:1"},
            "status": status.to_k8s() if status is not None else {},
        }
    )


class Registry:
    """The registry's view of a namespace: the Deployments' statuses (as its index holds them) and the
    statuses it wrote for each version. Nothing else is remembered: `restarted()` forgets nothing that
    matters, because everything that matters is in the statuses."""

    def __init__(self, **deployments: World) -> None:
        self.deployments = deployments
        self.statuses: dict[str, ModelVersionStatus] = {}

    def status_of(self, name: str, now: datetime | None = None) -> ModelVersionStatus:
        """Reconcile version `name` from the Deployments as they are, at `now` (default: the latest
        clock of the Deployments' worlds)."""
        now = now or max(w.now for w in self.deployments.values())
        records = [
            record
            for deployment, w in self.deployments.items()
            for v, record in deployment_records(deployment, w.status).items()
            if v == name
        ]
        served_by = [d for d, w in self.deployments.items() if name in served(w.status)]
        new = version_status(
            model(),
            version(name, self.statuses.get(name)),
            served_by,
            now=now,
            records=records,
            present=set(self.deployments),
        )
        self.statuses[name] = new
        return new

    def record(self, name: str) -> list[tuple[str, ProductionResult, str]]:
        return [(e.deployment, e.result, e.reason) for e in self.status_of(name).history]


def served(status: DeploymentStatus) -> set[str]:
    versions = {status.stable_version} if status.stable_version else set()
    if status.canary_version and status.canary_weight > 0:
        versions.add(status.canary_version)
    return versions


def promote(world: World, name: str, after: float = 60) -> World:
    """An Immediate rollout of `name`, ready at once: it is stable after one decision."""
    world.tick(after).change(version=name).ready(name).decide()
    assert world.status.stable_version == name, world.status.message
    return world


def canary(world: World, name: str, after: float = 60) -> World:
    """A canary of `name` at its first step (weight 10, so it serves)."""
    world.tick(after).rolling_out(name)
    assert world.status.canary_weight == 10, world.status.message
    return world


# --- promoted, then retired ------------------------------------------------------------------------


def test_a_version_promoted_then_replaced_is_retired_from_when_it_became_stable() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    registry = Registry(iris=iris)
    promoted_at = iris.now
    assert registry.record("iris-v1") == [("iris", PROMOTED, "first version")]
    assert registry.status_of("iris-v1").phase == ModelVersionPhase.SERVING
    assert registry.status_of("iris-v1").message == "serving in Deployment iris"

    promote(iris, "iris-v2")

    status = registry.status_of("iris-v1")
    assert status.phase == ModelVersionPhase.RETIRED
    retired, first = status.history
    assert (retired.result, retired.reason) == (RETIRED, "replaced by iris-v2")
    assert (retired.started_at, retired.finished_at) == (promoted_at, iris.now)
    assert (first.result, first.reason, first.finished_at) == (PROMOTED, "first version", promoted_at)
    assert status.message == "retired in iris: replaced by iris-v2"
    assert registry.record("iris-v2") == [("iris", PROMOTED, "pods ready (Immediate strategy)")]


# --- rolled back, aborted, superseded --------------------------------------------------------------


def test_a_canary_rolled_back_by_its_monitor_records_the_reason() -> None:
    iris = World(deployment_spec("iris-v1"), monitor="iris-quality").serving("iris-v1")
    registry = Registry(iris=iris)
    canary(iris, "iris-v2")
    started = iris.now
    assert registry.status_of("iris-v2").phase == ModelVersionPhase.SERVING

    iris.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()

    status = registry.status_of("iris-v2")
    (entry,) = status.history
    assert (entry.deployment, entry.result, entry.reason) == ("iris", ROLLED_BACK, "errors 0.31 > 0.05")
    assert (entry.started_at, entry.finished_at) == (started, iris.now)
    assert status.phase == ModelVersionPhase.RETIRED  # it served at 10%
    assert status.message == "rolled back in iris: errors 0.31 > 0.05"
    # the stable version's record is untouched
    assert registry.record("iris-v1") == [("iris", PROMOTED, "first version")]


def test_a_canary_that_never_served_and_was_rolled_back_is_ready_and_says_why() -> None:
    iris = World(deployment_spec("iris-v1", progressDeadline="1m")).serving("iris-v1")
    registry = Registry(iris=iris)
    iris.tick(60).change(version="iris-v2").decide()  # its pods never get ready
    iris.tick(61).decide()

    status = registry.status_of("iris-v2")
    assert status.phase == ModelVersionPhase.READY
    assert status.message == "rolled back in iris: canary pods not ready within 1m (0/1 ready)"


def test_an_aborted_rollout_is_aborted_by_hand() -> None:
    iris = World(deployment_spec("iris-v1")).serving("iris-v1")
    registry = Registry(iris=iris)
    canary(iris, "iris-v2")

    iris.tick(5).annotate(ABORT).decide()

    assert registry.record("iris-v2") == [("iris", ABORTED, "aborted by hand (modelfleet.io/abort)")]
    assert registry.status_of("iris-v2").message == "aborted in iris: by hand (modelfleet.io/abort)"


def test_a_superseded_rollout_counts_as_aborted_and_says_by_what() -> None:
    iris = World(deployment_spec("iris-v1")).serving("iris-v1")
    registry = Registry(iris=iris)
    canary(iris, "iris-v2")

    iris.tick(5).change(version="iris-v3").decide()

    assert registry.record("iris-v2") == [("iris", ABORTED, "superseded by iris-v3")]
    assert registry.status_of("iris-v2").message == "aborted in iris: superseded by iris-v3"


def test_a_version_degraded_after_promotion_is_rolled_back_and_its_predecessor_is_stable_again() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE), monitor="iris-quality")
    iris.serving("iris-v1")
    registry = Registry(iris=iris)
    promote(iris, "iris-v2")
    registry.status_of("iris-v1")

    iris.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    back_at = iris.now
    assert iris.status.stable_version == "iris-v1"

    assert registry.record("iris-v2") == [
        ("iris", ROLLED_BACK, "degraded after promotion: errors 0.31 > 0.05"),
        ("iris", PROMOTED, "pods ready (Immediate strategy)"),
    ]
    assert registry.record("iris-v1") == [
        ("iris", PROMOTED, "stable again after iris-v2 was rolled back"),
        ("iris", RETIRED, "replaced by iris-v2"),
        ("iris", PROMOTED, "first version"),
    ]
    assert registry.status_of("iris-v1").phase == ModelVersionPhase.SERVING

    # when a later promotion replaces it, it was stable since it came back
    iris.change(version="iris-v3")  # a new spec.version lets the Deployment roll out again
    promote(iris, "iris-v3")
    latest = registry.status_of("iris-v1").history[0]
    assert (latest.result, latest.reason, latest.started_at) == (RETIRED, "replaced by iris-v3", back_at)


# --- the same event twice, a restart, the bound ----------------------------------------------------


def test_the_same_deployment_entry_seen_twice_is_one_entry() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    promote(iris, "iris-v2")
    registry = Registry(iris=iris)
    first = registry.status_of("iris-v1")

    iris.tick(30)  # time passes, nothing happens
    again = registry.status_of("iris-v1")

    assert again == first
    assert [e.result for e in again.history] == [RETIRED, PROMOTED]


def test_an_entry_seen_with_another_wording_is_still_the_same_entry() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    promote(iris, "iris-v2")
    (record,) = [r for v, r in deployment_records("iris", iris.status).items() if v == "iris-v1"]
    reworded = [e.model_copy(update={"reason": e.reason.upper()}) for e in record.entries()]

    merged = production_record(reworded, [record], now=iris.now)

    assert [e.reason for e in merged] == ["REPLACED BY IRIS-V2", "FIRST VERSION"]


def test_a_restarted_operator_computes_the_same_record_from_the_statuses_alone() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    promote(iris, "iris-v2")
    before = Registry(iris=iris)
    written = before.status_of("iris-v1")

    # a new process: no memory, only the ModelVersion's status as written and the Deployment's
    after = Registry(iris=iris)
    after.statuses["iris-v1"] = written
    iris.tick(600)

    assert after.status_of("iris-v1") == written


def test_a_version_from_before_the_record_existed_gets_it_from_the_deployment_history() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    promote(iris, "iris-v2")
    registry = Registry(iris=iris)
    registry.statuses["iris-v1"] = ModelVersionStatus(phase=ModelVersionPhase.RETIRED)  # no history

    assert [e.result for e in registry.status_of("iris-v1").history] == [RETIRED, PROMOTED]


def test_the_record_keeps_the_newest_20_entries_newest_first() -> None:
    iris = World(deployment_spec("iris-v1"), monitor="iris-quality").serving("iris-v1")
    registry = Registry(iris=iris)
    for _ in range(25):  # iris-v2 tried 25 times, rolled back each time
        iris.tick(60).change(version="iris-v2").ready("iris-v2").decide()
        iris.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
        registry.status_of("iris-v2")
        iris.change(version="iris-v1").decide()

    history = registry.status_of("iris-v2").history
    assert len(history) == 20
    finished = [e.finished_at for e in history]
    assert finished == sorted(finished, reverse=True)  # type: ignore[type-var]
    assert history[0].finished_at == iris.status.history[0].finished_at  # the newest is kept


def test_a_status_written_with_a_longer_record_still_parses_with_the_newest_20() -> None:
    entries = [{"deployment": "iris", "result": "RolledBack", "reason": f"try {i}"} for i in range(30)]
    status = ModelVersionStatus.model_validate({"history": entries})
    assert [e.reason for e in status.history] == [f"try {i}" for i in range(20)]


# --- the record outlives the Deployment's history and the Deployment -------------------------------


def test_the_record_outlives_the_deployments_trimmed_history() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    registry = Registry(iris=iris)
    promote(iris, "iris-v2")
    kept = registry.status_of("iris-v1").history
    for n in range(3, 25):  # 22 promotions later, the Deployment's history no longer names iris-v1
        promote(iris, f"iris-v{n}")
    assert "iris-v1" not in {h.version for h in iris.status.history}

    assert registry.status_of("iris-v1").history == kept


def test_a_deleted_deployment_retires_its_stable_version_and_keeps_every_record() -> None:
    iris = World(deployment_spec("iris-v1"), monitor="iris-quality").serving("iris-v1")
    registry = Registry(iris=iris)
    canary(iris, "iris-v2")
    iris.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    rolled_back = registry.status_of("iris-v2").history
    stable_record = registry.status_of("iris-v1").history

    del registry.deployments["iris"]
    deleted_at = iris.now + timedelta(hours=1)

    # nothing new for iris-v2: it did not serve there any more
    assert registry.status_of("iris-v2", now=deleted_at).history == rolled_back
    status = registry.status_of("iris-v1", now=deleted_at)
    retired, *older = status.history
    assert (retired.deployment, retired.result, retired.reason) == (
        "iris",
        RETIRED,
        "Deployment iris deleted",
    )
    assert (retired.started_at, retired.finished_at) == (stable_record[0].finished_at, deleted_at)
    assert tuple(older) == stable_record
    assert status.phase == ModelVersionPhase.RETIRED
    assert status.message == "retired in iris: Deployment iris deleted"
    # and once written, seeing the same again adds nothing
    assert registry.status_of("iris-v1", now=deleted_at + timedelta(hours=1)) == status


def test_a_stable_version_the_deployment_no_longer_names_is_retired_as_such() -> None:
    record = ProductionEntry(deployment="iris", result=PROMOTED, reason="first version")
    (retired, _) = production_record([record], [], now=World().now, present={"iris"})
    assert (retired.result, retired.reason) == (RETIRED, "no longer stable in Deployment iris")


# --- several Deployments -----------------------------------------------------------------------------


def test_the_record_merges_every_deployment_newest_first() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    eu = World(deployment_spec("iris-v1"), monitor="eu-quality").tick(30).serving("iris-v1")
    registry = Registry(iris=iris, eu=eu)
    canary(eu, "iris-v2")
    eu.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()  # at T0 + 92s
    promote(iris, "iris-v2", after=120)  # at T0 + 120s

    status = registry.status_of("iris-v2")
    assert [(e.deployment, e.result) for e in status.history] == [("iris", PROMOTED), ("eu", ROLLED_BACK)]
    assert status.phase == ModelVersionPhase.SERVING
    assert status.message == "serving in Deployment iris"


# --- what wakes a version's reconcile -----------------------------------------------------------------


def changes(before: DeploymentStatus | None, after: DeploymentStatus | None) -> set[str]:
    old = observe("iris", before) if before is not None else None
    new = observe("iris", after) if after is not None else None
    return observed_changes(old, new)[1]


def test_a_new_history_entry_wakes_its_version_and_a_measurement_wakes_none() -> None:
    iris = World(deployment_spec("iris-v1"), monitor="iris-quality").serving("iris-v1")
    canary(iris, "iris-v2")
    at_step = iris.status
    iris.measure(Verdict.FAIL).decide()  # one failure: status changes, nothing to record
    once = iris.status
    assert once != at_step
    assert changes(at_step, once) == set()

    iris.measure(Verdict.FAIL).decide()  # rolled back: an entry, and iris-v2 stops serving
    assert changes(once, iris.status) == {"iris-v2"}


def test_a_canary_rolled_back_before_it_served_still_wakes_its_version() -> None:
    iris = World(deployment_spec("iris-v1", progressDeadline="1m")).serving("iris-v1")
    iris.tick(60).change(version="iris-v2").decide()
    waiting = iris.status
    iris.tick(61).decide()
    assert served(waiting) == served(iris.status) == {"iris-v1"}
    assert changes(waiting, iris.status) == {"iris-v2"}


def test_a_promotion_wakes_both_versions_and_a_deletion_every_version_named() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    before = iris.status
    promote(iris, "iris-v2")
    assert changes(before, iris.status) == {"iris-v1", "iris-v2"}
    assert changes(iris.status, None) == {"iris-v1", "iris-v2"}
    assert changes(None, iris.status) == {"iris-v1", "iris-v2"}  # a restart: seen for the first time


def test_the_index_is_slim_and_names_only_what_the_history_and_the_stable_version_name() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    promote(iris, "iris-v2")
    records = deployment_records("iris", iris.status)
    assert {v: r.stable for v, r in records.items()} == {"iris-v1": False, "iris-v2": True}
    # a stable version its trimmed history no longer names is still named, as stable
    trimmed = DeploymentStatus(stable_version="iris-v7")
    assert deployment_records("iris", trimmed) == {"iris-v7": DeploymentRecord("iris", stable=True)}


def test_times_are_those_of_the_deployment_not_of_the_registry() -> None:
    iris = World(deployment_spec("iris-v1", strategy=IMMEDIATE)).serving("iris-v1")
    promote(iris, "iris-v2")
    replaced_at = iris.now
    iris.tick(3600)  # the registry sees it an hour late (an operator that was down)
    retired = Registry(iris=iris).status_of("iris-v1").history[0]
    assert retired.finished_at == replaced_at
    assert iris.now - replaced_at == timedelta(hours=1)


def test_a_version_serving_in_a_deployment_deleted_before_its_record_began_is_retired_since_unknown() -> None:
    # given a status written before the record existed: iris-v1 served by iris, no history
    iris = World(deployment_spec("iris-v1")).serving("iris-v1")
    before = ModelVersionStatus(phase=ModelVersionPhase.SERVING, served_by=("iris",))
    registry = Registry(iris=iris)
    registry.statuses["iris-v1"] = before
    del registry.deployments["iris"]

    status = registry.status_of("iris-v1", now=iris.now)

    (retired,) = status.history
    assert (retired.result, retired.reason, retired.started_at) == (RETIRED, "Deployment iris deleted", None)
    assert status.phase == ModelVersionPhase.RETIRED


def test_without_knowing_which_deployments_exist_nothing_is_inferred_from_an_absence() -> None:
    # the registry run alone (its own tests) has no cache of Deployments: served_by alone proves nothing
    before = ModelVersionStatus(phase=ModelVersionPhase.SERVING, served_by=("iris",))
    assert production_record((), [], now=World().now, present=None, served_before=before.served_by) == ()
    # an open entry still ends, in words that hold either way
    promoted = ProductionEntry(deployment="iris", result=PROMOTED, reason="first version")
    (retired, _) = production_record([promoted], [], now=World().now, present=None)
    assert retired.reason == "no longer stable in Deployment iris"


def test_a_canary_serving_in_a_live_deployment_is_not_retired_for_want_of_a_history_entry() -> None:
    iris = World(deployment_spec("iris-v1")).serving("iris-v1")
    registry = Registry(iris=iris)
    canary(iris, "iris-v2")  # no history entry names iris-v2 yet
    registry.status_of("iris-v2")
    assert registry.status_of("iris-v2").history == ()
