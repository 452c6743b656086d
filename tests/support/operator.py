"""The operator as a real process on this machine, watching one namespace of the real cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support.cluster import Cluster


class OperatorProcess:
    """`modelfleet operator --namespace NS` by default; `command` runs something else (e.g. kopf with
    only some handler modules)."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_path: Path,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
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
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.cluster.env, "PYTHONUNBUFFERED": "1", **self.env},
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
