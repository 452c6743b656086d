"""The four kinds as users write them (docs/concepts.md): parsing, defaults, validation errors, hashing."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modelfleet.api import (
    CanaryStep,
    Deployment,
    DeploymentPhase,
    DeploymentSpec,
    DeploymentStatus,
    HistoryEntry,
    InvalidResourceError,
    Metric,
    MetricType,
    Model,
    ModelVersion,
    ModelVersionSpec,
    Monitor,
    MonitorSpec,
    OnDegraded,
    Pause,
    Protocol,
    RolloutResult,
    StrategyType,
    Verdict,
    rollout_hash,
)
from modelfleet.api.monitor import DriftMethod

API_MD_DEPLOYMENT = """
apiVersion: modelfleet.io/v1alpha1
kind: Deployment
metadata: {name: iris, namespace: ml, generation: 3}
spec:
  model: iris
  version: iris-v2
  replicas: 2
  paused: false
  strategy:
    type: Canary
    canary:
      steps:
        - setWeight: 10
        - pause: {duration: 30s}
        - setWeight: 50
        - pause: {duration: 1m}
      monitor: iris-quality
      mirrorPercent: 0
  fallback:
    timeout: 2s
    retryOnStable: true
    circuitBreaker: {errorRate: 0.5, minRequests: 20, window: 10s, openFor: 30s}
    response:
      statusCode: 200
      contentType: application/json
      body: '{"outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[0]}]}'
  router: {replicas: 1}
status:
  phase: Healthy
  stableVersion: iris-v1
  canaryVersion: iris-v2
  canaryWeight: 10
  currentStep: 1
  endpoint: http://iris.ml.svc:80
  message: "step 2/4: weight 10%, monitor iris-quality passing"
  history:
    - {version: iris-v3, result: RolledBack, reason: "error-rate 0.31 > 0.05",
       startedAt: "2024-05-01T10:00:00Z", finishedAt: "2024-05-01T10:01:00Z"}
  conditions:
    - {type: Ready, status: "True", reason: Healthy, lastTransitionTime: "2024-05-01T10:00:00Z"}
