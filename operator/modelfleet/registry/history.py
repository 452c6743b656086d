"""A ModelVersion's production record (`status.history`), from what the Deployments' statuses say.

Pure functions, in two halves:
- `deployment_records` reads one Deployment's status: for each version it names, whether it is the
  stable version and what happened to it there. The entries of its `history` that name the version
  (Superseded counts as Aborted: the rollout stopped before it ended, the reason says why), and what
  the history implies: a stable version replaced by a promotion is Retired then, and a version that
  becomes stable again when its successor is rolled back after promotion is Promoted then. The
  registry controller keeps this in a kopf index, so it is read from memory.
- `production_record` merges those into the record a version already has: an entry seen again is
  the same entry (same Deployment, result and times), so merging twice, or after a restart, gives
  the same record. A version the record shows as stable in a Deployment that no longer has it as
  stable and says nothing of it (the Deployment was deleted) is Retired now. The newest 20 are kept,
  newest first, so entries outlive the Deployment's own trimmed history and the Deployment itself.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from modelfleet.api import (
    VERSION_HISTORY_LIMIT,
    DeploymentStatus,
    ProductionEntry,
    ProductionResult,
    RolloutResult,
)

#: The Deployment's rollout results as production results.
RESULTS = {
    RolloutResult.PROMOTED: ProductionResult.PROMOTED,
    RolloutResult.ROLLED_BACK: ProductionResult.ROLLED_BACK,
    RolloutResult.ABORTED: ProductionResult.ABORTED,
    RolloutResult.SUPERSEDED: ProductionResult.ABORTED,
}
#: How `status.message` says each result.
WORDS = {
    ProductionResult.PROMOTED: "promoted",
    ProductionResult.ROLLED_BACK: "rolled back",
    ProductionResult.ABORTED: "aborted",
    ProductionResult.RETIRED: "retired",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Outcome(NamedTuple):
    """One entry of a version's record in one Deployment (a `ProductionEntry` without the Deployment's
    name: slim, as the index keeps one per entry of every Deployment's history)."""

    result: ProductionResult
    reason: str
    started_at: datetime | None
    finished_at: datetime | None


class DeploymentRecord(NamedTuple):
    """What one Deployment's status says of one version."""

    deployment: str
    stable: bool
    """The version is the Deployment's `status.stableVersion`."""
    outcomes: tuple[Outcome, ...] = ()
    """Newest first."""

    def entries(self) -> list[ProductionEntry]:
        return [
            ProductionEntry(
                deployment=self.deployment,
                result=o.result,
                reason=o.reason,
                started_at=o.started_at,
                finished_at=o.finished_at,
            )
            for o in self.outcomes
        ]


def deployment_records(deployment: str, status: DeploymentStatus) -> dict[str, DeploymentRecord]:
    """Version -> what the Deployment's status says of it, for every version its history names and
    its stable version.

    The history is read oldest first, following the stable version: a promotion retires the stable
    version it replaces (from when that became stable); a rollback of the stable version itself
    (degraded after promotion) makes the version stable before it stable again. Where the history is
    trimmed and the stable version before an entry is not known, nothing is inferred.
    """
    found: dict[str, list[Outcome]] = {}

    def add(version: str, outcome: Outcome) -> None:
        found.setdefault(version, []).append(outcome)

    stable, since, previous = "", None, ""  # "" = not known (yet)
    for entry in reversed(status.history):
        at = entry.finished_at
        own = Outcome(RESULTS[entry.result], entry.reason, entry.started_at, at)
        if entry.result == RolloutResult.PROMOTED:
            if stable != entry.version:
                if stable:
                    add(stable, Outcome(ProductionResult.RETIRED, f"replaced by {entry.version}", since, at))
                previous = stable
            stable, since = entry.version, at
            add(entry.version, own)
        elif entry.result == RolloutResult.ROLLED_BACK and stable and entry.version == stable:
            add(entry.version, own)
            if previous:
                again = f"stable again after {entry.version} was rolled back"
                add(previous, Outcome(ProductionResult.PROMOTED, again, at, at))
            stable, since, previous = previous, at, ""
        else:
            add(entry.version, own)
    if status.stable_version:
        found.setdefault(status.stable_version, [])
    return {
        version: DeploymentRecord(deployment, version == status.stable_version, tuple(reversed(outcomes)))
        for version, outcomes in found.items()
    }


