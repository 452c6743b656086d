"""Router features benchmark: what input sampling, the feedback store and payload capture add to the router.

    python -m bench.router --features            # (make bench-router-features) about 2 minutes
    python -m bench.router --features --quick    # one round of each (smoke run)

One reference model server and two routers in front of it, alike but for the features: *plain* (no
`feedback`, no `capture`; input samples at the router's default `--input-reads` of 20 requests a second,
since input sampling has no off switch) and *features* (`--input-reads 0`: every request's inputs read,
the most input sampling can cost; `feedback` with a token file, so every answer is remembered in the
prediction store; `capture` at 100% to a file:/// temporary directory, gzip, one field redacted). Load
comes from a separate process (`bench.loadgen`) at the same open-loop rate (1000 req/s), alternating
plain and features rounds so both see the same machine noise; the added latency is the median over rounds
of (features - plain), and router CPU per 1000 requests is taken from /proc for each router, over the run
and a 1.5 s tail after it (both routers), in which capture's writer (`flushInterval` 1s) writes the
round's last batch, so that its cost counts in the round that caused it.

The requests are Open Inference Protocol v2 bodies of about 1 kB whose one input names its four columns in
`parameters.names`, so input sampling reads named features and capture's redaction removes one column.
Capture's outcome counts are scraped from the features router's /metrics after the rounds, and the files
it wrote are counted after it stopped, so the report shows capture really ran.

The memory of the prediction store at its bound: a `PredictionStore` of the default `maxPredictions`
filled twice over (so its list of evicted ids is full too) with router-made request ids and the model
server's real answer to the benchmark's body, measured with tracemalloc.

Results go to bench/results/router-features-<timestamp>.json and bench/results/router-features-latest.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import tempfile
import time
import tracemalloc
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.router import INFER_PATH, ROOT, Server, measure, run_load
from bench.runs import machine as runs_machine

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
REDACTED = "petal_length"
DEFAULT_MAX_PREDICTIONS = 10_000
FLUSH_INTERVAL = "1s"
TAIL_SECONDS = 1.5
"""After each round, each router's CPU is taken once more this long after the load ended, so that capture's
writer has written the round's last, partial batch (`flushInterval` 1s) and its cost counts in the round."""
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ([-+0-9.eE]+|NaN|[+-]Inf)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def named_body(target_bytes: int = 1024) -> bytes:
    """An Open Inference Protocol v2 request of about `target_bytes`: iris-like rows of 4 features, the
    input's columns named in `parameters.names` (as tests/support/iris_data.py sends them)."""
    rng = random.Random(7)
    data: list[float] = []
    rows = 0
    while True:
        data += [
            round(rng.uniform(4.3, 7.9), 1),
            round(rng.uniform(2.0, 4.4), 1),
            round(rng.uniform(1.0, 6.9), 1),
            round(rng.uniform(0.1, 2.5), 1),
        ]
        rows += 1
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [rows, len(FEATURES)],
                        "datatype": "FP64",
                        "data": data,
                        "parameters": {"names": list(FEATURES)},
                    }
                ]
            },
            separators=(",", ":"),
        ).encode()
        if len(body) >= target_bytes - 30:
            return body


def router_configs(model_url: str, token_file: str, capture_dir: str) -> dict[str, dict[str, Any]]:
    """The plain and features routers' configurations (camelCase JSON documents, as the operator writes)."""
    plain: dict[str, Any] = {
        "deployment": "bench",
        "versions": [{"name": "bench-v1", "url": model_url, "weight": 100, "role": "stable"}],
        "fallback": {
            "timeout": "2s",
            "retryOnStable": True,
            "circuitBreaker": {"errorRate": 0.5, "minRequests": 20, "window": "10s", "openFor": "30s"},
            "response": {"statusCode": 200, "contentType": "application/json", "body": '{"outputs":[]}'},
        },
    }
    features = {
        **plain,
        "feedback": {"tokenFile": token_file, "maxPredictions": DEFAULT_MAX_PREDICTIONS, "maxPairs": 1000},
        "capture": {
            "percent": 100,
            "uri": "file://" + capture_dir,
            "redact": [REDACTED],
            "compression": "gzip",
            "flushInterval": FLUSH_INTERVAL,
        },
    }
    return {"plain": plain, "features": features}


