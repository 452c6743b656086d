"""Leader election against the real API server: two operator processes, one Lease, one leader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cluster import Cluster

LEASE = "modelfleet-operator"


class Candidate:
    def __init__(self, cluster: Cluster, namespace: str, log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelfleet.cli",
                    "operator",
                    "--namespace",
                    namespace,
                    "--leader-elect",
                    "--leader-election-namespace",
                    namespace,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**cluster.env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def identity(self) -> str | None:
        for line in self.log().splitlines():
            if "acquired the lease as " in line:
                return line.rsplit("acquired the lease as ", 1)[1].strip()
        return None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


@pytest.fixture
def candidates(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> Iterator[tuple[Candidate, Candidate]]:
    first = Candidate(cluster, namespace, tmp_path / "first.log")
    cluster.wait_for("the first candidate to lead", first.identity, timeout=30)
    second = Candidate(cluster, namespace, tmp_path / "second.log")
    try:
        yield first, second
    finally:
        for candidate in (first, second):
            candidate.stop(signal.SIGKILL)


def holder(cluster: Cluster, namespace: str) -> str:
    lease = cluster.get("lease", LEASE, namespace)
    return str(lease["spec"].get("holderIdentity") or "")


def test_one_leader_then_handover_on_shutdown_then_exit_when_the_lease_is_taken(
    cluster: Cluster, namespace: str, candidates: tuple[Candidate, Candidate]
) -> None:
    first, second = candidates
    # Given one leader and a standby
    assert holder(cluster, namespace) == first.identity()
    cluster.wait_for("the standby to wait", lambda: "waiting for the lease" in second.log(), timeout=30)
    time.sleep(4)  # two renewals: the standby must still wait
    assert second.identity() is None
    assert holder(cluster, namespace) == first.identity()

    # When the leader stops cleanly, it releases the Lease and the standby takes over at once
    started = time.monotonic()
    assert first.stop(signal.SIGTERM) == 0
    assert "released the lease" in first.log()
    cluster.wait_for("the standby to lead", second.identity, timeout=15)
    handover = time.monotonic() - started
    assert handover < 10, f"handover took {handover:.1f}s; a released Lease should not wait for expiry"
    assert holder(cluster, namespace) == second.identity()

    # When somebody else takes the Lease, the leader stops with a non-zero code
    lease = cluster.get("lease", LEASE, namespace)
    lease["spec"]["holderIdentity"] = "intruder"
    cluster.kubectl("replace", "-f", "-", input=json.dumps(lease))
    cluster.wait_for("the old leader to exit", lambda: second.process.poll() is not None, timeout=20)
    assert second.process.returncode == 3, second.log()[-2000:]
    assert "leadership lost" in second.log()
    assert holder(cluster, namespace) == "intruder"
