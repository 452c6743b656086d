"""The Argo CD health checks in argocd/health/, run by a real Lua interpreter the way Argo CD runs them.

Argo CD sets the global `obj` to the live object and runs the script, which returns a table with
`status` and `message`. The objects here carry statuses made by the project's own code (the rollout
state machine, the registry rules, the API models' `to_k8s()`), so the scripts read exactly the shape
the operator writes.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_world import World, deployment_spec

from modelfleet.api import (
    Measurement,
    MetricResult,
    Model,
    ModelVersion,
    MonitorPhase,
    MonitorStatus,
    Verdict,
    set_condition,
)
from modelfleet.api.deployment import DeploymentPhase
from modelfleet.registry import model_status, version_status
from modelfleet.registry.history import deployment_records
from support.cluster import REPO
from support.tools import lua_binary

HEALTH = REPO / "argocd" / "health" / "modelfleet.io"
LUA = lua_binary()
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.skipif(LUA is None, reason="no Lua interpreter (apt install lua5.4)")

KINDS = ("Model", "ModelVersion", "Deployment", "Monitor")


# ---- the harness -----------------------------------------------------------------------------------


def lua_string(text: str) -> str:
    """A Lua string literal; bytes outside printable ASCII as decimal escapes (valid in Lua 5.1)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte}")
    return '"' + "".join(out) + '"'


