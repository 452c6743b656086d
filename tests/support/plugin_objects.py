"""modelfleet.io objects in the shapes the API server returns, for the kubectl plugin's tests.

Specs and statuses are built with the `modelfleet.api` models and dumped with `to_k8s()`, so they are
exactly what the CRD schemas accept (the integration test writes them through the API server).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.api import (
    API_VERSION,
    AnalysisStatus,
    CanaryStep,
    CanaryStrategy,
    ConditionStatus,
    DeploymentPhase,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    Measurement,
    Metric,
    MetricResult,
    MetricType,
    ModelVersionSpec,
    MonitorPhase,
    MonitorSpec,
    MonitorStatus,
    Pause,
    RolloutResult,
    Strategy,
    Verdict,
    VersionFrom,
    set_condition,
)

NOW = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
STEPS = (
    CanaryStep(set_weight=20),
    CanaryStep(pause=Pause(duration=10)),
    CanaryStep(set_weight=50),
    CanaryStep(pause=Pause(duration=10)),
)


def meta(name: str, namespace: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": namespace, "generation": 1}
    if annotations:
        out["annotations"] = annotations
    return out


def deployment_spec(
    version: str = "iris-v2", monitor: str | None = "iris-quality", *, alias: str = ""
) -> DeploymentSpec:
    """Naming `version`, or following the MLflow `alias` when given."""
    return DeploymentSpec(
        model="iris",
        version=None if alias else version,
        version_from=VersionFrom(mlflow_alias=alias) if alias else None,
        strategy=Strategy(canary=CanaryStrategy(steps=STEPS, monitor=monitor)),
    )


def canary_status(weight: int = 20, step: int = 0, failures: int = 0) -> DeploymentStatus:
    """iris-v1 stable, iris-v2 rolling out at `step` with `weight`, started 30 s before NOW."""
    conditions = set_condition((), "Ready", ConditionStatus.FALSE, "Progressing", now=NOW)
    conditions = set_condition(conditions, "Progressing", ConditionStatus.TRUE, "RolloutInProgress", now=NOW)
    return DeploymentStatus(
        observed_generation=1,
        phase=DeploymentPhase.PROGRESSING,
        stable_version="iris-v1",
        canary_version="iris-v2",
        canary_weight=weight,
        current_step=step,
        step_started_at=NOW - timedelta(seconds=5),
        rollout_started_at=NOW - timedelta(seconds=30),
        analysis=AnalysisStatus(failures=failures),
        endpoint="http://iris.ml.svc:80",
        message=f"step {step + 1}/4: weight {weight}%, monitor iris-quality passing",
        conditions=conditions,
    )


def history() -> tuple[HistoryEntry, ...]:
    return (
        HistoryEntry(
            version="iris-v3",
            result=RolloutResult.ROLLED_BACK,
            reason="errors 1 > 0.05",
            started_at=NOW - timedelta(minutes=5),
            finished_at=NOW - timedelta(minutes=4, seconds=46),
        ),
        HistoryEntry(
            version="iris-v2",
            result=RolloutResult.PROMOTED,
            reason="all steps passed",
            started_at=NOW - timedelta(minutes=10),
            finished_at=NOW - timedelta(minutes=9),
        ),
    )


def rolled_back_status() -> DeploymentStatus:
    return DeploymentStatus(
        observed_generation=2,
        phase=DeploymentPhase.ROLLED_BACK,
        stable_version="iris-v2",
        rolled_back_version="iris-v3",
        endpoint="http://iris.ml.svc:80",
        message="iris-v3 rolled back: errors 1 > 0.05, serving iris-v2",
        history=history(),
    )


def deployment(
    status: DeploymentStatus | None = None,
    *,
    name: str = "iris",
    namespace: str = "ml",
    spec: DeploymentSpec | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Deployment",
        "metadata": meta(name, namespace, annotations),
        "spec": (spec or deployment_spec()).to_k8s(),
    }
    if status is not None:
        out["status"] = status.to_k8s()
    return out


def monitor_spec(deployment: str = "iris") -> MonitorSpec:
    return MonitorSpec(
        deployment=deployment,
        interval=5,
        failure_limit=2,
        metrics=(
            Metric(name="errors", type=MetricType.ERROR_RATE, max=0.05),
            Metric(name="p99", type=MetricType.LATENCY, quantile=0.99, max=0.5),
        ),
    )


def monitor_status(error_rate: float | None = 0.0, version: str = "iris-v2") -> MonitorStatus:
    failing = error_rate is not None and error_rate > 0.05
    measurement = Measurement(
        time=NOW - timedelta(seconds=3),
        version=version,
        results=(
            MetricResult(
                name="errors",
                value=error_rate,
                threshold="<= 0.05",
                verdict=Verdict.FAIL if failing else Verdict.PASS,
            ),
            MetricResult(name="p99", value=0.0123456, threshold="<= 0.5", verdict=Verdict.PASS),
        ),
    )
    return MonitorStatus(
        observed_generation=1,
        phase=MonitorPhase.FAILING if failing else MonitorPhase.PASSING,
        last_measurement=measurement,
        measurements=(measurement,),
        message="passing",
    )


def monitor(
    status: MonitorStatus | None = None,
    *,
    name: str = "iris-quality",
    namespace: str = "ml",
    deployment: str = "iris",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Monitor",
        "metadata": meta(name, namespace),
        "spec": monitor_spec(deployment).to_k8s(),
    }
    if status is not None:
        out["status"] = status.to_k8s()
    return out


def model_version(name: str, version: str, namespace: str = "ml", phase: str | None = None) -> dict[str, Any]:
    spec = ModelVersionSpec(model="iris", version=version, image=f"localhost/iris-server:{version}")
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": meta(name, namespace),
        "spec": spec.to_k8s(),
    }
    if phase:
        out["status"] = {"phase": phase}
    return out