def with_tail(result: dict[str, Any], tail_cpu_seconds: float) -> dict[str, Any]:
    """`measure`'s result with the router CPU spent in the tail after the load added."""
    cpu = dict(result["cpu_seconds"])
    cpu["router"] += tail_cpu_seconds
    completed = result["completed_including_warmup"]
    return {
        **result,
        "cpu_seconds": cpu,
        "cpu_ms_per_1000_requests": {key: 1e6 * value / completed for key, value in cpu.items()},
        "router_cpu_tail_seconds": tail_cpu_seconds,
    }


def rss_bytes(pid: int) -> int:
    """The resident set of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_metrics(text: str, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Prometheus text samples of the metric `names`: {name: {"label=value,...": value}} (no labels: "")."""
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in out:
            continue
        labels = ",".join(
            f"{key}={value}" for key, value in _LABEL.findall(match.group(2) or "") if key != "deployment"
        )
        out[match.group(1)][labels] = float(match.group(3))
    return out


CAPTURE_METRICS = (
    "modelfleet_capture_records_total",
    "modelfleet_capture_dropped_total",
    "modelfleet_capture_batches_total",
    "modelfleet_capture_written_records_total",
    "modelfleet_capture_written_bytes_total",
    "modelfleet_capture_buffered_records",
)


