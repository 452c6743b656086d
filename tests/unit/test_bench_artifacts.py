"""The artifact benchmark's own logic: where the time went (from the objects' timestamps and the
fetcher's report), the store's GET counts, the artifacts it makes, the objects it applies and its
Markdown."""

from __future__ import annotations

import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `bench`

from bench.artifacts import (
    PADDING_FILE,
    SCALE_TO,
    TARGET_DOWNLOADS,
    baseline_summary,
    condition_time,
    deployment_manifest,
    downloads,
    fetch_report,
    label_of,
    log_counts,
    make_artifact,
    markdown,
    model_manifest,
    padding_size,
    parse_args,
    parse_sizes,
    parse_time,
    ratio,
    remove_cache_entries,
    rollout_segments,
    runtime_manifest,
    scale_summary,
    seconds_between,
    stuck_reason,
    version_manifest,
)

from modelfleet.api import Deployment, Model, ModelVersion, Runtime
from modelfleet.fetch.digest import digest_path
from modelfleet.fetch.report import Reason, Report, Result, render_report
from modelfleet.runtime.mlserver import find_model

MIB = 1024 * 1024
DIGEST = "sha256:" + "ab" * 32


def fetched(download: float = 2.5, verify: float = 0.01, result: Result = Result.FETCHED) -> str:
    return render_report(
        Report(
            result, size=200 * MIB, files=3, digest=DIGEST, download_seconds=download, verify_seconds=verify
        )
    )


def version_obj(
    created: str = "2026-12-01T10:00:00Z", verified: str | None = "2026-12-01T10:00:04.25Z"
) -> Any:
    artifact = {"digest": DIGEST, "size": 200 * MIB}
    if verified:
        artifact["verifiedAt"] = verified
    return {
        "metadata": {"name": "art-1-off-v1", "creationTimestamp": created},
        "status": {"artifact": artifact},
    }


def pod_obj(
    *,
    scheduled: str = "2026-12-01T10:00:05Z",
    init: tuple[str, str] | None = ("2026-12-01T10:00:06Z", "2026-12-01T10:00:09Z"),
    message: str | None = None,
    ready: str | None = "2026-12-01T10:00:21Z",
    exit_code: int = 0,
) -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}]
    conditions.append(
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready or scheduled}
    )
    fetch: dict[str, Any] = {
        "name": "fetch",
        "restartCount": 0,
        "state": {"running": {"startedAt": scheduled}},
    }
    if init is not None:
        fetch["state"] = {
            "terminated": {
                "exitCode": exit_code,
                "startedAt": init[0],
                "finishedAt": init[1],
                "message": fetched() if message is None else message,
            }
        }
    return {
        "metadata": {"name": "art-1-off-v1-abc"},
        "status": {"conditions": conditions, "initContainerStatuses": [fetch]},
    }


def deployment_obj(ready: str | None = "2026-12-01T10:00:22.5Z") -> dict[str, Any]:
    conditions = [{"type": "Progressing", "status": "False", "lastTransitionTime": "2026-12-01T10:00:22.5Z"}]
    if ready:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": ready})
    return {"status": {"phase": "Healthy", "stableVersion": "art-1-off-v1", "conditions": conditions}}


def test_kubernetes_times_are_read_as_utc_with_their_fractions() -> None:
    assert parse_time("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert parse_time("2026-12-01T10:00:04.250000Z").microsecond == 250000
    assert parse_time("2026-12-01T11:00:00+01:00") == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="no zone"):
        parse_time("2026-12-01T10:00:00")
    assert seconds_between(parse_time("2026-12-01T10:00:00Z"), parse_time("2026-12-01T10:01:00.5Z")) == 60.5
    assert seconds_between(None, parse_time("2026-12-01T10:00:00Z")) is None


