"""kubectl modelfleet: what status, history and the manual-control commands print (pure rendering)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelfleet.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    CanaryStep,
    DeploymentPhase,
    DeploymentSpec,
    DeploymentStatus,
    FallbackStatus,
    Pause,
    Strategy,
    StrategyType,
)
from modelfleet.kubectl_plugin import render
from support.plugin_objects import (
    NOW,
    canary_status,
    deployment,
    deployment_spec,
    model_version,
    monitor,
    monitor_status,
    rolled_back_status,
)

VERSIONS = {
    "iris-v1": model_version("iris-v1", "1", phase="Serving"),
    "iris-v2": model_version("iris-v2", "2", phase="Ready"),
}


def columns(text: str, header: str) -> dict[str, str]:
    """The row under a table header line, split by the header's column starts."""
    lines = text.splitlines()
    index = next(
        i for i, line in enumerate(lines) if line.strip().startswith(header.split()[0]) and header in line
    )
    head, row = lines[index], lines[index + 1]
    names = head.split()
    starts = [head.index(name) for name in names]
    cells = {}
    for i, name in enumerate(names):
        end = starts[i + 1] if i + 1 < len(names) else None
        cells[name] = row[starts[i] : end].strip()
    return cells


# --- formatters --------------------------------------------------------------------------------------


def test_table_pads_columns_and_leaves_no_trailing_blanks() -> None:
    text = render.table(("A", "LONGER"), [["xxxx", "1"], ["y", ""]])

    assert text.splitlines() == ["A     LONGER", "xxxx  1", "y"]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (75, "1m15s"),
        (601, "10m"),
        (3600, "1h"),
        (3720, "1h2m"),
        (90000, "1d"),
    ],
)
def test_age_reads_like_kubectl(seconds: int, expected: str) -> None:
    assert render.age(NOW - timedelta(seconds=seconds), NOW) == expected


def test_age_of_unknown_or_future_time() -> None:
    assert render.age(None, NOW) == "-"
    assert render.age(NOW + timedelta(seconds=5), NOW) == "0s"


def test_elapsed_and_clock() -> None:
    assert render.elapsed(NOW, NOW + timedelta(seconds=72)) == "1m12s"
    assert render.elapsed(None, NOW) == "-"
    assert render.clock(NOW) == "2024-05-01 10:00:00"
    assert render.clock(None) == "-"


@pytest.mark.parametrize(("value", "expected"), [(None, "-"), (0.0, "0"), (0.0123456, "0.01235"), (1.0, "1")])
def test_number_is_short(value: float | None, expected: str) -> None:
    assert render.number(value) == expected


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        (0, "[--------------------]   0%"),
        (20, "[####----------------]  20%"),
        (100, "[####################] 100%"),
        (150, "[####################] 100%"),
    ],
)
def test_weight_bar(weight: int, expected: str) -> None:
    assert render.weight_bar(weight) == expected


def test_clip_cuts_long_lines_only() -> None:
    assert render.clip("short\n" + "x" * 30, 20) == "short\n" + "x" * 17 + "..."
    assert render.clip("x" * 30, None) == "x" * 30


# --- steps -------------------------------------------------------------------------------------------


def view(status: DeploymentStatus, spec: DeploymentSpec | None = None) -> render.DeploymentView:
    return render.DeploymentView.of(deployment(status, spec=spec))


def test_steps_line_marks_done_steps_and_the_one_under_way() -> None:
    v = view(canary_status(weight=20, step=1))

    assert render.steps_line(v) == "20% (done) > [pause 10s] > 50% > pause 10s"
    assert render.step_position(v) == "2/4"


def test_steps_line_before_the_canary_pods_are_ready() -> None:
    status = canary_status(weight=0, step=0).model_copy(update={"step_started_at": None})

    assert render.steps_line(view(status)) == "20% (next, waiting for pods) > pause 10s > 50% > pause 10s"


def test_steps_line_without_a_rollout_and_for_immediate() -> None:
    immediate = DeploymentSpec(
        model="iris", version="iris-v2", strategy=Strategy(type=StrategyType.IMMEDIATE)
    )

    assert render.steps_line(view(rolled_back_status())) == "20% > pause 10s > 50% > pause 10s"
    assert render.step_position(view(rolled_back_status())) == "-"
    assert render.steps_line(view(canary_status(), immediate)) == "Immediate (no steps)"


def test_a_pause_without_duration_waits_for_promotion() -> None:
    assert render.step_text(CanaryStep(pause=Pause())) == "pause (until promoted)"


# --- status ------------------------------------------------------------------------------------------


