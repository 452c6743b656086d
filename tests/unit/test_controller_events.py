"""The Events helper: references, reason and type checks, message cleanup, hand-off to kopf."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from modelfleet.api import Model
from modelfleet.controllers import events
from modelfleet.registry import Notice

BODY = {
    "apiVersion": "modelfleet.io/v1alpha1",
    "kind": "ModelVersion",
    "metadata": {"name": "iris-v2", "namespace": "ml", "uid": "u-1", "labels": {"a": "b"}},
    "spec": {"model": "iris"},
}


class Recorder(list[dict[str, Any]]):
    """Stands where kopf.event would: what would have been handed over, in order."""

    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self.append({"ref": ref, "type": type, "reason": reason, "message": message})


@pytest.fixture
def posted() -> Recorder:
    return Recorder()


def test_an_event_refers_to_the_object_only(posted: Recorder) -> None:
    events.post(BODY, "Warning", "ImageNotAllowed", "image x is not allowed", send=posted)
    assert posted == [
        {
            "ref": {
                "apiVersion": "modelfleet.io/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": "iris-v2", "namespace": "ml", "uid": "u-1"},
            },
            "type": "Warning",
            "reason": "ImageNotAllowed",
            "message": "image x is not allowed",
        }
    ]


def test_a_resource_model_is_referred_to_by_its_metadata(posted: Recorder) -> None:
    model = Model.from_k8s({"metadata": {"name": "iris", "namespace": "ml", "uid": "u-2"}, "spec": {}})
    events.post(model, "Normal", "Registered", "registered", send=posted)
    assert posted[0]["ref"] == {
        "apiVersion": "modelfleet.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-2"},
    }


def test_messages_are_one_line_and_bounded(posted: Recorder) -> None:
    events.post(BODY, "Normal", "Servable", "a\n  b\tc " + "x" * 2000, send=posted)
    message = posted[0]["message"]
    assert message.startswith("a b c x")
    assert len(message) == 1024
    assert message.endswith("...")


@pytest.mark.parametrize("reason", ["", "imageNotAllowed", "Image Not Allowed", "Bad-Reason", "X" * 129])
def test_a_reason_that_is_not_camel_case_is_refused(posted: Recorder, reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        events.post(BODY, "Normal", reason, "m", send=posted)
    assert posted == []


def test_only_normal_and_warning_are_types(posted: Recorder) -> None:
    with pytest.raises(ValueError, match="Normal or Warning"):
        events.post(BODY, "Error", "Failed", "m", send=posted)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Normal or Warning"):
        events.post_all(BODY, [Notice("Error", "Failed", "m")], send=posted)  # type: ignore[arg-type]


def test_an_object_without_a_name_cannot_have_events(posted: Recorder) -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        events.post({"apiVersion": "v1", "kind": "X", "metadata": {}}, "Normal", "Ok", "m", send=posted)


def test_post_all_keeps_the_order(posted: Recorder) -> None:
    events.post_all(
        BODY, [Notice("Warning", "ImageNotAllowed", "one"), Notice("Normal", "Approved", "two")], send=posted
    )
    assert [(p["type"], p["reason"], p["message"]) for p in posted] == [
        ("Warning", "ImageNotAllowed", "one"),
        ("Normal", "Approved", "two"),
    ]


def test_outside_the_operator_an_event_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelfleet.controllers.events"):
        events.post(BODY, "Warning", "ApprovalRequired", "needs approval")
    assert "event not posted" in caplog.text
    assert "ApprovalRequired" in caplog.text