"""

API_MD_MONITOR = """
apiVersion: modelfleet.io/v1alpha1
kind: Monitor
metadata: {name: iris-quality, namespace: ml}
spec:
  deployment: iris
  interval: 10s
  failureLimit: 2
  minRequests: 20
  onDegraded: Rollback
  metrics:
    - {name: errors, type: errorRate, max: 0.05}
    - {name: p99, type: latency, quantile: 0.99, max: 0.5}
    - {name: fallbacks, type: fallbackRate, max: 0.10}
    - {name: drift, type: predictionDrift, max: 0.25}
    - name: business-kpi
      type: prometheus
      prometheus: {address: http://prometheus.monitoring:9090, query: 'sum(rate(conversions_total[1m]))'}
      min: 1.0
status:
  phase: Passing
  lastMeasurement:
    time: "2024-05-01T10:00:00Z"
    version: iris-v2
    results: [{name: errors, value: 0.0, verdict: Pass}]
"""

API_MD_MODELVERSION = """
apiVersion: modelfleet.io/v1alpha1
kind: ModelVersion
metadata: {name: iris-v2, namespace: ml}
spec:
  model: iris
  version: "2"
  image: localhost/iris-server:2
  port: 8080
  protocol: v2
  args: []
  env: [{name: LOG_LEVEL, value: info}, {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
  resources: {limits: {cpu: "1", memory: 1Gi}, requests: {cpu: 100m, memory: 256}}
  lineage:
    source: {repository: https://git.example.com/ml/iris, commit: 3f2a9c1}
    data: {uri: s3://datasets/iris/2024-05, digest: "sha256:abc"}
    run: {id: run-118, uri: https://mlflow.example.com/#/runs/118}
    metrics: {accuracy: 0.973, f1: 0.968}
  approval: {approved: true, by: alice, reason: passed offline evaluation}
status:
  phase: Ready
  servedBy: [iris]
"""

API_MD_MODEL = """
apiVersion: modelfleet.io/v1alpha1
kind: Model
metadata: {name: iris, namespace: ml}
spec:
  description: Iris species classifier
  owner: team-a
  task: classification
  governance:
    requireApproval: true
    allowedImages: ["localhost/", "registry.example.com/ml/"]
status:
  versions: [iris-v1, iris-v2]
  servingVersions: [iris-v1]
"""


def load(text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def spec(**fields: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"model": "iris", "version": "iris-v2", **fields})


# --- the API contract's examples parse, and write back what they read ------------------------------------


def test_api_md_deployment_parses_with_its_values() -> None:
    deployment = Deployment.from_k8s(load(API_MD_DEPLOYMENT))
    assert deployment.metadata.name == "iris"
    assert deployment.metadata.generation == 3
    steps = deployment.spec.strategy.canary.steps
    assert [s.set_weight for s in steps] == [10, None, 50, None]
    assert [s.pause.duration if s.pause else None for s in steps] == [None, 30.0, None, 60.0]
    assert deployment.spec.strategy.canary.monitor == "iris-quality"
    assert deployment.spec.fallback.response is not None
    assert deployment.spec.fallback.response.body.startswith('{"outputs"')
    assert deployment.status.phase == DeploymentPhase.HEALTHY
    assert deployment.status.canary_weight == 10
    assert deployment.status.history[0].result == RolloutResult.ROLLED_BACK


def test_api_md_deployment_round_trips_its_spec() -> None:
    original = load(API_MD_DEPLOYMENT)["spec"]
    dumped = Deployment.from_k8s(load(API_MD_DEPLOYMENT)).spec.to_k8s()
    # Everything the user wrote comes back the same; the rest is defaults.
    assert_contains(dumped, original)


def assert_contains(whole: Any, part: Any, path: str = "spec") -> None:
    if isinstance(part, dict):
        for key, value in part.items():
            assert key in whole, f"{path}.{key} missing"
            assert_contains(whole[key], value, f"{path}.{key}")
    elif isinstance(part, list):
        assert len(whole) == len(part), path
        for i, (w, p) in enumerate(zip(whole, part, strict=True)):
            assert_contains(w, p, f"{path}[{i}]")
    else:
        assert whole == part, path


def test_api_md_monitor_modelversion_and_model_parse() -> None:
    monitor = Monitor.from_k8s(load(API_MD_MONITOR))
    assert [m.name for m in monitor.spec.metrics] == ["errors", "p99", "fallbacks", "drift", "business-kpi"]
    assert monitor.spec.metrics[1].quantile == 0.99
    assert monitor.spec.metrics[4].prometheus is not None
    assert monitor.status.last_measurement is not None
    assert monitor.status.last_measurement.results[0].verdict == Verdict.PASS

    version = ModelVersion.from_k8s(load(API_MD_MODELVERSION))
    assert version.spec.serving_readiness_path == "/v2/health/ready"
    assert version.spec.lineage is not None
    assert version.spec.lineage.metrics == {"accuracy": 0.973, "f1": 0.968}
    assert version.spec.resources is not None
    assert version.spec.resources.requests == {"cpu": "100m", "memory": 256}
    assert version.spec.env[1].value_from == {"fieldRef": {"fieldPath": "metadata.name"}}

    model = Model.from_k8s(load(API_MD_MODEL))
    assert model.spec.governance.image_allowed("registry.example.com/ml/iris:2")
    assert not model.spec.governance.image_allowed("docker.io/iris:2")
    assert model.status.serving_versions == ("iris-v1",)


# --- defaults ----------------------------------------------------------------------------------------


def test_deployment_defaults_follow_api_md() -> None:
    s = spec()
    assert s.replicas == 1
    assert s.paused is False
    assert s.strategy.type == StrategyType.CANARY
    assert s.strategy.canary.steps == (
        CanaryStep(set_weight=20),
        CanaryStep(pause=Pause(duration=30)),
        CanaryStep(set_weight=50),
        CanaryStep(pause=Pause(duration=30)),
    )
    assert s.strategy.canary.mirror_percent == 0
    assert s.strategy.canary.monitor is None
    assert s.strategy.rollback_window == 600
    assert s.progress_deadline == 600
    assert s.fallback.timeout == 2
    assert s.fallback.retry_on_stable is True
    breaker = s.fallback.circuit_breaker
    assert (breaker.error_rate, breaker.min_requests, breaker.window, breaker.open_for) == (0.5, 20, 10, 30)
    assert s.fallback.response is None
    assert s.router.replicas == 1


def test_monitor_defaults() -> None:
    m = MonitorSpec.model_validate(
        {"deployment": "iris", "metrics": [{"name": "e", "type": "errorRate", "max": 1}]}
    )
    assert (m.interval, m.failure_limit, m.error_limit, m.min_requests) == (10, 2, 4, 20)
    assert m.on_degraded == "Rollback"
    p = Metric.model_validate({"name": "k", "type": "prometheus", "min": 1, "prometheus": {"query": "up"}})
    assert p.prometheus is not None
    assert p.prometheus.address == "http://prometheus.monitoring:9090"


API_MD_PRODUCTION_MONITORING = """
metrics:
  - {name: input-drift, type: dataDrift, method: psi, max: 0.2, features: [petal_length, petal_width]}
  - {name: accuracy, type: accuracy, min: 0.9, minSamples: 50}          # from ground-truth feedback
  - {name: mae, type: meanAbsoluteError, max: 0.5, minSamples: 50}       # regression
  - {name: p99-vs-stable, type: latency, quantile: 0.99, maxRatioToStable: 1.2}  # canary <= 1.2 x stable
onDegraded: Fallback                                                     # Rollback | Alert | Fallback
"""


def test_api_md_production_monitoring_parses_with_its_defaults() -> None:
    m = MonitorSpec.model_validate({"deployment": "iris", **load(API_MD_PRODUCTION_MONITORING)})
    drift, accuracy, mae, p99 = m.metrics
    assert m.on_degraded == OnDegraded.FALLBACK
    assert (drift.type, drift.drift_method, drift.features) == (
        MetricType.DATA_DRIFT,
        DriftMethod.PSI,
        ("petal_length", "petal_width"),
    )
    assert (drift.samples_needed, accuracy.samples_needed, mae.samples_needed) == (100, 50, 50)
    assert (p99.max_ratio_to_stable, p99.min_ratio_to_stable, p99.has_ratio) == (1.2, None, True)
    assert not accuracy.has_ratio
    assert p99.threshold() == "<= 1.2x stable"
    assert accuracy.threshold() == ">= 0.9"


def test_sampled_metrics_default_their_samples_and_method_by_type() -> None:
    drift = Metric.model_validate({"name": "d", "type": "dataDrift", "max": 0.2})
    assert (drift.method, drift.drift_method, drift.features, drift.samples_needed) == (
        None,
        DriftMethod.PSI,
        None,
        100,
    )
    assert drift.to_k8s() == {"name": "d", "type": "dataDrift", "max": 0.2}  # defaults are not written
    ks = Metric.model_validate(
        {"name": "d", "type": "dataDrift", "method": "ks", "max": 0.1, "minSamples": 7}
    )
    assert (ks.drift_method, ks.samples_needed) == (DriftMethod.KS, 7)
    errors = Metric.model_validate({"name": "e", "type": "errorRate", "max": 0.1})
    assert errors.samples_needed == 0


@pytest.mark.parametrize(
    ("bounds", "threshold"),
    [
        ({"max": 0.5}, "<= 0.5"),
        ({"min": 0.1, "max": 0.9}, "0.1..0.9"),
        ({"maxRatioToStable": 1.2}, "<= 1.2x stable"),
        ({"minRatioToStable": 0.98}, ">= 0.98x stable"),
        ({"minRatioToStable": 0.5, "maxRatioToStable": 2}, "0.5x..2x stable"),
        ({"max": 0.5, "maxRatioToStable": 1.2}, "<= 0.5, <= 1.2x stable"),
        ({"min": 0.9, "minRatioToStable": 1}, ">= 0.9, >= 1x stable"),
    ],
)
def test_a_metric_may_have_absolute_and_ratio_bounds(bounds: dict[str, float], threshold: str) -> None:
    metric = Metric.model_validate({"name": "m", "type": "latency", "quantile": 0.99, **bounds})
    assert metric.threshold() == threshold
    assert metric.has_ratio == any("Ratio" in key for key in bounds)


@pytest.mark.parametrize(
    ("protocol", "path"), [(None, "/v2/health/ready"), ("v2", "/v2/health/ready"), ("v1", "/"), ("http", "/")]
)
def test_readiness_path_follows_protocol(protocol: str | None, path: str) -> None:
    data: dict[str, Any] = {"model": "iris", "version": "2", "image": "localhost/iris:2"}
    if protocol:
        data["protocol"] = protocol
    parsed = ModelVersionSpec.model_validate(data)
    assert parsed.serving_port == 8080
    assert parsed.serving_readiness_path == path
    assert parsed.serving_protocol == Protocol(protocol or "v2")


def test_explicit_readiness_path_wins() -> None:
    parsed = ModelVersionSpec(
        model="iris", version="2", image="x:1", protocol=Protocol.HTTP, readiness_path="/ok"
    )
    assert parsed.readiness_path == "/ok"


def test_missing_status_is_empty() -> None:
    deployment = Deployment.from_k8s(
        {"metadata": {"name": "iris"}, "spec": {"model": "iris", "version": "v2"}}
    )
    assert deployment.status == DeploymentStatus()
    assert deployment.status.phase is None
    assert deployment.status.canary_version == ""
    assert deployment.status.analysis.failures == 0
    assert (
        Deployment.from_k8s({"spec": {"model": "iris", "version": "v2"}, "status": None}).status
        == DeploymentStatus()
    )


# --- validation errors name the field ---------------------------------------------------------------

CAPTURE_TO = {"uri": "s3://captures/iris/"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"replicas": 101}, r"spec\.replicas: Input should be less than or equal to 100"),
        ({"replicas": -1}, r"spec\.replicas: Input should be greater than or equal to 0"),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}},
            r"spec\.strategy\.canary\.steps\[0\]: a step has exactly one of setWeight or pause",
        ),
        (
            {"strategy": {"canary": {"steps": [{}]}}},
            r"steps\[0\]: a step has exactly one of setWeight or pause",
        ),
        (
            {"strategy": {"canary": {"steps": []}}},
            r"spec\.strategy\.canary\.steps: List should have at least 1",
        ),
        (
            {"strategy": {"canary": {"steps": [{"setWeight": 120}]}}},
            r"steps\[0\]\.setWeight: Input should be less",
        ),
        (
            {"strategy": {"type": "BlueGreen"}},
            r"spec\.strategy\.type: Input should be 'Canary' or 'Immediate'",
        ),
        ({"strategy": {"canary": {"mirrorPercent": 101}}}, r"spec\.strategy\.canary\.mirrorPercent"),
        ({"fallback": {"timeout": "0s"}}, r"spec\.fallback: timeout must be greater than zero"),
        ({"fallback": {"timeout": "2 seconds"}}, r"spec\.fallback\.timeout: invalid duration '2 seconds'"),
        (
            {"fallback": {"circuitBreaker": {"errorRate": 0}}},
            r"circuitBreaker\.errorRate: Input should be greater",
        ),
        (
            {"fallback": {"circuitBreaker": {"errorRate": 1.5}}},
            r"circuitBreaker\.errorRate: Input should be less",
        ),
        (
            {"fallback": {"circuitBreaker": {"window": "0ms"}}},
            r"circuitBreaker: window must be greater than zero",
        ),
        ({"fallback": {"response": {"statusCode": 99}}}, r"response\.statusCode"),
        ({"router": {"replicas": 0}}, r"spec\.router\.replicas"),
        ({"progressDeadline": "0s"}, r"spec: progressDeadline must be greater than zero"),
        ({"replica": 2}, r"spec\.replica: Extra inputs are not permitted"),
        ({"version": "Iris_V2"}, r"spec\.version: String should match pattern"),
        ({"fallback": {"version": "Heuristic"}}, r"spec\.fallback\.version: String should match pattern"),
        ({"fallback": {"version": "iris-v2"}}, r"spec: fallback\.version must differ from version: iris-v2"),
        ({"feedback": {}}, r"spec\.feedback\.tokenSecret: Field required"),
        (
            {"feedback": {"tokenSecret": {"name": "iris-feedback"}}},
            r"spec\.feedback\.tokenSecret\.key: Field",
        ),
        (
            {"feedback": {"tokenSecret": {"name": "iris-feedback", "key": "the token"}}},
            r"spec\.feedback\.tokenSecret\.key: String should match pattern",
        ),
        ({"capture": {"percent": 5}}, r"spec\.capture\.destination: Field required"),
        (
            {"capture": {"percent": 0, "destination": CAPTURE_TO}},
            r"spec\.capture\.percent: Input should be gr",
        ),
        (
            {"capture": {"percent": 101, "destination": CAPTURE_TO}},
            r"spec\.capture\.percent: Input should be le",
        ),
        (
            {"capture": {"percent": 5, "destination": {"uri": "https://captures.example.com/iris"}}},
            r"spec\.capture\.destination\.uri: uri must be s3://BUCKET/PREFIX or pvc://CLAIM/PATH",
        ),
        (
            {"capture": {"percent": 5, "destination": {"uri": "pvc://captures/iris/../../etc"}}},
            r"spec\.capture\.destination\.uri: uri must not have a '\.\.' segment",
        ),
        (
            {"capture": {"percent": 5, "destination": CAPTURE_TO, "redact": ["email", "email"]}},
            r"spec\.capture: redact names must be unique: email repeated",
        ),
        (
            {"capture": {"percent": 5, "destination": CAPTURE_TO, "redact": [""]}},
            r"capture\.redact\[0\]: String",
        ),
    ],
)
def test_bad_deployment_spec_is_refused_with_the_field_named(fields: dict[str, Any], message: str) -> None:
    obj = {
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": "iris", "version": "iris-v2", **fields},
    }
    with pytest.raises(InvalidResourceError, match=message) as info:
        Deployment.from_k8s(obj)
    assert str(info.value).startswith("Deployment ml/iris: invalid: ")


API_MD_DEPLOYMENT_PRODUCTION = """
model: iris
version: iris-v2
fallback:
  version: iris-heuristic
  response: {statusCode: 200, body: '{"outputs": []}'}
feedback: {tokenSecret: {name: iris-feedback, key: token}}
capture:
  percent: 5
  destination: {uri: s3://captures/iris/, credentials: {secretName: s3-creds}}
  redact: [email, user_id]
"""


def test_a_deployment_names_its_fallback_version_feedback_token_and_capture() -> None:
    spec_ = DeploymentSpec.model_validate(load(API_MD_DEPLOYMENT_PRODUCTION))

    assert spec_.fallback.version == "iris-heuristic"
    assert spec_.fallback.response is not None
    assert spec_.feedback is not None
    assert (spec_.feedback.token_secret.name, spec_.feedback.token_secret.key) == ("iris-feedback", "token")
    assert spec_.capture is not None
    assert spec_.capture.percent == 5
    assert spec_.capture.destination.uri == "s3://captures/iris/"
    assert spec_.capture.destination.credentials is not None
    assert spec_.capture.destination.credentials.secret_name == "s3-creds"
    assert spec_.capture.redact == ("email", "user_id")
    assert spec_.to_k8s()["feedback"] == {"tokenSecret": {"name": "iris-feedback", "key": "token"}}
    # none of them restarts a rollout
    assert rollout_hash(spec_) == rollout_hash(spec(version="iris-v2"))
    # a fractional share and a PVC are fine; without them nothing is captured and feedback is off
    small = DeploymentSpec.model_validate(
        {
            "model": "iris",
            "version": "v",
            "capture": {"percent": 0.5, "destination": {"uri": "pvc://cap/iris"}},
        }
    )
    assert small.capture is not None
    assert small.capture.percent == 0.5
    assert (spec().feedback, spec().capture, spec().fallback.version) == (None, None, None)


def test_the_own_fallback_rule_sees_spec_version_only() -> None:
    # an alias resolves at run time: the spec has nothing to compare fallback.version with
    followed = DeploymentSpec.model_validate(
        {"model": "iris", "versionFrom": {"mlflowAlias": "champion"}, "fallback": {"version": "iris-v2"}}
    )
    assert followed.fallback.version == "iris-v2"


def test_a_deployment_can_follow_an_mlflow_alias_instead_of_naming_its_version() -> None:
    deployment = Deployment.from_k8s(
        load("""
kind: Deployment
metadata: {name: iris, namespace: ml}
spec:
  model: iris
  versionFrom: {mlflowAlias: champion}
status:
  targetVersion: iris-v7
""")
    )
    assert deployment.spec.version is None
    assert deployment.spec.alias == "champion"
    assert deployment.status.target_version == "iris-v7"
    assert deployment.spec.to_k8s()["versionFrom"] == {"mlflowAlias": "champion"}
    assert "version" not in deployment.spec.to_k8s()
    assert spec().alias == ""  # a spec that names its version follows no alias


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": "iris-v2", "versionFrom": {"mlflowAlias": "champion"}}, "both"),
        ({}, "neither"),
    ],
)
def test_a_deployment_names_its_version_or_follows_an_alias_never_both_nor_neither(
    fields: dict[str, Any], message: str
) -> None:
    obj = {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"model": "iris", **fields}}
    with pytest.raises(InvalidResourceError) as info:
        Deployment.from_k8s(obj)
    assert info.value.errors == ("spec: exactly one of version and versionFrom must be set",), message


@pytest.mark.parametrize("alias", ["champion", "Prod_2", "a-b", "x" * 255])
def test_alias_names_follow_mlflow(alias: str) -> None:
    parsed = DeploymentSpec.model_validate({"model": "iris", "versionFrom": {"mlflowAlias": alias}})
    assert parsed.alias == alias


@pytest.mark.parametrize("alias", ["", "has space", "a/b", "v1.2", "x" * 256])
def test_alias_names_mlflow_refuses_are_refused(alias: str) -> None:
    with pytest.raises(ValidationError, match=r"versionFrom\.mlflowAlias"):
        DeploymentSpec.model_validate({"model": "iris", "versionFrom": {"mlflowAlias": alias}})


def test_every_problem_is_listed() -> None:
    obj = {"metadata": {"name": "iris"}, "spec": {"model": "iris", "version": "Iris", "replicas": 500}}
    with pytest.raises(InvalidResourceError) as info:
        Deployment.from_k8s(obj)
    assert info.value.errors == (
        "spec.version: String should match pattern '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'",
        "spec.replicas: Input should be less than or equal to 100",
    )


def metric(**fields: Any) -> dict[str, Any]:
    return {"name": "m", "type": "errorRate", "max": 0.1, **fields}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([], r"spec\.metrics: List should have at least 1 item"),
        ([metric()] * 21, r"spec\.metrics: List should have at most 20 items"),
        (
            [metric(type="latency")],
            r"metric m: quantile is required for type latency, and only allowed there",
        ),
        ([metric(quantile=0.9)], r"metric m: quantile is required for type latency"),
        ([metric(type="latency", quantile=1.0)], r"metrics\[0\]\.quantile: Input should be less than 1"),
        ([metric(type="prometheus")], r"metric m: prometheus\.query is required for type prometheus"),
        (
            [metric(prometheus={"query": "up"})],
            r"prometheus\.query is required for type prometheus, and only",
        ),
        (
            [metric(type="prometheus", prometheus={"query": ""})],
            r"prometheus\.query: String should have at least",
        ),
        ([metric(max=None)], r"metric m: a metric needs min, max, minRatioToStable or maxRatioToStable"),
        ([metric(min=2, max=1)], r"metric m: min must not exceed max"),
        ([metric(name="a"), metric(name="b"), metric(name="a")], r"metric names must be unique: a repeated"),
        ([metric(type="throughput")], r"metrics\[0\]\.type: Input should be 'errorRate', 'latency'"),
        ([metric(maxRatioToStable=0)], r"metrics\[0\]\.maxRatioToStable: Input should be greater than 0"),
        ([metric(minRatioToStable=-1)], r"metrics\[0\]\.minRatioToStable: Input should be greater than 0"),
        (
            [metric(max=None, minRatioToStable=1.5, maxRatioToStable=1.2)],
            r"metric m: minRatioToStable must not exceed maxRatioToStable",
        ),
        (
            [metric(type="predictionDrift", maxRatioToStable=2)],
            r"metric m: minRatioToStable and maxRatioToStable do not apply to type predictionDrift",
        ),
        (
            [metric(type="prometheus", prometheus={"query": "up"}, minRatioToStable=0.9)],
            r"nor prometheus \(its query names no version\)",
        ),
        ([metric(method="psi")], r"metric m: method and features are only allowed for type dataDrift"),
        ([metric(features=["petal_length"])], r"metric m: method and features are only allowed"),
        ([metric(type="dataDrift", method="chi2")], r"metrics\[0\]\.method: Input should be 'psi', 'ks' or"),
        ([metric(type="dataDrift", features=[])], r"metrics\[0\]\.features: List should have at least 1"),
        ([metric(type="dataDrift", features=[""])], r"metrics\[0\]\.features\[0\]: String should have"),
        (
            [metric(type="dataDrift", features=["a", "b", "a"])],
            r"metric m: features must be unique: a repeated",
        ),
        (
            [metric(minSamples=10)],
            r"metric m: minSamples is only allowed for types dataDrift, accuracy and meanAbsoluteError",
        ),
        ([metric(type="accuracy", minSamples=0)], r"metrics\[0\]\.minSamples: Input should be greater"),
        ([metric(type="accuracy", max=None, min=90)], r"metric m: accuracy is a share: its min and max"),
        ([metric(type="accuracy", max=1.5)], r"metric m: accuracy is a share"),
        ([metric(name="Error Rate")], r"metrics\[0\]\.name: String should match pattern"),
    ],
)
def test_bad_monitor_spec_is_refused(metrics: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidResourceError, match=message):
        Monitor.from_k8s({"metadata": {"name": "q"}, "spec": {"deployment": "iris", "metrics": metrics}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"failureLimit": 0}, r"spec\.failureLimit: Input should be greater than or equal to 1"),
        ({"errorLimit": 101}, r"spec\.errorLimit: Input should be less than or equal to 100"),
        (
            {"onDegraded": "Ignore"},
            r"spec\.onDegraded: Input should be 'Rollback', 'Alert' or 'Fallback'",
        ),
        ({"interval": "10"}, r"spec\.interval: invalid duration '10'"),
        ({"deployment": None}, r"spec\.deployment: Input should be a valid string"),
    ],
)
def test_bad_monitor_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    spec_ = {"deployment": "iris", "metrics": [metric()], **fields}
    with pytest.raises(InvalidResourceError, match=message):
        Monitor.from_k8s({"spec": spec_})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image": "has space"}, r"spec\.image: String should match pattern"),
        ({"port": 0}, r"spec\.port: Input should be greater than or equal to 1"),
        ({"protocol": "grpc"}, r"spec\.protocol: Input should be 'v2', 'v1' or 'http'"),
        ({"readinessPath": "health"}, r"spec\.readinessPath: String should match pattern"),
        ({"model": None}, r"spec\.model: Input should be a valid string"),
        ({"resources": {"limits": {"cpu": [1]}}}, r"spec\.resources\.limits\.cpu"),
        ({"reference": {"digest": "sha256:" + "0" * 64}}, r"spec\.reference\.uri: Field required"),
        (
            {"reference": {"uri": "s3://p/x.json", "digest": "md5:1"}},
            r"spec\.reference\.digest: String should",
        ),
        (
            {"reference": {"uri": "s3://p/x.json", "credentials": {"secretName": "S3"}}},
            r"spec\.reference\.credentials\.secretName: String should match pattern",
        ),
    ],
)
def test_bad_model_version_is_refused(fields: dict[str, Any], message: str) -> None:
    spec_ = {"model": "iris", "version": "2", "image": "localhost/iris:2", **fields}
    with pytest.raises(InvalidResourceError, match=message):
        ModelVersion.from_k8s({"spec": spec_})


def test_a_version_names_its_reference_profile_like_its_artifact() -> None:
    reference = {
        "uri": "s3://models/iris/4/profile.json",
        "digest": "sha256:" + "9" * 64,
        "credentials": {"secretName": "s3-creds"},
    }
    parsed = ModelVersionSpec.model_validate(
        {"model": "iris", "version": "4", "image": "localhost/iris:4", "reference": reference}
    )
    assert parsed.reference is not None
    assert parsed.reference.credentials is not None
    assert parsed.reference.credentials.secret_name == "s3-creds"
    assert parsed.to_k8s()["reference"] == reference


def test_models_are_frozen() -> None:
    s = spec()
    with pytest.raises(ValidationError, match="frozen"):
        s.replicas = 3  # type: ignore[misc]


def test_snake_case_names_work_in_python() -> None:
    assert spec(strategy={"canary": {"mirror_percent": 5}}).strategy.canary.mirror_percent == 5


# --- status written by another operator version -----------------------------------------------------


def test_unknown_status_fields_are_ignored_but_spec_ones_are_not() -> None:
    obj = load(API_MD_DEPLOYMENT)
    obj["status"]["kopf"] = {"progress": {}}
    obj["status"]["canaryReplicas"] = 3
    obj["status"]["analysis"] = {"failures": 1, "legacyScore": 0.3}
    obj["status"]["conditions"][0]["severity"] = "Info"
    deployment = Deployment.from_k8s(obj)
    assert deployment.status.analysis.failures == 1
    assert deployment.status.conditions[0].reason == "Healthy"
    obj["spec"]["canaryReplicas"] = 3
    with pytest.raises(InvalidResourceError, match=r"spec\.canaryReplicas: Extra inputs are not permitted"):
        Deployment.from_k8s(obj)


def test_a_status_written_with_the_former_field_name_is_read_once_under_the_new_one() -> None:
    status = DeploymentStatus.model_validate({"stableVersion": "iris-v1", "abortedVersion": "iris-v2"})
    assert status.rolled_back_version == "iris-v2"
    written = status.to_k8s()
    assert written["rolledBackVersion"] == "iris-v2"
    assert "abortedVersion" not in written  # never written again
    both = DeploymentStatus.model_validate({"abortedVersion": "old", "rolledBackVersion": "new"})
    assert both.rolled_back_version == "new"


def test_an_over_long_history_keeps_the_newest_twenty() -> None:
    entries = [{"version": f"v{i}", "result": "Promoted"} for i in range(30)]
    status = DeploymentStatus.model_validate({"history": entries})
    assert [h.version for h in status.history] == [f"v{i}" for i in range(20)]


def test_with_history_prepends_and_bounds() -> None:
    status = DeploymentStatus.model_validate(
        {"history": [{"version": f"v{i}", "result": "Promoted"} for i in range(20)]}
    )
    history = status.with_history(
        HistoryEntry(version="new", result=RolloutResult.ROLLED_BACK, reason="errors")
    )
    assert len(history) == 20
    assert history[0].version == "new"
    assert history[-1].version == "v18"


def test_status_dump_keeps_nulls_for_merge_patches_when_asked() -> None:
    status = DeploymentStatus(phase=DeploymentPhase.HEALTHY, stable_version="iris-v1")
    patch = status.to_k8s(drop_none=False)
    assert patch["stepStartedAt"] is None
    assert patch["phase"] == "Healthy"
    assert "stepStartedAt" not in status.to_k8s()


def test_from_k8s_accepts_read_only_mappings() -> None:
    from types import MappingProxyType

    body = MappingProxyType({"spec": MappingProxyType({"model": "iris", "version": "v2"})})
    assert Deployment.from_k8s(body).spec.version == "v2"


# --- the rollout hash ---------------------------------------------------------------------------------


def test_rollout_hash_is_short_hex_and_stable_across_runs() -> None:
    value = rollout_hash(spec())
    assert len(value) == 10
    int(value, 16)
    # Pinned: a change here restarts every rollout in flight after an operator upgrade.
    assert value == "2e138f31a0"


def test_rollout_hash_ignores_spelling_and_settings_that_do_not_restart_a_rollout() -> None:
    base = rollout_hash(spec())
    steps_in_minutes = {
        "canary": {
            "steps": [
                {"setWeight": 20},
                {"pause": {"duration": "0.5m"}},
                {"setWeight": 50},
                {"pause": {"duration": "30000ms"}},
            ]
        }
    }
    assert rollout_hash(spec(strategy=steps_in_minutes)) == base
    assert rollout_hash(spec(replicas=5, paused=True)) == base
    assert rollout_hash(spec(fallback={"timeout": "5s"}, router={"replicas": 3})) == base
    assert rollout_hash(spec(strategy={"canary": {"monitor": "q", "mirrorPercent": 10}})) == base


@pytest.mark.parametrize(
    "change",
    [
        {"version": "iris-v3"},
        {"model": "iris2"},
        {"strategy": {"type": "Immediate"}},
        {"strategy": {"canary": {"steps": [{"setWeight": 20}]}}},
        {"strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
    ],
)
def test_rollout_hash_changes_with_what_is_rolled_out(change: dict[str, Any]) -> None:
    assert rollout_hash(spec(**change)) != rollout_hash(spec())
