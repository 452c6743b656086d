"""`kubectl modelfleet` as a real process, found by the real kubectl on PATH, against the real API
server: status written through the status subresource is shown, promote/abort/retry set their
annotations, --watch redraws on a change and ends cleanly on Ctrl-C, and the errors for an unknown
Deployment, no cluster and RBAC denial are the clear ones.

No operator runs in the test namespace, so the status stays exactly as the test wrote it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelfleet.api import ABORT_ANNOTATION, PROMOTE_ANNOTATION, RETRY_ANNOTATION, DeploymentStatus
from support.cluster import Cluster
from support.plugin_objects import (
    canary_status,
    deployment,
    model_version,
    monitor,
    monitor_status,
    rolled_back_status,
)

VENV_BIN = str(Path(sys.executable).parent)


def plugin(
    cluster: Cluster, *args: str, kubeconfig: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`kubectl modelfleet ARGS` through the real kubectl, which finds kubectl-modelfleet on PATH."""
    env = {**cluster.env, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run(
        [cluster.kubectl_path, "modelfleet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def write_status(cluster: Cluster, namespace: str, kind: str, name: str, status: Any) -> None:
    cluster.kubectl(
        "patch",
        f"{kind}.modelfleet.io",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status.to_k8s()}),
    )


@pytest.fixture
def iris(cluster: Cluster, crds: None, namespace: str) -> str:
    """Deployment iris rolling out iris-v2 at 20% (step 2/4), its Monitor passing, two ModelVersions."""
    cluster.apply(
        [
            deployment(namespace=namespace),
            monitor(namespace=namespace),
            model_version("iris-v1", "1", namespace),
            model_version("iris-v2", "2", namespace),
        ]
    )
    write_status(cluster, namespace, "deployments", "iris", canary_status(weight=20, step=1))
    write_status(cluster, namespace, "monitors", "iris-quality", monitor_status(0.01))
    return namespace


def annotations(cluster: Cluster, namespace: str) -> dict[str, str]:
    obj = cluster.get("deployments.modelfleet.io", "iris", namespace)
    return dict(obj["metadata"].get("annotations") or {})


def test_status_shows_the_rollout_and_the_monitor_verdicts(cluster: Cluster, iris: str) -> None:
    result = plugin(cluster, "status", "iris", "-n", iris)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Deployment {iris}/iris  model iris  endpoint http://iris.ml.svc:80"
    row = lines[lines.index(next(line for line in lines if line.startswith("STABLE"))) + 1].split()
    assert row[:7] == ["iris-v1", "iris-v2", "[####----------------]", "20%", "2/4", "Progressing", "step"]
    assert "Steps:       20% (done) > [pause 10s] > 50% > pause 10s" in lines
    versions = [line.split() for line in lines if line.startswith("  iris-v")]
    # No operator runs here, so the ModelVersions have no status: phase Unknown.
    assert versions == [
        ["iris-v1", "stable", "1", "localhost/iris-server:1", "Unknown"],
        ["iris-v2", "canary", "2", "localhost/iris-server:2", "Unknown"],
    ]
    assert any(line.startswith("Monitor iris-quality: Passing, iris-v2 measured") for line in lines)
    assert ["errors", "0.01", "<=", "0.05", "Pass"] in [line.split() for line in lines]


def test_status_of_the_namespace_lists_deployments_and_monitors(cluster: Cluster, iris: str) -> None:
    result = plugin(cluster, "-n", iris, "status")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:4] == ["iris", "iris", "iris-v1", "iris-v2"]
    assert any(line.split()[:3] == ["iris-quality", "iris", "Passing"] for line in lines)


@pytest.mark.parametrize(
    ("command", "annotation", "says"),
    [
        ("promote", PROMOTE_ANNOTATION, "iris-v2 will be promoted to stable now (step 2/4, weight 20%)"),
        ("abort", ABORT_ANNOTATION, "iris-v2 will be rolled back now (step 2/4, weight 20%)"),
        ("retry", RETRY_ANNOTATION, "retry applies only to a rolled-back version"),
    ],
)
def test_manual_control_sets_its_annotation(
    cluster: Cluster, iris: str, command: str, annotation: str, says: str
) -> None:
    before = annotations(cluster, iris)
    assert annotation not in before

    result = plugin(cluster, command, "iris", "-n", iris)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"deployment.modelfleet.io/iris annotated {annotation}=true"
    assert says in result.stdout
    after = annotations(cluster, iris)
    assert after[annotation] == "true"
    assert {k: v for k, v in after.items() if k != annotation} == before


