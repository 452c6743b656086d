"""A Monitor with a `prometheus` metric, against a real Prometheus (the Debian package) on 127.0.0.1
scraping the router pods; Prometheus is killed mid-rollout."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import helpers
import pytest
import yaml
from helpers import Fleet

PROMETHEUS = Path("/usr/bin/prometheus")


class Prometheus:
    """A real Prometheus process on 127.0.0.1 with a temporary config and data directory."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "router", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.address}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("prometheus did not get ready")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    if not PROMETHEUS.exists():
        pytest.fail("/usr/bin/prometheus is missing: install the Debian package prometheus", pytrace=False)
    return tmp_path


def test_prometheus_down_mid_rollout_pauses_then_aborts_to_stable(fleet: Fleet, prometheus_dir: Path) -> None:
    steps = [
        {"setWeight": 20},
        {"pause": {"duration": "8s"}},
        {"setWeight": 50},
        {"pause": {"duration": "8s"}},
    ]
    load = fleet.serve_v1(
        helpers.model_version("iris-v1", "1"),
        helpers.model_version("iris-v2", "2"),
        monitor="iris-quality",
        steps=steps,
    )
    ips = fleet.cluster.kubectl(
        "get",
        "pods",
        "-n",
        fleet.namespace,
        "-l",
        "app.kubernetes.io/component=router",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ).stdout.split()
    assert ips, "no router pods"
    prometheus = Prometheus(prometheus_dir, [f"{ip}:9090" for ip in ips])
    try:
        prometheus.wait_ready()
        fleet.apply(
            helpers.monitor(
                error_limit=3,
                metrics=[
                    {
                        "name": "routers-up",
                        "type": "prometheus",
                        "prometheus": {"address": prometheus.address, "query": 'sum(up{job="router"})'},
                        "min": 1,
                    }
                ],
            )
        )
        fleet.cluster.wait_for(
            "monitor passing", lambda: fleet.monitor_status().get("phase") == "Passing", timeout=60
        )
        fleet.set_version("iris-v2")
        fleet.wait_status("in the pause after 20%", lambda s: s.get("currentStep") == 1, 120)
        prometheus.kill()
        killed = time.time()
        final = fleet.wait_status(
            "aborted to stable", lambda s: s.get("phase") == "RolledBack" and s.get("canaryWeight") == 0, 60
        )
        aborted = time.time()
    finally:
        prometheus.kill()
    load.stop()

    during = [s for t, s in fleet.timeline if killed <= t < aborted - 0.5]
    assert during, "no status seen between the kill and the abort"
    assert all(s.get("canaryWeight", 0) <= 20 for s in during), [s.get("canaryWeight") for s in during]
    assert all(s.get("phase") == "Progressing" for s in during if s.get("canaryWeight"))
    entry = final["history"][0]
    assert (entry["version"], entry["result"]) == ("iris-v2", "RolledBack")
    assert "could not measure 3 times in a row" in entry["reason"], entry
    assert "prometheus" in entry["reason"], entry
    error = fleet.measured("iris-v2", "routers-up", "Error")
    assert "unreachable" in error["message"]
    assert final["stableVersion"] == "iris-v1"
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    helpers.record_result("prometheus_down", {"secondsToAbort": round(aborted - killed, 1), "errorLimit": 3})
