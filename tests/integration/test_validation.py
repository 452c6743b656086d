"""Bad input is refused by `kubectl apply` itself, against the real modelfleet.io CRDs, with a message
that names the field; input the API server accepts but that makes no sense does not hurt the operator.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import pytest

from support.cluster import Cluster
from support.registry import API_VERSION, condition, model, model_version, state

Manifest = dict[str, Any]


def obj(kind: str, name: str, spec: dict[str, Any]) -> Manifest:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


MODEL = {"governance": {"requireApproval": True, "allowedImages": ["localhost/"]}}
VERSION = {"model": "iris", "version": "1", "image": "localhost/iris-server:1"}
ARTIFACT = {"uri": "s3://models/iris/4/", "format": "sklearn", "digest": "sha256:" + "0" * 64}
ARTIFACT_VERSION = {"model": "iris", "version": "4", "artifact": ARTIFACT}
DEPLOYMENT = {"model": "iris", "version": "iris-v1"}
PRODUCTION_DEPLOYMENT = {
    **DEPLOYMENT,
    "fallback": {"version": "iris-heuristic"},
    "feedback": {"tokenSecret": {"name": "iris-feedback", "key": "token"}},
    "capture": {"percent": 5, "destination": {"uri": "s3://captures/iris/"}, "redact": ["email"]},
}
MONITOR = {"deployment": "iris", "metrics": [{"name": "errors", "type": "errorRate", "max": 0.05}]}
PRODUCTION_MONITOR = {
    "deployment": "iris",
    "onDegraded": "Fallback",
    "metrics": [
        {"name": "input-drift", "type": "dataDrift", "method": "psi", "max": 0.2, "features": ["a", "b"]},
        {"name": "accuracy", "type": "accuracy", "min": 0.9, "minSamples": 50, "minRatioToStable": 0.98},
        {"name": "mae", "type": "meanAbsoluteError", "max": 0.5},
        {"name": "p99-vs-stable", "type": "latency", "quantile": 0.99, "maxRatioToStable": 1.2},
    ],
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`base` with top-level spec fields replaced (None removes one)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {"canary": {"steps": list(items)}}


def metric(**fields: Any) -> list[dict[str, Any]]:
    return [{"name": "m", "type": "errorRate", "max": 0.05, **fields}]


# (id, kind, spec, fragments the error must contain: the field path first)
BAD_INPUTS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    # Model
    (
        "model-too-many-allowed-images",
        "Model",
        {"governance": {"allowedImages": [f"r{i}.example.com/" for i in range(65)]}},
        ["spec.governance.allowedImages", "Too many: 65: must have at most 64 items"],
    ),
    (
        "model-require-approval-not-boolean",
        "Model",
        {"governance": {"requireApproval": "yes"}},
        ["spec.governance.requireApproval", "must be of type boolean"],
    ),
    (
        "model-image-prefix-with-space",
        "Model",
        {"governance": {"allowedImages": ["local host/"]}},
        ["spec.governance.allowedImages[0]", "should match"],
    ),
    ("model-unknown-field", "Model", {"colour": "blue"}, ['unknown field "spec.colour"']),
    (
        "model-description-too-long",
        "Model",
        {"description": "x" * 1100},
        ["spec.description", "Too long: may not be more than 1024"],
    ),
    # ModelVersion
    ("version-missing-model", "ModelVersion", with_(VERSION, model=None), ["spec.model", "Required value"]),
    (
        "version-neither-image-nor-artifact",
        "ModelVersion",
        with_(VERSION, image=None),
        ["spec", "exactly one of image and artifact must be set"],
    ),
    (
        "version-both-image-and-artifact",
        "ModelVersion",
        with_(VERSION, artifact=ARTIFACT),
        ["spec", "exactly one of image and artifact must be set"],
    ),
    (
        "artifact-unknown-scheme",
        "ModelVersion",
        with_(ARTIFACT_VERSION, artifact={**ARTIFACT, "uri": "ftp://models/iris/4/"}),
        ["spec.artifact.uri", "uri must be s3://BUCKET/KEY, http(s)://HOST/PATH, pvc://CLAIM/PATH"],
    ),
    (
        "reference-unknown-scheme",
        "ModelVersion",
        with_(ARTIFACT_VERSION, reference={"uri": "ftp://models/iris/4/profile.json"}),
        ["spec.reference.uri", "uri must be s3://BUCKET/KEY, http(s)://HOST/PATH, pvc://CLAIM/PATH"],
    ),
    (
        "artifact-malformed-digest",
        "ModelVersion",
        with_(ARTIFACT_VERSION, artifact={**ARTIFACT, "digest": "sha256:abc"}),
        ["spec.artifact.digest", "should match '^sha256:[0-9a-f]{64}$'"],
    ),
    (
        "artifact-without-format",
        "ModelVersion",
        with_(ARTIFACT_VERSION, artifact={"uri": ARTIFACT["uri"]}),
        ["spec.artifact.format", "Required value"],
    ),
    (
        "artifact-with-a-port",
        "ModelVersion",
        with_(ARTIFACT_VERSION, port=9000),
        ["spec", "port, protocol and readinessPath of an artifact version come from its runtime"],
    ),
    (
        "runtime-on-an-image-version",
        "ModelVersion",
        with_(VERSION, runtime="mlserver-sklearn"),
        ["spec", "runtime applies to an artifact version only"],
    ),
    (
        "runtime-without-formats",
        "Runtime",
        {"image": "localhost/modelfleet-mlserver:dev", "formats": []},
        ["spec.formats", "should have at least 1 items"],
    ),
    (
        "version-missing-version",
        "ModelVersion",
        with_(VERSION, version=None),
        ["spec.version", "Required value"],
    ),
    (
        "version-port-out-of-range",
        "ModelVersion",
        with_(VERSION, port=70000),
        ["spec.port", "should be less than or equal to 65535"],
    ),
    (
        "version-port-zero",
        "ModelVersion",
        with_(VERSION, port=0),
        ["spec.port", "should be greater than or equal to 1"],
    ),
    (
        "version-unknown-protocol",
        "ModelVersion",
        with_(VERSION, protocol="grpc"),
        ["spec.protocol", 'Unsupported value: "grpc"', '"v2", "v1", "http"'],
    ),
    (
        "version-readiness-path-not-absolute",
        "ModelVersion",
        with_(VERSION, readinessPath="health"),
        ["spec.readinessPath", "should match"],
    ),
    (
        "version-label-with-space",
        "ModelVersion",
        with_(VERSION, version="v 2"),
        ["spec.version", "should match"],
    ),
    (
        "version-model-not-a-name",
        "ModelVersion",
        with_(VERSION, model="Iris_Model"),
        ["spec.model", "should match"],
    ),
    (
        "version-too-many-env",
        "ModelVersion",
        with_(VERSION, env=[{"name": f"E{i}", "value": "1"} for i in range(65)]),
        ["spec.env", "Too many: 65: must have at most 64 items"],
    ),
    (
        "version-lineage-metric-not-a-number",
        "ModelVersion",
        with_(VERSION, lineage={"metrics": {"accuracy": "high"}}),
        ["spec.lineage.metrics.accuracy", "must be of type number"],
    ),
    (
        "version-approval-not-boolean",
        "ModelVersion",
        with_(VERSION, approval={"approved": "sure"}),
        ["spec.approval.approved", "must be of type boolean"],
    ),
    # Deployment
    (
        "deployment-replicas-too-many",
        "Deployment",
        with_(DEPLOYMENT, replicas=101),
        ["spec.replicas", "should be less than or equal to 100"],
    ),
    (
        "deployment-replicas-negative",
        "Deployment",
        with_(DEPLOYMENT, replicas=-1),
        ["spec.replicas", "should be greater than or equal to 0"],
    ),
    (
        "deployment-missing-version",
        "Deployment",
        with_(DEPLOYMENT, version=None),
        ["spec", "exactly one of version and versionFrom must be set"],
    ),
    (
        "deployment-version-and-version-from",
        "Deployment",
        with_(DEPLOYMENT, versionFrom={"mlflowAlias": "champion"}),
        ["spec", "exactly one of version and versionFrom must be set"],
    ),
    (
        "deployment-alias-not-an-mlflow-alias",
        "Deployment",
        with_(DEPLOYMENT, version=None, versionFrom={"mlflowAlias": "prod/eu"}),
        ["spec.versionFrom.mlflowAlias", "should match"],
    ),
    (
        "deployment-unknown-strategy",
        "Deployment",
        with_(DEPLOYMENT, strategy={"type": "BlueGreen"}),
        ["spec.strategy.type", 'Unsupported value: "BlueGreen"', '"Canary", "Immediate"'],
    ),
    (
        "deployment-weight-over-100",
        "Deployment",
        with_(DEPLOYMENT, strategy=steps({"setWeight": 150})),
        ["spec.strategy.canary.steps[0].setWeight", "should be less than or equal to 100"],
    ),
    (
        "deployment-step-with-weight-and-pause",
        "Deployment",
        with_(DEPLOYMENT, strategy=steps({"setWeight": 10}, {"setWeight": 20, "pause": {}})),
        ["spec.strategy.canary.steps[1]", "a step has exactly one of setWeight or pause"],
    ),
    (
        "deployment-bad-pause-duration",
        "Deployment",
        with_(DEPLOYMENT, strategy=steps({"pause": {"duration": "10 minutes"}})),
        ["spec.strategy.canary.steps[0].pause.duration", "should match"],
    ),
    (
        "deployment-zero-timeout",
        "Deployment",
        with_(DEPLOYMENT, fallback={"timeout": "0s"}),
        ["spec.fallback", "timeout must be greater than zero"],
    ),
    (
        "deployment-too-many-steps",
        "Deployment",
        with_(DEPLOYMENT, strategy=steps(*[{"setWeight": 1}] * 33)),
        ["spec.strategy.canary.steps", "Too many: 33: must have at most 32 items"],
    ),
    (
        "deployment-no-steps",
        "Deployment",
        with_(DEPLOYMENT, strategy=steps()),
        ["spec.strategy.canary.steps", "should have at least 1 items"],
    ),
    (
        "deployment-error-rate-over-1",
        "Deployment",
        with_(DEPLOYMENT, fallback={"circuitBreaker": {"errorRate": 1.5}}),
        ["spec.fallback.circuitBreaker.errorRate", "should be less than or equal to 1"],
    ),
    (
        "deployment-mirror-over-100",
        "Deployment",
        with_(DEPLOYMENT, strategy={"canary": {"mirrorPercent": 101}}),
        ["spec.strategy.canary.mirrorPercent", "should be less than or equal to 100"],
    ),
    (
        "deployment-fallback-status-700",
        "Deployment",
        with_(DEPLOYMENT, fallback={"response": {"statusCode": 700}}),
        ["spec.fallback.response.statusCode", "should be less than or equal to 599"],
    ),
    (
        "deployment-no-router",
        "Deployment",
        with_(DEPLOYMENT, router={"replicas": 0}),
        ["spec.router.replicas", "should be greater than or equal to 1"],
    ),
    (
        "deployment-own-fallback-version",
        "Deployment",
        with_(DEPLOYMENT, fallback={"version": "iris-v1"}),
        ["spec", "fallback.version must differ from version"],
    ),
    (
        "deployment-feedback-without-key",
        "Deployment",
        with_(DEPLOYMENT, feedback={"tokenSecret": {"name": "iris-feedback"}}),
        ["spec.feedback.tokenSecret.key", "Required value"],
    ),
    (
        "deployment-capture-to-http",
        "Deployment",
        with_(DEPLOYMENT, capture={"percent": 5, "destination": {"uri": "https://example.com/c"}}),
        ["spec.capture.destination.uri", "uri must be s3://BUCKET/PREFIX or pvc://CLAIM/PATH"],
    ),
    (
        "deployment-capture-off-its-claim",
        "Deployment",
        with_(DEPLOYMENT, capture={"percent": 5, "destination": {"uri": "pvc://captures/../../etc"}}),
        ["spec.capture.destination.uri", "uri must not have a '..' segment"],
    ),
    (
        "deployment-capture-nothing",
        "Deployment",
        with_(DEPLOYMENT, capture={"percent": 0, "destination": {"uri": "s3://captures/iris/"}}),
        ["spec.capture.percent", "should be greater than 0"],
    ),
    # Monitor
    (
        "monitor-missing-deployment",
        "Monitor",
        with_(MONITOR, deployment=None),
        ["spec.deployment", "Required"],
    ),
    ("monitor-no-metrics", "Monitor", with_(MONITOR, metrics=[]), ["spec.metrics", "at least 1 items"]),
    ("monitor-bad-interval", "Monitor", with_(MONITOR, interval="often"), ["spec.interval", "should match"]),
    (
        "monitor-unknown-metric-type",
        "Monitor",
        with_(MONITOR, metrics=metric(type="throughput")),
        ["spec.metrics[0].type", 'Unsupported value: "throughput"'],
    ),
    (
        "monitor-failure-limit-zero",
        "Monitor",
        with_(MONITOR, failureLimit=0),
        ["spec.failureLimit", "should be greater than or equal to 1"],
    ),
    (
        "monitor-unknown-on-degraded",
        "Monitor",
        with_(MONITOR, onDegraded="Panic"),
        ["spec.onDegraded", 'Unsupported value: "Panic"', '"Rollback", "Alert"'],
    ),
    (
        "monitor-quantile-over-1",
        "Monitor",
        with_(MONITOR, metrics=metric(type="latency", quantile=1.5)),
        ["spec.metrics[0].quantile", "should be less than 1"],
    ),
    (
        "monitor-latency-without-quantile",
        "Monitor",
        with_(MONITOR, metrics=metric(type="latency")),
        ["spec.metrics[0]", "quantile is required for type latency"],
    ),
    (
        "monitor-duplicate-metric-names",
        "Monitor",
        with_(MONITOR, metrics=metric() + metric()),
        ["spec.metrics", "metric names must be unique"],
    ),
    (
        "monitor-metric-without-limits",
        "Monitor",
        with_(MONITOR, metrics=[{"name": "m", "type": "errorRate"}]),
        ["spec.metrics[0]", "a metric needs min, max, minRatioToStable or maxRatioToStable"],
    ),
    (
        "monitor-min-over-max",
        "Monitor",
        with_(MONITOR, metrics=metric(min=0.5, max=0.1)),
        ["spec.metrics[0]", "min must not exceed max"],
    ),
    (
        "monitor-prometheus-without-query",
        "Monitor",
        with_(MONITOR, metrics=metric(type="prometheus")),
        ["spec.metrics[0]", "prometheus.query is required for type prometheus"],
    ),
    (
        "monitor-ratio-not-positive",
        "Monitor",
        with_(MONITOR, metrics=metric(maxRatioToStable=0)),
        ["spec.metrics[0].maxRatioToStable", "should be greater than 0"],
    ),
    (
        "monitor-min-ratio-over-max-ratio",
        "Monitor",
        with_(MONITOR, metrics=metric(minRatioToStable=1.5, maxRatioToStable=1.2)),
        ["spec.metrics[0]", "minRatioToStable must not exceed maxRatioToStable"],
    ),
    (
        "monitor-ratio-on-prediction-drift",
        "Monitor",
        with_(MONITOR, metrics=metric(type="predictionDrift", maxRatioToStable=2)),
        ["spec.metrics[0]", "do not apply to type predictionDrift"],
    ),
    (
        "monitor-drift-method-on-error-rate",
        "Monitor",
        with_(MONITOR, metrics=metric(method="psi")),
        ["spec.metrics[0]", "method and features are only allowed for type dataDrift"],
    ),
    (
        "monitor-duplicate-drift-features",
        "Monitor",
        with_(MONITOR, metrics=metric(type="dataDrift", features=["a", "a"])),
        ["spec.metrics[0].features[1]", "Duplicate value"],
    ),
    (
        "monitor-min-samples-on-latency",
        "Monitor",
        with_(MONITOR, metrics=metric(type="latency", quantile=0.99, minSamples=10)),
        ["spec.metrics[0]", "minSamples is only allowed for types dataDrift, accuracy"],
    ),
    (
        "monitor-accuracy-in-percent",
        "Monitor",
        with_(MONITOR, metrics=[{"name": "m", "type": "accuracy", "min": 90}]),
        ["spec.metrics[0]", "accuracy is a share"],
    ),
]


def test_there_are_at_least_20_distinct_bad_inputs_across_the_kinds() -> None:
    assert len({case[0] for case in BAD_INPUTS}) == len(BAD_INPUTS) >= 20
    assert {case[1] for case in BAD_INPUTS} == {"Model", "ModelVersion", "Deployment", "Monitor", "Runtime"}


def test_the_good_inputs_the_bad_ones_derive_from_are_accepted(
    cluster: Cluster, crds: None, namespace: str
) -> None:
    """Control: each bad input differs from one of these in one place, and these apply cleanly."""
    cluster.apply(
        [
            obj("Model", "iris", MODEL),
            obj("ModelVersion", "iris-v1", VERSION),
            obj("Deployment", "iris", DEPLOYMENT),
            obj("Deployment", "iris-production", PRODUCTION_DEPLOYMENT),
            obj(
                "Deployment",
                "iris-champion",
                with_(DEPLOYMENT, version=None, versionFrom={"mlflowAlias": "champion"}),
            ),
            obj("Monitor", "iris", MONITOR),
            obj("Monitor", "iris-production", PRODUCTION_MONITOR),
            obj("ModelVersion", "iris-v4", ARTIFACT_VERSION),
            obj(
                "Runtime",
                "mlserver-sklearn",
                {"image": "localhost/modelfleet-mlserver:dev", "formats": ["sklearn"]},
            ),
        ],
        namespace,
    )
    assert cluster.get("monitor", "iris", namespace)["spec"]["interval"] == "10s"  # defaulted by the server
    assert cluster.get("runtime", "mlserver-sklearn", namespace)["spec"]["port"] == 8080


@pytest.mark.parametrize(
    ("kind", "spec", "fragments"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_kubectl_apply_refuses_bad_input_naming_the_field(
    cluster: Cluster, crds: None, namespace: str, kind: str, spec: dict[str, Any], fragments: list[str]
) -> None:
    result = cluster.apply(obj(kind, "bad", spec), namespace, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for fragment in fragments:
        assert fragment in result.stderr
    assert cluster.get_or_none(kind.lower(), "bad", namespace) is None


LINEAGE = {"source": {"repository": "https://git.example.com/ml/iris", "commit": "3f2a9c1"}}

IMMUTABLE_CHANGES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("model", lambda s: s.update(model="wine"), ["spec.model", "model is immutable"]),
    ("version", lambda s: s.update(version="2"), ["spec.version", "version is immutable"]),
    ("image", lambda s: s.update(image="localhost/iris-server:2"), ["image is immutable"]),
    ("port", lambda s: s.update(port=9000), ["port is immutable"]),
    ("protocol", lambda s: s.update(protocol="v1"), ["protocol is immutable"]),
    ("lineage-changed", lambda s: s["lineage"]["source"].update(commit="abcdef0"), ["lineage is immutable"]),
    ("lineage-removed", lambda s: s.pop("lineage"), ["lineage is immutable"]),
]


def test_immutable_fields_of_a_version_cannot_change(cluster: Cluster, crds: None, namespace: str) -> None:
    spec = {**VERSION, "lineage": LINEAGE}
    cluster.apply(obj("ModelVersion", "iris-v1", spec), namespace)
    for name, change, fragments in IMMUTABLE_CHANGES:
        changed = copy.deepcopy(spec)
        change(changed)
        result = cluster.apply(obj("ModelVersion", "iris-v1", changed), namespace, check=False)
        assert result.returncode != 0, f"{name}: change accepted"
        for fragment in fragments:
            assert fragment in result.stderr, f"{name}: {result.stderr}"
    # Approval is not immutable: that is how a version gets approved.
    cluster.apply(
        obj("ModelVersion", "iris-v1", {**spec, "approval": {"approved": True, "by": "alice"}}), namespace
    )
    stored = cluster.get("modelversion", "iris-v1", namespace)["spec"]
    assert (stored["image"], stored["approval"]["approved"]) == ("localhost/iris-server:1", True)


ARTIFACT_CHANGES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("uri", lambda s: s["artifact"].update(uri="s3://models/iris/5/"), ["artifact is immutable"]),
    ("digest", lambda s: s["artifact"].update(digest="sha256:" + "1" * 64), ["artifact is immutable"]),
    ("runtime-added", lambda s: s.update(runtime="mlserver-sklearn"), ["runtime is immutable"]),
    (
        "artifact-to-image",
        lambda s: (s.pop("artifact"), s.update(image="localhost/iris-server:2")),
        ["artifact is immutable"],
    ),
]


def test_the_artifact_of_a_version_cannot_change(cluster: Cluster, crds: None, namespace: str) -> None:
    spec = copy.deepcopy(ARTIFACT_VERSION)
    cluster.apply(obj("ModelVersion", "iris-v4", spec), namespace)
    for name, change, fragments in ARTIFACT_CHANGES:
        changed = copy.deepcopy(spec)
        change(changed)
        result = cluster.apply(obj("ModelVersion", "iris-v4", changed), namespace, check=False)
        assert result.returncode != 0, f"{name}: change accepted"
        for fragment in fragments:
            assert fragment in result.stderr, f"{name}: {result.stderr}"
    stored = cluster.get("modelversion", "iris-v4", namespace)["spec"]
    assert stored["artifact"] == ARTIFACT


def test_lineage_cannot_be_added_after_creation(cluster: Cluster, crds: None, namespace: str) -> None:
    cluster.apply(obj("ModelVersion", "iris-v1", VERSION), namespace)
    result = cluster.apply(
        obj("ModelVersion", "iris-v1", {**VERSION, "lineage": LINEAGE}), namespace, check=False
    )
    assert result.returncode != 0
    assert "lineage is immutable" in result.stderr


def test_nonsense_the_api_server_accepts_does_not_hurt_the_operator(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    """Objects that are valid to the API server but name things that do not exist, or break the
    registry's rules: the operator stays up, says what is wrong, and keeps reconciling good objects."""
    cluster.apply(
        [
            # a Deployment of a Model that does not exist, and one of a version that does not exist
            obj("Deployment", "ghost", {"model": "ghost", "version": "ghost-v1"}),
            obj("Deployment", "no-version", {"model": "iris", "version": "iris-v9"}),
            # a version of a Model that does not exist, and a rejected version a Deployment asks for
            model_version("orphan-v1", "orphan", "localhost/iris-server:1"),
            model("iris", require_approval=True, allowed_images=["localhost/"]),
            model_version("iris-evil", "iris", "docker.io/evil/iris:1"),
            obj("Deployment", "evil", {"model": "iris", "version": "iris-evil"}),
            # a Deployment that names a version of another Model, and a Monitor of no Deployment
            model("wine"),
            model_version("wine-v1", "wine", "localhost/iris-server:1"),
            obj("Deployment", "mixed", {"model": "iris", "version": "wine-v1"}),
            obj("Monitor", "lonely", {**MONITOR, "deployment": "nobody"}),
            # a Deployment whose Monitor does not exist
            obj(
                "Deployment",
                "unmonitored",
                {"model": "ghost", "version": "ghost-v1", "strategy": {"canary": {"monitor": "nobody"}}},
            ),
        ],
        namespace,
    )

    def phase(name: str) -> str:
        return str(cluster.get("modelversion", name, namespace).get("status", {}).get("phase", ""))

    cluster.wait_for("orphan-v1 Pending", lambda: phase("orphan-v1") == "Pending", timeout=60)
    cluster.wait_for("iris-evil Rejected", lambda: phase("iris-evil") == "Rejected", timeout=60)
    orphan = cluster.get("modelversion", "orphan-v1", namespace)
    assert state(orphan, "Ready") == ("False", "ModelNotFound")
    evil = cluster.get("modelversion", "iris-evil", namespace)
    assert "ImageNotAllowed" in condition(evil, "Ready")["reason"]
    assert evil["status"].get("servedBy", []) == []

    # The Deployments that ask for what cannot be served say so in their status, and serve nothing.
    def failed(name: str) -> bool:
        status = cluster.get("deployments.modelfleet.io", name, namespace).get("status", {})
        return status.get("phase") == "Failed" and not status.get("stableVersion")

    for name in ("ghost", "no-version", "evil", "mixed"):
        cluster.wait_for(f"Deployment {name} Failed", functools.partial(failed, name), timeout=90)
    assert (
        "not found" in cluster.get("deployments.modelfleet.io", "no-version", namespace)["status"]["message"]
    )

    # Afterwards the operator still reconciles good objects promptly.
    cluster.apply(
        [model("good"), model_version("good-v1", "good", "localhost/iris-server:1")],
        namespace,
    )
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        "model/good",
        "modelversion/good-v1",
        "--timeout=60s",
    )
    assert operator.alive()
    assert "Traceback" not in operator.log()