def capture_counts(metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    """What capture did, from `parse_metrics(..., CAPTURE_METRICS)`."""
    return {
        "captured": sum(metrics["modelfleet_capture_records_total"].values()),
        "written": sum(metrics["modelfleet_capture_written_records_total"].values()),
        "written_bytes": sum(metrics["modelfleet_capture_written_bytes_total"].values()),
        "buffered": sum(metrics["modelfleet_capture_buffered_records"].values()),
        "dropped": {
            key.removeprefix("reason="): value
            for key, value in sorted(metrics["modelfleet_capture_dropped_total"].items())
        },
        "batches": {
            key.removeprefix("outcome="): value
            for key, value in sorted(metrics["modelfleet_capture_batches_total"].items())
        },
    }


def captured_files(directory: Path) -> dict[str, Any]:
    """The objects capture wrote under `directory`: how many, their lines, and whether a line still holds
    the redacted column."""
    files = sorted(directory.rglob("*.jsonl.gz"))
    lines = 0
    redacted_seen = False
    for path in files:
        with gzip.open(path, "rt") as handle:
            for line in handle:
                lines += 1
                tensor = json.loads(line)["request"]["inputs"][0]
                names = (tensor.get("parameters") or {}).get("names") or []
                redacted_seen = (
                    redacted_seen or REDACTED in names or len(tensor["data"]) != 3 * tensor["shape"][0]
                )
    return {
        "files": len(files),
        "lines": lines,
        "bytes": sum(path.stat().st_size for path in files),
        "redacted_column_present": redacted_seen,
    }


def store_memory(answer: bytes, capacity: int = DEFAULT_MAX_PREDICTIONS) -> dict[str, Any]:
    """Bytes a PredictionStore of `capacity` holds at its bound: filled twice over with distinct router-made
    ids and copies of `answer` (every answer is its own bytes object in the router), by tracemalloc."""
    from modelfleet.router.feedback import PredictionStore

    tag = f"{random.Random(1).getrandbits(48):012x}"
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = PredictionStore(capacity)
        for n in range(2 * capacity):
            body = bytes(bytearray(answer))  # a fresh object, as each upstream answer is
            store.put(f"{tag}-{n:x}".encode(), "bench-v1", "v2", body, None, float(n))
        total = tracemalloc.get_traced_memory()[0] - before
    finally:
        if started:
            tracemalloc.stop()
    assert len(store) == capacity
    return {
        "capacity": capacity,
        "entries": len(store),
        "answer_bytes": len(answer),
        "body_bytes_held": store.bytes,
        "total_bytes": total,
        "bytes_per_entry": total / capacity,
        "overhead_bytes_per_entry": (total - store.bytes) / capacity,
    }


def summarize(
    runs: list[dict[str, Any]],
    settings: dict[str, Any],
    capture: dict[str, Any],
    files: dict[str, Any],
    memory: dict[str, Any],
    started: datetime,
    load_before: tuple[float, ...],
) -> dict[str, Any]:
    plain = [run for run in runs if run["target"] == "plain"]
    features = [run for run in runs if run["target"] == "features"]
    per_round = {
        q: [f["latency_ms"][q] - p["latency_ms"][q] for p, f in zip(plain, features, strict=True)]
        for q in ("p50", "p90", "p99")
    }

    def median(group: list[dict[str, Any]], *path: str) -> float:
        values = []
        for run in group:
            value: Any = run
            for key in path:
                value = value[key]
            values.append(float(value))
        return statistics.median(values)

    summary = {
        "added_latency_ms": {q: statistics.median(values) for q, values in per_round.items()},
        "added_latency_ms_per_round": per_round,
        "latency_ms": {
            name: {q: median(group, "latency_ms", q) for q in ("p50", "p99")}
            for name, group in (("plain", plain), ("features", features))
        },
        "router_cpu_ms_per_1000_requests": {
            "plain": median(plain, "cpu_ms_per_1000_requests", "router"),
            "features": median(features, "cpu_ms_per_1000_requests", "router"),
        },
        "errors": {
            name: sum(run["errors"] + run["non_2xx"] for run in group)
            for name, group in (("plain", plain), ("features", features))
        },
        "capture": capture,
        "capture_files": files,
        "prediction_store_memory": memory,
    }
    cpu = summary["router_cpu_ms_per_1000_requests"]
    summary["router_cpu_ms_per_1000_requests"]["added"] = cpu["features"] - cpu["plain"]
    return {
        "benchmark": "router-features",
        "started": started.isoformat(),
        "machine": runs_machine(load_before),
        "settings": settings,
        "summary": summary,
        "runs": runs,
    }


def markdown(report: dict[str, Any], json_name: str) -> str:
    s = report["summary"]
    settings = report["settings"]
    machine = report["machine"]
    added = s["added_latency_ms"]
    cpu = s["router_cpu_ms_per_1000_requests"]
    capture = s["capture"]
    files = s["capture_files"]
    memory = s["prediction_store_memory"]
    dropped = ", ".join(f"{reason} {count:.0f}" for reason, count in capture["dropped"].items()) or "none"
    batches = ", ".join(f"{outcome} {count:.0f}" for outcome, count in capture["batches"].items()) or "none"
    lines = [
        "# Router features benchmark (latest)",
        "",
        f"Run {report['started']} on {machine['cpus']} CPUs (load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}); "
        f"Python {machine['python']}. Full data: `{json_name}`.",
        f"Open loop {settings['rate']:.0f} req/s, {settings['body_bytes']}-byte v2 bodies with "
        f"`parameters.names`, {settings['duration']:g} s per run, {settings['rounds']} alternating rounds of "
        "a plain router (no feedback, no capture, input reads at the default 20/s) and a features router "
        f"(input reads of every request, feedback store of {memory['capacity']} predictions, capture at "
        f"100% to file:/// with `{REDACTED}` redacted, gzip); added is the median over rounds of "
        "(features - plain). Router CPU per 1000 requests: over the run, its warm-up and a "
        f"{TAIL_SECONDS:g} s tail after it (capture's writer flushes every {FLUSH_INTERVAL}), from /proc.",
        "",
        "| figure | result |",
        "|---|---|",
        f"| added latency p50 (features - plain) | {added['p50']:.3f} ms |",
        f"| added latency p99 | {added['p99']:.3f} ms |",
        f"| p50 / p99, plain | {s['latency_ms']['plain']['p50']:.3f} / "
        f"{s['latency_ms']['plain']['p99']:.3f} ms |",
        f"| p50 / p99, features | {s['latency_ms']['features']['p50']:.3f} / "
        f"{s['latency_ms']['features']['p99']:.3f} ms |",
        f"| added latency per round, p50 / p99 | "
        f"{', '.join(f'{v:.3f}' for v in s['added_latency_ms_per_round']['p50'])} / "
        f"{', '.join(f'{v:.3f}' for v in s['added_latency_ms_per_round']['p99'])} ms |",
        f"| router CPU per 1000 requests, plain | {cpu['plain']:.1f} ms |",
        f"| router CPU per 1000 requests, features | {cpu['features']:.1f} ms (+{cpu['added']:.1f} ms) |",
        f"| client errors, plain / features | {s['errors']['plain']} / {s['errors']['features']} |",
        f"| capture: records captured / written, at the /metrics scrape after the rounds | "
        f"{capture['captured']:.0f} / {capture['written']:.0f} ({capture['written_bytes'] / 1e6:.2f} MB), "
        f"{capture['buffered']:.0f} buffered |",
        f"| capture: dropped by reason | {dropped} |",
        f"| capture: batches | {batches} |",
        f"| capture: files after shutdown (the rest flushed then) | {files['files']} files, "
        f"{files['lines']} lines, "
        f"`{REDACTED}` {'PRESENT' if files['redacted_column_present'] else 'absent'} |",
        f"| prediction store at its bound ({memory['capacity']} entries, {memory['answer_bytes']}-byte "
        f"answers) | {memory['total_bytes'] / 1e6:.2f} MB, {memory['bytes_per_entry']:.0f} bytes per entry "
        f"({memory['overhead_bytes_per_entry']:.0f} besides the answer body) |",
        *(
            [
                f"| router resident memory after the rounds, plain / features"
                f" | {rss['plain'] / 1e6:.1f} / {rss['features'] / 1e6:.1f} MB |"
            ]
            if (rss := memory.get("router_rss_bytes_after_rounds"))
            else []
        ),
        "",
        "| target | req/s | p50 ms | p90 ms | p99 ms | errors | router CPU ms/1k req | model CPU ms/1k req | "
        "loadgen CPU ms/1k req |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        run_cpu = run["cpu_ms_per_1000_requests"]
        lines.append(
            f"| {run['target']} | {run['throughput']:.0f} | {run['latency_ms']['p50']:.3f} | "
            f"{run['latency_ms']['p90']:.3f} | {run['latency_ms']['p99']:.3f} | "
            f"{run['errors'] + run['non_2xx']} | {run_cpu['router']:.1f} | {run_cpu['model_server']:.1f} | "
            f"{run_cpu['loadgen']:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The features benchmark with `bench.router`'s parsed arguments (rate, duration, warmup, rounds, out)."""
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    body = named_body()
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-features-") as scratch:
        body_file = Path(scratch) / "body.json"
        body_file.write_bytes(body)
        token_file = Path(scratch) / "feedback-token"
        token_file.write_text("bench-feedback-token\n")
        capture_dir = Path(scratch) / "capture"
        capture_dir.mkdir()
        model = Server(["model-server", "--host", "127.0.0.1", "--port", "0"])
        routers: dict[str, Server] = {}
        runs: list[dict[str, Any]] = []
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{model.port}{INFER_PATH}",
                data=body,
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = response.read()
            configs = router_configs(f"http://127.0.0.1:{model.port}", str(token_file), str(capture_dir))
            local = ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"]
            for name, config in configs.items():
                config_file = Path(scratch) / f"router-{name}.json"
                config_file.write_text(json.dumps(config))
                reads = ["--input-reads", "0"] if name == "features" else []
                routers[name] = Server(["router", "--config", str(config_file), *local, *reads])
            print(
                f"model server :{model.port}, routers plain :{routers['plain'].port}, "
                f"features :{routers['features'].port}; body {len(body)} bytes, answer {len(answer)} bytes"
            )
            for router in routers.values():  # warm both paths (connections, caches)
                run_load(
                    f"http://127.0.0.1:{router.port}{INFER_PATH}",
                    body_file,
                    ["--rate", str(args.rate)],
                    1.0,
                    0.5,
                )
            mode = ["--rate", str(args.rate), "--max-connections", "512"]
            for _ in range(args.rounds):
                for name, router in routers.items():
                    result = measure(
                        "latency",
                        name,
                        router.port,
                        body_file,
                        mode,
                        args.duration,
                        args.warmup,
                        model,
                        router,
                    )
                    before = router.cpu_seconds()
                    time.sleep(TAIL_SECONDS)
                    runs.append(with_tail(result, router.cpu_seconds() - before))
            rss = {name: rss_bytes(router.proc.pid) for name, router in routers.items()}
            admin = routers["features"].admin_port
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as response:
                metrics_text = response.read().decode()
        finally:
            for router in routers.values():
                router.stop()
            model.stop()
        capture = capture_counts(parse_metrics(metrics_text, CAPTURE_METRICS))
        files = captured_files(capture_dir)
    memory = store_memory(answer)
    settings = {
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "body_bytes": len(body),
        "answer_bytes": len(answer),
        "features_router_flags": ["--input-reads", "0"],
        "configs": {name: {k: v for k, v in c.items() if k != "versions"} for name, c in configs.items()},
    }
    memory["router_rss_bytes_after_rounds"] = rss
    report = summarize(runs, settings, capture, files, memory, started, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = args.out / f"router-features-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, json_path.name)
    (args.out / "router-features-latest.md").write_text(text)
    print(text)
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0
