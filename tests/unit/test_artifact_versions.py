"""Artifact versions: which runtime serves one, what may roll out, what the check means, the pods."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelfleet.api import (
    ConditionStatus,
    DeploymentSpec,
    Model,
    ModelVersion,
    ModelVersionPhase,
    RuntimeSpec,
    get_condition,
)
from modelfleet.builders import Owner, build_router_config, build_version_deployment, build_version_service
from modelfleet.builders.artifacts import FetchSettings, build_artifact_check_pod, check_pod_name
from modelfleet.registry import ARTIFACT_VERIFIED, Reason, servability, version_status
from modelfleet.registry.artifacts import (
    CheckOutcome,
    CheckReason,
    Runtimes,
    check_due,
    check_outcome,
    choose_runtime,
    server_of,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
SKLEARN = RuntimeSpec.model_validate({"formats": ["sklearn"], "image": "localhost/modelfleet-mlserver:dev"})
XGB = RuntimeSpec.model_validate(
    {"formats": ["xgboost", "lightgbm"], "image": "registry.other/xgb:1", "port": 9000}
)
RUNTIMES = Runtimes(cluster={"mlserver-sklearn": SKLEARN, "mlserver-xgboost": XGB})
FETCH = FetchSettings(image="localhost/modelfleet:dev", max_bytes=1000, timeout_seconds=60)


def model(**governance: Any) -> Model:
    return Model.from_k8s(
        {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"governance": governance}}
    )


def version(
    artifact: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **spec: Any
) -> ModelVersion:
    body: dict[str, Any] = {
        "metadata": {"name": "iris-v4", "namespace": "ml", "generation": 1, "uid": "u-4"},
        "spec": {
            "model": "iris",
            "version": "4",
            "artifact": {
                "uri": "s3://models/iris/4/",
                "format": "sklearn",
                "digest": DIGEST,
                **(artifact or {}),
            },
            **spec,
        },
        "status": status or {},
    }
    return ModelVersion.from_k8s(body)


def verified(reason: str = "Verified", status: str = "True") -> dict[str, Any]:
    return {"conditions": [{"type": ARTIFACT_VERIFIED, "status": status, "reason": reason, "message": "m"}]}


# --- which runtime --------------------------------------------------------------------------------


def test_the_cluster_runtime_listing_the_format_serves_it() -> None:
    choice = choose_runtime(version().spec, RUNTIMES)
    assert not isinstance(choice, str)
    assert choice.ref == "ClusterRuntime/mlserver-sklearn"


def test_a_runtime_in_the_namespace_wins_over_a_cluster_runtime_of_the_same_name() -> None:
    own = RuntimeSpec.model_validate({"formats": ["sklearn"], "image": "localhost/team-sklearn:2"})
    runtimes = Runtimes(namespaced={"mlserver-sklearn": own}, cluster=RUNTIMES.cluster)
    choice = choose_runtime(version(runtime="mlserver-sklearn").spec, runtimes)
    assert not isinstance(choice, str)
    assert (choice.ref, choice.spec.image) == ("Runtime/mlserver-sklearn", "localhost/team-sklearn:2")
    unnamed = choose_runtime(version().spec, runtimes)
    assert not isinstance(unnamed, str)
    assert unnamed.ref == "Runtime/mlserver-sklearn"


@pytest.mark.parametrize(
    ("artifact", "spec", "message"),
    [
        ({"format": "onnx"}, {}, "no Runtime or ClusterRuntime serves format onnx"),
        ({}, {"runtime": "missing"}, "runtime missing not found"),
        (
            {},
            {"runtime": "mlserver-xgboost"},
            "ClusterRuntime/mlserver-xgboost does not serve format sklearn",
        ),
    ],
)
def test_no_runtime_says_why(artifact: dict[str, Any], spec: dict[str, Any], message: str) -> None:
    choice = choose_runtime(version(artifact, **spec).spec, RUNTIMES)
    assert isinstance(choice, str)
    assert message in choice


def test_the_server_of_an_artifact_version_is_the_runtime_with_the_version_s_additions() -> None:
    spec = version(
        {"format": "xgboost"},
        env=[{"name": "WORKERS", "value": "2"}],
        args=["--verbose"],
        resources={"limits": {"memory": "1Gi"}},
    ).spec
    server = server_of(spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    assert (server.image, server.port, server.runtime) == (
        "registry.other/xgb:1",
        9000,
        "ClusterRuntime/mlserver-xgboost",
    )
    env = {e.name: e.value for e in server.env}
    assert env["MODELFLEET_MODEL_DIR"] == "/mnt/models"
    assert env["MODELFLEET_MODEL_NAME"] == "iris"
    assert env["MODELFLEET_MODEL_FORMAT"] == "xgboost"
    assert env["WORKERS"] == "2"
    assert server.args == ("--verbose",)
    assert server.resources is not None
    assert server.resources.limits == {"memory": "1Gi"}


# --- may it roll out ------------------------------------------------------------------------------


def test_an_unchecked_artifact_waits_and_a_verified_one_may_roll_out() -> None:
    waiting = servability(model(), version(), runtimes=RUNTIMES)
    assert (waiting.servable, waiting.reason, waiting.pending) == (False, Reason.ARTIFACT_VERIFYING, True)
    ok = servability(model(), version(status=verified()), runtimes=RUNTIMES)
    assert ok.servable


@pytest.mark.parametrize(
    ("governance", "artifact", "spec", "reason"),
    [
        ({"requireDigest": True}, {"digest": None}, {}, Reason.DIGEST_REQUIRED),
        ({}, {"format": "onnx"}, {}, Reason.NO_RUNTIME),
        ({"allowedImages": ["localhost/"]}, {"format": "xgboost"}, {}, Reason.IMAGE_NOT_ALLOWED),
        ({"requireApproval": True}, {}, {}, Reason.APPROVAL_REQUIRED),
    ],
)
def test_rules_that_refuse_an_artifact_version(
    governance: dict[str, Any], artifact: dict[str, Any], spec: dict[str, Any], reason: Reason
) -> None:
    mv = version({k: v for k, v in artifact.items() if v is not None}, status=verified(), **spec)
    if artifact.get("digest", "") is None:
        body = mv.to_k8s()
        del body["spec"]["artifact"]["digest"]
        mv = ModelVersion.from_k8s(body)
    check = servability(model(**governance), mv, runtimes=RUNTIMES)
    assert (check.servable, check.reason, check.pending) == (False, reason, False)


def test_the_runtime_image_must_pass_the_allow_list() -> None:
    check = servability(
        model(allowedImages=["localhost/"]),
        version({"format": "xgboost"}, status=verified()),
        runtimes=RUNTIMES,
    )
    assert (
        "the image of ClusterRuntime/mlserver-xgboost registry.other/xgb:1 is not in allowedImages"
        in check.message
    )


def test_a_failed_check_refuses_the_version_with_its_reason() -> None:
    mv = version(status=verified("DigestMismatch", "False"))
    check = servability(model(), mv, runtimes=RUNTIMES)
    assert (check.servable, check.reason, check.pending) == (False, Reason.DIGEST_MISMATCH, False)


# --- the status a check leads to --------------------------------------------------------------------


def test_a_check_started_then_verified() -> None:
    mv = version()
    first = version_status(model(), mv, [], now=NOW, runtimes=RUNTIMES, check_started=True)
    assert first.phase == ModelVersionPhase.PENDING
    assert first.artifact is not None
    assert (first.artifact.checks, first.artifact.last_check_at) == (1, NOW)
    assert first.artifact.runtime == "ClusterRuntime/mlserver-sklearn"
    ready = get_condition(first.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "ArtifactVerifying"

    mv = ModelVersion.from_k8s({**mv.to_k8s(), "status": first.to_k8s()})
    outcome = CheckOutcome(CheckReason.VERIFIED, "ok", size=1234, files=2, digest=DIGEST)
    done = version_status(model(), mv, [], now=NOW + timedelta(seconds=5), runtimes=RUNTIMES, outcome=outcome)
    assert done.phase == ModelVersionPhase.READY
    assert done.artifact is not None
    assert (done.artifact.size, done.artifact.files, done.artifact.digest) == (1234, 2, DIGEST)
    assert done.artifact.verified_at == NOW + timedelta(seconds=5)
    checked = get_condition(done.conditions, ARTIFACT_VERIFIED)
    assert checked is not None
    assert checked.status == ConditionStatus.TRUE


def test_a_digest_mismatch_rejects_the_version() -> None:
    outcome = CheckOutcome(CheckReason.DIGEST_MISMATCH, "s3://models/iris/4/: sha256:cd.. is not sha256:ab..")
    status = version_status(model(), version(), [], now=NOW, runtimes=RUNTIMES, outcome=outcome)
    assert status.phase == ModelVersionPhase.REJECTED
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None
    assert (ready.reason, ready.status) == ("DigestMismatch", ConditionStatus.FALSE)
    assert "is not sha256" in status.message


def test_checks_that_may_pass_later_run_again_with_a_growing_delay() -> None:
    def status(checks: int) -> Any:
        return version(
            status={"artifact": {"checks": checks, "lastCheckAt": NOW.isoformat()}}
        ).status.artifact

    assert check_due(None, None, NOW) == timedelta(0)
    assert check_due(status(1), CheckReason.ARTIFACT_UNREACHABLE, NOW) == timedelta(seconds=15)
    assert check_due(status(3), CheckReason.ARTIFACT_UNREACHABLE, NOW) == timedelta(minutes=1)
    assert check_due(status(50), CheckReason.CREDENTIALS_NOT_FOUND, NOW) == timedelta(minutes=5)
    assert check_due(status(1), CheckReason.ARTIFACT_UNREACHABLE, NOW + timedelta(hours=1)) == timedelta(0)
    assert check_due(status(1), CheckReason.DIGEST_MISMATCH, NOW) is None
    assert check_due(status(1), CheckReason.VERIFIED, NOW) is None


# --- reading a check pod ------------------------------------------------------------------------------


def pod(state: dict[str, Any], phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {"status": {"phase": phase, "containerStatuses": [{"name": "check", "state": state}], **status}}


def test_the_report_of_a_finished_check() -> None:
    report = {"result": "Fetched", "reason": "", "message": "ok", "size": 10, "files": 1, "digest": DIGEST}
    outcome = check_outcome(pod({"terminated": {"exitCode": 0, "message": json.dumps(report)}}, "Succeeded"))
    assert outcome == CheckOutcome(CheckReason.VERIFIED, "ok", 10, 1, DIGEST)
    failed = {
        "result": "Failed",
        "reason": "ArtifactUnreachable",
        "message": "s3://models/iris/4/: access denied (403)",
    }
    outcome = check_outcome(pod({"terminated": {"exitCode": 3, "message": json.dumps(failed)}}, "Failed"))
    assert outcome is not None
    assert outcome.reason == CheckReason.ARTIFACT_UNREACHABLE
    assert outcome.message == "s3://models/iris/4/: access denied (403)"


def test_a_check_pod_that_cannot_start_or_says_nothing() -> None:
    stuck = pod(
        {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}},
        "Pending",
    )
    outcome = check_outcome(stuck)
    assert outcome is not None
    assert outcome.reason == CheckReason.CREDENTIALS_NOT_FOUND
    assert 'secret "s3-creds" not found' in outcome.message
    silent = check_outcome(pod({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, "Failed"))
    assert silent is not None
    assert silent.reason == CheckReason.CHECK_FAILED
    assert "OOMKilled 137" in silent.message
    deadline = check_outcome({"status": {"phase": "Failed", "reason": "DeadlineExceeded"}})
    assert deadline is not None
    assert deadline.reason == CheckReason.FETCH_TIMEOUT
    assert check_outcome(pod({"running": {}})) is None
    assert check_outcome({"status": {"phase": "Pending"}}) is None


# --- the pods -------------------------------------------------------------------------------------------

OWNER = Owner(name="iris", namespace="ml", uid="d-1")


def test_an_artifact_version_s_pod_fetches_first_and_only_the_fetcher_sees_the_secret() -> None:
    mv = version({"credentials": {"secretName": "s3-creds"}})
    server = server_of(mv.spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    manifest = build_version_deployment(OWNER, "iris-v4", server, 2, FETCH)
    pod_spec = manifest["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert init["image"] == "localhost/modelfleet:dev"
    assert init["args"][:8] == [
        "fetch",
        "--uri",
        "s3://models/iris/4/",
        "--dest",
        "/mnt/models",
        "--replace",
        "--report",
        "/dev/termination-log",
    ]
    assert init["args"][init["args"].index("--digest") + 1] == DIGEST
    assert init["args"][init["args"].index("--max-bytes") + 1] == "1000"
    assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    (model_container,) = pod_spec["containers"]
    assert model_container["image"] == "localhost/modelfleet-mlserver:dev"
    assert "envFrom" not in model_container
    assert {"name": "models", "mountPath": "/mnt/models", "readOnly": True} in model_container["volumeMounts"]
    assert {"name": "models", "emptyDir": {"sizeLimit": "1000"}} in pod_spec["volumes"]
    assert not any("hostPath" in v for v in pod_spec["volumes"])  # the node cache is off by default
    assert manifest["spec"]["template"]["metadata"]["annotations"] == {
        "modelfleet.io/runtime": "ClusterRuntime/mlserver-sklearn"
    }


def test_the_node_cache_mounts_a_host_path_and_is_used_only_with_a_digest() -> None:
    cached = FetchSettings(image="localhost/modelfleet:dev", node_cache="/var/cache/modelfleet/artifacts")
    server = server_of(version().spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    pod_spec = build_version_deployment(OWNER, "iris-v4", server, 1, cached)["spec"]["template"]["spec"]
    assert "--cache-dir" in pod_spec["initContainers"][0]["args"]
    assert "--cache-max-bytes" not in pod_spec["initContainers"][0]["args"]  # no limit unless one is set
    limited = FetchSettings(
        image="localhost/modelfleet:dev",
        node_cache="/var/cache/modelfleet/artifacts",
        node_cache_max_bytes=5 << 30,
    )
    args = build_version_deployment(OWNER, "iris-v4", server, 1, limited)["spec"]["template"]["spec"][
        "initContainers"
    ][0]["args"]
    assert args[args.index("--cache-max-bytes") + 1] == str(5 << 30)
    assert {
        "name": "artifact-cache",
        "hostPath": {"path": "/var/cache/modelfleet/artifacts", "type": "DirectoryOrCreate"},
    } in pod_spec["volumes"]
    no_digest = version().to_k8s()
    del no_digest["spec"]["artifact"]["digest"]
    server = server_of(ModelVersion.from_k8s(no_digest).spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    pod_spec = build_version_deployment(OWNER, "iris-v4", server, 1, cached)["spec"]["template"]["spec"]
    assert "--cache-dir" not in pod_spec["initContainers"][0]["args"]


def test_a_pvc_artifact_mounts_its_claim_read_only_in_the_fetcher() -> None:
    server = server_of(version({"uri": "pvc://models/iris/4/model.joblib"}).spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    pod_spec = build_version_deployment(OWNER, "iris-v4", server, 1, FETCH)["spec"]["template"]["spec"]
    assert {
        "name": "artifact-pvc",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in pod_spec["volumes"]
    init = pod_spec["initContainers"][0]
    assert {"name": "artifact-pvc", "mountPath": "/mnt/pvc/models", "readOnly": True} in init["volumeMounts"]


def test_the_router_and_service_use_the_runtime_s_port_and_protocol() -> None:
    server = server_of(version({"format": "lightgbm"}, status=verified()).spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    assert build_version_service(OWNER, "iris-v4", server)["spec"]["ports"][0]["port"] == 9000
    spec = DeploymentSpec.model_validate({"model": "iris", "version": "iris-v4"})
    config = build_router_config(
        OWNER, spec, {"iris-v4": server}, stable="iris-v4", canary="", canary_weight=0, mirror_percent=0
    )
    assert config.versions[0].url == "http://iris-iris-v4.ml.svc:9000"


def test_an_artifact_version_without_fetch_settings_is_a_bug_not_a_pod() -> None:
    server = server_of(version().spec, RUNTIMES, "iris")
    assert not isinstance(server, str)
    with pytest.raises(ValueError, match="fetch settings"):
        build_version_deployment(OWNER, "iris-v4", server, 1)


def test_the_check_pod_is_owned_by_the_version_and_cleans_up_after_itself() -> None:
    mv = version({"credentials": {"secretName": "s3-creds"}})
    assert mv.spec.artifact is not None
    manifest = build_artifact_check_pod("ml", "iris-v4", "u-4", mv.spec.artifact, FETCH)
    assert manifest["metadata"]["name"] == "iris-v4-artifact-check"
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "ModelVersion"
    spec = manifest["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["args"][-1] == "--check"
    assert "--dest" not in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert len(check_pod_name("v" * 200)) <= 63


def _fetch_args(server: Any) -> list[str]:
    manifest = build_version_deployment(OWNER, "iris-v4", server, 1, FETCH)
    args: list[str] = manifest["spec"]["template"]["spec"]["initContainers"][0]["args"]
    return args


def test_an_artifact_registered_without_a_digest_is_fetched_with_the_one_its_check_computed() -> None:
    computed = "sha256:" + "ab" * 32
    mv = version({"digest": None}, status={"artifact": {"digest": computed}})
    assert mv.spec.artifact is not None
    assert mv.spec.artifact.digest is None

    unpinned = server_of(mv.spec, RUNTIMES, "iris")
    pinned = server_of(mv.spec, RUNTIMES, "iris", computed)

    assert "--digest" not in _fetch_args(unpinned)
    args = _fetch_args(pinned)
    assert args[args.index("--digest") + 1] == computed


def test_the_registered_digest_wins_over_a_computed_one() -> None:
    other = "sha256:" + "cd" * 32
    args = _fetch_args(server_of(version().spec, RUNTIMES, "iris", other))
    assert args[args.index("--digest") + 1] == DIGEST
