"""The operator scale benchmark's own logic: /proc parsing (tests/support/operator.py), the request counter,
the objects it creates, the summary against the targets and its Markdown."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `bench`

from bench.operator_scale.measure import allocation_summary, counter_total, package_of, settle
from bench.operator_scale.objects import (
    FLOW_SCHEMA,
    NAMESPACE,
    QUOTA,
    SERVICE_ACCOUNT,
    bench_objects,
    cluster_scoped,
    serving_objects,
    setup_manifests,
    token_kubeconfig,
)
from bench.operator_scale.phases import tear_down
from bench.operator_scale.report import log_counts, markdown, summarize
from bench.operator_scale.run import parse_args
from bench.operator_scale.watch import is_reconciled
from bench.operator_scale.webhook import WEBHOOK, podless_review, webhook_manifest

from modelfleet.analysis import ExpositionError
from modelfleet.api import Deployment, Model, ModelVersion
from support.operator import cpu_seconds_from_stat, kb_field

STAT = (
    "4242 (python -m modelfleet (x)) S 1 4242 4242 0 -1 4194560 25000 0 12 0 "
    "750 250 0 0 20 0 9 0 123456 456789012 23000 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1"
)


def test_cpu_seconds_add_user_and_system_time_even_with_parentheses_in_the_name() -> None:
    assert cpu_seconds_from_stat(STAT, ticks=100) == pytest.approx(10.0)


def test_memory_fields_are_read_in_kb() -> None:
    status = "Name:\tpython\nVmHWM:\t  120000 kB\nVmRSS:\t   98304 kB\nThreads:\t9\n"
    assert kb_field(status, "VmRSS") == 98304
    assert kb_field(status, "VmHWM") == 120000
    rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  98000 kB\nPss:  81234 kB\nPss_Anon: 7 kB\n"
    assert kb_field(rollup, "Pss") == 81234
    with pytest.raises(ValueError, match="no VmSwap"):
        kb_field(status, "VmSwap")


def test_the_request_counter_sums_only_the_benchmark_flow_schema() -> None:
    metrics = "\n".join(
        [
            "# HELP apiserver_flowcontrol_dispatched_requests_total Number of requests",
            "# TYPE apiserver_flowcontrol_dispatched_requests_total counter",
            'apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",'
            'priority_level="exempt"} 42005',
            f'apiserver_flowcontrol_dispatched_requests_total{{flow_schema="{FLOW_SCHEMA}",'
            'priority_level="workload-low"} 17',
            f'apiserver_flowcontrol_dispatched_requests_total{{flow_schema="{FLOW_SCHEMA}",'
            'priority_level="catch-all"} 3',
            'apiserver_flowcontrol_dispatched_requests_totals{flow_schema="x"} 99',
        ]
    )
    name = "apiserver_flowcontrol_dispatched_requests_total"
    assert counter_total(metrics, name, {"flow_schema": FLOW_SCHEMA}) == 20
    assert counter_total(metrics, name, {"flow_schema": "exempt"}) == 42005
    assert counter_total(metrics, name, {"flow_schema": "absent"}) == 0
    assert counter_total(metrics, name, {}) == 42025


def test_the_request_counter_reads_escaped_labels_and_rejects_a_bad_line_of_its_metric() -> None:
    name = "apiserver_flowcontrol_dispatched_requests_total"
    metrics = f'{name}{{flow_schema="a\\"b,c"}} 5\nother_metric{{broken 1\n{name}{{flow_schema="x"}} 1'
    assert counter_total(metrics, name, {"flow_schema": 'a"b,c'}) == 5
    with pytest.raises(ExpositionError, match="flow_schema=x"):
        counter_total(f"{metrics}\n{name}{{flow_schema=x}} 1", name, {})


def test_reconciled_means_observed_generation_equals_generation() -> None:
    assert is_reconciled({"metadata": {"generation": 2}, "status": {"observedGeneration": 2}})
    assert not is_reconciled({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}})
    assert not is_reconciled({"metadata": {"generation": 1}, "status": None})
    assert not is_reconciled({"metadata": {"generation": 1}})


def test_bench_objects_are_valid_and_never_servable() -> None:
    objects = bench_objects(5, per_model=2)
    models = [Model.from_k8s(m) for m in objects["models"]]
    versions = [ModelVersion.from_k8s(v) for v in objects["modelversions"]]
    deployments = [Deployment.from_k8s(d) for d in objects["deployments"]]
    assert len(models) == len(versions) == 3
    assert len(deployments) == 5
    assert all(m.spec.governance.require_approval for m in models)
    assert not any(v.spec.approval is None or v.spec.approval.approved for v in versions)
    names = {v.metadata.name: v.spec.model for v in versions}
    for deployment in deployments:
        assert names[deployment.spec.version] == deployment.spec.model
    assert len({d.metadata.name for d in deployments}) == 5
    assert bench_objects(0) == {"models": [], "modelversions": [], "deployments": []}
    with pytest.raises(ValueError, match="per_model"):
        bench_objects(3, per_model=0)


def test_serving_objects_are_approved_and_fit_the_pod_quota() -> None:
    objects = serving_objects(3)
    approval = ModelVersion.from_k8s(objects["modelversions"][0]).spec.approval
    assert approval is not None
    assert approval.approved
    deployments = [Deployment.from_k8s(d) for d in objects["deployments"]]
    assert [d.spec.replicas for d in deployments] == [1, 1, 1]
    assert all(d.spec.router.replicas == 1 for d in deployments)
    quota = next(m for m in setup_manifests(3) if m["kind"] == "ResourceQuota")
    assert quota["metadata"] == {"name": QUOTA, "namespace": NAMESPACE}
    assert quota["spec"]["hard"]["pods"] == "6"  # a router pod and a model pod per serving Deployment
    assert next(m for m in setup_manifests(0) if m["kind"] == "ResourceQuota")["spec"]["hard"]["pods"] == "0"


def test_the_flow_schema_matches_only_the_operator_and_precedes_the_default_for_service_accounts() -> None:
    schema = next(m for m in setup_manifests(0) if m["kind"] == "FlowSchema")
    assert schema["metadata"]["name"] == FLOW_SCHEMA
    assert schema["spec"]["matchingPrecedence"] < 9000
    (rule,) = schema["spec"]["rules"]
    assert rule["subjects"] == [
        {"kind": "ServiceAccount", "serviceAccount": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}}
    ]
    assert cluster_scoped(setup_manifests(0)) == [("FlowSchema", FLOW_SCHEMA)]


def test_the_operator_kubeconfig_keeps_the_server_and_uses_the_token() -> None:
    admin = {
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="},
            }
        ],
        "users": [{"name": "admin", "user": {"client-certificate-data": "secret"}}],
    }
    config = token_kubeconfig(admin, "t0ken")
    assert config["clusters"][0]["cluster"] == admin["clusters"][0]["cluster"]
    assert config["users"] == [{"name": SERVICE_ACCOUNT, "user": {"token": "t0ken"}}]
    assert "secret" not in str(config)


def window(rss: float, cpu: float, requests: float) -> dict[str, Any]:
    return {
        "seconds": 60.0,
        "cpu_seconds": cpu * 0.6,
        "cpu_percent": cpu,
        "rss_mb": rss,
        "pss_mb": rss - 9,
        "hwm_mb": rss + 5,
        "api_requests": requests,
        "api_requests_per_minute": requests,
    }


LOAD = {
    "models": 1000,
    "modelversions": 1000,
    "registry_created_seconds": 20.0,
    "registry_reconciled_seconds": 90.0,
    "deployments_created": 1000,
    "deployments_created_seconds": 8.0,
    "deployments_reconciled_seconds": 160.0,
    "operator_cpu_seconds": 50.0,
    "api_requests": 24000.0,
    "peak_rss_mb": 180.0,
    "final_phases": {"Failed": 1000},
    "settle_seconds": 95.0,
}


def test_summary_gives_ratios_per_deployment_costs_and_verdicts() -> None:
    s = summarize(window(68.0, 0.05, 4), window(120.0, 0.5, 2), LOAD, 1000)
    assert s["rss_ratio"] == pytest.approx(120 / 68)
    assert s["idle_cpu_ratio"] == pytest.approx(10.0)
    assert s["deployments_per_second"] == pytest.approx(6.25)
    assert s["cpu_ms_per_deployment"] == pytest.approx(50.0)
    assert s["api_requests_per_deployment"] == pytest.approx(24.0)
    assert s["rss_kb_per_deployment"] == pytest.approx(52 * 1024 / 1000)
    assert s["meets"] == {"rss": True, "idle_cpu": True, "restart": False}  # no restart phase: not met
    assert s["restart_deployments_per_second"] is None


def test_summary_fails_the_targets_and_has_no_ratio_over_a_zero_baseline() -> None:
    s = summarize(window(68.0, 0.0, 0), window(150.0, 2.0, 30), LOAD, 1000)
    assert s["meets"] == {"rss": False, "idle_cpu": False, "restart": False}  # strict: < 150 MB, < 2%
    assert s["idle_cpu_ratio"] is None
    assert s["idle_requests_ratio"] is None


RESTART = {
    "deployments": 10000,
    "first_reconcile_seconds": 4.0,
    "reconciled_seconds": 80.0,
    "api_requests": 500.0,
    "cpu_seconds": 60.0,
}


def test_the_restart_rate_and_the_10k_rss_target() -> None:
    load = {**LOAD, "deployments_created": 10000, "restart": RESTART}
    s = summarize(window(68.0, 0.05, 4), window(390.0, 1.0, 2), load, 10000)
    assert s["restart_deployments_per_second"] == pytest.approx(125.0)
    assert s["restart_api_requests_per_deployment"] == pytest.approx(0.05)
    assert s["targets"]["rss_mb"] == 400.0  # 150 MB is the target at 1,000
    assert s["meets"] == {"rss": True, "idle_cpu": True, "restart": True}
    slow = summarize(
        window(68.0, 0.05, 4),
        window(390.0, 1.0, 2),
        {**load, "restart": {**RESTART, "reconciled_seconds": 101.0}},
        10000,
    )
    assert not slow["meets"]["restart"]  # 99 per second


def test_markdown_shows_the_figures_and_the_verdicts() -> None:
    baseline, loaded = window(68.0, 0.05, 4), window(160.0, 0.5, 2)
    report = {
        "started": "2026-11-23T03:00:00+00:00",
        "machine": {
            "cpus": 2,
            "python": "3.11.7",
            "kubernetes": "v1.34.4",
            "load_average_before": [1.0, 1, 1],
            "load_average_after": [2.0, 2, 2],
        },
        "settings": {
            "count": 1000,
            "serving": 0,
            "per_model": 1,
            "idle": 60.0,
            "settle": 30.0,
            "quiet": 15.0,
        },
        "baseline": baseline,
        "loaded": loaded,
        "load": {**LOAD, "restart": {**RESTART, "deployments": 1000, "reconciled_seconds": 8.0}},
        "summary": summarize(
            baseline,
            loaded,
            {**LOAD, "restart": {**RESTART, "deployments": 1000, "reconciled_seconds": 8.0}},
            1000,
        ),
        "operator_log": log_counts("2026-11-23 03:00:00,000 ERROR kopf: boom | bang\n"),
    }
    text = markdown(report, "operator-x.json")
    assert "| RSS (VmRSS) | 68.0 MB | 160.0 MB | 2.35 | < 150 MB: NOT met |" in text
    assert "< 2%: met" in text
    assert "160.0 s: 6.2 Deployments/s" in text
    assert "| final phases | Failed 1000 |" in text
    assert "4.0 s / 8.0 s: 125.0 Deployments/s (target >= 100: met) |" in text
    assert "| API requests of the restarted operator until then | 500 (0.50 per Deployment" in text
    assert "the loaded one starting 95 s after the last Deployment was reconciled" in text
    assert "| log, 1 x | `ERROR kopf: boom / bang` |" in text  # a pipe would break the table


def test_log_counts_group_lines_that_differ_only_in_numbers() -> None:
    log = (
        "2026-11-23 03:00:00,001 INFO kopf: started\n"
        "2026-11-23 03:00:01,002 WARNING modelfleet: Deployment bench-d00001: not servable\n"
        "2026-11-23 03:00:01,003 WARNING modelfleet: Deployment bench-d00002: not servable\n"
        "2026-11-23 03:00:02,004 ERROR modelfleet.deployment: step failed\n"
        "Traceback (most recent call last):\n  ...\n"
    )
    counts = log_counts(log)
    assert (counts["errors"], counts["warnings"], counts["tracebacks"]) == (1, 2, 1)
    assert counts["frequent"][0] == {
        "count": 2,
        "line": "WARNING modelfleet: Deployment bench-dN: not servable",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--count", "0"],
        ["--count", "10001"],
        ["--serving", "21"],
        ["--count", "3", "--serving", "4"],
        ["--idle", "5"],
    ],
)
def test_out_of_bounds_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "must be" in capsys.readouterr().err


def test_defaults_are_the_design_target() -> None:
    args = parse_args([])
    assert (args.count, args.serving, args.idle) == (1000, 0, 60.0)


def review(
    spec: dict[str, Any], owner: str = "bench-d00001", operation: str = "CREATE", kind: str = "Service"
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "" if kind == "Service" else "apps", "version": "v1", "kind": kind},
            "operation": operation,
            "object": {"metadata": {"labels": {"modelfleet.io/deployment": owner}}, "spec": spec},
        },
    }


def test_the_webhook_makes_a_bench_service_headless() -> None:
    answer = podless_review(review({"type": "ClusterIP", "ports": [{"port": 80}]}))
    response = answer["response"]
    assert (answer["kind"], response["uid"], response["allowed"]) == ("AdmissionReview", "u-1", True)
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    assert {"op": "add", "path": "/spec/clusterIP", "value": "None"} in patch
    assert {"op": "add", "path": "/spec/clusterIPs", "value": ["None"]} in patch


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_the_webhook_pauses_a_bench_router_deployment_and_leaves_its_replicas(operation: str) -> None:
    response = podless_review(review({"replicas": 1}, operation=operation, kind="Deployment"))["response"]
    assert json.loads(base64.b64decode(response["patch"])) == [
        {"op": "add", "path": "/spec/paused", "value": True}
    ]


@pytest.mark.parametrize(
    ("spec", "owner", "operation", "kind"),
    [
        ({"ports": [{"port": 80}]}, "serving-d000", "CREATE", "Service"),  # serving ones keep their address
        ({"clusterIP": "10.211.0.7"}, "bench-d00001", "CREATE", "Service"),  # an address asked for
        ({"type": "NodePort"}, "bench-d00001", "CREATE", "Service"),
        ({}, "bench-d00001", "UPDATE", "Service"),  # clusterIP is immutable
        ({"replicas": 1}, "serving-d000", "CREATE", "Deployment"),  # serving ones keep their pods
        ({"replicas": 1, "paused": True}, "bench-d00001", "UPDATE", "Deployment"),  # already paused
    ],
)
def test_the_webhook_leaves_other_objects_alone(
    spec: dict[str, Any], owner: str, operation: str, kind: str
) -> None:
    response = podless_review(review(spec, owner, operation, kind))["response"]
    assert response == {"uid": "u-1", "allowed": True}


def test_the_webhook_configuration_is_scoped_to_the_bench_namespace_and_fails_closed() -> None:
    (hook,) = webhook_manifest(8443, b"PEM")["webhooks"]
    assert hook["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    assert hook["failurePolicy"] == "Fail"
    rules = {rule["resources"][0]: rule["operations"] for rule in hook["rules"]}
    assert rules == {"services": ["CREATE"], "deployments": ["CREATE", "UPDATE"]}
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:8443/mutate", "caBundle": "UEVN"}


def test_allocations_are_grouped_by_distribution_or_module() -> None:
    site = "/work/main/.venv/lib/python3.11/site-packages"
    assert package_of(f"{site}/kopf/_cogs/structs/bodies.py") == "kopf"
    assert package_of(f"{site}/six.py") == "six"
    assert package_of("/work/main/operator/modelfleet/controllers/deployment.py") == "modelfleet.controllers"
    assert package_of("/usr/lib/python3.11/json/decoder.py") == "stdlib decoder"
    assert package_of("<frozen importlib._bootstrap>") == "<frozen importlib._bootstrap>"


def test_the_allocation_summary_adds_up_sizes_and_keeps_the_biggest_sites() -> None:
    site = "/x/site-packages"
    dump = "\n".join(
        [
            f"{3 * 1024 * 1024}\t300\t{site}/kopf/a.py\t10",
            f"{1024 * 1024}\t50\t{site}/kopf/b.py\t20",
            f"{2 * 1024 * 1024}\t10\t{site}/pydantic/main.py\t30",
        ]
    )
    summary = allocation_summary(dump, top=2)
    assert summary["traced_mb"] == pytest.approx(6.0)
    assert summary["by_package_mb"] == [("kopf", 4.0), ("pydantic", 2.0)]
    assert [s["where"] for s in summary["top_sites"]] == [
        f"{site}/kopf/a.py:10",
        f"{site}/pydantic/main.py:30",
    ]
    assert summary["top_sites"][0]["blocks"] == 300


class ChangingWatch:
    """Stands in for a StatusWatch whose objects change `changes` times, every `every` seconds."""

    name = "things"

    def __init__(self, changes: int, every: float) -> None:
        self.events = 0

        def change() -> None:
            for _ in range(changes):
                time.sleep(every)
                self.events += 1

        threading.Thread(target=change, daemon=True).start()


def test_settling_waits_until_nothing_changed_for_the_quiet_time() -> None:
    watch = ChangingWatch(changes=6, every=0.1)
    waited = settle([watch], minimum=0.05, quiet=0.3, limit=10, poll=0.02)  # type: ignore[list-item]
    assert watch.events == 6
    assert 0.6 + 0.3 - 0.05 <= waited < 3


def test_settling_gives_up_at_the_limit() -> None:
    watch = ChangingWatch(changes=1000, every=0.02)
    waited = settle([watch], minimum=0, quiet=0.5, limit=0.3, poll=0.02)  # type: ignore[list-item]
    assert 0.3 <= waited < 0.45


class Recorder:
    """Stands in for the bench namespace and the webhook at the cleanup: what was done, in order."""

    def __init__(self, fails: bool = False) -> None:
        self.done: list[Any] = []
        self.fails = fails

    def delete(self, also: list[tuple[str, str]]) -> None:
        self.done.append(("delete", also))
        if self.fails:
            raise KeyboardInterrupt  # Ctrl-C while waiting for the namespace

    def close(self) -> None:
        self.done.append("webhook closed")


@pytest.mark.parametrize("fails", [False, True])
def test_the_cleanup_deletes_the_cluster_scoped_objects_with_the_namespace_then_stops_the_webhook(
    fails: bool,
) -> None:
    namespace = Recorder(fails)
    leftovers = [("FlowSchema", FLOW_SCHEMA), ("MutatingWebhookConfiguration", WEBHOOK)]
    try:
        tear_down(namespace, leftovers, namespace)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        assert fails
    assert namespace.done == [("delete", leftovers), "webhook closed"]
