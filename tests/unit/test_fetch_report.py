"""The fetch report: what the init container leaves in /dev/termination-log, and the operator reads."""

from __future__ import annotations

import json

import pytest

from modelfleet.fetch.report import (
    EXIT_CODES,
    MAX_REPORT_BYTES,
    Reason,
    Report,
    Result,
    parse_report,
    render_report,
)

DIGEST = "sha256:" + "0f" * 32


def test_a_report_is_the_documented_json() -> None:
    report = Report(Result.FETCHED, Reason.NONE, "fetched", 1234, 3, DIGEST, 0.51234, 0.002)
    assert json.loads(render_report(report)) == {
        "result": "Fetched",
        "reason": "",
        "message": "fetched",
        "size": 1234,
        "files": 3,
        "digest": DIGEST,
        "downloadSeconds": 0.512,
        "verifySeconds": 0.002,
    }


@pytest.mark.parametrize("reason", list(Reason))
def test_every_report_reads_back_as_written(reason: Reason) -> None:
    result = Result.FETCHED if reason is Reason.NONE else Result.FAILED
    report = Report(result, reason, f"about {reason.value}", 10, 1, DIGEST if not reason else "", 1.5, 0.25)
    assert parse_report(render_report(report)) == report
    assert report.ok is (reason is Reason.NONE)


def test_each_reason_has_its_own_exit_code_and_success_is_zero() -> None:
    assert EXIT_CODES[Reason.NONE] == 0
    assert set(EXIT_CODES) == set(Reason)
    codes = list(EXIT_CODES.values())
    assert len(set(codes)) == len(codes)
    assert 2 not in codes  # argparse's usage errors


def test_a_long_message_is_shortened_to_fit_a_termination_message() -> None:
    report = Report(Result.FAILED, Reason.ARTIFACT_UNREACHABLE, "é" * 5000)
    text = render_report(report)
    assert len(text.encode()) <= MAX_REPORT_BYTES
    back = parse_report(text)
    assert back.message.endswith("...")
    assert back.reason is Reason.ARTIFACT_UNREACHABLE


def test_a_missing_field_takes_its_default() -> None:
    assert parse_report('{"result": "Cached"}') == Report(Result.CACHED)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not a fetch report"),
        ("container killed", "not a fetch report"),
        ("[1]", "not a JSON object"),
        ('{"reason": ""}', "no result"),
        ('{"result": "Maybe"}', "'Maybe' is not a valid Result"),
        ('{"result": "Failed", "reason": "Gremlins"}', "'Gremlins' is not a valid Reason"),
        ('{"result": "Fetched", "size": "big"}', "size is str"),
        ('{"result": "Fetched", "files": true}', "files is bool"),
    ],
)
def test_what_is_not_a_report_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_report(text)
