"""The local cluster's shell scripts, without a cluster: bounded waits, stopping one process only,
the containerd configuration that keeps every pull on loopback, the image names the scripts and
images/build.sh share, restart.sh's usage, and the order of the Makefile's demo."""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
COMPONENTS = [
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
]
BLOCKED = ["docker.io", "registry.k8s.io", "quay.io", "ghcr.io", "gcr.io"]


def bash(script: str, *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs `script` in bash after sourcing cluster/lib.sh and cluster/components.sh."""
    prelude = f'. "{CLUSTER}/lib.sh"; . "{CLUSTER}/components.sh"\n'
    return subprocess.run(
        ["bash", "-c", prelude + script], capture_output=True, text=True, timeout=timeout, check=False
    )


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return bool(re.search(r"^State:\s+Z", status, re.M))


@pytest.mark.parametrize(
    "script", [*sorted(p.name for p in CLUSTER.glob("*.sh")), "../images/build.sh"], ids=str
)
def test_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(CLUSTER / script)], check=True)


# ---- bounded waits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "probe",
    ["sleep 30", "slow", "false"],
    ids=["slow command", "slow function", "failing command"],
)
def test_wait_for_ends_at_its_deadline_whatever_the_probe_takes(probe: str) -> None:
    start = time.monotonic()
    result = bash(f"slow() {{ sleep 30; }}\nwait_for thing 2 {probe}")
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert "timed out after 2s waiting for thing" in result.stderr
    assert elapsed < 4.5, f"a 2 s wait took {elapsed:.1f} s"


def test_wait_for_returns_as_soon_as_the_probe_succeeds(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    start = time.monotonic()
    result = bash(f"(sleep 1; touch {flag}) &\nready() {{ [ -e {flag} ]; }}\nwait_for thing 20 ready")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 4


def test_wait_for_gives_up_at_once_when_the_check_says_waiting_is_pointless() -> None:
    start = time.monotonic()
    result = bash(
        "hopeless() { echo 'image localhost/x:1 is missing: run make images'; }\n"
        "wait_for --give-up hopeless thing 30 false"
    )
    assert result.returncode == 1
    assert "run make images" in result.stderr
    assert time.monotonic() - start < 3


def test_a_bounded_function_kills_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = bash(f"slow() {{ sleep 60 & echo $! > {pidfile}; wait; }}\nbounded 1 slow")
    assert result.returncode == 124
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)


# ---- stopping one component --------------------------------------------------------------------


def test_stop_component_stops_that_process_only_not_its_process_group(tmp_path: Path) -> None:
    """A containerd restart must leave its shims (and so the containers) running."""
    child = tmp_path / "child"
    result = bash(
        f"RUN={tmp_path}; LOGS={tmp_path}\n"
        f"setsid bash -c 'sleep 300 & echo $! > {child}; exec sleep 301' >/dev/null 2>&1 &\n"
        f"echo $! > {tmp_path}/sleep.pid\n"
        f"for _ in $(seq 50); do [ -s {child} ] && break; sleep 0.1; done\n"
        "is_running sleep || { echo 'not running'; exit 3; }\n"
        "stop_component sleep 5\n"
        "! is_running sleep\n"
    )
    pid = int(child.read_text())
    try:
        assert result.returncode == 0, result.stderr + result.stdout
        assert "stopping sleep" in result.stderr
        assert not (tmp_path / "sleep.pid").exists()
        assert not gone(pid), "the child in the stopped process's group must still run"
    finally:
        os.kill(pid, 9)


def test_is_running_rejects_a_pid_that_now_belongs_to_another_program(tmp_path: Path) -> None:
    (tmp_path / "kubelet.pid").write_text(f"{os.getpid()}\n")
    assert bash(f"RUN={tmp_path}; is_running kubelet").returncode == 1
    assert bash(f"RUN={tmp_path}; pid_of kubelet").stdout.strip() == str(os.getpid())


def test_every_component_can_be_started_and_probed() -> None:
    names = " ".join([*COMPONENTS, "coredns"])
    result = bash(
        f"for c in {names}; do f=$(component_fn $c)\n"
        '  [ "$(type -t start_$f)" = function ] && [ "$(type -t healthy_$f)" = function ] &&'
        ' [ -n "${HEALTH_LIMIT[$c]}" ] || echo "missing: $c"\n'
        'done\necho "${COMPONENTS[*]}"'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [" ".join(COMPONENTS)]


# ---- containerd: a local sandbox image, and no pull leaves the machine -------------------------


def test_every_public_registry_points_at_a_closed_loopback_port(tmp_path: Path) -> None:
    result = bash(f"write_registry_hosts {tmp_path}")
    assert result.returncode == 0, result.stderr
    for registry in [*BLOCKED, "_default"]:
        hosts = tomllib.loads((tmp_path / registry / "hosts.toml").read_text())
        assert hosts["server"] == "http://127.0.0.1:9", registry
        # containerd 1.6 ignores a hosts.toml without a host table (and pulls from the real registry)
        assert hosts["host"] == {"http://127.0.0.1:9": {"capabilities": ["pull", "resolve"]}}, registry


def test_containerd_uses_the_local_pause_image_and_the_registry_hosts(tmp_path: Path) -> None:
    config = tmp_path / "containerd.toml"
    result = bash(f"write_containerd_config {config} /usr/sbin/runc; echo $REGISTRY_HOSTS_DIR")
    assert result.returncode == 0, result.stderr
    cri = tomllib.loads(config.read_text())["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/pause:3.10"
    assert cri["registry"] == {"config_path": result.stdout.strip()}
    assert cri["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == "/usr/sbin/runc"


def test_the_cluster_images_are_named_alike_by_the_scripts_and_the_image_build() -> None:
    build = (REPO / "images" / "build.sh").read_text()
    pause = re.search(r'^PAUSE_NAMES=\("([^"]+)"\)', build, re.M)
    coredns = re.search(r'^COREDNS_NAMES=\("([^"]+)"\)', build, re.M)
    version = re.search(r"^PAUSE_VERSION=(\S+)", build, re.M)
    assert pause
    assert coredns
    assert version
    result = bash('echo "$PAUSE_IMAGE"; echo "$COREDNS_IMAGE"; echo "$COREDNS_VERSION"')
    lib_pause, lib_coredns, coredns_version = result.stdout.split()
    assert lib_pause == pause[1].replace("$PAUSE_VERSION", version[1]) == "localhost/pause:3.10"
    assert lib_coredns == coredns[1].replace("$COREDNS_VERSION", coredns_version)
    assert lib_coredns.startswith("localhost/")
    manifest = (CLUSTER / "coredns.yaml").read_text()
    assert "image: localhost/coredns:@COREDNS_VERSION@" in manifest
    assert "imagePullPolicy: Never" in manifest


# ---- restart.sh and the Makefile ---------------------------------------------------------------


@pytest.mark.parametrize("args", [[], ["etcd-server"], ["kubelet", "etcd"]], ids=["none", "unknown", "two"])
def test_restart_usage_names_every_component(args: list[str]) -> None:
    result = subprocess.run(
        [str(CLUSTER / "restart.sh"), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    for name in [*COMPONENTS, "controller-manager", "scheduler", "coredns"]:
        assert name in result.stderr
    if args == ["etcd-server"]:
        assert "unknown component 'etcd-server'" in result.stderr


def _prerequisites(target: str) -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    line = re.search(rf"^{re.escape(target)}:([^#\n]*)", makefile, re.M)
    assert line, target
    return line[1].split()


def test_demo_builds_the_images_before_it_starts_the_cluster() -> None:
    demo = _prerequisites("demo")
    assert demo.index("images") < demo.index("cluster-up")
    assert "images" in _prerequisites("test")


def test_cluster_restart_target_passes_the_component() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^cluster-restart:.*\n\t@?cluster/restart\.sh \$\(COMPONENT\)$", makefile, re.M)


def test_the_bridge_has_a_fixed_locally_administered_mac_that_ports_do_not_change() -> None:
    """A bridge without an address of its own takes its lowest port's MAC: each pod starting or stopping
    would move the gateway's MAC (neighbour caches flushed, `No route to host`). prepare_host fixes it."""
    mac = bash('printf %s "$BRIDGE_MAC"').stdout
    first = int(mac.split(":")[0], 16)
    assert first & 0b10, mac  # locally administered
    assert not first & 0b01, mac  # unicast
    assert 'ip link set "$BRIDGE" address "$BRIDGE_MAC"' in (CLUSTER / "components.sh").read_text()
    # what the kernel does with such a bridge, in a network namespace of this test's own
    ns = f"mf-test-{os.getpid()}"
    script = f"""
    set -e
    ip netns add {ns}
    trap 'ip netns del {ns}' EXIT
    ip -n {ns} link add br0 type bridge
    ip -n {ns} link set br0 address {mac}
    ip -n {ns} link add p0 address 00:00:00:00:00:01 type veth peer name p1
    ip -n {ns} link set p0 master br0
    ip -n {ns} link show br0
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert f"link/ether {mac} " in result.stdout, result.stdout
