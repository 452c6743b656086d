"""The feedback client of tests/support (the e2e tests'): labels for a Load's answers, sent to a small
router on 127.0.0.1 that answers inference with request ids and joins labels as the real one does."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from support.feedback import Feedback, send_label
from support.load import Answer, Load

TOKEN = "s3cret-token"


class Router:
    """Inference: 200 with `X-Modelfleet-Request-Id: r<n>` from iris-v1 (a body `fail`: 503, `anon`: no
    id). Feedback: the Bearer token checked, the label joined once per id (409 after), 404 for an id
    it never gave; `predicted` is what it "answered": the body's text."""

    def __init__(self) -> None:
        self.given: dict[str, str] = {}
        self.labels: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        counter = itertools.count(1)
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/infer"):
                    self._infer(body)
                elif self.path == "/v2/models/iris/feedback":
                    self._feedback(body)
                else:
                    self._send(404, {"error": "no such path"})

            def _infer(self, body: bytes) -> None:
                if body == b"fail":
                    self._send(503, {"error": "down"}, {"X-Modelfleet-Request-Id": f"r{next(counter)}"})
                    return
                headers = {"X-Modelfleet-Served-By": "iris-v1"}
                if body != b"anon":
                    request_id = f"r{next(counter)}"
                    router.given[request_id] = body.decode()
                    headers["X-Modelfleet-Request-Id"] = request_id
                self._send(200, {"outputs": []}, headers)

            def _feedback(self, body: bytes) -> None:
                authorization = self.headers.get("Authorization", "")
                router.tokens.append(authorization)
                if authorization != f"Bearer {TOKEN}":
                    self._send(403, {"error": "this token is not the feedback token"})
                    return
                document = json.loads(body)
                router.labels.append(document)
                predicted = router.given.pop(document["id"], None)
                if predicted is None:
                    self._send(404, {"error": f"no answer with id {document['id']}"})
                    return
                correct = int(document["label"] == predicted)
                self._send(200, {"id": document["id"], "version": "iris-v1", "labels": 1, "correct": correct})

            def _send(self, code: int, value: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(value).encode()
                self.send_response(code)
                for name, text in {"Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(name, text)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def router() -> Iterator[Router]:
    server = Router()
    yield server
    server.close()


def text_of(answer: Answer) -> str:
    return answer.body.decode()


def wait_for(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_send_label_posts_the_id_and_label_with_the_bearer_token(router: Router) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=5)
    conn.request("POST", "/v2/models/iris/infer", body=b"setosa")
    answer = conn.getresponse()
    answer.read()
    request_id = answer.getheader("X-Modelfleet-Request-Id", "")
    assert send_label(conn, TOKEN, request_id, "setosa") == (
        200,
        {"id": request_id, "version": "iris-v1", "labels": 1, "correct": 1},
    )
    assert router.labels == [{"id": request_id, "label": "setosa"}]
    assert router.tokens == [f"Bearer {TOKEN}"]
    status, document = send_label(conn, "another", request_id, "setosa")
    assert status == 403
    assert "not the feedback token" in document["error"]
    conn.close()


def test_every_successful_answer_with_an_id_gets_its_true_label(router: Router) -> None:
    load = Load("127.0.0.1", router.port, rate=60, clients=2, bodies=(b"a", b"b", b"fail", b"anon"))
    # the truth: "a" is right, "b" is labelled "c", so the "model" is wrong on it
    feedback = Feedback(load, TOKEN, lambda answer: {"a": "a", "b": "c"}.get(text_of(answer)))
    with load, feedback:
        wait_for(lambda: len(feedback.labels) >= 6)
    labelled = feedback.snapshot()
    assert len(labelled) >= 6
    assert {label.code for label in labelled} == {200}
    assert all(label.served_by == "iris-v1" and label.version == "iris-v1" for label in labelled)
    # only the answers that were 200 and had an id, each once, with the label its body calls for
    ids = [label.request_id for label in labelled]
    assert len(set(ids)) == len(ids)
    sent = {doc["id"]: doc["label"] for doc in router.labels}
    bodies = {a.request_id: text_of(a) for a in load.snapshot() if a.request_id}
    assert set(sent) <= set(bodies)
    assert {bodies[i] for i in sent} <= {"a", "b"}
    assert all(sent[i] == {"a": "a", "b": "c"}[bodies[i]] for i in sent)
    joined = feedback.joined()
    right = sum(1 for i in sent if bodies[i] == "a")
    assert joined == {"iris-v1": (len(sent), right)}
    assert feedback.codes() == {200: len(labelled)}


def test_every_nth_answer_and_refusals_are_recorded(router: Router) -> None:
    load = Load("127.0.0.1", router.port, rate=60, clients=1, bodies=(b"a",))
    feedback = Feedback(load, "wrong-token", lambda answer: "a", every=3)
    with load, feedback:
        wait_for(lambda: len(feedback.labels) >= 3)
        time.sleep(0.1)
    labelled = feedback.snapshot()
    answers = [a for a in load.snapshot() if a.ok]
    assert labelled
    assert {label.code for label in labelled} == {403}
    assert {label.detail for label in labelled} == {"this token is not the feedback token"}
    assert feedback.joined() == {}
    # labels for answers 1, 4, 7, ... of those seen so far
    assert [label.request_id for label in labelled] == [a.request_id for a in answers[::3]][: len(labelled)]


def test_wait_joined_says_what_the_router_answered(router: Router) -> None:
    load = Load("127.0.0.1", router.port, rate=40, clients=1, bodies=(b"a",))
    feedback = Feedback(load, TOKEN, lambda answer: "a")
    with load, feedback:
        feedback.wait_joined("iris-v1", 3, timeout=10)
        with pytest.raises(TimeoutError, match=r"fewer than 5 labels with iris-v2 within 0s .*200: "):
            feedback.wait_joined("iris-v2", 5, timeout=0.3)


def test_a_router_that_is_gone_is_code_0_and_every_below_1_is_refused() -> None:
    load = Load("127.0.0.1", 1)
    load.answers[:] = [Answer(sent=1.0, time=1.1, code=200, served_by="iris-v1", request_id="r1")]
    feedback = Feedback(load, TOKEN, lambda answer: 0, timeout=2)
    with feedback:
        wait_for(lambda: feedback.labels)
    [label] = feedback.snapshot()
    assert (label.code, label.request_id, label.served_by) == (0, "r1", "iris-v1")
    assert label.detail.startswith("ConnectionRefusedError")
    with pytest.raises(ValueError, match="every must be at least 1"):
        Feedback(load, TOKEN, lambda answer: 0, every=0).start()
