"""The operator launcher of tests/support (also the benchmarks' and the demo's), with a stand-in process:
its /proc samples, its settings in the environment, its tracemalloc dump, and its log when it dies."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.cluster import Cluster
from support.operator import OperatorProcess

NO_CLUSTER = Cluster(kubeconfig="/nonexistent/kubeconfig", kubectl_path="kubectl", local=False)
# prints what the launcher gave it, then holds 8 MB and waits to be stopped
STAND_IN = (
    "import os, time; "
    "print('port', os.environ.get('MODELFLEET_METRICS_PORT'), 'kubeconfig', os.environ['KUBECONFIG'], "
    "'setting', os.environ.get('MODELFLEET_X'), flush=True); "
    "held = bytearray(8 * 1024 * 1024); time.sleep(60)"
)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.05)


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        NO_CLUSTER,
        "ns",
        tmp_path / "operator.log",
        [sys.executable, "-c", STAND_IN],
        {"MODELFLEET_X": "on", "KUBECONFIG": str(tmp_path / "token.kubeconfig")},
        metrics_port=18080,
        tracemalloc_dir=tmp_path,
    )
    process.start()
    try:
        yield process
    finally:
        process.kill(signal.SIGTERM)


def test_the_operator_gets_its_settings_and_its_own_kubeconfig(
    stand_in: OperatorProcess, tmp_path: Path
) -> None:
    wait_for("first line of the log", lambda: "port" in stand_in.log())
    assert stand_in.log().split() == [
        "port",
        "18080",
        "kubeconfig",
        str(tmp_path / "token.kubeconfig"),  # the env given wins over the cluster's
        "setting",
        "on",
    ]


def test_samples_of_a_live_operator_read_its_memory_and_cpu(stand_in: OperatorProcess) -> None:
    wait_for("first line of the log", lambda: "port" in stand_in.log())
    sample = stand_in.sample()
    assert sample.rss_mb > 8
    assert sample.hwm_mb >= sample.rss_mb
    assert 0 < sample.pss_mb <= sample.rss_mb
    assert sample.cpu_seconds > 0
    assert stand_in.sample().at > sample.at


def test_the_tracemalloc_dump_lists_allocation_sites(stand_in: OperatorProcess) -> None:
    wait_for("first line of the log", lambda: "port" in stand_in.log())
    lines = stand_in.tracemalloc_dump(timeout=20).splitlines()
    assert lines
    sites = [line.split("\t") for line in lines]
    assert all(len(site) == 4 and int(site[0]) > 0 and int(site[1]) > 0 for site in sites)
    size, _, filename, _ = max(sites, key=lambda site: int(site[0]))
    assert (int(size) >= 8 * 1024 * 1024, filename) == (True, "<string>")  # the 8 MB it holds


def test_a_dead_operator_cannot_be_sampled_and_its_log_says_why(tmp_path: Path) -> None:
    process = OperatorProcess(
        NO_CLUSTER, "ns", tmp_path / "operator.log", [sys.executable, "-c", "raise SystemExit('boom')"]
    )
    process.start()
    wait_for("the exit", lambda: not process.alive())
    with pytest.raises(RuntimeError, match=r"the operator exited \(1\):\nboom"):
        process.sample()
    assert process.tail(1) == "boom"


def test_without_a_metrics_port_or_tracemalloc_there_is_nothing_to_read(tmp_path: Path) -> None:
    process = OperatorProcess(NO_CLUSTER, "ns", tmp_path / "operator.log")
    with pytest.raises(RuntimeError, match="metrics port"):
        process.metrics()
    with pytest.raises(RuntimeError, match="tracemalloc"):
        process.tracemalloc_dump()
