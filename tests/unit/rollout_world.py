"""A small world for rollout tests: one Deployment, its pods, its Monitor and a clock.

Tests read as scenarios: given a world, when something happens (`tick`, `ready`, `measure`, `annotate`,
`change`, an MLflow alias that moves: `alias`), then `decide()` and look at the status and the actions.
The version the spec asks for is resolved as the controller resolves it (`resolve_target` against the
world's Model), so a spec that follows an alias goes through the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.api.deployment import DeploymentPhase, DeploymentSpec, DeploymentStatus
from modelfleet.api.model import Model
from modelfleet.api.monitor import Measurement, MetricResult, OnDegraded, Verdict
from modelfleet.rollout import (
    SERVABLE,
    ConsumeAnnotation,
    Decision,
    EnsureVersion,
    Event,
    MonitorObservation,
    Observation,
    RemoveVersion,
    Servability,
    SetTraffic,
    decide,
    resolve_target,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PROMOTE = "modelfleet.io/promote"
ABORT = "modelfleet.io/abort"
RETRY = "modelfleet.io/retry"

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "30s"}},
    {"setWeight": 50},
    {"pause": {"duration": "1m"}},
]

RESULTS: dict[Verdict, MetricResult] = {
    Verdict.PASS: MetricResult(name="errors", value=0.01, threshold="<= 0.05", verdict=Verdict.PASS),
    Verdict.FAIL: MetricResult(
        name="errors", value=0.31, threshold="<= 0.05", verdict=Verdict.FAIL, message="errors 0.31 > 0.05"
    ),
    Verdict.INCONCLUSIVE: MetricResult(
        name="errors",
        threshold="<= 0.05",
        verdict=Verdict.INCONCLUSIVE,
        message="3 requests < minRequests 20",
    ),
    Verdict.ERROR: MetricResult(
        name="errors", threshold="<= 0.05", verdict=Verdict.ERROR, message="router scrape failed"
    ),
}


def deployment_spec(version: str = "v1", *, alias: str = "", **fields: Any) -> DeploymentSpec:
    """A Deployment of Model iris naming `version`, or following the MLflow `alias` when given."""
    strategy = fields.pop("strategy", {"canary": {"steps": STEPS}})
    asks = {"versionFrom": {"mlflowAlias": alias}} if alias else {"version": version}
    return DeploymentSpec.model_validate({"model": "iris", **asks, "strategy": strategy, **fields})


def mlflow_model(aliases: dict[str, str], *, synced: bool = True, source: bool = True) -> Model:
    """Model iris mirrored from MLflow, with the aliases its last sync saw (none synced yet: `synced`)."""
    spec = {"mlflow": {"trackingUri": "http://mlflow.mlflow.svc:5000", "registeredModel": "iris"}}
    status = {"aliases": aliases, **({"lastSyncTime": "2024-05-01T11:59:00Z"} if synced else {})}
    return Model.from_k8s(
        {
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"source": spec} if source else {},
            "status": {"source": status} if synced or aliases else {},
        }
    )


class World:
    def __init__(
        self,
        spec: DeploymentSpec | None = None,
        *,
        monitor: str | None = None,
        failure_limit: int = 2,
        error_limit: int = 4,
        on_degraded: OnDegraded = OnDegraded.ROLLBACK,
    ) -> None:
        self.spec = spec or deployment_spec()
        self.status = DeploymentStatus()
        self.now = T0
        self.generation = 1
        self.ready_replicas: dict[str, int] = {}
        self.annotations: set[str] = set()
        self.servability = SERVABLE
        self.fallback = SERVABLE
        """Of spec.fallback.version."""
        self.monitor_name = monitor
        self.failure_limit = failure_limit
        self.error_limit = error_limit
        self.on_degraded = on_degraded
        self.measurements: list[Measurement] = []
        self.model: Model | None = mlflow_model({})
        """The Model as the Deployment's controller reads it (None: it does not exist)."""
        self.last: Decision | None = None

    # --- when -------------------------------------------------------------------------------------

    def decide(self) -> Decision:
        monitor = None
        if self.monitor_name is not None:
            monitor = MonitorObservation(
                name=self.monitor_name,
                failure_limit=self.failure_limit,
                error_limit=self.error_limit,
                on_degraded=self.on_degraded,
                measurements=tuple(self.measurements),
            )
        target = resolve_target(self.spec, self.model)
        observation = Observation(
            generation=self.generation,
            servability=self.servability,
            fallback=self.fallback,
            target=target,
            ready_replicas=dict(self.ready_replicas),
            annotations=frozenset(self.annotations),
            monitor=monitor,
            endpoint="http://iris.ml.svc:80",
        )
        decision = decide(target.resolved(self.spec), self.status, observation, self.now)
        self.status = decision.status
        for action in decision.of_type(ConsumeAnnotation):
            self.annotations.discard(action.name)
        self.last = decision
        return decision

    def tick(self, seconds: float) -> World:
        self.now += timedelta(seconds=seconds)
        return self

    def ready(self, version: str, replicas: int | None = None) -> World:
        self.ready_replicas[version] = self.spec.replicas if replicas is None else replicas
        return self

    def not_ready(self, version: str) -> World:
        self.ready_replicas[version] = 0
        return self

    def annotate(self, name: str) -> World:
        self.annotations.add(name)
        return self

    def change(self, **fields: Any) -> World:
        """Edit the spec (fields as in YAML); bumps metadata.generation like the API server."""
        data = self.spec.to_k8s()
        if "version" in fields or "versionFrom" in fields:  # a spec names its version or follows an alias
            data.pop("version", None)
            data.pop("versionFrom", None)
        data.update(fields)
        self.spec = DeploymentSpec.model_validate(data)
        self.generation += 1
        return self

    def alias(self, name: str, version: str | None) -> World:
        """The Model's MLflow sync saw alias `name` point at `version` (None: the alias is gone)."""
        assert self.model is not None
        assert self.model.status.source is not None
        aliases = {**self.model.status.source.aliases, name: version or ""}
        self.model = mlflow_model({a: v for a, v in aliases.items() if v})
        return self

    def not_servable(self, reason: str) -> World:
        self.servability = Servability(False, reason)
        return self

    def measure(self, verdict: Verdict, version: str | None = None, after: float = 1.0) -> World:
        """A measurement of `version` (default: the canary, else the stable) `after` seconds from now."""
        self.tick(after)
        measured = version or self.status.canary_version or self.status.stable_version
        self.measurements.append(Measurement(time=self.now, version=measured, results=(RESULTS[verdict],)))
        return self

    # --- given ------------------------------------------------------------------------------------

    def serving(self, version: str = "v1") -> World:
        """Given `version` stable and healthy."""
        self.change(version=version)
        self.ready(version)
        self.decide()
        assert self.status.stable_version == version, self.status.message
        return self

    def following(self, alias: str = "champion", version: str = "v1") -> World:
        """Given the spec following MLflow `alias`, which points at `version`, stable and healthy."""
        data = {k: v for k, v in self.spec.to_k8s().items() if k not in {"version", "versionFrom"}}
        self.spec = DeploymentSpec.model_validate({**data, "versionFrom": {"mlflowAlias": alias}})
        self.generation += 1
        self.alias(alias, version).ready(version).decide()
        assert self.status.stable_version == version, self.status.message
        return self

    def rolling_out(self, version: str = "v2") -> World:
        """Given a rollout of `version` whose pods are ready and which has entered its first step."""
        self.change(version=version)
        self.ready(version)
        self.decide()
        assert self.status.canary_version == version, self.status.message
        return self

    # --- then -------------------------------------------------------------------------------------

    def phase(self) -> DeploymentPhase | None:
        return self.status.phase

    @property
    def decision(self) -> Decision:
        assert self.last is not None, "no decision yet"
        return self.last

    def traffic(self) -> SetTraffic:
        (traffic,) = self.decision.of_type(SetTraffic)
        return traffic

    def ensured(self) -> dict[str, int]:
        return {a.version: a.replicas for a in self.decision.of_type(EnsureVersion)}

    def removed(self) -> list[str]:
        return [a.version for a in self.decision.of_type(RemoveVersion)]

    def events(self) -> list[tuple[str, str]]:
        return [(e.type, e.reason) for e in self.decision.of_type(Event)]

    def condition(self, type_: str) -> tuple[str, str]:
        (condition,) = [c for c in self.status.conditions if c.type == type_]
        return condition.status.value, condition.reason


def weights(decisions: Sequence[Decision]) -> list[int]:
    return [d.status.canary_weight for d in decisions]
