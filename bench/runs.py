"""What the cluster benchmarks share around their own measurements: one run at a time per machine, Ctrl-C
and SIGTERM ending a run through its cleanup, and the benchmark's own namespace (refusing one it did not
make, waiting for its deletion). The cluster's version for the report is `Cluster.server_version`."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from support.cluster import Cluster, KubectlError

BENCH_LABEL = "modelfleet.io/bench"


@contextlib.contextmanager
def single_run(name: str) -> Iterator[None]:
    """One `name` benchmark at a time on this machine (runs share their namespace)."""
    lock = Path(tempfile.gettempdir()) / f"modelfleet-bench-{name}.lock"
    with lock.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"another {name} benchmark is running on this machine") from None
        yield


def machine(load_before: tuple[float, float, float], **more: object) -> dict[str, object]:
    """The report's `machine`: this host, what `more` adds (the cluster's version, say), and the load
    average before the run (`load_before`, taken at its start) and now."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **more,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def interrupt(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: end the run as Ctrl-C does, through its cleanup."""
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass(frozen=True)
class BenchNamespace:
    """The benchmark's own namespace, labelled `modelfleet.io/bench: <label>`."""

    cluster: Cluster
    name: str
    label: str
    deletion_seconds: float = 300

    def state(self) -> str | None:
        """Its phase, None when there is none; refuses a namespace that is not this benchmark's.

        KubectlError when kubectl fails: an API server that does not answer says nothing of the namespace.
        """
        found = self.cluster.kubectl("get", "namespace", self.name, "-o", "json", "--ignore-not-found")
        if not found.stdout.strip():
            return None
        body = json.loads(found.stdout)
        if (body["metadata"].get("labels") or {}).get(BENCH_LABEL) != self.label:
            raise SystemExit(f"namespace {self.name} exists and is not this benchmark's: not touching it")
        return str((body.get("status") or {}).get("phase", ""))

    def wait_gone(self) -> bool:
        """Whether it is gone within `deletion_seconds` (kubectl failing meanwhile is tried again)."""
        try:
            self.cluster.wait_for(
                f"namespace {self.name} deleted",
                lambda: self.state() is None,
                timeout=self.deletion_seconds,
                interval=2,
            )
        except TimeoutError:
            return False
        return True

    def clear_earlier_run(self) -> None:
        """Delete what an earlier run left, and wait until it is gone."""
        phase = self.state()
        if phase is None:
            return
        print(f"namespace {self.name} is left from an earlier run ({phase}): deleting it", flush=True)
        self.cluster.kubectl("delete", "namespace", self.name, "--wait=false", "--ignore-not-found")
        if not self.wait_gone():
            raise SystemExit(f"namespace {self.name} is still there after {self.deletion_seconds:.0f} s")

    def create(self) -> None:
        """The namespace, once its default ServiceAccount exists (pods need it)."""
        self.cluster.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.name, "labels": {BENCH_LABEL: self.label}},
                }
            ]
        )
        self.cluster.wait_for(
            "the namespace's default ServiceAccount",
            lambda: self.cluster.get_or_none("serviceaccount", "default", self.name),
        )

    def delete(self, also: Sequence[tuple[str, str]] = ()) -> None:
        """Delete it, and the benchmark's cluster-scoped objects `also` ((kind, name) each), and wait for
        the namespace; says so when it may still be there (never raises: called in cleanup)."""
        print(
            f"deleting namespace {self.name}"
            + (" and the benchmark's cluster-scoped objects" if also else ""),
            flush=True,
        )
        self.cluster.kubectl(
            "delete", "namespace", self.name, "--wait=false", "--ignore-not-found", check=False
        )
        for kind, name in also:
            self.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        try:
            gone = self.wait_gone()
        except (KubectlError, RuntimeError) as error:
            print(f"  could not check the namespace: {error}", flush=True)
            gone = False
        if not gone:
            by_hand = "; ".join(
                [
                    f"kubectl delete namespace {self.name}",
                    *(f"kubectl delete {kind} {name}" for kind, name in also),
                ]
            )
            print(
                f"  namespace {self.name} may still be there: it is deleted at the start of the next run, "
                f"or by hand: {by_hand}",
                flush=True,
            )
