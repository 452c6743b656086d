"""Ground truth: what each router's cumulative /feedback counts add between two reads, and which labels
accuracy and meanAbsoluteError are judged on (the newest windows holding minSamples, as far back as the
version has been measured)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelfleet.analysis.groundtruth import (
    LabelHistory,
    Labels,
    RouterFeedback,
    accuracy,
    mean_absolute_error,
    new_labels,
    parse_feedback,
    total,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def read(instance: str = "a1", **versions: Labels) -> RouterFeedback:
    return RouterFeedback(instance, cursor=0, enabled=True, versions=versions)


def test_a_routers_answer_is_read_with_its_counts() -> None:
    document = {
        "enabled": True,
        "instance": "3f9a0c1b2d4e",
        "cursor": 4,
        "predictions": {"count": 3, "limit": 10000, "bytes": 0, "oldestSeconds": 12.5},
        "versions": {
            "iris-v2": {
                "labels": 4,
                "correct": 3,
                "accuracy": 0.75,
                "numericLabels": 4,
                "absoluteError": 1.0,
                "meanAbsoluteError": 0.25,
                "pairs": [{"seq": 4, "prediction": 2, "label": 1}],
            }
        },
    }

    assert parse_feedback(document) == RouterFeedback(
        "3f9a0c1b2d4e", 4, True, {"iris-v2": Labels(4, 3, 4, 1.0)}
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a JSON object"),
        ({"cursor": 1}, "instance must be a non-empty string"),
        ({"instance": "a", "cursor": -1}, "cursor must be a non-negative integer"),
        ({"instance": "a", "versions": []}, "versions must be an object"),
        ({"instance": "a", "versions": {"v": {"labels": "4"}}}, "labels must be a non-negative integer"),
        ({"instance": "a", "versions": {"v": {"absoluteError": None}}}, "v.absoluteError must be a number"),
    ],
)
def test_a_malformed_answer_says_what_is_wrong(document: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_feedback(document)


def test_between_two_reads_of_one_router_process_the_difference_is_new() -> None:
    before = read(v2=Labels(10, 9, 10, 2.0), v1=Labels(100, 95, 0, 0.0))
    after = read(v2=Labels(25, 21, 25, 5.5), v1=Labels(100, 95, 0, 0.0))

    assert new_labels(before, after) == {"v2": Labels(15, 12, 15, 3.5), "v1": Labels()}


def test_a_restarted_router_brings_all_its_counts_as_new() -> None:
    before = read("a1", v2=Labels(500, 450, 0, 0.0))
    after = read("b7", v2=Labels(12, 6, 0, 0.0))  # fewer than before: it started again

    assert new_labels(before, after) == {"v2": Labels(12, 6, 0, 0.0)}
    assert new_labels(None, after) == {"v2": Labels(12, 6, 0, 0.0)}  # a router not read before


def test_a_version_that_left_the_routers_configuration_and_came_back_starts_again() -> None:
    before = read(v2=Labels(40, 30, 0, 0.0))

    assert new_labels(before, read(v2=Labels(3, 3, 0, 0.0))) == {"v2": Labels(3, 3, 0, 0.0)}
    assert new_labels(before, read(v3=Labels(2, 1, 0, 0.0))) == {"v3": Labels(2, 1, 0, 0.0)}


def test_the_labels_of_a_version_add_up_over_routers() -> None:
    added = {
        "router-a": {"v2": Labels(3, 2, 3, 1.0)},
        "router-b": {"v2": Labels(4, 4, 4, 0.5), "v1": Labels(9)},
    }

    assert total(added, "v2") == Labels(7, 6, 7, 1.5)
    assert total(added, "v3") == Labels()


def test_a_window_holding_min_samples_alone_is_judged_alone() -> None:
    history = LabelHistory()
    history.add(at(0), Labels(60, 60, 0, 0.0))  # a good start
    history.add(at(10), Labels(50, 30, 0, 0.0))  # then worse

    value = accuracy(history, 50, at(20))

    assert (value.value, value.samples, value.detail) == (0.6, 50, "over the last 10s")


def test_at_modest_traffic_the_newest_windows_together_reach_min_samples() -> None:
    history = LabelHistory()
    for window in range(12):
        history.add(at(10 * window), Labels(5, 4, 0, 0.0))  # 5 labels a window, 80% right

    value = accuracy(history, 50, at(120))

    assert (value.value, value.samples, value.detail) == (pytest.approx(0.8), 50, "over the last 1m40s")


def test_fewer_labels_than_min_samples_since_the_version_was_first_measured_count_them_all() -> None:
    history = LabelHistory()
    history.add(at(0), Labels(20, 19, 0, 0.0))
    history.add(at(10), Labels(10, 10, 0, 0.0))

    value = accuracy(history, 50, at(20))

    assert (value.value, value.samples, value.detail) == (29 / 30, 30, "over the last 20s")


def test_windows_past_the_limit_are_summed_so_rare_labels_still_reach_back_to_the_start() -> None:
    history = LabelHistory(limit=4)
    for window in range(10):
        history.add(at(10 * window), Labels(1, 1 if window < 5 else 0, 0, 0.0))

    assert len(history.windows) == 4
    assert history.windows[0].start == at(0)
    value = accuracy(history, 50, at(100))
    assert (value.value, value.samples, value.detail) == (0.5, 10, "over the last 1m40s")
    recent = accuracy(history, 2, at(100))
    assert (recent.value, recent.samples) == (0.0, 2)  # the newest windows are still one by one


def test_the_mean_absolute_error_is_over_numeric_labels_only() -> None:
    history = LabelHistory()
    history.add(at(0), Labels(labels=60, correct=10, numeric=50, absolute_error=12.5))

    value = mean_absolute_error(history, 50, at(10))

    assert (value.value, value.samples, value.detail) == (0.25, 50, "over the last 10s")


def test_labels_that_are_no_numbers_give_no_mean_absolute_error_and_say_so() -> None:
    history = LabelHistory()
    history.add(at(0), Labels(labels=80, correct=70))

    value = mean_absolute_error(history, 50, at(10))

    assert math.isnan(value.value)
    assert value.samples == 0
    assert value.detail == "over the last 10s; none of its 80 labels is a number"


def test_before_any_window_there_is_nothing_to_judge() -> None:
    value = accuracy(LabelHistory(), 50, at(0))

    assert math.isnan(value.value)
    assert (value.samples, value.detail) == (0, "no labels read yet")
