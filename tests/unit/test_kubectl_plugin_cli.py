"""kubectl modelfleet: command line, error messages and the watch loop, against a fake API (no cluster)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from modelfleet.api import PROMOTE_ANNOTATION, RETRY_ANNOTATION
from modelfleet.kubectl_plugin import cli as plugin
from modelfleet.kubectl_plugin.kube import (
    PluginError,
    Target,
    explain_api_error,
    explain_connection_error,
)
from modelfleet.kubectl_plugin.watch import Snapshot, Watcher
from support.plugin_objects import canary_status, deployment, model_version, monitor, monitor_status


def api_error(status: int, body: dict[str, Any] | None = None) -> ApiException:
    error = ApiException(status=status, reason="reason")
    error.body = json.dumps(body) if body is not None else None
    return error


class FakeKube:
    """Objects by kind and name in one namespace; records annotations; watch replays given events."""

    def __init__(self, namespace: str = "ml", **objects: list[dict[str, Any]]) -> None:
        self.namespace = namespace
        self.server = "https://127.0.0.1:6443"
        self.objects = {kind: {o["metadata"]["name"]: o for o in objs} for kind, objs in objects.items()}
        self.patches: list[tuple[str, str, str, str]] = []
        self.events: dict[str, list[Any]] = {}
        self.lists: list[str] = []

    def get(self, kind: str, name: str) -> dict[str, Any]:
        try:
            return self.objects[kind][name]
        except KeyError:
            raise PluginError(f"{kind} {name!r} not found in namespace {self.namespace!r}") from None

    def list(self, kind: str, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        self.lists.append(kind)
        items = list(self.objects.get(kind, {}).values())
        if field_selector:
            name = field_selector.removeprefix("metadata.name=")
            items = [o for o in items if o["metadata"]["name"] == name]
        return items, "100"

    def annotate(self, kind: str, name: str, key: str, value: str) -> dict[str, Any]:
        self.patches.append((kind, name, key, value))
        return self.get(kind, name)

    def watch(self, kind: str, rv: str, field_selector: str | None, timeout: int) -> Iterator[dict[str, Any]]:
        queue = self.events.get(kind)
        if not queue:
            threading.Event().wait(0.05)  # the server's watch time-out, shortened
            return
        threading.Event().wait(0.2)  # events come after the list has been drawn
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        yield from item


def run(argv: list[str], kube: FakeKube) -> tuple[int, str, list[Target]]:
    targets: list[Target] = []

    def connector(target: Target) -> Any:
        targets.append(target)
        return kube

    out = io.StringIO()
    code = plugin.run(plugin.build_parser().parse_args(argv), out, connector)
    return code, out.getvalue(), targets


# --- error messages ----------------------------------------------------------------------------------


def test_unknown_deployment_is_named_with_its_namespace() -> None:
    error = api_error(404, {"reason": "NotFound", "details": {"name": "nope", "kind": "deployments"}})

    text = explain_api_error(error, "Deployment", "nope", "ml", "get")

    assert text == (
        "Deployment 'nope' not found in namespace 'ml'"
        " (`kubectl get deployments.modelfleet.io -n ml` lists them)"
    )


def test_missing_crds_are_told_apart_from_a_missing_object() -> None:
    error = api_error(
        404, {"reason": "NotFound", "message": "the server could not find the requested resource"}
    )

    text = explain_api_error(error, "Deployment", "iris", "ml", "get")

    assert text.startswith("the API server does not know deployments.modelfleet.io: the modelfleet CRDs")


def test_rbac_denial_says_what_was_refused_and_quotes_the_server() -> None:
    message = (
        'deployments.modelfleet.io "iris" is forbidden: User "bob" cannot patch resource "deployments" in API'
        ' group "modelfleet.io" in the namespace "ml"'
    )
    error = api_error(403, {"reason": "Forbidden", "message": message})

    text = explain_api_error(error, "Deployment", "iris", "ml", "patch")

    assert text == f"permission denied: cannot patch Deployment 'iris' in namespace 'ml': {message}"


def test_other_api_errors() -> None:
    assert explain_api_error(api_error(401), "Deployment", "iris", "ml", "get").startswith("unauthorized")
    assert explain_api_error(api_error(500, {"message": "boom"}), "Monitor", None, "ml", "list") == (
        "cannot list Monitors: 500 boom"
    )


def test_connection_refused_is_short() -> None:
    reason = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )  # type: ignore[arg-type]
    error = urllib3.exceptions.MaxRetryError(None, "/apis", reason)  # type: ignore[arg-type]

    assert explain_connection_error(error, "https://127.0.0.1:1") == (
        "cannot reach the Kubernetes API server at https://127.0.0.1:1: connection refused"
        " (is the cluster up? see --kubeconfig)"
    )


# --- command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "ml", "--context", "c", "--kubeconfig", "k", "status", "iris"],
        ["status", "iris", "-n", "ml", "--context", "c", "--kubeconfig", "k"],
        ["--kubeconfig", "k", "status", "--namespace", "ml", "iris", "--context", "c"],
    ],
)
def test_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = plugin.build_parser().parse_args(argv)

    assert (args.command, args.name, args.namespace, args.context, args.kubeconfig) == (
        "status",
        "iris",
        "ml",
        "c",
        "k",
    )


def test_without_options_the_target_is_left_to_kubeconfig() -> None:
    kube = FakeKube(Deployment=[deployment(canary_status())])

    _, _, targets = run(["history", "iris"], kube)

    assert targets == [Target(kubeconfig=None, context=None, namespace=None)]


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main([]) == 2
    assert "usage: kubectl modelfleet" in capsys.readouterr().err


def test_commands_need_a_name() -> None:
    with pytest.raises(SystemExit) as exit_info:
        plugin.build_parser().parse_args(["promote"])
    assert exit_info.value.code == 2


def test_a_plugin_error_is_one_line_on_stderr_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert plugin.main(["--kubeconfig", "/nonexistent/kubeconfig", "status"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "error: no cluster configured: kubeconfig /nonexistent/kubeconfig does not exist"
        " (set KUBECONFIG or pass --kubeconfig)\n"
    )


def test_status_of_one_deployment_reads_its_monitors_and_versions() -> None:
    kube = FakeKube(
        Deployment=[deployment(canary_status())],
        Monitor=[monitor(monitor_status())],
        ModelVersion=[model_version("iris-v1", "1", phase="Serving")],
    )

    code, out, _ = run(["status", "iris"], kube)

    assert code == 0
    assert "iris-v1  stable  1              localhost/iris-server:1  Serving" in out
    assert "Monitor iris-quality: Passing" in out


def test_status_of_an_unknown_deployment_fails() -> None:
    with pytest.raises(PluginError, match="Deployment 'nope' not found in namespace 'ml'"):
        run(["status", "nope"], FakeKube(Deployment=[]))


def test_status_of_the_namespace() -> None:
    code, out, _ = run(["status"], FakeKube(Deployment=[deployment(canary_status())], Monitor=[]))

    assert code == 0
    assert out.splitlines()[0].startswith("NAME  MODEL  STABLE")


def test_promote_sets_the_annotation_and_says_what_happens() -> None:
    kube = FakeKube(Deployment=[deployment(canary_status())])

    code, out, _ = run(["promote", "iris"], kube)

    assert code == 0
    assert kube.patches == [("Deployment", "iris", PROMOTE_ANNOTATION, "true")]
    lines = out.splitlines()
    assert lines[0] == "deployment.modelfleet.io/iris annotated modelfleet.io/promote=true"
    assert lines[1].startswith("iris: iris-v2 will be promoted to stable now")


def test_a_request_already_pending_is_reported_as_such() -> None:
    kube = FakeKube(Deployment=[deployment(canary_status(), annotations={RETRY_ANNOTATION: "true"})])

    _, out, _ = run(["retry", "iris"], kube)

    assert out.startswith("deployment.modelfleet.io/iris: modelfleet.io/retry=true was already set")
    assert kube.patches == [("Deployment", "iris", RETRY_ANNOTATION, "true")]


def test_a_request_for_an_unknown_deployment_patches_nothing() -> None:
    kube = FakeKube(Deployment=[])

    with pytest.raises(PluginError, match="not found"):
        run(["abort", "nope"], kube)
    assert kube.patches == []


def test_history() -> None:
    _, out, _ = run(["history", "iris"], FakeKube(Deployment=[deployment(canary_status())]))

    assert out.startswith("Rollout history of Deployment ml/iris")


# --- watch -------------------------------------------------------------------------------------------


def test_watcher_applies_events_and_lists_again_after_410() -> None:
    listed = deployment(canary_status(weight=20))
    modified = deployment(canary_status(weight=50, step=2))
    kube = FakeKube(Deployment=[listed])
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "102"}}}
    kube.events["Deployment"] = [[{"type": "MODIFIED", "object": modified}, bookmark], api_error(410)]
    watcher = Watcher(kube, ("Deployment",))  # type: ignore[arg-type]
    watcher.start()
    weights: list[int] = []
    try:
        assert watcher.wait_synced(5)
        seen = 0
        for _ in range(50):
            seen = watcher.wait(seen, 0.1)
            obj = watcher.snapshot().get("Deployment", "iris")
            assert obj is not None
            if not weights or weights[-1] != obj["status"]["canaryWeight"]:
                weights.append(obj["status"]["canaryWeight"])
            if kube.lists.count("Deployment") >= 2 and weights[-1] == 20 and len(weights) >= 3:
                break
    finally:
        watcher.stop()
    # Listed at 20, the watch event moved it to 50, the 410 made it list again: 20 (the fake's list).
    assert weights == [20, 50, 20]
    assert kube.lists.count("Deployment") >= 2
    assert watcher.snapshot().errors == {}


def test_watcher_removes_deleted_objects_and_reports_trouble() -> None:
    kube = FakeKube(Monitor=[monitor()])
    kube.events["Monitor"] = [
        [{"type": "DELETED", "object": monitor()}],
        api_error(403, {"message": "denied"}),
    ]
    watcher = Watcher(kube, ("Monitor",))  # type: ignore[arg-type]
    watcher.start()
    try:
        seen = 0
        for _ in range(50):
            seen = watcher.wait(seen, 0.2)
            if "Monitor" in watcher.snapshot().errors:
                break
        snapshot = watcher.snapshot()
        assert snapshot.errors["Monitor"].startswith(
            "permission denied: cannot watch Monitors in namespace 'ml'"
        )
    finally:
        watcher.stop()


def test_a_frame_for_a_deleted_deployment_and_watch_trouble() -> None:
    snapshot = Snapshot(objects={"Deployment": {}, "Monitor": {}}, errors={"Monitor": "connection refused"})

    text = plugin.frame(snapshot, "iris", "ml", canary_status().rollout_started_at)  # type: ignore[arg-type]

    assert text.splitlines() == [
        "Deployment ml/iris does not exist (deleted?); waiting for it to come back.",
        "watch Monitor: connection refused",
    ]


def test_watch_prints_a_frame_per_change_when_not_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKube(Deployment=[deployment(canary_status(weight=20))], Monitor=[], ModelVersion=[])
    kube.events["Deployment"] = [
        [{"type": "MODIFIED", "object": deployment(canary_status(weight=50, step=2))}]
    ]
    out = io.StringIO()
    original = Watcher.wait
    waits = []

    def wait(self: Watcher, seen: int, timeout: float) -> int:
        waits.append(timeout)
        if out.getvalue().count("--- ") >= 2 or len(waits) > 200:
            raise KeyboardInterrupt  # what Ctrl-C does to the waiting main thread
        return original(self, seen, 0.05)

    monkeypatch.setattr(Watcher, "wait", wait)

    with pytest.raises(KeyboardInterrupt):
        plugin.status_watch(kube, "iris", out, tty=False)  # type: ignore[arg-type]

    frames = [f for f in out.getvalue().split("--- ") if f.strip()]
    assert len(frames) == 2
    assert "[####----------------]  20%" in frames[0]
    assert "[##########----------]  50%" in frames[1]
    assert waits[0] == 60.0  # off a terminal it waits for changes only, no ticking redraw
