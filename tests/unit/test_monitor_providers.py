"""What the controllers read from providers: Prometheus answers, readiness of a version's pods."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modelfleet.analysis import ProviderError
from modelfleet.providers.prometheus import prometheus_value
from modelfleet.rollout.observe import ready_replicas


def _vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, v]} for v in values]},
    }


def test_one_series_is_its_value() -> None:
    assert prometheus_value(_vector("3.5")) == 3.5


def test_a_scalar_is_its_value() -> None:
    assert (
        prometheus_value({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}}) == 2.0
    )


def test_no_series_is_nan_so_the_metric_is_inconclusive() -> None:
    assert math.isnan(prometheus_value(_vector()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_vector("1", "2"), "2 series, expected one"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data: parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix is not a number"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1]}]}}, "malformed"),
        ([], "not a JSON object"),
    ],
)
def test_anything_else_is_a_provider_error(document: Any, message: str) -> None:
    answer = prometheus_value(document)
    assert isinstance(answer, ProviderError)
    assert message in answer.message


def _apps(generation: int, observed: int, ready: int, updated: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated},
    }


def test_ready_pods_count_only_when_they_run_the_current_template() -> None:
    assert ready_replicas(_apps(1, 1, 2, 2)) == 2
    assert ready_replicas(_apps(2, 2, 2, 1)) == 1  # one old pod still ready during a rolling update
    assert ready_replicas({"metadata": {"generation": 1}}) == 0
