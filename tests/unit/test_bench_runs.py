"""What the cluster benchmarks share (bench/runs.py): one run at a time, SIGTERM, and their own namespace,
against a scripted kubectl (the benchmark's plumbing: what it asks and what it says, not the cluster's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `bench`

from bench.runs import BENCH_LABEL, BenchNamespace, interrupt, machine, single_run

from support.cluster import Cluster, KubectlError

Answer = tuple[int, str]  # kubectl's exit status and output


@dataclass(frozen=True)
class ScriptedCluster(Cluster):
    """A Cluster whose `kubectl get namespace` answers come from a list (the last one repeats), and which
    records every kubectl command; anything else succeeds with no output."""

    answers: list[Answer] = field(default_factory=list)
    commands: list[tuple[str, ...]] = field(default_factory=list)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        self.commands.append(args)
        code, out = 0, ""
        if args[:2] == ("get", "namespace"):
            code, out = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        result = subprocess.CompletedProcess(
            [self.kubectl_path, *args], code, out, "" if code == 0 else "boom"
        )
        if check and code != 0:
            raise KubectlError(args, result)
        return result


class Clock:
    """support.cluster's `time` for Cluster.wait_for: sleeping moves the clock, instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("support.cluster.time", fake)
    return fake


def namespace(label: str = "operator", phase: str = "Active") -> Answer:
    body = {"metadata": {"name": "bench", "labels": {BENCH_LABEL: label}}, "status": {"phase": phase}}
    return 0, json.dumps(body)


GONE: Answer = (0, "")
FAILING: Answer = (1, "")


def bench(*answers: Answer, seconds: float = 900) -> tuple[BenchNamespace, ScriptedCluster]:
    cluster = ScriptedCluster("kubeconfig", "kubectl", True, list(answers))
    return BenchNamespace(cluster, "bench", "operator", seconds), cluster


def deletes(cluster: ScriptedCluster) -> list[tuple[str, ...]]:
    return [command for command in cluster.commands if command[0] == "delete"]


def test_the_state_is_the_phase_of_the_benchmarks_own_namespace() -> None:
    assert bench(namespace(phase="Terminating"))[0].state() == "Terminating"
    assert bench(GONE)[0].state() is None
    ns, cluster = bench(namespace())
    assert ns.state() == "Active"
    assert cluster.commands == [("get", "namespace", "bench", "-o", "json", "--ignore-not-found")]


@pytest.mark.parametrize("answer", [namespace(label="mlflow"), (0, json.dumps({"metadata": {"name": "x"}}))])
def test_a_namespace_of_the_name_that_is_not_the_benchmarks_is_refused(answer: Answer) -> None:
    with pytest.raises(
        SystemExit, match="namespace bench exists and is not this benchmark's: not touching it"
    ):
        bench(answer)[0].state()


def test_kubectl_failing_is_not_taken_for_a_namespace_gone() -> None:
    with pytest.raises(KubectlError):
        bench(FAILING)[0].state()


def test_waiting_for_the_namespace_to_go_tries_a_failing_kubectl_again(clock: Clock) -> None:
    ns, cluster = bench(namespace(phase="Terminating"), FAILING, GONE)
    assert ns.wait_gone()
    assert len(cluster.commands) == 3
    assert clock.now == 4  # every 2 s


def test_waiting_gives_up_after_the_deletion_time(clock: Clock) -> None:
    assert not bench(namespace(phase="Terminating"), seconds=30)[0].wait_gone()
    assert clock.now >= 30


def test_an_earlier_runs_namespace_is_deleted_and_waited_for(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, cluster = bench(namespace(phase="Terminating"), namespace(phase="Terminating"), GONE)
    ns.clear_earlier_run()
    assert (
        capsys.readouterr().out == "namespace bench is left from an earlier run (Terminating): deleting it\n"
    )
    assert deletes(cluster) == [("delete", "namespace", "bench", "--wait=false", "--ignore-not-found")]


def test_no_earlier_run_nothing_deleted(capsys: pytest.CaptureFixture[str]) -> None:
    ns, cluster = bench(GONE)
    ns.clear_earlier_run()
    assert deletes(cluster) == []
    assert capsys.readouterr().out == ""


def test_an_earlier_runs_namespace_that_stays_stops_the_run(clock: Clock) -> None:
    with pytest.raises(SystemExit, match="namespace bench is still there after 900 s"):
        bench(namespace(phase="Terminating"))[0].clear_earlier_run()


def test_deleting_takes_the_cluster_scoped_objects_along(
    clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, cluster = bench(namespace(phase="Terminating"), GONE)
    ns.delete(also=[("FlowSchema", "fs"), ("ClusterRole", "role")])
    assert deletes(cluster) == [
        ("delete", "namespace", "bench", "--wait=false", "--ignore-not-found"),
        ("delete", "FlowSchema", "fs", "--ignore-not-found"),
        ("delete", "ClusterRole", "role", "--ignore-not-found"),
    ]
    assert capsys.readouterr().out == "deleting namespace bench and the benchmark's cluster-scoped objects\n"


@pytest.mark.parametrize(
    ("also", "first", "by_hand"),
    [
        ((), "deleting namespace bench", "kubectl delete namespace bench"),
        (
            [("FlowSchema", "fs")],
            "deleting namespace bench and the benchmark's cluster-scoped objects",
            "kubectl delete namespace bench; kubectl delete FlowSchema fs",
        ),
    ],
)
def test_a_namespace_that_may_be_left_is_said_with_how_to_delete_it(
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    also: list[tuple[str, str]],
    first: str,
    by_hand: str,
) -> None:
    ns, _ = bench(namespace(phase="Terminating"), seconds=10)
    ns.delete(also)  # never raises
    assert capsys.readouterr().out.splitlines() == [
        first,
        "  namespace bench may still be there: it is deleted at the start of the next run, or by hand: "
        + by_hand,
    ]


def test_deleting_says_when_it_could_not_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unanswered(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the API server went away")

    ns, _ = bench(GONE)
    monkeypatch.setattr(ScriptedCluster, "wait_for", unanswered)
    ns.delete()  # never raises
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  could not check the namespace: the API server went away",
        "  namespace bench may still be there: it is deleted at the start of the next run, "
        "or by hand: kubectl delete namespace bench",
    ]


def test_one_run_of_a_benchmark_at_a_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    with single_run("operator"):
        assert (tmp_path / "modelfleet-bench-operator.lock").exists()
        refused = pytest.raises(SystemExit, match="another operator benchmark is running on this machine")
        with refused, single_run("operator"):
            pass
        with single_run("mlflow"):  # another benchmark has its own lock
            pass
    with single_run("operator"):  # released
        pass


def test_sigterm_ends_a_run_as_ctrl_c_does() -> None:
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        interrupt(15, None)


def test_the_machine_block_names_the_host_what_is_added_and_the_load_before_and_after() -> None:
    block = machine((1.0, 2.0, 3.0), kubernetes="v1.34.4")
    assert block["kubernetes"] == "v1.34.4"
    assert block["load_average_before"] == (1.0, 2.0, 3.0)
    assert len(block["load_average_after"]) == 3  # type: ignore[arg-type]
    assert block["cpus"] == os.cpu_count()
    assert list(block)[:3] == ["cpus", "python", "platform"]
