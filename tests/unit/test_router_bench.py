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
from bench.router_features import (
    CAPTURE_METRICS,
    FEATURES,
    REDACTED,
    capture_counts,
    named_body,
    parse_metrics,
    router_configs,
    store_memory,
    with_tail,
)
from bench.router_features import markdown as features_markdown
from bench.router_features import summarize as features_summarize


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


def test_the_features_body_names_its_columns_for_input_sampling_and_redaction() -> None:
    from modelfleet.router.inputs import extract_inputs

    body = named_body()
    assert 990 <= len(body) <= 1030
    columns = extract_inputs(body, "v2")
    assert sorted(columns) == sorted(FEATURES)
    assert REDACTED in FEATURES
    assert len({len(values) for values in columns.values()}) == 1


def test_the_features_router_config_has_feedback_and_capture_and_the_plain_one_neither() -> None:
    from modelfleet.api.routerconfig import RouterConfig

    configs = router_configs("http://127.0.0.1:8081", "/tmp/token", "/tmp/capture")
    plain = RouterConfig.model_validate(configs["plain"])
    features = RouterConfig.model_validate(configs["features"])
    assert plain.feedback is None
    assert plain.capture is None
    assert features.feedback is not None
    assert features.feedback.token_file == "/tmp/token"
    assert features.feedback.max_predictions == 10_000
    assert features.capture is not None
    assert (features.capture.percent, features.capture.uri) == (100, "file:///tmp/capture")
    assert (features.capture.redact, features.capture.compression) == ([REDACTED], "gzip")
    assert features.fallback == plain.fallback
    assert features.versions == plain.versions


METRICS = """\
# HELP modelfleet_capture_records_total Answers captured
# TYPE modelfleet_capture_records_total counter
modelfleet_capture_records_total{deployment="bench",version="bench-v1"} 35000.0
modelfleet_capture_dropped_total{deployment="bench",reason="buffer_full"} 12.0
modelfleet_capture_dropped_total{deployment="bench",reason="too_large"} 0.0
modelfleet_capture_batches_total{deployment="bench",outcome="written"} 30.0
modelfleet_capture_written_records_total{deployment="bench"} 30000.0
modelfleet_capture_written_bytes_total{deployment="bench"} 2.5e6
modelfleet_requests_total{deployment="bench",version="bench-v1",code="200"} 35000.0
"""


def test_capture_counts_come_from_the_metrics_text() -> None:
    parsed = parse_metrics(METRICS, CAPTURE_METRICS)
    assert parsed["modelfleet_capture_records_total"] == {"version=bench-v1": 35000.0}
    assert "modelfleet_requests_total" not in parsed
    counts = capture_counts(parsed)
    assert counts == {
        "captured": 35000.0,
        "written": 30000.0,
        "written_bytes": 2.5e6,
        "buffered": 0.0,
        "dropped": {"buffer_full": 12.0, "too_large": 0.0},
        "batches": {"written": 30.0},
    }


def test_the_prediction_store_memory_is_measured_at_its_bound() -> None:
    memory = store_memory(b'{"outputs":[{"data":[0,1,2]}]}', capacity=200)
    assert memory["entries"] == 200
    assert memory["body_bytes_held"] == 200 * memory["answer_bytes"]
    assert memory["bytes_per_entry"] > memory["answer_bytes"]
    assert memory["total_bytes"] == pytest.approx(200 * memory["bytes_per_entry"])


def test_the_features_summary_takes_the_median_of_per_round_differences() -> None:
    runs = [
        run("latency", "plain", 0.50, 2.0, 1000, 150.0),
        run("latency", "features", 0.70, 2.5, 1000, 200.0),
        run("latency", "plain", 0.40, 1.0, 1000, 140.0),
        run("latency", "features", 0.90, 4.0, 1000, 230.0),
        run("latency", "plain", 0.45, 1.5, 1000, 160.0),
        run("latency", "features", 0.65, 2.0, 1000, 210.0),
    ]
    settings = {"rate": 1000.0, "duration": 3.0, "warmup": 0.5, "rounds": 3, "body_bytes": 1004}
    capture = capture_counts(parse_metrics(METRICS, CAPTURE_METRICS))
    files = {"files": 31, "lines": 35000, "bytes": 2_600_000, "redacted_column_present": False}
    memory = {
        "capacity": 10_000,
        "answer_bytes": 217,
        "total_bytes": 6_450_000,
        "bytes_per_entry": 645.0,
        "overhead_bytes_per_entry": 428.0,
        "router_rss_bytes_after_rounds": {"plain": 40_000_000, "features": 52_500_000},
    }
    report = features_summarize(
        runs, settings, capture, files, memory, datetime(2025, 1, 1, tzinfo=UTC), (1.0, 1.0, 1.0)
    )
    summary = report["summary"]
    assert summary["added_latency_ms"]["p50"] == pytest.approx(0.2)  # rounds added 0.2, 0.5 and 0.2
    assert summary["added_latency_ms"]["p99"] == pytest.approx(0.5)  # rounds added 0.5, 3.0 and 0.5
    assert summary["router_cpu_ms_per_1000_requests"] == {"plain": 150.0, "features": 210.0, "added": 60.0}
    text = features_markdown(report, "router-features-x.json")
    assert "| added latency p50 (features - plain) | 0.200 ms |" in text
    assert "| router CPU per 1000 requests, features | 210.0 ms (+60.0 ms) |" in text
    assert "buffer_full 12, too_large 0" in text
    assert "`petal_length` absent" in text
    assert "6.45 MB, 645 bytes per entry (428 besides the answer body)" in text
    assert "plain / features | 40.0 / 52.5 MB |" in text
    assert text.count("| features | 1000 |") == 3


def test_the_router_cpu_of_the_tail_after_a_round_counts_in_it() -> None:
    result = {
        **run("latency", "features", 0.5, 2.0, 1000, 0.0),
        "completed_including_warmup": 4000,
        "cpu_seconds": {"router": 0.8, "model_server": 0.9, "loadgen": 0.4},
    }
    tailed = with_tail(result, 0.2)
    assert tailed["cpu_seconds"]["router"] == pytest.approx(1.0)
    assert tailed["cpu_ms_per_1000_requests"]["router"] == pytest.approx(250.0)
    assert tailed["cpu_ms_per_1000_requests"]["model_server"] == pytest.approx(225.0)
    assert tailed["router_cpu_tail_seconds"] == 0.2
    assert result["cpu_seconds"]["router"] == 0.8
