"""The MLflow benchmark's own logic: reading the operator's /metrics, the figures by mode, its Markdown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `bench`

from bench.mlflow import by_mode, counter_values, delta, histogram_value, markdown, parse_args

METRICS = """# HELP modelfleet_mlflow_requests_total HTTP requests sent to MLflow, by endpoint.
# TYPE modelfleet_mlflow_requests_total counter
modelfleet_mlflow_requests_total{endpoint="registered-models/get"} 3.0
modelfleet_mlflow_requests_total{endpoint="model-versions/search"} 4.0
# HELP modelfleet_reconcile_duration_seconds Time taken by one reconcile, by controller.
# TYPE modelfleet_reconcile_duration_seconds histogram
modelfleet_reconcile_duration_seconds_bucket{controller="mlflow",le="+Inf"} 2.0
modelfleet_reconcile_duration_seconds_count{controller="mlflow"} 2.0
modelfleet_reconcile_duration_seconds_sum{controller="mlflow"} 1.5
modelfleet_reconcile_duration_seconds_count{controller="deployment"} 9.0
modelfleet_reconcile_duration_seconds_sum{controller="deployment"} 0.25
"""


def test_counters_by_label_and_their_change() -> None:
    values = counter_values(METRICS, "modelfleet_mlflow_requests")
    assert values == {"endpoint=registered-models/get": 3.0, "endpoint=model-versions/search": 4.0}
    earlier = {"endpoint=registered-models/get": 1.0, "endpoint=model-versions/search": 4.0}
    assert delta(values, earlier) == {"endpoint=registered-models/get": 2.0}  # unchanged ones left out
    assert counter_values(METRICS, "modelfleet_mlflow_syncs") == {}


def test_a_histograms_sum_and_count_for_one_controller() -> None:
    labels = {"controller": "mlflow"}
    assert histogram_value(METRICS, "modelfleet_reconcile_duration_seconds", "sum", labels) == 1.5
    assert histogram_value(METRICS, "modelfleet_reconcile_duration_seconds", "count", labels) == 2.0
    other = {"controller": "monitor"}
    assert histogram_value(METRICS, "modelfleet_reconcile_duration_seconds", "sum", other) == 0.0


def test_figures_by_mode_and_their_table() -> None:
    rollouts = [
        {
            "mode": "webhook",
            "aliasToStatusSeconds": 0.2,
            "aliasToFirstAnswerSeconds": 21.0,
            "clientErrors": 0,
        },
        {
            "mode": "webhook",
            "aliasToStatusSeconds": 0.4,
            "aliasToFirstAnswerSeconds": 25.0,
            "clientErrors": 1,
        },
        {
            "mode": "polling",
            "aliasToStatusSeconds": 17.0,
            "aliasToFirstAnswerSeconds": 40.0,
            "clientErrors": 0,
        },
    ]
    modes = by_mode(rollouts)
    assert list(modes) == ["webhook", "polling"]
    webhook = modes["webhook"]
    assert webhook["aliasToStatusSeconds"] == {"median": 0.30000000000000004, "min": 0.2, "max": 0.4, "n": 2}
    assert webhook["clientErrors"] == 1
    report = {
        "started": "2026-12-03T07:00:00+00:00",
        "machine": {
            "cpus": 2,
            "python": "3.11.7",
            "kubernetes": "v1.34.4",
            "mlflow": "3.17.2",
            "load_average_before": [0.5, 0.5, 0.5],
            "load_average_after": [1.0, 1.0, 1.0],
        },
        "settings": {"rounds": 2},
        "modes": modes,
        "sync": {
            "versions": 500,
            "first": {
                "seconds": 30.0,
                "operatorSyncSeconds": 12.0,
                "mlflowRequests": {"endpoint=model-versions/search": 1.0},
                "mlflowRequestsTotal": 1001.0,
            },
            "again": {"operatorSyncSeconds": 0.05, "mlflowRequests": {}, "mlflowRequestsTotal": 2.0},
            "baseline": {
                "listSeconds": 0.2,
                "listAndDownloadUrisSeconds": 3.0,
                "requests": {"list": 1, "listAndDownloadUris": 501},
            },
        },
        "operator_log_errors": 0,
    }
    text = markdown(report, "mlflow-x.json")
    assert "| webhook | 0.30 s (0.20 to 0.40) | 23.0 s (21.0 to 25.0) | 1 |" in text
    assert "| polling | 17.00 s (17.00 to 17.00) | 40.0 s (40.0 to 40.0) | 0 |" in text
    assert "| a sync with nothing new | 0.050 | 2 |" in text
    assert "500 versions" in text


def test_arguments_are_checked() -> None:
    assert parse_args([]).versions == 500
    assert parse_args(["--no-webhooks"]).webhooks is False
    with pytest.raises(SystemExit) as refused:
        parse_args(["--rounds", "0"])
    assert refused.value.code == 2
