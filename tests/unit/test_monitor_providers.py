"""What the controllers read from providers: Prometheus answers, readiness of a version's pods, what a
Monitor measures and the window its providers' readings make."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from modelfleet.analysis import ProviderError, SampledValue, VersionTraffic
from modelfleet.api.monitor import Metric
from modelfleet.controllers import kube
from modelfleet.controllers import monitor as monitor_controller
from modelfleet.controllers.cache import INDEXES, Cache
from modelfleet.controllers.monitor import MonitorController
from modelfleet.providers import Reading, Target, window
from modelfleet.providers.http import Http
from modelfleet.providers.prometheus import Prometheus, prometheus_value
from modelfleet.providers.reference import ReferenceProfiles, SecretUnreadable
from modelfleet.providers.router import RouterMetrics
from modelfleet.providers.sampled import SampledMetrics
from modelfleet.rollout.observe import ready_replicas


def _vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, v]} for v in values]},
    }


def test_one_series_is_its_value() -> None:
    assert prometheus_value(_vector("3.5")) == 3.5


def test_a_scalar_is_its_value() -> None:
    assert (
        prometheus_value({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "2"]}}) == 2.0
    )


def test_no_series_is_nan_so_the_metric_is_inconclusive() -> None:
    assert math.isnan(prometheus_value(_vector()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_vector("1", "2"), "2 series, expected one"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data: parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix is not a number"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1]}]}}, "malformed"),
        ([], "not a JSON object"),
    ],
)
def test_anything_else_is_a_provider_error(document: Any, message: str) -> None:
    answer = prometheus_value(document)
    assert isinstance(answer, ProviderError)
    assert message in answer.message


def _apps(generation: int, observed: int, ready: int, updated: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated},
    }


def test_ready_pods_count_only_when_they_run_the_current_template() -> None:
    assert ready_replicas(_apps(1, 1, 2, 2)) == 2
    assert ready_replicas(_apps(2, 2, 2, 1)) == 1  # one old pod still ready during a rolling update
    assert ready_replicas({"metadata": {"generation": 1}}) == 0


# --- what a Monitor measures, and the window its providers' readings make --------------------------------

KEY = ("ml", "iris-quality")


def test_during_a_rollout_the_canary_is_measured_against_stable() -> None:
    target = Target.of(KEY, "iris", stable="iris-v1", canary="iris-v2")

    assert target == Target(KEY, "ml", "iris", "iris-v2", reference="iris-v1")


def test_in_steady_state_the_stable_version_is_measured_alone() -> None:
    assert Target.of(KEY, "iris", stable="iris-v1", canary="") == Target(KEY, "ml", "iris", "iris-v1")


def test_a_first_canary_without_stable_has_nothing_to_compare_with() -> None:
    assert Target.of(KEY, "iris", stable="", canary="iris-v2") == Target(KEY, "ml", "iris", "iris-v2")
    assert Target.of(KEY, "iris", stable="", canary="") is None


def test_the_window_carries_stable_values_for_ratio_bounds_during_a_rollout() -> None:
    canary, stable = VersionTraffic("iris-v2", 10, requests=50), VersionTraffic("iris-v1", 10, requests=450)
    router = Reading(traffic=canary, stable_traffic=stable)
    feedback = Reading(
        sampled={"accuracy": SampledValue(0.9, 60)},
        stable_sampled={"accuracy": SampledValue(0.95, 500)},
    )

    merged = window("iris-v2", [router, feedback], stable="iris-v1")

    assert (merged.version, merged.stable_version) == ("iris-v2", "iris-v1")
    assert (merged.traffic, merged.stable_traffic) == (canary, stable)
    assert merged.sampled == {"accuracy": SampledValue(0.9, 60)}
    assert merged.stable_sampled == {"accuracy": SampledValue(0.95, 500)}


def test_in_steady_state_the_window_has_no_stable_side() -> None:
    reading = Reading(
        traffic=VersionTraffic("iris-v1", 10, requests=50),
        stable_traffic=VersionTraffic("iris-v1", 10, requests=50),
        sampled={"accuracy": SampledValue(0.9, 60)},
        stable_sampled={"accuracy": SampledValue(0.95, 500)},
    )

    merged = window("iris-v1", [reading])

    assert (merged.stable_version, merged.stable_traffic, merged.stable_sampled) == ("", None, {})
    assert merged.sampled == {"accuracy": SampledValue(0.9, 60)}


@pytest.mark.parametrize(
    ("type_", "provider"),
    [
        ("errorRate", "router"),
        ("latency", "router"),
        ("fallbackRate", "router"),
        ("predictionDrift", "router"),
        ("prometheus", "prometheus"),
        ("dataDrift", "sampled"),
        ("accuracy", "sampled"),
        ("meanAbsoluteError", "sampled"),
    ],
)
def test_each_metric_type_has_exactly_one_provider(type_: str, provider: str) -> None:
    fields: dict[str, Any] = {"name": "m", "type": type_, "max": 0.5}
    if type_ == "latency":
        fields["quantile"] = 0.99
    if type_ == "prometheus":
        fields["prometheus"] = {"query": "up"}
    metric = Metric.model_validate(fields)

    async def no_pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
        return []

    routers = RouterMetrics(no_pods, Http())
    providers = {
        "router": routers,
        "prometheus": Prometheus(Http()),
        "sampled": SampledMetrics(routers.routers, ReferenceProfiles(None), lambda namespace, name: None),
    }
    assert [name for name, p in providers.items() if p.handles(metric)] == [provider]


def test_the_monitor_controller_measures_the_sampled_metrics_through_the_routers_it_scrapes() -> None:
    indexes: dict[str, Any] = {index: {} for index in INDEXES}
    version = {"model": "iris", "version": "1", "image": "localhost/iris:1"}
    indexes["cached_model_versions"] = {
        ("ml", "iris-v1"): [{"metadata": {"name": "iris-v1", "namespace": "ml"}, "spec": version}],
        ("ml", "broken"): [{"metadata": {"name": "broken", "namespace": "ml"}, "spec": {"model": "iris"}}],
    }
    controller = MonitorController.default(Cache(indexes), lambda namespace, name: None)

    router, sampled, prometheus = controller.providers

    assert isinstance(router, RouterMetrics)
    assert isinstance(sampled, SampledMetrics)
    assert isinstance(prometheus, Prometheus)
    assert sampled.routers is router.routers  # the same pods, admin token, timeouts and refusals
    found = sampled.versions("ml", "iris-v1")
    assert found is not None
    assert found.spec.reference is None
    assert sampled.versions("ml", "broken") is None  # not valid: as if there were none
    assert sampled.versions("ml", "iris-v9") is None


def test_a_target_carries_the_deployments_uid_its_routers_admin_token_is_derived_from() -> None:
    target = Target.of(KEY, "iris", stable="iris-v1", canary="iris-v2", uid="u-1")

    assert target == Target(KEY, "ml", "iris", "iris-v2", reference="iris-v1", uid="u-1")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "the operator may not read Secret s3-creds (the chart's referenceProfiles.readSecrets)"),
        (500, "Secret s3-creds not read: HTTP 500"),
    ],
)
def test_a_credentials_secret_the_api_server_refuses_says_why(
    monkeypatch: pytest.MonkeyPatch, status: int, message: str
) -> None:
    async def refused(namespace: str, name: str) -> dict[str, str] | None:
        raise kube.ApiError(status, 'secrets "s3-creds" is forbidden')

    monkeypatch.setattr(monitor_controller, "read_secret", refused)

    with pytest.raises(SecretUnreadable) as caught:
        asyncio.run(monitor_controller.reference_secret("ml", "s3-creds"))
    assert str(caught.value) == message
