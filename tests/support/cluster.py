"""The cluster under test: the project's local cluster, or any cluster KUBECONFIG points at.

Everything here talks to a real API server through the real kubectl; nothing is faked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
LOCAL_KUBECONFIG = Path("/var/lib/modelfleet/admin.kubeconfig")


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (REPO / "cluster" / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


VERSIONS = _versions()


def kubectl_binary() -> str:
    """The pinned kubectl the project builds, else whatever kubectl is on PATH."""
    cache = Path(os.environ.get("MODELFLEET_CACHE", Path.home() / ".cache" / "modelfleet"))
    pinned = cache / "bin" / f"kubernetes-{VERSIONS['KUBERNETES_VERSION']}" / "kubectl"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("no kubectl: run `make components` or put kubectl on PATH")
    return found


class KubectlError(RuntimeError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.returncode = result.returncode
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    kubectl_path: str
    local: bool  # the project's own local cluster (as opposed to kind, k3d or a remote one)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_path, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        out: dict[str, Any] = json.loads(self.kubectl("get", kind, name, *ns, "-o", "json").stdout)
        return out

    def get_or_none(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        result = self.kubectl("get", kind, name, *ns, "-o", "json", "--ignore-not-found", check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return None
        out: dict[str, Any] = json.loads(result.stdout)
        return out

    def apply(
        self,
        manifest: str | dict[str, Any] | list[dict[str, Any]],
        namespace: str | None = None,
        *,
        check: bool = True,
        server_side: bool = False,
        field_manager: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl apply of YAML text or of manifests given as dicts."""
        if isinstance(manifest, dict):
            text = yaml.safe_dump(manifest)
        elif isinstance(manifest, list):
            text = yaml.safe_dump_all(manifest)
        else:
            text = manifest
        args = ["apply", "-f", "-"]
        if server_side:
            args += ["--server-side", "--force-conflicts"]
        if field_manager:
            args.append(f"--field-manager={field_manager}")
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, input=text, check=check)

    def wait_for(
        self, what: str, predicate: Callable[[], Any], timeout: float = 120, interval: float = 0.5
    ) -> Any:
        """Poll predicate until it returns something truthy; fail with `what` after the time-out."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (KubectlError, KeyError, IndexError, TypeError) as exc:
                last_error = exc
            time.sleep(interval)
        detail = f" (last error: {last_error})" if last_error else ""
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")

    def api_answers(self) -> bool:
        """Does the API server answer /readyz within a second?"""
        result = self.kubectl("--request-timeout=1s", "get", "--raw=/readyz", check=False, timeout=10)
        return result.returncode == 0

    def server_version(self) -> str:
        """The API server's version, e.g. v1.34.4 ("?" when it does not say)."""
        info = json.loads(self.kubectl("version", "-o", "json").stdout)
        return str(info.get("serverVersion", {}).get("gitVersion", "?"))

    def api_client(self, connections: int = 32) -> Any:
        """A Python kubernetes ApiClient for this cluster, with a pool of `connections`."""
        from kubernetes import config

        api = config.new_client_from_config(config_file=self.kubeconfig)  # type: ignore[no-untyped-call]
        api.configuration.connection_pool_maxsize = connections
        return api

    def new_namespace(self, prefix: str = "mf-test", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        manifest: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"modelfleet.io/test": "true", **(labels or {})}},
        }
        self.apply(manifest)
        # The namespace's default service account appears asynchronously; pods need it.
        self.wait_for(
            f"service account in {name}", lambda: self.get_or_none("serviceaccount", "default", name)
        )
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def api_ready(kubeconfig: str, kubectl_path: str) -> bool:
    try:
        result = subprocess.run(
            [kubectl_path, "--request-timeout=5s", "get", "--raw=/readyz"],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": kubeconfig},
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def cluster_at(kubeconfig: str) -> Cluster | None:
    """The cluster of this kubeconfig when its API server answers, else None (no other one is tried)."""
    kubectl_path = kubectl_binary()
    if not api_ready(kubeconfig, kubectl_path):
        return None
    local = kubeconfig == str(LOCAL_KUBECONFIG) or Path(kubeconfig).resolve() == LOCAL_KUBECONFIG
    return Cluster(kubeconfig, kubectl_path, local)


def find_cluster() -> Cluster | None:
    """KUBECONFIG when it points at a working cluster, else the local cluster when it runs."""
    candidates: list[str] = []
    env_config = os.environ.get("KUBECONFIG")
    if env_config:
        candidates.append(env_config)
    if LOCAL_KUBECONFIG.exists():
        candidates.append(str(LOCAL_KUBECONFIG))
    for kubeconfig in candidates:
        found = cluster_at(kubeconfig)
        if found is not None:
            return found
    return None


def namespaces(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (use from a fixture)."""
    name = cluster.new_namespace()
    try:
        yield name
    finally:
        cluster.delete_namespace(name)
