"""The router benchmark's own arithmetic: request body, percentiles, summary against the targets."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `bench`

from bench.loadgen import percentile
from bench.router import infer_body, markdown, summarize


def test_the_request_body_is_a_v2_infer_request_of_about_1_kb() -> None:
    body = infer_body()
    assert 990 <= len(body) <= 1030
    tensor = json.loads(body)["inputs"][0]
    assert tensor["shape"] == [len(tensor["data"]), 4]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.5) == 7.0


def run(mode: str, target: str, p50: float, p99: float, rps: float, router_cpu: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "mode": mode,
        "target": target,
        "throughput": rps,
        "errors": 0,
        "non_2xx": 0,
        "latency_ms": {"p50": p50, "p90": (p50 + p99) / 2, "p99": p99},
        "cpu_ms_per_1000_requests": {"router": router_cpu, "model_server": 100.0, "loadgen": 30.0},
    }
    if target == "router":
        result["requests_per_router_core_second"] = 1e6 / router_cpu
    return result


def test_the_summary_takes_the_median_of_per_round_differences_and_checks_the_targets() -> None:
    runs = [
        run("latency", "direct", 0.50, 2.0, 1000, 0.0),
        run("latency", "router", 0.70, 2.5, 1000, 150.0),
        run("latency", "direct", 0.40, 1.0, 1000, 0.0),
        run("latency", "router", 0.90, 4.0, 1000, 160.0),
        run("latency", "direct", 0.45, 1.5, 1000, 0.0),
        run("latency", "router", 0.65, 2.0, 1000, 140.0),
        run("throughput", "direct", 5.0, 10.0, 6000, 0.0),
        run("throughput", "router", 7.0, 12.0, 4000, 80.0),
    ]
    args = argparse.Namespace(
        rate=1000.0,
        duration=3.0,
        throughput_duration=3.0,
        warmup=0.5,
        connections=32,
        rounds=3,
        throughput_rounds=1,
    )
    report = summarize(runs, args, datetime(2025, 1, 1, tzinfo=UTC), (1.0, 1.0, 1.0))
    summary = report["summary"]
    assert summary["added_latency_ms"]["p50"] == pytest.approx(0.2)  # rounds added 0.2, 0.5 and 0.2
    assert summary["added_latency_ms"]["p99"] == pytest.approx(0.5)  # rounds added 0.5, 3.0 and 0.5
    assert summary["router_requests_per_core_second_max_mode"] == 12_500
    assert summary["throughput_ratio_router_over_direct"] == pytest.approx(4000 / 6000)
    assert summary["meets"] == {"added_p50": True, "added_p99": True, "per_core": True}
    text = markdown(report, "router-x.json")
    assert "| added latency p50 (router - direct) | 0.200 ms (target <= 0.3 ms: met) |" in text
    assert text.count("| latency | router |") == 3
