"""What the operator costs and does, measured: memory and CPU over idle windows and waits (its /proc
samples: tests/support/operator.py), API requests (the API server's count), its own reconcile counter,
and where its memory is (its tracemalloc dump).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelfleet.analysis.exposition import parse_exposition
from support.operator import MB, OperatorProcess

if TYPE_CHECKING:
    from bench.operator_scale.cluster import BenchCluster
    from bench.operator_scale.watch import Counts, StatusWatch

RECONCILES = "modelfleet_reconcile_duration_seconds_count"


def counter_total(exposition: str, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples of a Prometheus counter whose labels include `labels` (0 when none).

    Only the lines that start with `name` are parsed: the API server's whole exposition (megabytes)
    would take the parser seconds, and a line of some other metric cannot fail the count.
    """
    lines = "\n".join(line for line in exposition.splitlines() if line.startswith(name))
    matching = (
        sample.value
        for sample in parse_exposition(lines)
        if sample.name == name and all(dict(sample.labels).get(k) == v for k, v in labels.items())
    )
    return sum(matching, 0.0)


def reconciles(operator: OperatorProcess) -> float:
    """Deployment reconciles the operator counted (its own /metrics); 0 until it serves them."""
    try:
        text = operator.metrics()
    except OSError:
        return 0.0
    return counter_total(text, RECONCILES, {"controller": "deployment"})


def idle_window(
    cluster: BenchCluster,
    operator: OperatorProcess,
    seconds: float,
    what: str,
    watches: Sequence[StatusWatch],
) -> dict[str, Any]:
    """Memory at the end, CPU and API requests over `seconds` of nothing changing.

    `watches` count the changes of the benchmark's objects meanwhile: anything but 0 means something
    did change (the control plane still settling), and the window is not quite idle.
    """
    requests_before = cluster.operator_requests()
    events_before = sum(w.events for w in watches)
    before_by_kind = {w.name: w.events for w in watches}
    before = operator.sample()
    deadline = before.at + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(5.0, left))
        operator.sample()  # fails early if the operator died
    after = operator.sample()
    requests = cluster.operator_requests() - requests_before
    changes = sum(w.events for w in watches) - events_before
    by_kind = {w.name: w.events - before_by_kind.get(w.name, 0) for w in watches}
    wall = after.at - before.at
    out = {
        "seconds": wall,
        "cpu_seconds": after.cpu_seconds - before.cpu_seconds,
        "cpu_percent": 100.0 * (after.cpu_seconds - before.cpu_seconds) / wall,
        "rss_mb": after.rss_mb,
        "pss_mb": after.pss_mb,
        "hwm_mb": after.hwm_mb,
        "api_requests": requests,
        "api_requests_per_minute": 60.0 * requests / wall,
        "object_changes": changes,
        "object_changes_by_kind": by_kind,
    }
    print(
        f"  {what}: RSS {out['rss_mb']:.1f} MB, PSS {out['pss_mb']:.1f} MB, "
        f"idle CPU {out['cpu_percent']:.2f}% of a core, {requests:.0f} API requests and {changes} object "
        f"changes in {wall:.0f} s",
        flush=True,
    )
    return out


def wait_until(
    what: str,
    counts: Counts,
    expected: int,
    done: Callable[[int, int, Counter[str]], bool],
    timeout: float,
    operator: OperatorProcess,
    started: float,
) -> tuple[float, float]:
    """Poll the watch until `done`; (seconds since `started`, peak operator RSS MB meanwhile)."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    last_print = 0.0
    while True:
        peak = max(peak, operator.sample().rss_mb)
        total, reconciled, phases = counts()
        now = time.monotonic()
        if done(total, reconciled, phases):
            print(f"  {what}: {reconciled}/{expected} after {now - started:.1f} s", flush=True)
            return now - started, peak
        if now > deadline:
            raise TimeoutError(
                f"{what}: only {reconciled}/{expected} reconciled after {timeout:.0f} s "
                f"(phases {dict(phases)}); operator log:\n{operator.tail()}"
            )
        if now - last_print >= 5:
            print(f"  {what}: {reconciled}/{expected} ({now - started:.0f} s, RSS {peak:.0f} MB)", flush=True)
            last_print = now
        time.sleep(0.5)


def settle(
    watches: Sequence[StatusWatch], minimum: float, quiet: float, limit: float, poll: float = 1.0
) -> float:
    """Wait at least `minimum` seconds, then until the benchmark's objects have not changed for `quiet`
    seconds (the control plane done with them), at most `limit` seconds in all; seconds waited."""
    started = time.monotonic()
    time.sleep(minimum)
    last_count, last_change = sum(w.events for w in watches), time.monotonic()
    while (now := time.monotonic()) - last_change < quiet:
        if now - started > limit:
            print(f"  still changing after {limit:.0f} s: measuring anyway", flush=True)
            break
        time.sleep(poll)
        count = sum(w.events for w in watches)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
    return time.monotonic() - started


def package_of(filename: str) -> str:
    """The distribution or standard-library module an allocating source file belongs to."""
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/modelfleet/" in filename:
        return "modelfleet." + filename.split("/modelfleet/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith("<"):
        return filename
    return "stdlib " + Path(filename).name.removesuffix(".py") if "/lib/python" in filename else filename


def allocation_summary(dump: str, top: int = 15) -> dict[str, Any]:
    """Live memory by package and the biggest allocation sites, from a dump of support.operator's
    TRACEMALLOC_HOOK."""
    by_package: Counter[str] = Counter()
    sites = []
    for line in dump.splitlines():
        size, count, filename, lineno = line.split("\t")
        by_package[package_of(filename)] += int(size)
        sites.append((int(size), int(count), f"{filename}:{lineno}"))
    sites.sort(reverse=True)
    return {
        "traced_mb": sum(by_package.values()) / MB / MB,
        "by_package_mb": [(name, size / MB / MB) for name, size in by_package.most_common(top)],
        "top_sites": [{"mb": size / MB / MB, "blocks": n, "where": where} for size, n, where in sites[:top]],
    }


def allocations(operator: OperatorProcess) -> dict[str, Any]:
    """The operator's live allocations now, by package and site (it runs with a tracemalloc_dir)."""
    return allocation_summary(operator.tracemalloc_dump())