def test_a_condition_counts_only_once_it_is_true() -> None:
    pod = pod_obj(ready=None)
    assert condition_time(pod, "Ready") is None
    assert condition_time(pod, "PodScheduled") == parse_time("2026-12-01T10:00:05Z")
    assert condition_time({"status": {}}, "Ready") is None
    assert condition_time({}, "Ready") is None


def test_given_a_served_version_the_time_to_ready_is_split_and_the_parts_add_up() -> None:
    seg = rollout_segments(version_obj(), deployment_obj(), pod_obj())
    assert seg["total"] == pytest.approx(22.5)
    assert seg["check"] == pytest.approx(4.25)  # created -> verifiedAt
    assert seg["to_scheduled"] == pytest.approx(0.75)
    assert seg["fetch"] == pytest.approx(4.0)  # scheduled -> init container finished
    assert seg["fetch_start"] == pytest.approx(1.0)
    assert seg["fetch_run"] == pytest.approx(3.0)
    assert (seg["download"], seg["verify"]) == (2.5, 0.01)  # from the fetcher's report
    assert seg["fetch_other"] == pytest.approx(0.49)
    assert seg["load"] == pytest.approx(12.0)  # init container finished -> pod Ready
    assert seg["to_deployment_ready"] == pytest.approx(1.5)
    parts = ("check", "to_scheduled", "fetch", "load", "to_deployment_ready")
    assert sum(seg[p] for p in parts) == pytest.approx(seg["total"])
    assert seg["fetch_start"] + seg["download"] + seg["verify"] + seg["fetch_other"] == pytest.approx(
        seg["fetch"]
    )
    assert (seg["fetch_result"], seg["fetched_bytes"], seg["fetched_files"]) == ("Fetched", 200 * MIB, 3)


def test_missing_timestamps_leave_their_segments_unknown_not_zero() -> None:
    seg = rollout_segments(
        version_obj(verified=None), deployment_obj(ready=None), pod_obj(init=None, ready=None)
    )
    assert seg["total"] is None
    assert seg["check"] is None
    assert seg["to_scheduled"] is None
    assert seg["fetch"] is None
    assert seg["download"] is None
    assert seg["fetch_other"] is None
    assert seg["load"] is None
    assert seg["fetch_result"] is None


def test_the_fetch_report_is_read_from_the_init_containers_termination_message() -> None:
    report = fetch_report(pod_obj(message=fetched(download=0.0, result=Result.CACHED)))
    assert report is not None
    assert report.result is Result.CACHED
    assert fetch_report(pod_obj(init=None)) is None  # still running
    assert fetch_report(pod_obj(message="")) is None
    with pytest.raises(ValueError, match="not a fetch report"):
        fetch_report(pod_obj(message="Error: something else"))
    seg = rollout_segments(
        version_obj(), deployment_obj(), pod_obj(message=fetched(download=0.0, result=Result.CACHED))
    )
    assert seg["fetch_result"] == "Cached"


def test_pods_that_will_not_start_by_themselves_are_named_with_the_reason() -> None:
    pod = pod_obj(init=None)
    assert stuck_reason(pod) == ""
    pod["status"]["containerStatuses"] = [
        {
            "name": "model",
            "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}},
        }
    ]
    assert stuck_reason(pod) == "model: ErrImageNeverPull: image not present"
    mismatch = render_report(Report(Result.FAILED, Reason.DIGEST_MISMATCH, "digest does not match"))
    failed = pod_obj(exit_code=11, message=mismatch)
    assert stuck_reason(failed).startswith("fetch: exited 11: ")
    assert "DigestMismatch" in stuck_reason(failed)
    waiting = pod_obj(init=None)
    waiting["status"]["containerStatuses"] = [
        {"name": "model", "state": {"waiting": {"reason": "PodInitializing"}}}
    ]
    assert stuck_reason(waiting) == ""


