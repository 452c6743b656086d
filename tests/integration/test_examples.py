"""examples/: every file is accepted by the API server against the real CRDs (server-side dry run), and
parses with the API models the operator uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelfleet.api import Deployment, MetricType, Model, ModelVersion, Monitor
from support.cluster import REPO, Cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
MODELS = {"Model": Model, "ModelVersion": ModelVersion, "Deployment": Deployment, "Monitor": Monitor}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_kind_and_metric_type_has_an_example() -> None:
    docs = [d for path in EXAMPLES for d in documents(path)]
    assert {d["kind"] for d in docs} == set(MODELS)
    monitors = [d for d in docs if d["kind"] == "Monitor"]
    assert {m["type"] for d in monitors for m in d["spec"]["metrics"]} == {t.value for t in MetricType}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["strategy"]["canary"]["steps"]
    assert deployment["spec"]["fallback"]["response"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_with_the_api_models(path: Path) -> None:
    for doc in documents(path):
        assert doc["apiVersion"] == "modelfleet.io/v1alpha1"
        MODELS[doc["kind"]].from_k8s(doc)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_api_server(
    cluster: Cluster, crds: None, namespace: str, path: Path
) -> None:
    result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(documents(path)), result.stdout + result.stderr