def test_status_of_a_canary_shows_the_table_steps_versions_and_verdicts() -> None:
    text = render.render_status(
        deployment(canary_status(weight=20, step=1, failures=1)), [monitor(monitor_status())], VERSIONS, NOW
    )

    assert text.splitlines()[0] == "Deployment ml/iris  model iris  endpoint http://iris.ml.svc:80"
    row = columns(text, "STABLE")
    assert row["STABLE"] == "iris-v1"
    assert row["CANARY"] == "iris-v2"
    assert row["WEIGHT"] == "[####----------------]  20%"
    assert row["STEP"] == "2/4"
    assert row["PHASE"] == "Progressing"
    assert row["MESSAGE"] == "step 2/4: weight 20%, monitor iris-quality passing"
    assert "Steps:       20% (done) > [pause 10s] > 50% > pause 10s" in text
    assert "Conditions:  Ready=False (Progressing), Progressing=True" in text
    assert "Rollout:     iris-v2 started 30s ago" in text
    assert (
        "Monitor iris-quality: Passing, iris-v2 measured 2024-05-01 09:59:57 (3s ago),"
        " consecutive failures 1/2" in text
    )
    verdicts = [line.split() for line in text.splitlines() if line.startswith(("  errors", "  p99"))]
    assert verdicts == [["errors", "0", "<=", "0.05", "Pass"], ["p99", "0.01235", "<=", "0.5", "Pass"]]


def test_status_lists_the_versions_in_play_with_image_and_phase() -> None:
    text = render.render_status(deployment(canary_status()), [], VERSIONS, NOW)

    lines = [line.split() for line in text.splitlines() if line.startswith("  iris-")]
    assert lines == [
        ["iris-v1", "stable", "1", "localhost/iris-server:1", "Serving"],
        ["iris-v2", "canary", "2", "localhost/iris-server:2", "Ready"],
    ]


def test_status_shows_the_fallback_version_and_when_it_serves_stables_traffic() -> None:
    spec = DeploymentSpec.model_validate(
        {"model": "iris", "version": "iris-v1", "fallback": {"version": "iris-rules"}}
    )
    versions = {**VERSIONS, "iris-rules": model_version("iris-rules", "0", phase="Ready")}
    serving = DeploymentStatus(phase=DeploymentPhase.HEALTHY, stable_version="iris-v1")
    text = render.render_status(deployment(serving, spec=spec), [], versions, NOW)
    lines = [line.split() for line in text.splitlines() if line.startswith("  iris-")]
    assert lines == [
        ["iris-v1", "stable", "1", "localhost/iris-server:1", "Serving"],
        ["iris-rules", "fallback", "0", "localhost/iris-server:0", "Ready"],
    ]
    assert "Fallback:" not in text

    engaged = serving.model_copy(
        update={
            "phase": DeploymentPhase.DEGRADED,
            "fallback": FallbackStatus(
                active=True,
                version="iris-rules",
                since=NOW - timedelta(seconds=90),
                reason="iris-v1 fails monitor iris-quality: errors 0.31 > 0.05",
            ),
        }
    )
    text = render.render_status(deployment(engaged, spec=spec), [], versions, NOW)
    assert ["iris-rules", "fallback", "(serving)", "0", "localhost/iris-server:0", "Ready"] in [
        line.split() for line in text.splitlines()
    ]
    reason = "iris-v1 fails monitor iris-quality: errors 0.31 > 0.05"
    assert f"Fallback:    iris-rules serving for 1m30s: {reason}" in text


def test_status_says_when_a_version_or_the_monitor_is_missing() -> None:
    text = render.render_status(deployment(canary_status()), [], {}, NOW)

    assert "iris-v1  stable  -              -                 not found" in text
    assert "Monitor iris-quality: not found" in text


def test_status_shows_a_failing_verdict_with_its_value() -> None:
    text = render.render_status(deployment(canary_status()), [monitor(monitor_status(1.0))], VERSIONS, NOW)

    assert "Monitor iris-quality: Failing" in text
    assert ["errors", "1", "<=", "0.05", "Fail"] in [line.split() for line in text.splitlines()]


def test_status_of_a_monitor_without_measurements() -> None:
    text = render.render_status(deployment(canary_status()), [monitor()], VERSIONS, NOW)

    assert "Monitor iris-quality: no verdict yet" in text
    assert "  no measurement yet" in text


def test_status_ignores_monitors_of_other_deployments() -> None:
    other = monitor(monitor_status(), name="other-quality", deployment="other")

    text = render.render_status(deployment(canary_status()), [other], VERSIONS, NOW)

    assert "other-quality" not in text


