"""Durations, times, conditions and error text shared by every kind."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from modelfleet.api.common import (
    DURATION_PATTERN,
    ZERO_DURATION_PATTERN,
    Condition,
    ConditionStatus,
    Duration,
    Time,
    format_duration,
    format_time,
    get_condition,
    parse_duration,
    set_condition,
)

NOW = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("1h2m3s4ms", 3723.004),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_accepts_units_and_compounds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "30", "s", "1d", "-1s", "1 s", "1.s", ".5s", "1S", "30s ", "1e3s", "x" * 40]
)
def test_parse_duration_rejects_other_forms_with_the_accepted_ones_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .*expected a string like 500ms, 30s, 2m or 1h"):
        parse_duration(text)


def test_parse_duration_rejects_negative_numbers_and_booleans() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(-1)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (30, "30s"), (90, "1m30s"), (600, "10m"), (3600, "1h"), (1.5, "1s500ms")],
)
def test_format_duration_is_the_shortest_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips_to_the_millisecond(millis: int) -> None:
    text = format_duration(millis / 1000)
    assert re.match(DURATION_PATTERN, text)
    assert parse_duration(text) == pytest.approx(millis / 1000)


@given(
    st.lists(st.tuples(st.integers(0, 999), st.sampled_from(["ms", "s", "m", "h"])), min_size=1, max_size=4)
)
def test_the_pattern_and_the_parser_agree(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    assert re.match(DURATION_PATTERN, text)
    expected = sum(n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)
    assert parse_duration(text) == pytest.approx(expected)
    # the zero pattern (used by CEL rules for "greater than zero") matches exactly the zero durations
    assert bool(re.match(ZERO_DURATION_PATTERN, text)) == (expected == 0)


class _Timed(BaseModel):
    every: Duration
    at: Time | None = None


def test_duration_fields_hold_seconds_and_serialise_as_strings() -> None:
    model = _Timed.model_validate({"every": "1m30s", "at": "2024-05-01T12:00:00+02:00"})
    assert model.every == 90.0
    assert model.at == NOW
    assert model.model_dump(mode="json") == {"every": "1m30s", "at": "2024-05-01T10:00:00Z"}


def test_bad_duration_field_names_the_value() -> None:
    with pytest.raises(ValidationError, match="invalid duration '5 minutes'"):
        _Timed.model_validate({"every": "5 minutes"})


def test_times_are_utc_naive_ones_taken_as_utc() -> None:
    assert _Timed(every=1, at=datetime(2024, 5, 1, 10, 0)).at == NOW
    plus_two = timezone(timedelta(hours=2))
    assert _Timed(every=1, at=datetime(2024, 5, 1, 12, 0, tzinfo=plus_two)).at == NOW
    with pytest.raises(ValidationError, match="invalid time 'yesterday'"):
        _Timed.model_validate({"every": "1s", "at": "yesterday"})


def test_format_time_keeps_microseconds_and_writes_z() -> None:
    assert format_time(NOW) == "2024-05-01T10:00:00Z"
    assert format_time(NOW.replace(microsecond=123456)) == "2024-05-01T10:00:00.123456Z"


def test_set_condition_moves_transition_time_only_when_status_changes() -> None:
    conditions = set_condition((), "Ready", False, "Progressing", "step 1/4", now=NOW)
    assert conditions == (
        Condition(
            type="Ready",
            status=ConditionStatus.FALSE,
            reason="Progressing",
            message="step 1/4",
            last_transition_time=NOW,
        ),
    )
    later = NOW + timedelta(minutes=1)
    same_status = set_condition(conditions, "Ready", False, "Progressing", "step 2/4", now=later)
    ready = get_condition(same_status, "Ready")
    assert ready is not None
    assert ready.message == "step 2/4"
    assert ready.last_transition_time == NOW
    flipped = set_condition(same_status, "Ready", True, "Healthy", now=later, observed_generation=3)
    ready = get_condition(flipped, "Ready")
    assert ready is not None
    assert ready.status == ConditionStatus.TRUE
    assert ready.last_transition_time == later
    assert ready.observed_generation == 3


def test_set_condition_keeps_the_order_of_other_conditions() -> None:
    conditions = set_condition((), "Ready", True, "Healthy", now=NOW)
    conditions = set_condition(conditions, "Progressing", False, "Idle", now=NOW)
    conditions = set_condition(conditions, "Ready", False, "Degraded", now=NOW)
    assert [c.type for c in conditions] == ["Ready", "Progressing"]
    assert get_condition(conditions, "Degraded") is None


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValidationError, match="reason"):
        Condition(type="Ready", status=ConditionStatus.TRUE, reason="not a reason")


def test_condition_serialises_in_kubernetes_shape() -> None:
    condition = Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Healthy",
        last_transition_time=NOW,
        observed_generation=2,
    )
    assert condition.to_k8s() == {
        "type": "Ready",
        "status": "True",
        "reason": "Healthy",
        "message": "",
        "lastTransitionTime": "2024-05-01T10:00:00Z",
        "observedGeneration": 2,
    }
