"""Router benchmark: the router's cost over calling the model server directly, measured in the same run.

    python -m bench.router            # (make bench-router) about 2 minutes
    python -m bench.router --quick    # a shorter smoke run
    python -m bench.router --features # (make bench-router-features) plain router vs features on
                                      # (bench/router_features.py)

Starts one reference model server and one router in front of it (a stable version at weight 100 with the
whole fallback chain configured: timeout, retryOnStable, circuit breaker, static response), then drives
load from a separate process (`bench.loadgen`, uvloop) at (a) the model server and (b) the router,
alternating in many short rounds so both see the same machine noise; added latency is the median over
rounds of (router - direct), so a burst of noise spoils a round, not the result:

- latency: open loop at a fixed rate (1000 req/s) with ~1 kB Open Inference Protocol v2 bodies;
- throughput: closed loop with many connections, as fast as it goes; the figure of merit is requests
  per second per core of *router* CPU (requests / router CPU seconds), since on a small machine the
  load generator, router and model server share the cores.

CPU time of each process comes from /proc (Linux). Results go to bench/results/router-<timestamp>.json
and bench/results/router-latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)(?: \(admin http://[^:]+:(\d+)\))?")
TARGET_ADDED_P50_MS = 0.3
TARGET_ADDED_P99_MS = 1.0
TARGET_PER_CORE = 5000.0
INFER_PATH = "/v2/models/iris/infer"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """A `modelfleet` subcommand in its own process, with its bound ports read from its log."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelfleet.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.port = self.admin_port = 0
        self.lines: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                match = LISTENING.search(line)
                if match and not ready.is_set():
                    self.port, self.admin_port = int(match.group(1)), int(match.group(2) or 0)
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise SystemExit(f"{args[0]} did not start:\n" + "\n".join(self.lines))

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def infer_body(target_bytes: int = 1024) -> bytes:
    """An Open Inference Protocol v2 request of about `target_bytes` (iris-like rows of 4 features)."""
    rng = random.Random(7)
    rows: list[list[float]] = []
    while True:
        rows.append(
            [round(rng.uniform(4, 8), 3), round(rng.uniform(2, 4.5), 3), round(rng.uniform(1, 7), 3), 1.0]
        )
        body = json.dumps(
            {"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]},
            separators=(",", ":"),
        ).encode()
        if len(body) >= target_bytes - 30:
            return body


def run_load(url: str, body_file: Path, mode: list[str], duration: float, warmup: float) -> dict[str, Any]:
    """One load generator run in its own process; adds its own CPU time to the summary."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--body-file",
        str(body_file),
        *mode,
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed ({proc.returncode}): {' '.join(command)}")
    summary: dict[str, Any] = json.loads(output)
    summary["loadgen_cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return summary


def measure(
    name: str,
    target: str,
    port: int,
    body_file: Path,
    mode: list[str],
    duration: float,
    warmup: float,
    model: Server,
    router: Server,
) -> dict[str, Any]:
    router_before = router.cpu_times()
    before = {"router": sum(router_before), "model_server": model.cpu_seconds()}
    summary = run_load(f"http://127.0.0.1:{port}{INFER_PATH}", body_file, mode, duration, warmup)
    router_after = router.cpu_times()
    after = {"router": sum(router_after), "model_server": model.cpu_seconds()}
    cpu = {key: after[key] - before[key] for key in after}
    cpu["loadgen"] = summary.pop("loadgen_cpu_seconds")
    # CPU over the whole run (warm-up included) over every request completed in it.
    completed = summary["completed_including_warmup"]
    result: dict[str, Any] = {
        "mode": name,
        "target": target,
        **summary,
        "cpu_seconds": cpu,
        "cpu_ms_per_1000_requests": {key: 1e6 * value / completed for key, value in cpu.items()},
        "router_cpu_user_system_seconds": [
            after - before for before, after in zip(router_before, router_after, strict=True)
        ],
    }
    if target == "router" and cpu["router"] > 0:
        result["requests_per_router_core_second"] = completed / cpu["router"]
    line = (
        f"  {name:<10} {target:<7} {summary['throughput']:8.0f} req/s  "
        f"p50 {summary['latency_ms']['p50']:6.3f}  p90 {summary['latency_ms']['p90']:6.3f}  "
        f"p99 {summary['latency_ms']['p99']:7.3f} ms  errors {summary['errors'] + summary['non_2xx']}"
    )
    print(line, flush=True)
    return result


def median_of(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop rate for the latency mode")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per latency run")
    parser.add_argument("--throughput-duration", type=float, default=3.0, help="measured seconds per max run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    parser.add_argument("--connections", type=int, default=32, help="connections in the throughput mode")
    parser.add_argument("--rounds", type=int, default=10, help="alternating direct/router latency rounds")
    parser.add_argument("--throughput-rounds", type=int, default=5, help="alternating throughput rounds")
    parser.add_argument("--quick", action="store_true", help="1 round of each (smoke run)")
    parser.add_argument(
        "--features",
        action="store_true",
        help="instead: plain router vs router with input sampling, feedback and capture on "
        "(bench/router_features.py)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = args.throughput_rounds = 1
    if not (
        1 <= args.rounds <= 30
        and 1 <= args.throughput_rounds <= 30
        and 0 < args.duration <= 60
        and 0 < args.throughput_duration <= 60
        and 0 <= args.warmup <= 10
    ):
        parser.error("rounds must be 1..30, durations in (0, 60] seconds, warm-up in [0, 10]")
    if args.features:
        from bench.router_features import run

        return run(args)

    started = datetime.now(UTC)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-") as scratch:
        body_file = Path(scratch) / "body.json"
        body_file.write_bytes(infer_body())
        model = Server(["model-server", "--host", "127.0.0.1", "--port", "0"])
        config = {
            "deployment": "bench",
            "versions": [
                {"name": "bench-v1", "url": f"http://127.0.0.1:{model.port}", "weight": 100, "role": "stable"}
            ],
            "fallback": {
                "timeout": "2s",
                "retryOnStable": True,
                "circuitBreaker": {"errorRate": 0.5, "minRequests": 20, "window": "10s", "openFor": "30s"},
                "response": {"statusCode": 200, "contentType": "application/json", "body": '{"outputs":[]}'},
            },
        }
        config_file = Path(scratch) / "router.json"
        config_file.write_text(json.dumps(config))
        local = ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"]
        router = Server(["router", "--config", str(config_file), *local])
        targets = {"direct": model.port, "router": router.port}
        runs: list[dict[str, Any]] = []
        try:
            print(f"model server :{model.port}, router :{router.port}; body {body_file.stat().st_size} bytes")
            for port in targets.values():  # warm both paths (connections, caches)
                run_load(f"http://127.0.0.1:{port}{INFER_PATH}", body_file, ["--rate", "1000"], 1.0, 0.5)
            latency_mode = ["--rate", str(args.rate), "--max-connections", "512"]
            throughput_mode = ["--connections", str(args.connections)]
            for _ in range(args.rounds):
                for target, port in targets.items():
                    runs.append(
                        measure(
                            "latency",
                            target,
                            port,
                            body_file,
                            latency_mode,
                            args.duration,
                            args.warmup,
                            model,
                            router,
                        )
                    )
            for _ in range(args.throughput_rounds):
                for target, port in targets.items():
                    runs.append(
                        measure(
                            "throughput",
                            target,
                            port,
                            body_file,
                            throughput_mode,
                            args.throughput_duration,
                            args.warmup,
                            model,
                            router,
                        )
                    )
        finally:
            router.stop()
            model.stop()

    report = summarize(runs, args, started, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = args.out / f"router-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "router-latest.md").write_text(markdown(report, json_path.name))
    print(markdown(report, json_path.name))
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0


def summarize(
    runs: list[dict[str, Any]], args: argparse.Namespace, started: datetime, load_before: tuple[float, ...]
) -> dict[str, Any]:
    def pick(mode: str, target: str) -> list[dict[str, Any]]:
        return [run for run in runs if run["mode"] == mode and run["target"] == target]

    latency_direct, latency_router = pick("latency", "direct"), pick("latency", "router")
    max_direct, max_router = pick("throughput", "direct"), pick("throughput", "router")
    # Added latency per round (router minus the direct run just before it), then the median of rounds.
    per_round = {
        q: [
            r["latency_ms"][q] - d["latency_ms"][q]
            for d, r in zip(latency_direct, latency_router, strict=True)
        ]
        for q in ("p50", "p90", "p99")
    }
    added = {q: statistics.median(values) for q, values in per_round.items()}
    per_core = median_of(max_router, "requests_per_router_core_second")
    per_core_latency_mode = median_of(latency_router, "requests_per_router_core_second")
    summary = {
        "added_latency_ms": added,
        "added_latency_ms_per_round": per_round,
        "throughput_ratio_router_over_direct": median_of(max_router, "throughput")
        / median_of(max_direct, "throughput"),
        "router_requests_per_core_second_max_mode": per_core,
        "router_requests_per_core_second_latency_mode": per_core_latency_mode,
        "router_cpu_ms_per_1000_requests_latency_mode": median_of(
            latency_router, "cpu_ms_per_1000_requests", "router"
        ),
        "targets": {
            "added_p50_ms": TARGET_ADDED_P50_MS,
            "added_p99_ms": TARGET_ADDED_P99_MS,
            "requests_per_core_second": TARGET_PER_CORE,
        },
        "meets": {
            "added_p50": added["p50"] <= TARGET_ADDED_P50_MS,
            "added_p99": added["p99"] <= TARGET_ADDED_P99_MS,
            "per_core": per_core >= TARGET_PER_CORE,
        },
    }
    return {
        "benchmark": "router",
        "started": started.isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "max_rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        },
        "settings": {
            "rate": args.rate,
            "duration": args.duration,
            "throughput_duration": args.throughput_duration,
            "connections": args.connections,
            "rounds": args.rounds,
            "throughput_rounds": args.throughput_rounds,
            "warmup": args.warmup,
            "body_bytes": len(infer_body()),
        },
        "summary": summary,
        "runs": runs,
    }


def markdown(report: dict[str, Any], json_name: str) -> str:
    s = report["summary"]
    settings = report["settings"]
    machine = report["machine"]
    lines = [
        "# Router benchmark (latest)",
        "",
        f"Run {report['started']} on {machine['cpus']} CPUs (load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}); "
        f"Python {machine['python']}. Full data: `{json_name}`.",
        f"Latency mode: open loop {settings['rate']:.0f} req/s, {settings['body_bytes']}-byte v2 bodies, "
        f"{settings['duration']:g} s per run. "
        f"Throughput mode: closed loop, {settings['connections']} connections, "
        f"{settings['throughput_duration']:g} s per run. Alternating direct/router rounds: "
        f"{settings['rounds']} latency, {settings.get('throughput_rounds', settings['rounds'])} throughput; "
        f"added latency is the median over rounds of (router - direct).",
        "",
        "| target | result |",
        "|---|---|",
        f"| added latency p50 (router - direct) | {s['added_latency_ms']['p50']:.3f} ms "
        f"(target <= {s['targets']['added_p50_ms']} ms: {'met' if s['meets']['added_p50'] else 'NOT met'}) |",
        f"| added latency p99 | {s['added_latency_ms']['p99']:.3f} ms "
        f"(target <= {s['targets']['added_p99_ms']} ms: {'met' if s['meets']['added_p99'] else 'NOT met'}) |",
        f"| router throughput per core of router CPU (max mode) | "
        f"{s['router_requests_per_core_second_max_mode']:.0f} req/s "
        f"(target >= {s['targets']['requests_per_core_second']:.0f}: "
        f"{'met' if s['meets']['per_core'] else 'NOT met'}) |",
        f"| added latency per round, p50 / p99 | "
        f"{', '.join(f'{v:.3f}' for v in s['added_latency_ms_per_round']['p50'])} / "
        f"{', '.join(f'{v:.3f}' for v in s['added_latency_ms_per_round']['p99'])} ms |",
        f"| router CPU per 1000 requests at 1000 req/s | "
        f"{s['router_cpu_ms_per_1000_requests_latency_mode']:.1f} ms |",
        f"| max throughput, router / direct | {s['throughput_ratio_router_over_direct']:.2f} |",
        "",
        "| mode | target | req/s | p50 ms | p90 ms | p99 ms | errors | router CPU ms/1k req | "
        "model CPU ms/1k req | loadgen CPU ms/1k req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        cpu = run["cpu_ms_per_1000_requests"]
        lines.append(
            f"| {run['mode']} | {run['target']} | {run['throughput']:.0f} | {run['latency_ms']['p50']:.3f} | "
            f"{run['latency_ms']['p90']:.3f} | {run['latency_ms']['p99']:.3f} | "
            f"{run['errors'] + run['non_2xx']} | {cpu['router']:.1f} | {cpu['model_server']:.1f} | "
            f"{cpu['loadgen']:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