def test_status_after_a_rollback_holds_the_version_back_and_names_the_last_rollout() -> None:
    spec = deployment_spec(version="iris-v3")
    text = render.render_status(deployment(rolled_back_status(), spec=spec), [], VERSIONS, NOW)

    row = columns(text, "STABLE")
    assert row["STABLE"] == "iris-v2"
    assert row["CANARY"] == "-"
    assert row["WEIGHT"] == "-"
    assert row["PHASE"] == "RolledBack"
    assert "Held back:   iris-v3 (not rolled out again until spec.version changes" in text
    assert "Last:        iris-v3 RolledBack: errors 1 > 0.05 (4m46s ago)" in text
    assert "iris-v3  requested" in text


def test_status_names_the_version_the_spec_asks_for() -> None:
    text = render.render_status(deployment(canary_status()), [], VERSIONS, NOW)

    assert "Target:      iris-v2 (spec.version)" in text


def test_status_of_a_deployment_following_an_alias_names_the_alias_and_where_it_points() -> None:
    spec = deployment_spec(alias="champion")
    status = rolled_back_status().model_copy(update={"target_version": "iris-v4", "rolled_back_version": ""})

    text = render.render_status(deployment(status, spec=spec), [], VERSIONS, NOW)

    assert "Target:      iris-v4 (alias champion)" in text
    assert "iris-v4  alias champion  -" in text  # requested through the alias, not rolled out (yet)


def test_status_of_an_alias_that_resolves_to_no_version() -> None:
    status = rolled_back_status().model_copy(
        update={
            "target_version": "",
            "rolled_back_version": "",
            "phase": DeploymentPhase.HEALTHY,
            "message": "nothing rolled out: alias champion of Model iris points at no version,"
            " serving iris-v2",
        }
    )

    text = render.render_status(deployment(status, spec=deployment_spec(alias="champion")), [], VERSIONS, NOW)

    assert "Target:      none (alias champion resolves to no version)" in text
    assert columns(text, "STABLE")["MESSAGE"].startswith("nothing rolled out: alias champion of Model iris")
    assert [line.split()[:2] for line in text.splitlines() if line.startswith("  iris-")] == [
        ["iris-v2", "stable"]
    ]


def test_a_version_held_back_while_its_alias_points_at_it() -> None:
    status = rolled_back_status().model_copy(update={"target_version": "iris-v3"})
    obj = deployment(status, spec=deployment_spec(alias="champion"))

    assert "Held back:   iris-v3 (not rolled out again until alias champion moves" in render.render_status(
        obj, [], VERSIONS, NOW
    )
    assert render.describe_request("retry", obj) == (
        "iris: iris-v3 (rolled back: errors 1 > 0.05) will be rolled out again from the first step."
    )
    moved = deployment(
        status.model_copy(update={"target_version": "iris-v4"}), spec=deployment_spec(alias="champion")
    )
    assert "alias champion points at iris-v4, so that is what rolls out" in render.describe_request(
        "retry", moved
    )
    rolling = deployment(canary_status(), spec=deployment_spec(alias="champion"))
    assert "until alias champion moves or `kubectl modelfleet retry iris`" in render.describe_request(
        "abort", rolling
    )


def test_status_shows_requests_the_operator_has_not_consumed() -> None:
    obj = deployment(canary_status(), annotations={PROMOTE_ANNOTATION: "true", "other": "x"})

    assert "Requested:   promote (waiting for the operator)" in render.render_status(obj, [], VERSIONS, NOW)


def test_status_of_a_deployment_without_status_yet() -> None:
    text = render.render_status(deployment(None), [], {}, NOW)

    row = columns(text, "STABLE")
    assert row == {
        "STABLE": "-",
        "CANARY": "-",
        "WEIGHT": "-",
        "STEP": "-",
        "PHASE": "Unknown",
        "MESSAGE": "-",
    }
    assert "iris-v2  requested" in text


def test_a_spec_that_does_not_parse_still_shows_the_status_with_a_note() -> None:
    obj = deployment(canary_status())
    obj["spec"]["strategy"]["futureField"] = 1

    text = render.render_status(obj, [], VERSIONS, NOW)

    assert "note: Deployment ml/iris: invalid: spec.strategy.futureField" in text
    assert columns(text, "STABLE")["CANARY"] == "iris-v2"
    assert text.splitlines()[0].startswith("Deployment ml/iris  model ?")


# --- list --------------------------------------------------------------------------------------------


def test_list_of_an_empty_namespace() -> None:
    assert render.render_list([], [], "ml", NOW) == "No modelfleet Deployments or Monitors in namespace ml."


