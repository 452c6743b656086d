"""The operator's own Prometheus metrics.

`modelfleet_rollouts_total{result}` counts finished rollouts by result (Promoted, RolledBack, Aborted,
Superseded); `modelfleet_reconcile_duration_seconds{controller}` times each reconcile (`deployment`,
`monitor`, and `mlflow` for each sync of a Model that mirrors MLflow);
`modelfleet_measurements_total{verdict}` counts Monitor measurements;
`modelfleet_deployment_fallback_active{namespace, deployment}` is 1 while a Deployment's fallback serves its
stable version's traffic (onDegraded: Fallback), else 0;
`modelfleet_mlflow_requests_total{endpoint}` counts the HTTP requests sent to MLflow tracking servers,
`modelfleet_mlflow_syncs_total{result}` the syncs of Models that mirror MLflow (Synced, or the failure's
reason), and `modelfleet_mlflow_webhook_deliveries_total{outcome}` the webhook calls received (accepted,
ignored, replayed, and each refusal). They are served on
`MODELFLEET_METRICS_PORT` when that variable is set (off by default, so several operators can share
a host in tests).
"""

from __future__ import annotations

import contextlib
import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

ROLLOUTS = Counter("modelfleet_rollouts", "Finished rollouts, by result.", ["result"])
RECONCILE_DURATION = Histogram(
    "modelfleet_reconcile_duration_seconds",
    "Time taken by one reconcile, by controller.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MEASUREMENTS = Counter("modelfleet_measurements", "Monitor measurements, by overall verdict.", ["verdict"])
FALLBACK_ACTIVE = Gauge(
    "modelfleet_deployment_fallback_active",
    "1 while the Deployment's fallback serves its stable version's traffic (onDegraded: Fallback), else 0.",
    ["namespace", "deployment"],
)
MLFLOW_REQUESTS = Counter(
    "modelfleet_mlflow_requests", "HTTP requests sent to MLflow tracking servers, by endpoint.", ["endpoint"]
)
MLFLOW_SYNCS = Counter(
    "modelfleet_mlflow_syncs", "Syncs of Models that mirror MLflow, by result.", ["result"]
)
MLFLOW_WEBHOOKS = Counter(
    "modelfleet_mlflow_webhook_deliveries", "MLflow webhook calls received, by outcome.", ["outcome"]
)

PORT_VARIABLE = "MODELFLEET_METRICS_PORT"


def forget_deployment(namespace: str, name: str) -> None:
    """A Deployment is gone: its series go too."""
    with contextlib.suppress(KeyError):  # never reconciled by this process
        FALLBACK_ACTIVE.remove(namespace, name)


def serve_from_environment() -> int | None:
    """Serve /metrics on the port named by MODELFLEET_METRICS_PORT; the port, or None when unset."""
    text = os.environ.get(PORT_VARIABLE, "").strip()
    if not text:
        return None
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{PORT_VARIABLE}={text!r} is not a port number") from None
    start_http_server(port)
    return port
