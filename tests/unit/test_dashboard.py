"""dashboards/modelfleet.json: valid Grafana JSON whose every query names metrics the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from modelfleet import metrics as operator_metrics
from modelfleet.router.metrics import Histogram, RouterMetrics
from support.cluster import REPO
from support.tools import promtool_binary

DASHBOARD = REPO / "dashboards" / "modelfleet.json"
METRIC_NAME = re.compile(r"\b(modelfleet_[a-z0-9_]+)\b")
CONTRACT = (  # the API (docs/api-reference.md): the router's metrics and the operator's rollout counter
    "modelfleet_requests_total",
    "modelfleet_request_duration_seconds_bucket",
    "modelfleet_fallbacks_total",
    "modelfleet_mirrored_requests_total",
    "modelfleet_rollouts_total",
)


def exported_series() -> set[str]:
    """Series names the router and the operator expose (histograms as _bucket, _sum, _count)."""
    families: list[tuple[str, str]] = []
    for family in RouterMetrics().registry.families:  # names as exposed, e.g. modelfleet_requests_total
        families.append((family.name, "histogram" if isinstance(family, Histogram) else ""))
    for value in vars(operator_metrics).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            families += [(m.name, m.type) for m in value.describe()]
    names: set[str] = set()
    for name, kind in families:
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names.add(f"{name}_total")
        else:
            names.add(name)
    return names


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def test_exported_series_are_found() -> None:
    # guards the check below against an empty set, which would make it pass for any dashboard
    assert {"modelfleet_requests_total", "modelfleet_rollouts_total"} <= exported_series()


def test_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    dashboard = load()
    assert dashboard["uid"] == "modelfleet"
    assert dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_query_names_only_exported_metrics() -> None:
    exported = exported_series()
    for expr in queries(load()):
        names = METRIC_NAME.findall(expr)
        assert names, f"query names no modelfleet metric: {expr}"
        unknown = sorted(set(names) - exported)
        assert not unknown, f"{unknown} in {expr!r} are not exported (exported: {sorted(exported)})"


@pytest.mark.parametrize("metric", CONTRACT)
def test_the_contract_metrics_are_on_the_dashboard(metric: str) -> None:
    assert any(metric in expr for expr in queries(load()))


def test_queries_have_balanced_brackets_and_use_the_variables() -> None:
    for expr in queries(load()):
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr
    router_queries = [e for e in queries(load()) if "modelfleet_request" in e and "label_values" not in e]
    assert all('deployment=~"$deployment"' in e for e in router_queries)


@pytest.mark.skipif(promtool_binary() is None, reason="no promtool (Debian package prometheus)")
def test_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every query, with Grafana's variables replaced as Grafana would."""
    promtool = promtool_binary()
    assert promtool is not None
    substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$namespace": ".*", "$deployment": ".*"}
    exprs = []
    for expr in queries(load()):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        exprs.append(expr)
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
