"""The operator as a real process on this machine, watching one namespace of the real cluster.

Besides starting and stopping it: what it costs, from /proc (`sample`), what it counts, from its own
/metrics (`metrics_port`), and where its memory is, from tracemalloc (`tracemalloc_dir`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.cluster import Cluster

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024.0  # /proc reports kB

TRACEMALLOC_VARIABLE = "MODELFLEET_TRACEMALLOC_DUMP"
TRACEMALLOC_HOOK = """\
import os, signal, tracemalloc

tracemalloc.start()


def _dump(signum, frame):
    out = os.environ["MODELFLEET_TRACEMALLOC_DUMP"]
    snapshot = tracemalloc.take_snapshot()
    with open(out + ".tmp", "w") as handle:
        for stat in snapshot.statistics("lineno"):
            frame = stat.traceback[0]
            handle.write(f"{stat.size}\\t{stat.count}\\t{frame.filename}\\t{frame.lineno}\\n")
    os.replace(out + ".tmp", out)


signal.signal(signal.SIGUSR1, _dump)
"""
"""`sitecustomize` of an operator started with a tracemalloc_dir: trace allocations, and on SIGUSR1 write
them, one line per allocation site: size in bytes, blocks, file, line (tab-separated)."""


def cpu_seconds_from_stat(stat: str, ticks: int = CLOCK_TICKS) -> float:
    """User + system CPU seconds of a process (all its threads) from the text of /proc/PID/stat."""
    # the command name (field 2) is in parentheses and may hold spaces: split after its closing one
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def kb_field(text: str, name: str) -> int:
    """A `Name:   1234 kB` line of /proc/PID/status or smaps_rollup, in kB."""
    match = re.search(rf"^{re.escape(name)}:\s+(\d+) kB$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {name} line")
    return int(match.group(1))


@dataclass(frozen=True)
class Sample:
    """A process's CPU and memory at one moment (`at`: time.monotonic())."""

    at: float
    cpu_seconds: float
    rss_mb: float
    hwm_mb: float
    pss_mb: float


def sample_process(pid: int) -> Sample:
    """CPU seconds (all threads), resident memory (VmRSS, its peak VmHWM) and Pss of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return Sample(
        at=time.monotonic(),
        cpu_seconds=cpu_seconds_from_stat(Path(f"/proc/{pid}/stat").read_text()),
        rss_mb=kb_field(status, "VmRSS") / MB,
        hwm_mb=kb_field(status, "VmHWM") / MB,
        pss_mb=kb_field(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss") / MB,
    )


class OperatorProcess:
    """`modelfleet operator --namespace NS` by default; `command` runs something else (e.g. kopf with
    only some handler modules).

    `metrics_port` sets MODELFLEET_METRICS_PORT (its /metrics, read by `metrics`); `tracemalloc_dir`
    installs TRACEMALLOC_HOOK there (read by `tracemalloc_dump`).
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_path: Path,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        *,
        metrics_port: int | None = None,
        tracemalloc_dir: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.env = dict(env or {})
        """Environment added to the operator's (its settings, e.g. MODELFLEET_ARTIFACT_NODE_CACHE)."""
        self.namespace = namespace
        self.log_path = log_path
        self.command = command or [
            sys.executable,
            "-m",
            "modelfleet.cli",
            "operator",
            "--namespace",
            namespace,
        ]
        self.metrics_port = metrics_port
        self.tracemalloc_dir = tracemalloc_dir
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tracemalloc_out(self) -> Path | None:
        return self.tracemalloc_dir / "tracemalloc.tsv" if self.tracemalloc_dir is not None else None

    def start(self) -> None:
        env = {**self.cluster.env, "PYTHONUNBUFFERED": "1", **self.env}
        if self.metrics_port is not None:
            env["MODELFLEET_METRICS_PORT"] = str(self.metrics_port)
        if self.tracemalloc_dir is not None:
            (self.tracemalloc_dir / "sitecustomize.py").write_text(TRACEMALLOC_HOOK)
            env[TRACEMALLOC_VARIABLE] = str(self.tracemalloc_out)
            path = [str(self.tracemalloc_dir), env.get("PYTHONPATH")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
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

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sample(self) -> Sample:
        """Its CPU and memory now; RuntimeError, with the end of its log, when it has exited."""
        if self.process is None:
            raise RuntimeError("the operator was not started")
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited ({self.process.returncode}):\n{self.tail()}")
        return sample_process(self.process.pid)

    def metrics(self, timeout: float = 5) -> str:
        """The text of its /metrics (needs a metrics_port); OSError when it does not answer (yet)."""
        if self.metrics_port is None:
            raise RuntimeError("the operator runs without a metrics port")
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return str(answer.read().decode())

    def tracemalloc_dump(self, timeout: float = 120) -> str:
        """Its live allocations now, as TRACEMALLOC_HOOK writes them (needs a tracemalloc_dir)."""
        out = self.tracemalloc_out
        if out is None or self.process is None:
            raise RuntimeError("the operator runs without tracemalloc")
        out.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not out.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the operator wrote no tracemalloc snapshot")
            time.sleep(0.5)
        return out.read_text()
