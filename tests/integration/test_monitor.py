"""The Monitor controller against the real API server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import helpers

from support.cluster import Cluster


def test_a_monitor_of_a_missing_deployment_says_so(cluster: Cluster, namespace: str, operator: Any) -> None:
    cluster.apply(helpers.monitor(deployment_name="nowhere", interval="1s"), namespace)
    status = cluster.wait_for(
        "Ready condition",
        lambda: helpers.condition(
            helpers.status(cluster, namespace, "iris-quality", "monitors.modelfleet.io"), "Ready"
        ),
        timeout=30,
    )
    assert (status["status"], status["reason"]) == ("False", "DeploymentNotFound")
    assert "Deployment nowhere not found" in status["message"]


def test_a_monitor_measures_the_serving_version_and_keeps_recent_measurements(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    cluster.apply([helpers.model(), helpers.model_version("iris-v1", "1")], namespace)
    cluster.apply([helpers.deployment(version="iris-v1"), helpers.monitor(interval="1s")], namespace)

    def measurements() -> list[dict[str, Any]] | None:
        status = helpers.status(cluster, namespace, "iris-quality", "monitors.modelfleet.io")
        found: list[dict[str, Any]] = status.get("measurements", [])
        return found if len(found) >= 3 else None

    found = cluster.wait_for("3 measurements", measurements, timeout=150)
    assert all(m["version"] == "iris-v1" for m in found)
    times = [m["time"] for m in found]
    assert times == sorted(times, reverse=True)  # newest first
    # no traffic: inconclusive, never a pass or a fail
    assert {r["verdict"] for m in found for r in m["results"]} == {"Inconclusive"}
    status = helpers.status(cluster, namespace, "iris-quality", "monitors.modelfleet.io")
    assert status["phase"] == "Inconclusive"
    assert status["lastMeasurement"] == found[0]
