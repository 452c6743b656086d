"""The results: the summary against the design targets (docs/design.md), the operator log's problems, and
the Markdown written to operator-latest.md. Pure."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

TARGET_RSS_MB = 150.0  # with 1,000 Deployments (docs/design.md)
TARGET_RSS_MB_10K = 400.0  # with 10,000
TARGET_IDLE_CPU_PERCENT = 2.0
TARGET_RESTART_PER_SECOND = 100.0  # Deployments reconciled per second after an operator restart
MB = 1024.0  # kB


def target_rss_mb(count: int) -> float:
    """The RSS target for `count` Deployments: 150 MB up to 1,000, 400 MB beyond (up to 10,000)."""
    return TARGET_RSS_MB if count <= 1000 else TARGET_RSS_MB_10K


def ratio(loaded: float, baseline: float) -> float | None:
    return loaded / baseline if baseline > 0 else None


def summarize(
    baseline: dict[str, Any], loaded: dict[str, Any], load: dict[str, Any], count: int
) -> dict[str, Any]:
    """Ratios loaded / baseline, per-Deployment costs and the verdicts against the design targets."""
    reconcile_seconds = load["deployments_reconciled_seconds"]
    bulk = load["deployments_created"]
    restart = load.get("restart")
    restart_rate = (
        count / restart["reconciled_seconds"] if restart and restart["reconciled_seconds"] else None
    )
    return {
        "rss_ratio": ratio(loaded["rss_mb"], baseline["rss_mb"]),
        "pss_ratio": ratio(loaded["pss_mb"], baseline["pss_mb"]),
        "idle_cpu_ratio": ratio(loaded["cpu_percent"], baseline["cpu_percent"]),
        "idle_requests_ratio": ratio(loaded["api_requests_per_minute"], baseline["api_requests_per_minute"]),
        "rss_kb_per_deployment": (loaded["rss_mb"] - baseline["rss_mb"]) * MB / count,
        "deployments_per_second": bulk / reconcile_seconds if reconcile_seconds > 0 else None,
        "cpu_ms_per_deployment": 1000.0 * load["operator_cpu_seconds"] / bulk if bulk else None,
        "api_requests_per_deployment": load["api_requests"] / bulk if bulk else None,
        "restart_deployments_per_second": restart_rate,
        "restart_api_requests_per_deployment": (
            restart["api_requests"] / count if restart and count else None
        ),
        "targets": {
            "rss_mb": target_rss_mb(count),
            "idle_cpu_percent": TARGET_IDLE_CPU_PERCENT,
            "restart_per_second": TARGET_RESTART_PER_SECOND,
        },
        "meets": {
            "rss": loaded["rss_mb"] < target_rss_mb(count),
            "idle_cpu": loaded["cpu_percent"] < TARGET_IDLE_CPU_PERCENT,
            "restart": restart_rate is not None and restart_rate >= TARGET_RESTART_PER_SECOND,
        },
    }


def _num(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def markdown(report: dict[str, Any], json_name: str) -> str:
    """The Markdown summary written to operator-latest.md."""
    s, b, loaded, load = report["summary"], report["baseline"], report["loaded"], report["load"]
    settings, machine = report["settings"], report["machine"]
    count = settings["count"]
    phases = ", ".join(f"{phase or '(none)'} {n}" for phase, n in sorted(load["final_phases"].items()))
    log = report["operator_log"]
    lines = [
        "# Operator scale benchmark (latest)",
        "",
        f"Run {report['started']} on {machine['cpus']} CPUs (load average before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average_after'][0]:.2f}); "
        f"Python {machine['python']}, Kubernetes {machine['kubernetes']}. Full data: `{json_name}`.",
        f"{count} Deployments ({settings['serving']} serving, the rest not servable: unapproved versions), "
        f"{load['models']} Models, {load['modelversions']} ModelVersions; idle windows of "
        f"{settings['idle']:g} s, the loaded one starting {load['settle_seconds']:.0f} s after the last "
        f"Deployment was reconciled, once the benchmark's objects had not changed for "
        f"{settings.get('quiet', 0):g} s. The operator runs on the host as the chart's ServiceAccount; "
        "its API requests are counted by the API server (its own FlowSchema).",
        "",
        "| measure | baseline (no objects) | loaded | loaded / baseline | target |",
        "|---|---|---|---|---|",
        f"| RSS (VmRSS) | {b['rss_mb']:.1f} MB | {loaded['rss_mb']:.1f} MB | {_num(s['rss_ratio'])} | "
        f"< {s['targets']['rss_mb']:.0f} MB: {_verdict(s['meets']['rss'])} |",
        f"| PSS (smaps_rollup) | {b['pss_mb']:.1f} MB | {loaded['pss_mb']:.1f} MB | "
        f"{_num(s['pss_ratio'])} | |",
        f"| peak RSS so far (VmHWM) | {b['hwm_mb']:.1f} MB | {loaded['hwm_mb']:.1f} MB | | |",
        f"| idle CPU | {b['cpu_percent']:.2f}% of a core | {loaded['cpu_percent']:.2f}% of a core | "
        f"{_num(s['idle_cpu_ratio'])} | < {s['targets']['idle_cpu_percent']:g}%: "
        f"{_verdict(s['meets']['idle_cpu'])} |",
        f"| API requests while idle | {b['api_requests']:.0f} ({b['api_requests_per_minute']:.1f}/min) | "
        f"{loaded['api_requests']:.0f} ({loaded['api_requests_per_minute']:.1f}/min) | "
        f"{_num(s['idle_requests_ratio'])} | |",
        f"| changes of the benchmark's objects while idle (control plane settling) | "
        f"{b.get('object_changes', 0)} | {loaded.get('object_changes', 0)} | | 0 for a clean window |",
        "",
        "| reconcile | result |",
        "|---|---|",
        f"| Models and ModelVersions created / reconciled | {load['registry_created_seconds']:.1f} s / "
        f"{load['registry_reconciled_seconds']:.1f} s |",
        f"| {load['deployments_created']} Deployments created | "
        f"{load['deployments_created_seconds']:.1f} s |",
        f"| all reconciled (observedGeneration == generation), from the first create | "
        f"{load['deployments_reconciled_seconds']:.1f} s: "
        f"{_num(s['deployments_per_second'], '.1f')} Deployments/s |",
        f"| operator CPU while reconciling them | {load['operator_cpu_seconds']:.1f} s "
        f"({_num(s['cpu_ms_per_deployment'], '.1f')} ms per Deployment) |",
        f"| operator API requests while reconciling them | {load['api_requests']:.0f} "
        f"({_num(s['api_requests_per_deployment'], '.1f')} per Deployment) |",
        f"| peak RSS while reconciling | {load['peak_rss_mb']:.1f} MB |",
        f"| memory per Deployment (loaded - baseline RSS) / N | {s['rss_kb_per_deployment']:.1f} kB |",
        *restart_rows(load.get("restart"), s),
        f"| final phases | {phases} |",
        f"| operator log | {log['errors']} ERROR, {log['warnings']} WARNING, "
        f"{log['tracebacks']} tracebacks |",
        *(f"| log, {k['count']} x | `{k['line'].replace('|', '/')}` |" for k in log["frequent"]),
        "",
    ]
    if settings["serving"]:
        lines.insert(
            -1,
            f"| {settings['serving']} serving Deployments Healthy after | "
            f"{load['serving_ready_seconds']:.1f} s |",
        )
    allocations = report.get("allocations")
    if allocations:
        lines += [
            f"Profiling run (--tracemalloc): the figures above include the tracing's own cost. Live "
            f"Python allocations at the end of the loaded window: {allocations['traced_mb']:.1f} MB.",
            "",
            "| package | MB |",
            "|---|---|",
            *(f"| {name} | {mb:.1f} |" for name, mb in allocations["by_package_mb"]),
            "",
            "| allocation site | MB | blocks |",
            "|---|---|---|",
            *(
                f"| `{site['where']}` | {site['mb']:.1f} | {site['blocks']} |"
                for site in allocations["top_sites"]
            ),
            "",
        ]
    return "\n".join(lines)


def restart_rows(restart: dict[str, Any] | None, s: dict[str, Any]) -> list[str]:
    """The restart phase's rows of the reconcile table (none when the run had no restart phase)."""
    if not restart:
        return []
    rate, target = _num(s["restart_deployments_per_second"], ".1f"), s["targets"]["restart_per_second"]
    return [
        f"| operator restarted: first reconcile after / all {restart['deployments']} reconciled after "
        f"(from the new process's start; its own reconcile count) | "
        f"{restart['first_reconcile_seconds']:.1f} s / {restart['reconciled_seconds']:.1f} s: {rate} "
        f"Deployments/s (target >= {target:g}: {_verdict(s['meets']['restart'])}) |",
        f"| API requests of the restarted operator until then | {restart['api_requests']:.0f} "
        f"({_num(s['restart_api_requests_per_deployment'], '.2f')} per Deployment, watches and lists "
        "included) |",
        f"| operator CPU from the restart until all reconciled | {restart['cpu_seconds']:.1f} s |",
    ]


def log_counts(text: str, examples: int = 5) -> dict[str, Any]:
    """ERROR and WARNING lines and tracebacks in the operator's log, with the most frequent kinds.

    A kind is the line without its time and with numbers masked, so that one warning about many
    objects counts once.
    """
    problems = re.findall(r"^\S+ \S+ ((?:ERROR|WARNING) .*)$", text, re.MULTILINE)
    kinds = Counter(re.sub(r"\d+", "N", line)[:200] for line in problems)
    return {
        "errors": sum(line.startswith("ERROR") for line in problems),
        "warnings": sum(line.startswith("WARNING") for line in problems),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "frequent": [{"count": n, "line": line} for line, n in kinds.most_common(examples)],
    }
