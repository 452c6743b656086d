"""Every kind the controllers name in a call of the access layer (`kube.get`, `kube.delete`,
`kube.list_objects`, `kube.path`, directly or through `kube.run` / `asyncio.to_thread`) has a REST path:
an unknown one fails only when the call is made, in the running operator (seen: the MLflow sync's
Secret reads)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from modelfleet.controllers import kube

CONTROLLERS = Path(kube.__file__).parent
KIND_CALLS = {"get", "delete", "list_objects", "path"}


def named_kinds() -> list[tuple[str, int, str]]:
    """(file, line, kind) of every string literal passed as the kind of an access-layer call."""
    found = []
    for source in sorted(CONTROLLERS.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            args = list(node.args)
            func = node.func
            # kube.run(kube.get, "v1", "Secret", ...) and asyncio.to_thread(kube.get, ...)
            if isinstance(func, ast.Attribute) and func.attr in {"run", "to_thread"} and args:
                func, args = args[0], args[1:]
            if not (isinstance(func, ast.Attribute) and func.attr in KIND_CALLS):
                continue
            if not (isinstance(func.value, ast.Name) and func.value.id == "kube"):
                continue
            if len(args) >= 2 and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                found.append((source.name, node.lineno, args[1].value))
    return found


def test_the_controllers_name_kinds_in_access_layer_calls() -> None:
    kinds = {kind for _, _, kind in named_kinds()}
    assert {"Secret", "Pod", "Monitor"} <= kinds  # the scan sees the calls it is meant to check


@pytest.mark.parametrize(("where", "line", "kind"), named_kinds())
def test_every_kind_named_has_a_rest_path(where: str, line: int, kind: str) -> None:
    assert kind in kube.PLURALS, f"{where}:{line}: kind {kind} has no REST path in kube.PLURALS"


def test_a_secret_is_read_at_its_namespaced_path() -> None:
    assert kube.path("v1", "Secret", "ml", "iris-webhook") == "/api/v1/namespaces/ml/secrets/iris-webhook"


def test_refusals_are_told_apart_by_status_and_method() -> None:
    service = "/api/v1/namespaces/ml/services/iris"
    assert isinstance(kube.refusal("GET", service, 404, "not found"), kube.NotFound)
    assert isinstance(kube.refusal("PATCH", service, 422, "invalid"), kube.Conflict)
    assert isinstance(kube.refusal("PUT", service, 409, "changed"), kube.Conflict)
    created = kube.refusal("POST", service, 422, "invalid")
    assert isinstance(created, kube.ApiError)
    assert created.status == 422
    assert "invalid" in str(kube.refusal("PATCH", service, 422, "invalid"))
