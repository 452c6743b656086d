"""Ground truth in the router: the store of served answers, labels joined per version, and every way a
label can be refused (each answered with a JSON error and counted, never a crash)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelfleet.api.routerconfig import RouterConfig
from modelfleet.httpcore import Request, Response
from modelfleet.router.admin import admin_handler
from modelfleet.router.auth import TokenFile
from modelfleet.router.feedback import MAX_BODY, Feedback, PredictionStore, score
from modelfleet.router.metrics import RouterMetrics
from modelfleet.router.proxy import Router

TOKEN = "s3cret-token"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def v2(*values: Any) -> bytes:
    return json.dumps({"model_name": "iris", "outputs": [{"name": "label", "data": list(values)}]}).encode()


def config(token_file: Path | None, *versions: str, **feedback: Any) -> RouterConfig:
    names = versions or ("iris-v1", "iris-v2")
    document: dict[str, Any] = {
        "deployment": "iris",
        "versions": [
            {
                "name": name,
                "url": f"http://{name}:8080",
                "weight": 50,
                "role": "stable" if i == 0 else "canary",
            }
            for i, name in enumerate(names)
        ],
    }
    if token_file is not None:
        document["feedback"] = {"tokenFile": str(token_file), **feedback}
    return RouterConfig.model_validate(document)


def label(body: Any, token: str | None = TOKEN, method: bytes = b"POST", **headers: str) -> Request:
    fields = [(name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()]
    if token is not None:
        fields.append((b"authorization", f"Bearer {token}".encode()))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request(method, b"/v2/models/iris/feedback", fields, raw)


def answer(response: Response) -> tuple[int, Any]:
    return response.status, json.loads(response.body)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` often leaves it
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feedback(token_file: Path, clock: Clock) -> Feedback:
    feedback = Feedback(RouterMetrics(), "0123456789ab", clock)
    feedback.configure(config(token_file))
    return feedback


def outcomes(feedback: Feedback) -> dict[str, float]:
    return {values[1]: child.value for values, child in feedback.metrics.feedback.children.items()}


# -- the store ------------------------------------------------------------------------------------------


def test_the_store_keeps_the_newest_answers_up_to_its_count_and_tells_late_from_unknown() -> None:
    store = PredictionStore(capacity=3)
    for n in range(5):
        store.put(b"r%d" % n, "iris-v1", "v2", v2(n), None, float(n))
    assert len(store) == 3
    assert [store.get(b"r%d" % n) for n in (0, 1)] == ["expired", "expired"]
    assert store.get(b"r2") == ("iris-v1", "v2", v2(2), None, 2.0)
    assert store.get(b"never") == "unknown"
    assert store.oldest() == 2.0
    assert store.bytes == sum(len(v2(n)) for n in (2, 3, 4))


def test_the_ids_it_remembers_as_evicted_are_bounded_too() -> None:
    store = PredictionStore(capacity=2)
    for n in range(10):
        store.put(b"r%d" % n, "iris-v1", "v2", v2(n), None, 0.0)
    assert len(store._evicted) == 2
    assert store.get(b"r7") == "expired"
    assert store.get(b"r5") == "unknown"  # evicted too long ago to be told from one never served


def test_the_store_keeps_its_byte_bound_and_does_not_keep_large_answers() -> None:
    store = PredictionStore(capacity=1000, max_bytes=100, max_body=60)
    store.put(b"big", "iris-v1", "v2", b"x" * 61, None, 0.0)
    assert store.get(b"big") == "unknown"
    for n in range(4):
        store.put(b"r%d" % n, "iris-v1", "v2", b"y" * 40, None, 0.0)
    assert len(store) == 2
    assert store.bytes == 80
    assert store.get(b"r1") == "expired"
    assert MAX_BODY == 16 * 1024


def test_a_reused_client_id_points_at_its_newest_answer_and_a_labelled_one_drops_its_body() -> None:
    store = PredictionStore(capacity=3)
    store.put(b"a", "iris-v1", "v2", v2(0), None, 0.0)
    store.put(b"b", "iris-v1", "v2", v2(1), None, 1.0)
    store.put(b"a", "iris-v2", "v2", v2(2), None, 2.0)
    assert store.get(b"a") == ("iris-v2", "v2", v2(2), None, 2.0)
    store.labelled(b"a")
    assert store.get(b"a") == "duplicate"
    assert store.bytes == len(v2(1))
    store.put(b"c", "iris-v1", "v2", v2(3), None, 3.0)
    store.put(b"d", "iris-v1", "v2", v2(4), None, 4.0)
    assert store.get(b"b") == "expired"  # b is now the oldest: the re-used a moved to the end
    assert store.get(b"a") == "duplicate"
    store.resize(1)
    assert len(store) == 1
    assert store.get(b"d")[0] == "iris-v1"  # type: ignore[index]


@pytest.mark.parametrize(
    ("prediction", "truth", "correct", "error"),
    [
        (1, 1, True, 0.0),
        (1, 1.0, True, 0.0),
        (2, 0, False, 2.0),
        (0.25, 1, False, 0.75),
        ("setosa", "setosa", True, None),
        ("1", 1, False, None),
        (True, True, True, None),
        (True, 1, False, None),  # as JSON values: true is not 1
        (float("nan"), 1, False, None),
    ],
)
def test_scores_compare_json_values_and_measure_errors_between_numbers(
    prediction: Any, truth: Any, correct: bool, error: float | None
) -> None:
    assert score(prediction, truth) == (correct, error)


# -- joins ----------------------------------------------------------------------------------------------


def test_labels_join_the_served_predictions_per_version(feedback: Feedback, clock: Clock) -> None:
    feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    feedback.remember(b"b", "iris-v1", "v2", v2(2), None)
    feedback.remember(b"c", "iris-v2", "v1", b'{"predictions": [[1.5], [3.0]]}', None)
    assert answer(feedback.answer(label({"id": "a", "label": 0}))) == (
        200,
        {"id": "a", "version": "iris-v1", "labels": 1, "correct": 1},
    )
    assert answer(feedback.answer(label({"id": "b", "label": [1]})))[1]["correct"] == 0
    assert answer(feedback.answer(label({"id": "c", "label": [[1.0], [3.0]]})))[1]["labels"] == 2
    clock.now += 2.5
    shown = feedback.snapshot()
    assert shown["enabled"] is True
    assert shown["instance"] == "0123456789ab"
    assert shown["cursor"] == 4
    assert shown["predictions"] == {
        "count": 3,
        "limit": 10_000,
        "bytes": 0,  # all three are labelled: only their places are kept
        "oldestSeconds": 2.5,
    }
    assert shown["versions"]["iris-v1"] == {
        "labels": 2,
        "correct": 1,
        "accuracy": 0.5,
        "numericLabels": 2,
        "absoluteError": 1.0,
        "meanAbsoluteError": 0.5,
        "pairs": [{"seq": 1, "prediction": 0, "label": 0}, {"seq": 2, "prediction": 2, "label": 1}],
    }
    canary = shown["versions"]["iris-v2"]
    assert (canary["labels"], canary["correct"], canary["accuracy"]) == (2, 1, 0.5)
    assert canary["meanAbsoluteError"] == 0.25
    assert [pair["seq"] for pair in feedback.snapshot(after=2)["versions"]["iris-v2"]["pairs"]] == [3, 4]
    assert feedback.snapshot(after=4)["versions"]["iris-v1"]["pairs"] == []
    # a cursor from before a restart (past this router's cursor) reads everything
    assert len(feedback.snapshot(after=99)["versions"]["iris-v1"]["pairs"]) == 2
    assert outcomes(feedback) == {"joined": 3}
    metrics = feedback.metrics
    assert metrics.labels.labels("iris", "iris-v1").value == 2
    assert metrics.correct.labels("iris", "iris-v1").value == 1
    assert metrics.numeric_labels.labels("iris", "iris-v2").value == 2
    assert metrics.absolute_error.labels("iris", "iris-v2").value == 0.5


def test_the_id_may_come_in_the_header_the_router_put_on_its_answer(feedback: Feedback) -> None:
    feedback.remember(b"0123456789ab-7", "iris-v1", "v2", v2("setosa"), None)
    request = label({"label": "setosa"}, X_Modelfleet_Request_Id="0123456789ab-7")
    assert answer(feedback.answer(request))[1] == {
        "id": "0123456789ab-7",
        "version": "iris-v1",
        "labels": 1,
        "correct": 1,
    }
    both = label({"id": "other", "label": 1}, X_Modelfleet_Request_Id="0123456789ab-7")
    assert answer(feedback.answer(both)) == (
        400,
        {"error": '"id" and the X-Modelfleet-Request-Id header name different requests'},
    )


def test_the_first_label_wins_and_a_second_is_refused_and_counted(feedback: Feedback) -> None:
    feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    assert feedback.answer(label({"id": "a", "label": 0})).status == 200
    assert answer(feedback.answer(label({"id": "a", "label": 1}))) == (
        409,
        {"error": "a label for id 'a' was already joined; the first one counts"},
    )
    assert feedback.snapshot()["versions"]["iris-v1"]["correct"] == 1
    assert outcomes(feedback) == {"joined": 1, "duplicate": 1}


def test_late_and_unknown_labels_are_refused_and_counted_apart(token_file: Path, clock: Clock) -> None:
    feedback = Feedback(RouterMetrics(), "t", clock)
    feedback.configure(config(token_file, maxPredictions=2))
    for n in range(3):
        feedback.remember(b"r%d" % n, "iris-v1", "v2", v2(n), None)
    assert answer(feedback.answer(label({"id": "r0", "label": 0}))) == (
        410,
        {
            "error": "the prediction for id 'r0' is no longer kept: this router remembers its newest 2 "
            "predictions"
        },
    )
    status, body = answer(feedback.answer(label({"id": "nobody", "label": 0})))
    assert status == 404
    assert body["error"].startswith("no prediction with id 'nobody' was served by this router")
    assert outcomes(feedback) == {"expired": 1, "unknown": 1}
    assert feedback.snapshot()["versions"] == {}


def test_a_label_for_a_version_that_left_the_configuration_is_late(
    feedback: Feedback, token_file: Path
) -> None:
    feedback.remember(b"a", "iris-v2", "v2", v2(1), None)
    feedback.remember(b"b", "iris-v1", "v2", v2(1), None)
    assert feedback.answer(label({"id": "b", "label": 1})).status == 200
    feedback.configure(config(token_file, "iris-v2"))  # iris-v1 is gone, its counts with it
    assert feedback.snapshot()["versions"] == {}
    feedback.configure(config(token_file, "iris-v3"))
    assert answer(feedback.answer(label({"id": "a", "label": 1}))) == (
        410,
        {"error": "version iris-v2, which answered id 'a', is no longer deployed"},
    )


@pytest.mark.parametrize(
    ("served", "sent", "message"),
    [
        (v2(0, 2), 0, "holds 2 predicted values, the feedback 1 label: send a list of 2 labels"),
        (v2(0), [0, 1], "holds 1 predicted value, the feedback 2 labels: send one label"),
        (b'{"outputs": []}', 0, "holds no prediction the router can read"),
        (b"not json at all", 0, "holds no prediction the router can read"),
    ],
)
def test_labels_that_do_not_fit_the_answer_are_refused_and_may_be_sent_again(
    feedback: Feedback, served: bytes, sent: Any, message: str
) -> None:
    feedback.remember(b"a", "iris-v1", "v2", served, None)
    status, body = answer(feedback.answer(label({"id": "a", "label": sent})))
    assert status == 422
    assert message in body["error"]
    assert outcomes(feedback) == {"mismatch": 1}
    if served == v2(0, 2):
        assert feedback.answer(label({"id": "a", "label": [0, 2]})).status == 200  # not taken as a duplicate


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "feedback body is not valid JSON"),
        (b"\xff\xfe", 400, "feedback body is not valid JSON"),
        (b'{"id": "a", "label": NaN}', 400, "NaN is not a label"),
        (b'{"id": "a", "label": 1e999}', 400, "not a non-finite number"),
        (b"[1, 2]", 400, 'must be a JSON object {"id": ..., "label": ...}'),
        (b'{"label": 1}', 400, 'name the request: "id" in the body'),
        (b'{"id": 7, "label": 1}', 400, '"id" must be a string, got int'),
        (b'{"id": "two words", "label": 1}', 400, "the id is not one the router gives"),
        (b'{"id": "a"}', 400, 'missing "label"'),
        (b'{"id": "a", "label": null}', 400, '"label" must be a value or a list of values'),
        (b'{"id": "a", "label": {"class": 1}}', 400, '"label" must be a value or a list of values'),
        (b'{"id": "a", "label": []}', 400, '"label" is an empty list'),
        (b'{"id": "a", "label": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, ""),
        (json.dumps({"id": "a", "label": list(range(1001))}).encode(), 400, "more than 1000 values"),
        (json.dumps({"id": "a", "label": "x" * 1025}).encode(), 400, "over 1024 characters"),
        (b" " * (64 * 1024 + 1), 413, "feedback body over the limit of 65536 bytes"),
    ],
)
def test_malformed_feedback_is_a_clear_4xx_and_counted(
    feedback: Feedback, body: bytes, status: int, message: str
) -> None:
    feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    response = feedback.answer(label(body))
    assert response.status == status
    assert message in json.loads(response.body)["error"]
    assert outcomes(feedback) == {"invalid": 1}
    assert feedback.answer(label({"id": "a", "label": 0})).status == 200  # the answer is still there


# -- who may send labels --------------------------------------------------------------------------------


def test_without_feedback_in_the_configuration_the_endpoint_is_404(tmp_path: Path) -> None:
    feedback = Feedback(RouterMetrics(), "t")
    feedback.configure(config(None))
    feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    assert feedback.store is None  # nothing is remembered
    assert answer(feedback.answer(label({"id": "a", "label": 0}))) == (
        404,
        {"error": "feedback is not enabled for this deployment (it has no spec.feedback)"},
    )
    assert outcomes(feedback) == {"disabled": 1}
    assert feedback.snapshot() == {
        "enabled": False,
        "instance": "t",
        "cursor": 0,
        "predictions": None,
        "versions": {},
    }


@pytest.mark.parametrize(
    ("authorization", "status", "outcome"),
    [
        (None, 401, "unauthorized"),
        ("Bearer", 401, "unauthorized"),
        ("Bearer   ", 401, "unauthorized"),
        (f"Basic {TOKEN}", 401, "unauthorized"),
        ("Bearer wrong-token", 403, "forbidden"),
        (f"Bearer {TOKEN}x", 403, "forbidden"),
        (f"bearer {TOKEN}", 200, "joined"),
        (f"Bearer  {TOKEN} ", 200, "joined"),
    ],
)
def test_labels_need_the_deployments_bearer_token(
    feedback: Feedback, authorization: str | None, status: int, outcome: str
) -> None:
    feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = feedback.answer(label({"id": "a", "label": 0}, token=None, **headers))
    assert response.status == status
    assert outcomes(feedback) == {outcome: 1}
    if status == 401:
        assert b'www-authenticate: Bearer realm="modelfleet-feedback"' in response.headers
        assert json.loads(response.body)["error"].startswith("feedback needs Authorization: Bearer <token>")
    if status != 200:
        assert feedback.snapshot()["versions"] == {}


def test_other_methods_are_refused(feedback: Feedback) -> None:
    response = feedback.answer(label({"id": "a", "label": 0}, method=b"GET"))
    assert (response.status, b"allow: POST" in response.headers) == (405, True)


def test_a_missing_or_empty_token_file_accepts_no_label_and_a_rotated_token_applies_within_a_second(
    feedback: Feedback, token_file: Path, clock: Clock
) -> None:
    feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    assert feedback.answer(label({"id": "nobody", "label": 0})).status == 404  # the token was read
    token_file.write_text("rotated\n")
    assert feedback.answer(label({"id": "a", "label": 0}, token="rotated")).status == 403  # read a moment ago
    clock.now += 1.0
    assert feedback.answer(label({"id": "a", "label": 0}, token=TOKEN)).status == 403
    token_file.write_text("   \n")
    clock.now += 1.0
    assert answer(feedback.answer(label({"id": "a", "label": 0}, token="rotated"))) == (
        503,
        {"error": "the router cannot read its feedback token; try again later"},
    )
    token_file.unlink()
    clock.now += 1.0
    assert feedback.answer(label({"id": "a", "label": 0}, token="rotated")).status == 503
    token_file.write_text("rotated")
    clock.now += 1.0
    assert feedback.answer(label({"id": "a", "label": 0}, token="rotated")).status == 200
    assert outcomes(feedback) == {"unknown": 1, "forbidden": 2, "unavailable": 2, "joined": 1}


def test_the_token_file_is_read_at_most_once_a_second(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    token = TokenFile(str(path), clock)
    first = token.digest()
    path.write_text("two")
    clock.now += 0.9
    assert token.digest() == first
    clock.now += 0.1
    assert token.digest() not in (first, None)


# -- through the router and its admin port ----------------------------------------------------------------


def test_the_router_serves_the_endpoint_and_the_admin_port_the_joins(token_file: Path) -> None:
    router = Router()
    admin = admin_handler(router, lambda: True)
    not_ready = router.handle(label({"id": "a", "label": 0}))
    assert not_ready is not None
    assert not_ready.status == 503
    router.apply(config(token_file))
    router.feedback.remember(b"a", "iris-v1", "v2", v2(0), None)
    for path in (b"/v2/models/iris/feedback", b"/v2/models/iris/versions/2/feedback?x=1"):
        request = label({"id": "a", "label": 0})
        request.path = path
        response = router.handle(request)
        assert response is not None
        assert b"x-modelfleet-served-by: router\r\n" in response.headers
        assert b"x-modelfleet-request-id" not in response.headers  # a label is no inference request
    shown = admin(Request(b"GET", b"/feedback?after=0", [], b""))
    assert answer(shown)[1]["versions"]["iris-v1"]["labels"] == 1
    assert (
        answer(admin(Request(b"GET", b"/feedback?after=1", [], b"")))[1]["versions"]["iris-v1"]["pairs"] == []
    )
    assert answer(admin(Request(b"GET", b"/feedback?after=-1", [], b""))) == (
        400,
        {"error": "after must be a sequence number: /feedback?after=<cursor>"},
    )
    text = router.metrics.render().decode()
    assert 'modelfleet_router_feedback_total{deployment="iris",outcome="joined"} 1' in text
    assert 'modelfleet_router_feedback_total{deployment="iris",outcome="duplicate"} 1' in text
    assert 'modelfleet_feedback_correct_total{deployment="iris",version="iris-v1"} 1' in text