Mark = tuple[bool, ProductionResult | None, datetime | None]
"""What changes when a version's record in a Deployment does: (stable, result and finish of the newest
history entry naming it). An inferred entry (Retired, stable again) comes with a change of stable."""


def record_marks(status: DeploymentStatus) -> dict[str, Mark]:
    """Version -> its mark, for every version the Deployment's history names and its stable version.
    Cheap (no inference): the registry compares marks on every event of a Deployment."""
    marks: dict[str, Mark] = {}
    for entry in status.history:  # newest first: the first entry naming a version is its newest
        if entry.version not in marks:
            marks[entry.version] = (
                entry.version == status.stable_version,
                RESULTS[entry.result],
                entry.finished_at,
            )
    if status.stable_version and status.stable_version not in marks:
        marks[status.stable_version] = (True, None, None)
    return marks


def mark_changes(old: Mapping[str, Mark], new: Mapping[str, Mark]) -> set[str]:
    """Versions whose record in a Deployment may have changed between two observations of it."""
    return {v for v in old.keys() | new.keys() if old.get(v) != new.get(v)}


# --- the record of one version ---------------------------------------------------------------------


def _key(entry: ProductionEntry) -> tuple[str, ProductionResult, datetime | None, datetime | None]:
    """The same Deployment entry, seen again, has the same key (whatever its reason's wording)."""
    return entry.deployment, entry.result, entry.started_at, entry.finished_at


def _age(entry: ProductionEntry) -> tuple[datetime, int, str, str]:
    """Sort key, oldest first: by time; at the same second a start (Promoted) before an end."""
    at = entry.finished_at or entry.started_at or _EPOCH
    return at, entry.result != ProductionResult.PROMOTED, entry.deployment, entry.result.value


def production_record(
    old: Sequence[ProductionEntry],
    seen: Iterable[DeploymentRecord],
    *,
    now: datetime,
    present: Container[str] | None = None,
    served_before: Iterable[str] = (),
    served_now: Iterable[str] = (),
) -> tuple[ProductionEntry, ...]:
    """The new production record of a version: its `old` record, with what the Deployments' statuses
    say of it (`seen`, one per Deployment that names it) merged in, newest first, at most 20.

    A Deployment in which the record's newest entry is Promoted (the version is stable there) but
    which no longer has it as stable and says nothing that ends it (deleted, or its history trimmed)
    retires it now: reason `Deployment D deleted` when `present` (the Deployments that exist; None:
    not known) lacks D, else `no longer stable in Deployment D`. So does a deleted Deployment that
    served the version at the last look (`served_before`, the old `servedBy`) and serves it no more
    (`served_now`) where the record has no open entry (a record begun after the promotion): since when
    is not known then.
    """
    records = list(seen)
    merged: dict[tuple[str, ProductionResult, datetime | None, datetime | None], ProductionEntry] = {}
    for entry in (*old, *(e for r in records for e in r.entries())):
        merged.setdefault(_key(entry), entry)

    newest: dict[str, ProductionEntry] = {}
    for entry in sorted(merged.values(), key=_age):
        newest[entry.deployment] = entry
    stable_in = {r.deployment for r in records if r.stable}
    gone = {d for d in served_before if present is not None and d not in present}
    gone -= {r.deployment for r in records} | set(served_now)
    ended: dict[str, datetime | None] = {}  # Deployment -> since when the version was stable there
    for deployment, last in newest.items():
        if last.result == ProductionResult.PROMOTED and deployment not in stable_in:
            ended[deployment] = last.finished_at
    for deployment in gone:
        ended.setdefault(deployment, None)
    for deployment, since in sorted(ended.items()):
        reason = (
            f"Deployment {deployment} deleted"
            if present is not None and deployment not in present
            else f"no longer stable in Deployment {deployment}"
        )
        retired = ProductionEntry(
            deployment=deployment,
            result=ProductionResult.RETIRED,
            reason=reason,
            started_at=since,
            finished_at=now,
        )
        merged.setdefault(_key(retired), retired)
    return tuple(sorted(merged.values(), key=_age, reverse=True)[:VERSION_HISTORY_LIMIT])


def outcome_text(entry: ProductionEntry) -> str:
    """The entry in words, for `status.message`: `rolled back in iris: errors 0.31 > 0.05`."""
    words = WORDS[entry.result]
    reason = entry.reason.removeprefix(f"{words} ")  # `aborted by hand` reads `aborted in iris: by hand`
    return f"{words} in {entry.deployment}" + (f": {reason}" if reason else "")
