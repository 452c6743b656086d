"""What the benchmark asks of the cluster as its admin, beyond tests/support/cluster.py: the API server's
count of the operator's requests, free Service addresses, and creating its objects in bulk through the
Python client. Its namespace is a bench/runs.py BenchNamespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from bench.operator_scale.measure import counter_total
from bench.operator_scale.objects import FLOW_SCHEMA, GROUP, NAMESPACE, VERSION
from support.cluster import LOCAL_KUBECONFIG, Cluster, cluster_at, kubectl_binary
from support.tools import helm_binary


@dataclass(frozen=True)
class BenchCluster(Cluster):
    """kubectl, helm and the Python client, as the cluster's admin (the benchmark, not the operator)."""

    custom: Any
    """kubernetes CustomObjectsApi"""
    helm_path: str

    def operator_requests(self) -> float:
        """Requests the API server dispatched for the operator's ServiceAccount so far."""
        text = self.kubectl("get", "--raw=/metrics", timeout=60).stdout
        return counter_total(
            text, "apiserver_flowcontrol_dispatched_requests_total", {"flow_schema": FLOW_SCHEMA}
        )

    def free_service_ips(self) -> int:
        """Addresses left in the cluster's IPv4 Service ranges (ServiceCIDRs minus IPAddresses in use)."""
        cidrs = json.loads(self.kubectl("get", "servicecidrs", "-o", "json").stdout)["items"]
        size = sum(
            ipaddress.ip_network(cidr).num_addresses - 2
            for item in cidrs
            for cidr in item["spec"].get("cidrs", [])
            if ipaddress.ip_network(cidr).version == 4
        )
        used = json.loads(self.kubectl("get", "ipaddresses", "-o", "json").stdout)["items"]
        return size - sum(":" not in item["metadata"]["name"] for item in used)


def connect() -> BenchCluster:
    """The cluster of KUBECONFIG (when unset, the local cluster); SystemExit when it does not answer."""
    kubeconfig = os.environ.get("KUBECONFIG") or str(LOCAL_KUBECONFIG)
    try:
        kubectl_binary()
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    helm = helm_binary()
    if helm is None:
        raise SystemExit("no helm: run `make components` or put helm on PATH")
    found = cluster_at(kubeconfig)
    if found is None:
        raise SystemExit(f"the cluster of {kubeconfig} does not answer: run `make cluster-up`")
    from kubernetes import client

    custom = client.CustomObjectsApi(found.api_client(connections=32))
    return BenchCluster(found.kubeconfig, found.kubectl_path, found.local, custom, helm)


def create_all(cluster: BenchCluster, plural: str, objects: list[dict[str, Any]], workers: int) -> float:
    """Create the custom objects with a thread pool, showing progress; seconds taken."""
    from kubernetes.client.exceptions import ApiException

    def create(obj: dict[str, Any]) -> None:
        try:
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, obj)
        except ApiException as error:
            if error.status != 409:  # already there: a retry after a hiccup
                raise RuntimeError(f"creating {plural}/{obj['metadata']['name']}: {error.reason}") from None

    started = time.monotonic()
    step = max(1, len(objects) // 10)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(create, obj) for obj in objects]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if done % step == 0 or done == len(objects):
                print(
                    f"  created {done}/{len(objects)} {plural} ({time.monotonic() - started:.1f} s)",
                    flush=True,
                )
    return time.monotonic() - started