def test_retry_after_a_rollback_and_history(cluster: Cluster, iris: str) -> None:
    cluster.kubectl(
        "patch",
        "deployments.modelfleet.io",
        "iris",
        "-n",
        iris,
        "--type=merge",
        "-p",
        '{"spec":{"version":"iris-v3"}}',
    )
    write_status(cluster, iris, "deployments", "iris", rolled_back_status())

    retry = plugin(cluster, "retry", "iris", "-n", iris)
    history = plugin(cluster, "history", "iris", "-n", iris)

    assert retry.returncode == 0, retry.stderr
    assert (
        "iris-v3 (rolled back: errors 1 > 0.05) will be rolled out again from the first step." in retry.stdout
    )
    assert annotations(cluster, iris)[RETRY_ANNOTATION] == "true"
    assert history.returncode == 0, history.stderr
    rows = [line.split() for line in history.stdout.splitlines()]
    assert rows[2] == ["VERSION", "RESULT", "REASON", "STARTED", "FINISHED", "DURATION"]
    assert rows[3][:2] == ["iris-v3", "RolledBack"]
    assert rows[3][-1] == "14s"
    assert rows[4][:2] == ["iris-v2", "Promoted"]


def test_watch_redraws_on_a_change_and_ends_on_ctrl_c(cluster: Cluster, iris: str) -> None:
    env = {**cluster.env, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        [str(Path(VENV_BIN) / "kubectl-modelfleet"), "status", "iris", "-n", iris, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # started with SIGINT ignored, as from a script's background job (CI's case): Ctrl-C still ends it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert process.stdout is not None
    try:
        seen = read_until(process, "[####----------------]  20%", timeout=30)
        write_status(cluster, iris, "deployments", "iris", canary_status(weight=50, step=2))
        seen += read_until(process, "[##########----------]  50%", timeout=30)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert seen.count("--- ") >= 2  # one frame per change, no redraw without one


def read_until(process: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Lines of the process's stdout up to the first containing `text`."""
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            time.sleep(0.05)
            continue
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed within {timeout}s; printed:\n{seen}")


def test_unknown_deployment(cluster: Cluster, iris: str) -> None:
    result = plugin(cluster, "promote", "nope", "-n", iris)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: Deployment 'nope' not found in namespace '{iris}'"
        f" (`kubectl get deployments.modelfleet.io -n {iris}` lists them)\n"
    )


def test_no_cluster(cluster: Cluster, tmp_path: Path) -> None:
    config = yaml.safe_load(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "yaml").stdout)
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))

    result = plugin(cluster, "status", "--kubeconfig", str(path), timeout=60)

    assert result.returncode == 1
    assert result.stderr == (
        "error: cannot reach the Kubernetes API server at https://127.0.0.1:1: connection refused"
        " (is the cluster up? see --kubeconfig)\n"
    )


def service_account_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig that authenticates as a service account of `namespace` (a short-lived token)."""
    cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=10m").stdout.strip()
    config = yaml.safe_load(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "yaml").stdout)
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    config["contexts"][0]["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_rbac_denied_reading(cluster: Cluster, iris: str, tmp_path: Path) -> None:
    kubeconfig = service_account_kubeconfig(cluster, iris, "nobody", tmp_path / "kubeconfig")

    result = plugin(cluster, "status", "iris", kubeconfig=kubeconfig)

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: permission denied: cannot get Deployment 'iris' in namespace '{iris}':"
        f' deployments.modelfleet.io "iris" is forbidden: User "system:serviceaccount:{iris}:nobody"'
    )


def test_rbac_read_only_can_see_but_not_promote(cluster: Cluster, iris: str, tmp_path: Path) -> None:
    kubeconfig = service_account_kubeconfig(cluster, iris, "viewer", tmp_path / "kubeconfig")
    cluster.kubectl(
        "create", "role", "modelfleet-viewer", "-n", iris, "--verb=get,list,watch",
        "--resource=deployments.modelfleet.io,monitors.modelfleet.io,modelversions.modelfleet.io",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "modelfleet-viewer", "-n", iris, "--role=modelfleet-viewer",
        f"--serviceaccount={iris}:viewer",
    )  # fmt: skip

    status = plugin(cluster, "status", "iris", kubeconfig=kubeconfig)
    promote = plugin(cluster, "promote", "iris", kubeconfig=kubeconfig)

    assert status.returncode == 0, status.stderr  # the context's namespace is used without -n
    assert "iris-v1  iris-v2" in status.stdout
    assert promote.returncode == 1
    assert promote.stderr.startswith(
        f"error: permission denied: cannot patch Deployment 'iris' in namespace '{iris}'"
    )
    assert PROMOTE_ANNOTATION not in annotations(cluster, iris)


def test_status_subresource_round_trip_matches_the_model(cluster: Cluster, iris: str) -> None:
    """The status the plugin read is the one written: it parses back into the same model."""
    obj = cluster.get("deployments.modelfleet.io", "iris", iris)

    assert DeploymentStatus.model_validate(obj["status"]) == canary_status(weight=20, step=1)