def test_list_shows_every_deployment_sorted_and_every_monitor_with_verdicts() -> None:
    deployments = [
        deployment(rolled_back_status(), name="zeta"),
        deployment(canary_status(), name="iris"),
    ]
    text = render.render_list(deployments, [monitor(monitor_status(1.0))], "ml", NOW)

    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "MODEL", "STABLE", "CANARY", "WEIGHT", "STEP", "PHASE", "MESSAGE"]
    assert lines[1].startswith(
        "iris  iris   iris-v1  iris-v2  [####----------------]  20%  1/4   Progressing"
    )
    assert lines[2].startswith("zeta  iris   iris-v2  -")
    monitor_row = columns(text, "MONITOR")
    assert monitor_row["MONITOR"] == "iris-quality"
    assert monitor_row["DEPLOYMENT"] == "iris"
    assert monitor_row["PHASE"] == "Failing"
    assert monitor_row["MEASURED"] == "3s"
    assert monitor_row["VERDICTS"] == "errors 1 Fail, p99 0.01235 Pass"


def test_list_with_monitors_only() -> None:
    text = render.render_list([], [monitor()], "ml", NOW)

    assert text.startswith("No modelfleet Deployments in namespace ml.")
    assert "no measurement yet" in text


def test_line_for_a_log_of_changes() -> None:
    line = render.render_line(deployment(canary_status(weight=50, step=2)), [monitor(monitor_status())])

    assert line == (
        "Progressing  stable iris-v1  canary iris-v2 [#####-----]  50%  step 3/4"
        "  | iris-quality on iris-v2: errors 0 Pass, p99 0.01235 Pass"
    )


# --- history -----------------------------------------------------------------------------------------


def test_history_lists_finished_rollouts_newest_first_with_durations() -> None:
    text = render.render_history(deployment(rolled_back_status()), NOW)

    lines = text.splitlines()
    assert lines[0] == "Rollout history of Deployment ml/iris (newest first, times in UTC)"
    assert lines[2].split() == ["VERSION", "RESULT", "REASON", "STARTED", "FINISHED", "DURATION"]
    assert lines[3].split() == [
        *["iris-v3", "RolledBack", "errors", "1", ">", "0.05"],
        *["2024-05-01", "09:55:00", "2024-05-01", "09:55:14", "14s"],
    ]
    assert lines[4].split()[:3] == ["iris-v2", "Promoted", "all"]
    assert lines[4].split()[-1] == "1m"


def test_history_shows_the_rollout_under_way() -> None:
    text = render.render_history(deployment(canary_status()), NOW)

    assert "Under way: iris-v2, step 1/4, weight 20%, started 2024-05-01 09:59:30 (30s ago)" in text
    assert text.endswith("No finished rollouts yet.")


# --- what promote, abort and retry will do -----------------------------------------------------------


def test_promote_during_a_rollout() -> None:
    text = render.describe_request("promote", deployment(canary_status(weight=20, step=1)))

    assert text.startswith("iris: iris-v2 will be promoted to stable now (step 2/4, weight 20%)")
    assert "iris-v1 stays warm" in text


def test_abort_during_a_rollout() -> None:
    text = render.describe_request("abort", deployment(canary_status()))

    assert text.startswith("iris: iris-v2 will be rolled back now (step 1/4, weight 20%): weight 0, iris-v1")
    assert "kubectl modelfleet retry iris" in text


@pytest.mark.parametrize(("command", "event"), [("promote", "PromoteIgnored"), ("abort", "AbortIgnored")])
def test_promote_or_abort_without_a_rollout_will_be_ignored(command: str, event: str) -> None:
    text = render.describe_request(command, deployment(rolled_back_status()))

    assert text == (
        "iris: no rollout is under way (phase RolledBack), so the operator will ignore the request"
        f" (event {event})."
    )


def test_retry_of_the_rolled_back_version() -> None:
    obj = deployment(rolled_back_status(), spec=deployment_spec(version="iris-v3"))

    assert render.describe_request("retry", obj) == (
        "iris: iris-v3 (rolled back: errors 1 > 0.05) will be rolled out again from the first step."
    )


def test_retry_when_spec_version_moved_on() -> None:
    obj = deployment(rolled_back_status(), spec=deployment_spec(version="iris-v4"))

    assert "spec.version is iris-v4, so that is what rolls out" in render.describe_request("retry", obj)


def test_retry_with_nothing_held_back_or_during_a_rollout() -> None:
    healthy = rolled_back_status().model_copy(
        update={"rolled_back_version": "", "phase": DeploymentPhase.HEALTHY}
    )

    assert "nothing to retry" in render.describe_request("retry", deployment(healthy))
    assert "changes nothing now" in render.describe_request("retry", deployment(canary_status()))


def test_unknown_request_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of promote, abort, retry"):
        render.describe_request("restart", deployment(canary_status()))


def test_requested_lists_annotations_set_to_true_only() -> None:
    obj = deployment(canary_status(), annotations={PROMOTE_ANNOTATION: "true", ABORT_ANNOTATION: "false"})

    assert render.DeploymentView.of(obj).requested() == ["promote"]