def lua_value(value: Any) -> str:
    """JSON-like Python data as a Lua table constructor, as Argo CD converts objects (null -> nil)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list | tuple):
        return "{" + ", ".join(lua_value(v) for v in value) + "}"
    if isinstance(value, dict):
        fields = (f"[{lua_string(str(k))}] = {lua_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def health(kind: str, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    """Run argocd/health/modelfleet.io/<kind>/health.lua on `obj`; (status, message)."""
    assert LUA is not None
    script = HEALTH / kind / "health.lua"
    harness = tmp_path / f"{kind}-harness.lua"
    harness.write_text(
        f"obj = {lua_value(obj)}\n"
        f"local check = assert(loadfile({lua_string(str(script))}))\n"
        "local hs = check()\n"
        'assert(type(hs) == "table", "the script must return a table")\n'
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    result = subprocess.run([LUA, str(harness)], capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\n")
    return status, message


def resource(kind: str, status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "iris", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


def deployment(world: World) -> dict[str, Any]:
    return resource("Deployment", world.status.to_k8s(), generation=world.generation)


def test_lua_literals_round_trip_through_the_interpreter(tmp_path: Path) -> None:
    assert LUA is not None
    value = {"a": [1, 2.5, True, False], "b": 'quote " and \\ and é\n', "c": None, "d": {}}
    probe = tmp_path / "probe.lua"
    probe.write_text(
        f"local v = {lua_value(value)}\n"
        'io.write(#v.a, "|", tostring(v.a[2]), "|", tostring(v.a[3]), "|", v.b, "|", tostring(v.c))\n'
    )
    out = subprocess.run([LUA, str(probe)], capture_output=True, text=True, timeout=20, check=True).stdout
    assert out == '4|2.5|true|quote " and \\ and é\n|nil'


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_health_check(kind: str) -> None:
    assert (HEALTH / kind / "health.lua").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_no_status_yet_is_progressing(kind: str, tmp_path: Path) -> None:
    status, message = health(kind, resource(kind, None), tmp_path)
    assert status == "Progressing"
    assert message


# ---- Deployment: statuses from the rollout state machine --------------------------------------------


def test_deployment_serving_its_version_is_healthy(tmp_path: Path) -> None:
    world = World().serving("v1")
    assert world.phase() == DeploymentPhase.HEALTHY
    status, message = health("Deployment", deployment(world), tmp_path)
    assert status == "Healthy"
    assert "serving v1" in message


def test_deployment_rolling_out_is_progressing(tmp_path: Path) -> None:
    world = World().serving("v1").rolling_out("v2")
    assert world.phase() == DeploymentPhase.PROGRESSING
    status, message = health("Deployment", deployment(world), tmp_path)
    assert status == "Progressing"
    assert message.startswith("Progressing: ")


def test_deployment_first_version_starting_is_progressing(tmp_path: Path) -> None:
    world = World()
    world.change(version="v1")
    world.decide()  # no pod ready yet
    status, _ = health("Deployment", deployment(world), tmp_path)
    assert status == "Progressing"


def test_paused_rollout_is_suspended(tmp_path: Path) -> None:
    world = World().serving("v1").rolling_out("v2")
    world.change(paused=True)
    world.decide()
    assert world.phase() == DeploymentPhase.PAUSED
    status, message = health("Deployment", deployment(world), tmp_path)
    assert status == "Suspended"
    assert message.startswith("Paused")


def test_pause_step_waiting_for_promotion_is_suspended(tmp_path: Path) -> None:
    world = World(deployment_spec(strategy={"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}))
    world.serving("v1").rolling_out("v2")
    world.tick(1).decide()
    assert world.phase() == DeploymentPhase.PAUSED, world.status.message
    status, _ = health("Deployment", deployment(world), tmp_path)
    assert status == "Suspended"


def test_rolled_back_rollout_is_degraded_with_the_reason(tmp_path: Path) -> None:
    world = World(monitor="iris-quality").serving("v1").rolling_out("v2")
    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    assert world.phase() == DeploymentPhase.ROLLED_BACK, world.status.message
    status, message = health("Deployment", deployment(world), tmp_path)
    assert status == "Degraded"
    assert "v2 rolled back" in message


def test_requested_version_that_cannot_be_served_is_degraded(tmp_path: Path) -> None:
    world = World().serving("v1")
    world.change(version="v2").not_servable("ModelVersion v2: image not allowed")
    world.decide()
    status, message = health("Deployment", deployment(world), tmp_path)
    assert status == "Degraded", world.status.to_k8s()
    assert "image not allowed" in message


def test_spec_newer_than_status_is_progressing(tmp_path: Path) -> None:
    world = World().serving("v1")
    obj = deployment(world)
    obj["metadata"]["generation"] = world.generation + 1
    status, message = health("Deployment", obj, tmp_path)
    assert status == "Progressing"
    assert "observe generation" in message


# ---- Model and ModelVersion: statuses from the registry rules ---------------------------------------


def model(require_approval: bool = False, allowed: tuple[str, ...] = ()) -> Model:
    return Model.from_k8s(
        {
            "metadata": {"name": "iris", "namespace": "ml", "generation": 1},
            "spec": {"governance": {"requireApproval": require_approval, "allowedImages": list(allowed)}},
        }
    )


def version(image: str = "localhost/iris-server:2", approved: bool | None = None) -> ModelVersion:
    spec: dict[str, Any] = {"model": "iris", "version": "2", "image": image}
    if approved is not None:
        spec["approval"] = {"approved": approved, "by": "alice"}
    return ModelVersion.from_k8s(
        {"metadata": {"name": "iris-v2", "namespace": "ml", "generation": 1}, "spec": spec}
    )


def version_obj(status: dict[str, Any]) -> dict[str, Any]:
    return resource("ModelVersion", status)


def test_registered_model_is_healthy(tmp_path: Path) -> None:
    status = model_status(model(), ["iris-v1", "iris-v2"], ["iris-v1"], now=NOW).to_k8s()
    result, message = health("Model", resource("Model", status), tmp_path)
    assert result == "Healthy"
    assert "2 versions, 1 serving" in message


@pytest.mark.parametrize(
    ("the_model", "the_version", "served_by", "expected", "phase"),
    [
        (model(), version(), [], "Healthy", "Ready"),
        (model(), version(), ["iris"], "Healthy", "Serving"),
        (model(allowed=("registry.example.com/",)), version(), [], "Degraded", "Rejected"),
        (model(require_approval=True), version(approved=False), [], "Degraded", "Rejected"),
        (None, version(), [], "Progressing", "Pending"),
    ],
    ids=["ready", "serving", "image-not-allowed", "not-approved", "model-missing"],
)
def test_model_version_health_follows_its_phase(
    the_model: Model | None,
    the_version: ModelVersion,
    served_by: list[str],
    expected: str,
    phase: str,
    tmp_path: Path,
) -> None:
    status = version_status(the_model, the_version, served_by, now=NOW).to_k8s()
    assert status["phase"] == phase
    result, message = health("ModelVersion", version_obj(status), tmp_path)
    assert result == expected
    assert message.startswith(phase)


def test_model_version_health_says_its_latest_outcome(tmp_path: Path) -> None:
    # given iris-v2 served at 10% as the canary of Deployment iris, then rolled back by its monitor
    world = World(monitor="iris-quality").serving("iris-v1").rolling_out("iris-v2")
    serving = version_status(model(), version(), ["iris"], now=NOW)
    world.measure(Verdict.FAIL).measure(Verdict.FAIL).decide()
    records = [r for v, r in deployment_records("iris", world.status).items() if v == "iris-v2"]
    the_version = ModelVersion.from_k8s({**version().to_k8s(), "status": serving.to_k8s()})
    status = version_status(model(), the_version, [], now=NOW, records=records).to_k8s()

    result, message = health("ModelVersion", version_obj(status), tmp_path)

    assert result == "Healthy"  # it may be rolled out again
    assert message == "Retired: rolled back in iris: errors 0.31 > 0.05"


# ---- Monitor: statuses as the Monitor controller writes them -----------------------------------------


def monitor_status(phase: MonitorPhase | None, ready: bool, reason: str, message: str) -> dict[str, Any]:
    verdict = {
        MonitorPhase.PASSING: Verdict.PASS,
        MonitorPhase.FAILING: Verdict.FAIL,
        MonitorPhase.INCONCLUSIVE: Verdict.INCONCLUSIVE,
    }
    measurement = None
    if phase is not None:
        result = MetricResult(name="errors", value=0.3, threshold="<= 0.05", verdict=verdict[phase])
        measurement = Measurement(time=NOW, version="iris-v2", results=(result,))
    return MonitorStatus(
        observed_generation=1,
        phase=phase,
        last_measurement=measurement,
        measurements=(measurement,) if measurement else (),
        message=message,
        conditions=set_condition((), "Ready", ready, reason, message, now=NOW, observed_generation=1),
    ).to_k8s()


@pytest.mark.parametrize(
    ("phase", "ready", "reason", "expected"),
    [
        (MonitorPhase.PASSING, True, "Measuring", "Healthy"),
        (MonitorPhase.INCONCLUSIVE, True, "Measuring", "Healthy"),
        (MonitorPhase.FAILING, True, "Measuring", "Degraded"),
        (None, False, "DeploymentNotFound", "Degraded"),
        (MonitorPhase.PASSING, False, "DeploymentNotFound", "Degraded"),
        (None, False, "NothingToMeasure", "Progressing"),
    ],
)
def test_monitor_health_follows_its_verdict_and_readiness(
    phase: MonitorPhase | None, ready: bool, reason: str, expected: str, tmp_path: Path
) -> None:
    status = monitor_status(phase, ready, reason, f"{reason}: errors 0.3 > 0.05")
    result, message = health("Monitor", resource("Monitor", status), tmp_path)
    assert result == expected
    assert message


# ---- argocd/argocd-cm.yaml: the scripts as Argo CD reads them ---------------------------------------


def argocd_cm() -> str:
    """The argocd-cm patch with every health check, as argocd/argocd-cm.yaml holds it."""
    lines = [
        "# Argo CD health checks for modelfleet.io, generated from argocd/health/. Do not edit by hand:",
        "# `PYTHONPATH=tests .venv/bin/python tests/unit/test_argocd.py` rewrites it.",
        "# Merge it into the argocd-cm ConfigMap:",
        "#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd/argocd-cm.yaml",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: argocd-cm",
        "  labels:",
        "    app.kubernetes.io/part-of: argocd",
        "data:",
    ]
    for kind in KINDS:
        lines.append(f"  resource.customizations.health.modelfleet.io_{kind}: |")
        script = (HEALTH / kind / "health.lua").read_text()
        lines += [f"    {line}".rstrip() for line in script.splitlines()]
    return "\n".join(lines) + "\n"


def test_argocd_cm_patch_holds_the_current_scripts() -> None:
    path = REPO / "argocd" / "argocd-cm.yaml"
    regenerate = "PYTHONPATH=tests .venv/bin/python tests/unit/test_argocd.py"
    assert path.read_text() == argocd_cm(), f"argocd/argocd-cm.yaml is stale: run `{regenerate}`"
    patch = yaml.safe_load(path.read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    data = patch["data"]
    for kind in KINDS:
        assert (
            data[f"resource.customizations.health.modelfleet.io_{kind}"]
            == (HEALTH / kind / "health.lua").read_text()
        )


if __name__ == "__main__":
    (REPO / "argocd" / "argocd-cm.yaml").write_text(argocd_cm())
