"""Fixtures shared by every tier.

Tiers follow the folders: tests/unit (pure logic), tests/process (real processes on loopback),
tests/integration (a real API server), tests/e2e (real pods from this repo's images, real traffic).
Integration and e2e tests use the cluster KUBECONFIG points at when it answers, else the local
cluster (`make cluster-up`); with neither they fail, saying how to get one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cluster import REPO, Cluster, find_cluster

TIERS = ("unit", "process", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in TIERS and parts[0] != "process":
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    found = find_cluster()
    if found is None:
        pytest.fail(
            "no Kubernetes cluster answers: run `make cluster-up` (local cluster) or point KUBECONFIG "
            "at a working cluster",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    """The modelfleet.io CRDs, applied from crds/ and established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[f"crd/{p}.modelfleet.io" for p in ("models", "modelversions", "deployments", "monitors")],
    )


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = cluster.new_namespace()
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


class OperatorProcess:
    """The operator as a real process on this machine, watching one namespace of the real cluster."""

    def __init__(self, cluster: Cluster, namespace: str, log_path: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelfleet.cli", "operator", "--namespace", self.namespace],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.cluster.env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def operator(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """The operator, running against the real cluster and scoped to this test's namespace."""
    proc = OperatorProcess(cluster, namespace, tmp_path / "operator.log")
    proc.start()
    time.sleep(0.5)
    try:
        yield proc
    finally:
        alive = proc.alive()
        proc.kill(signal.SIGTERM)
        report = getattr(request.node, "rep_call", None)
        if (report is not None and report.failed) or not alive:
            tail = "\n".join(proc.log().splitlines()[-60:])
            print(f"\n--- operator log (last 60 lines){' (it had died)' if not alive else ''} ---\n{tail}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