def test_gets_counted_on_the_store_and_the_scale_out_against_its_target() -> None:
    assert downloads(4, 7) == 3
    with pytest.raises(ValueError, match="went down"):
        downloads(7, 4)
    cached = scale_summary(
        "on", {"check": 1, "first_pod": 1, "scale_out": 0}, ["Cached", "Fetched", "Cached"], 1
    )
    assert (cached["pod_downloads"], cached["meets"]) == (1, True)
    assert cached["fetch_results"] == ["Cached", "Cached", "Fetched"]
    uncached = scale_summary(
        "off", {"check": 1, "first_pod": 1, "scale_out": 1}, ["Fetched", "Fetched", None], 3
    )
    assert (uncached["pod_downloads"], uncached["meets"]) == (2, False)
    assert "(none)" in uncached["fetch_results"]
    assert TARGET_DOWNLOADS == {"off": SCALE_TO, "on": 1}


def test_the_baseline_is_the_median_round_and_the_ratio_is_against_it() -> None:
    base = baseline_summary([2.0, 1.0, 4.0], 200 * MIB)
    assert base["seconds"] == 2.0
    assert base["mib_per_second"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no baseline"):
        baseline_summary([], MIB)
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, 0.0) is None


def test_sizes_and_labels() -> None:
    assert parse_sizes("1Mi,200Mi") == [MIB, 200 * MIB]
    assert parse_sizes("1048576") == [MIB]
    with pytest.raises(ValueError, match="at least 64Ki"):
        parse_sizes("1Ki")
    with pytest.raises(ValueError, match="invalid size"):
        parse_sizes("lots")
    assert (label_of(MIB), label_of(200 * MIB), label_of(3 * 1024**3 // 2), label_of(100)) == (
        "1 MiB",
        "200 MiB",
        "1.5 GiB",
        "100 B",
    )
    assert padding_size(MIB, 1000) == MIB - 1000
    assert padding_size(1000, MIB) == 0


def test_arguments_are_checked() -> None:
    args = parse_args([])
    assert (args.sizes, args.big, args.baseline_rounds) == ([MIB, 200 * MIB], 200 * MIB, 3)
    assert parse_args(["--sizes", "2Mi", "--big", "50Mi"]).big == 50 * MIB
    for bad in (["--sizes", "1Ki"], ["--baseline-rounds", "0"], ["--timeout", "5"], ["--big", "3Gi"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_objects_it_applies_are_valid_api_objects() -> None:
    Runtime.from_k8s(runtime_manifest())
    Model.from_k8s(model_manifest("art-0-off"))
    version = ModelVersion.from_k8s(version_manifest("art-0-off", DIGEST))
    assert version.spec.artifact is not None
    assert version.spec.artifact.uri == "s3://models/art-0-off/"
    assert version.spec.artifact.digest == DIGEST
    deployment = Deployment.from_k8s(deployment_manifest("art-0-off"))
    assert (deployment.spec.version, deployment.spec.replicas) == ("art-0-off-v1", 1)


def test_an_artifact_is_a_real_model_padded_to_its_size_with_a_digest_of_its_own(tmp_path: Path) -> None:
    one = make_artifact("art-0-off", MIB, tmp_path)
    again = make_artifact("art-1-off", MIB, tmp_path)
    assert one.size == MIB == sum(p.stat().st_size for p in one.folder.iterdir())
    assert one.digest == digest_path(one.folder).digest
    assert one.digest != again.digest  # its note makes it unique to the run: no node cache holds it
    assert (
        find_model(one.folder, "sklearn").name == "model.joblib"
    )  # the runtime loads the model, not the padding
    assert (one.folder / PADDING_FILE).stat().st_size > MIB // 2


def test_the_runs_node_cache_entries_are_removed_under_their_locks(tmp_path: Path) -> None:
    entry = tmp_path / ("sha256-" + "ab" * 32)
    (entry / "content").mkdir(parents=True)
    (entry / "content" / "model.joblib").write_bytes(b"x")
    os.chmod(entry / "content" / "model.joblib", stat.S_IRUSR)
    (entry / "complete").write_text("")
    (tmp_path / f"{entry.name}.lock").write_text("")
    other = tmp_path / ("sha256-" + "cd" * 32)
    other.mkdir()
    assert remove_cache_entries([DIGEST, "sha256:" + "ef" * 32], tmp_path) == []
    assert not entry.exists()
    assert not (tmp_path / f"{entry.name}.lock").exists()
    assert other.exists()  # someone else's entry stays


def test_operator_log_counts() -> None:
    log = (
        "2026-12-01 10:00:00,1 ERROR boom\n2026-12-01 10:00:01,2 INFO fine\n"
        "Traceback (most recent call last):\n"
    )
    assert log_counts(log) == {"errors": 1, "tracebacks": 1}


def report_of(scale_meets: bool = True) -> dict[str, Any]:
    seg = rollout_segments(version_obj(), deployment_obj(), pod_obj())
    rollout = {
        "label": "200 MiB",
        "model": "art-1-off",
        "size": 200 * MIB,
        "digest": DIGEST,
        "cache": "off",
        "segments": seg,
        "observed_seconds": 23.1,
        "baseline": baseline_summary([1.0, 1.25, 2.0], 200 * MIB),
        "download_ratio": ratio(seg["download"], 1.25),
    }
    pods = 1 if scale_meets else 2
    return {
        "started": "2026-12-01T10:00:00+00:00",
        "machine": {
            "cpus": 2,
            "python": "3.11.7",
            "kubernetes": "v1.34.4",
            "load_average_before": [1.0, 1.0, 1.0],
            "load_average_after": [2.0, 2.0, 2.0],
        },
        "settings": {
            "big": 200 * MIB,
            "baseline_rounds": 3,
            "runtime_image": "localhost/modelfleet-mlserver:dev",
        },
        "rollouts": [rollout],
        "scale_outs": [
            scale_summary("off", {"check": 1, "first_pod": 1, "scale_out": 2}, ["Fetched"] * 3, 3),
            scale_summary(
                "on", {"check": 1, "first_pod": 1, "scale_out": pods - 1}, ["Cached", "Cached", "Fetched"], 1
            ),
        ],
        "operator_log": {"errors": 0, "tracebacks": 0},
    }


def test_the_markdown_has_the_split_the_ratio_and_the_download_verdicts() -> None:
    text = markdown(report_of(), "artifacts-20261201T100000Z.json")
    assert text.startswith("# Artifact benchmark (latest)\n")
    assert "Full data: `artifacts-20261201T100000Z.json`" in text
    assert (
        "| 200 MiB | off | 22.5 s (23.1 s) | 4.2 s | 0.8 s | 4.0 s | 2.50 s | 0.010 s | 0.5 s | 12.0 s "
        "| 1.5 s |"
    ) in text
    assert "| 200 MiB | off | 2.50 s (80.0 MiB/s) | 1.25 s (160.0 MiB/s) | 2.00 | Fetched |" in text
    assert "| off | 1 | 1 | 2 | 3 | 3: met | Fetched, Fetched, Fetched |" in text
    assert "| on | 1 | 1 | 0 | 1 | 1: met | Cached, Cached, Fetched |" in text
    assert "Operator log: 0 ERROR, 0 tracebacks." in text
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.endswith("|")
    assert "| on | 1 | 1 | 1 | 2 | 1: NOT met |" in markdown(report_of(scale_meets=False), "x.json")


def test_unknown_figures_show_as_not_available() -> None:
    report = report_of()
    report["rollouts"][0]["segments"] = rollout_segments(
        version_obj(verified=None), deployment_obj(), pod_obj(init=None)
    )
    report["rollouts"][0]["download_ratio"] = None
    text = markdown(report, "x.json")
    assert "| 200 MiB | off | 22.5 s (23.1 s) | n/a | n/a | n/a | n/a | n/a | n/a | n/a |" in text
    assert "| 200 MiB | off | n/a (n/a) |" in text
