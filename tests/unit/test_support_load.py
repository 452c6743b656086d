"""The load generator of tests/support (the e2e tests' and the demo's) against a small HTTP server on
127.0.0.1: what it records of every answer, its rate, its errors, the bodies it sends (and changes while
it runs), and that it stops."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.load import IRIS_REQUEST, Answer, Load

Reply = tuple[int, dict[str, str]]


class Router:
    """Answers every POST with what `reply(body)` says (code and headers) and keeps the bodies."""

    def __init__(self, reply: Callable[[bytes], Reply]) -> None:
        self.bodies: list[bytes] = []
        self.paths: set[str] = set()
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the router's

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                router.bodies.append(body)
                router.paths.add(self.path)
                code, headers = reply(body)
                self.send_response(code)
                for name, value in {"Content-Length": "2", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def served_by(version: str, **headers: str) -> Callable[[bytes], Reply]:
    return lambda body: (200, {"X-Modelfleet-Served-By": version, **headers})


@pytest.fixture
def router() -> Iterator[Router]:
    server = Router(
        lambda body: (
            (503, {"X-Modelfleet-Served-By": "iris-v2"})
            if body == b"bad"
            else (200, {"X-Modelfleet-Served-By": "iris-v1", "X-Modelfleet-Fallback": "timeout"})
        )
    )
    yield server
    server.close()


def run_for(load: Load, seconds: float) -> None:
    with load:
        time.sleep(seconds)


def test_every_answer_is_recorded_with_its_code_headers_and_times(router: Router) -> None:
    load = Load("127.0.0.1", router.port, rate=40, clients=2, bodies=(b"a", b"b", b"bad"))
    before = time.time()
    run_for(load, 0.8)
    answers = load.snapshot()
    assert len(answers) >= 3
    assert all(before <= a.sent <= a.time <= time.time() for a in answers)
    good = [a for a in answers if a.code == 200]
    bad = [a for a in answers if a.code == 503]
    assert good
    assert bad
    assert {(a.served_by, a.fallback, a.detail) for a in good} == {("iris-v1", "timeout", "")}
    assert {(a.served_by, a.fallback) for a in bad} == {("iris-v2", "")}
    assert set(router.bodies) == {b"a", b"b", b"bad"}  # the bodies are taken in turn
    assert router.paths == {"/v2/models/iris/infer"}
    assert load.codes() == {200: len(good), 503: len(bad)}
    assert load.served_by() == {"iris-v1": len(good), "iris-v2": len(bad)}
    assert load.errors() == bad
    assert [a.describe() for a in bad[:1]] == ["503 iris-v2"]


def test_the_rate_is_kept_and_never_run_ahead_of(router: Router) -> None:
    load = Load("127.0.0.1", router.port, rate=50, clients=4)
    started = time.monotonic()
    run_for(load, 1.0)
    elapsed = time.monotonic() - started
    sent = len(load.answers)
    assert sent <= 50 * elapsed + 4  # paced: at most one request per client per period, no bursts
    assert sent >= 10  # roughly 50 on an idle machine; the bound only says that it sends steadily


def test_a_rate_of_zero_pauses_the_load_and_set_rate_resumes_it(router: Router) -> None:
    with Load("127.0.0.1", router.port, rate=0, clients=2) as load:
        time.sleep(0.3)
        assert load.answers == []
        load.set_rate(40)
        deadline = time.monotonic() + 10
        while not load.answers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert load.answers


def test_a_refused_connection_is_recorded_as_code_0_with_what_went_wrong() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    load = Load("127.0.0.1", port, rate=20, clients=1)
    run_for(load, 0.3)
    assert load.answers
    first = load.answers[0]
    assert (first.code, first.served_by, first.fallback, first.request_id) == (0, "", "", "")
    assert first.body == IRIS_REQUEST  # what it tried to send
    assert first.detail.startswith("ConnectionRefusedError: ")
    assert first.describe().startswith("0 error: ConnectionRefusedError: ")
    assert not first.ok
    assert load.errors() == load.answers
    assert load.codes() == {0: len(load.answers)}


def test_stop_stops_every_client_and_the_limit_stops_them_too(router: Router) -> None:
    load = Load("127.0.0.1", router.port, rate=40, clients=3)
    run_for(load, 0.3)
    assert not any(thread.is_alive() for thread in load._threads)
    count = len(load.answers)
    time.sleep(0.2)
    assert len(load.answers) == count

    limited = Load("127.0.0.1", router.port, rate=40, clients=2, limit=0.3)
    limited.start()
    for thread in limited._threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in limited._threads)
    limited.stop()


def test_between_takes_requests_by_when_they_were_sent_the_counters_by_when_they_came() -> None:
    load = Load("127.0.0.1", 1)
    load.answers[:] = [
        Answer(sent=1.0, time=1.5, code=200, served_by="iris-v1"),
        Answer(sent=2.0, time=4.0, code=0, detail="TimeoutError: timed out"),
        Answer(sent=3.0, time=3.1, code=200, served_by="iris-v2", fallback="error"),
    ]
    assert [a.sent for a in load.between(2.0)] == [2.0, 3.0]
    assert [a.sent for a in load.between(1.0, 3.0)] == [1.0, 2.0]
    assert load.codes(since=3.0) == {0: 1, 200: 1}
    assert load.served_by(since=3.5) == {"": 1}
    assert [a.sent for a in load.errors(since=1.0)] == [2.0]


def test_wait_serving_gives_the_first_of_ten_answers_in_a_row_from_the_version() -> None:
    router = Router(served_by("iris-v1"))
    try:
        with Load("127.0.0.1", router.port, rate=100, clients=2) as load:
            first = load.wait_serving("iris-v1", timeout=20)
            assert first.served_by == "iris-v1"
            assert first in load.answers
            with pytest.raises(
                TimeoutError, match=r"did not answer from iris-v2 within 0s \(codes seen: \{200: "
            ):
                load.wait_serving("iris-v2", timeout=0.3)
    finally:
        router.close()


def test_each_answer_keeps_its_request_id_and_the_body_it_answered() -> None:
    numbered = Router(lambda body: (200, {"X-Modelfleet-Request-Id": f"id-{body.decode()}"}))
    try:
        with Load("127.0.0.1", numbered.port, rate=40, clients=2, bodies=(b"a", b"b")) as load:
            deadline = time.monotonic() + 10
            while len(load.answers) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
        answers = load.snapshot()
    finally:
        numbered.close()
    assert len(answers) >= 4
    assert {(a.request_id, a.body) for a in answers} == {("id-a", b"a"), ("id-b", b"b")}
    assert "body" not in repr(answers[0])  # assertion messages stay readable


def test_set_bodies_changes_what_is_sent_from_the_moment_it_returns(router: Router) -> None:
    with Load("127.0.0.1", router.port, rate=60, clients=3, bodies=(b"normal",)) as load:
        time.sleep(0.3)
        shifted_at = load.set_bodies([b"shifted-1", b"shifted-2"])
        time.sleep(0.4)
        back_at = load.set_bodies((b"normal",))
        time.sleep(0.3)
    answers = load.snapshot()
    before = {a.body for a in answers if a.sent < shifted_at}
    during = {a.body for a in answers if shifted_at <= a.sent < back_at}
    after = {a.body for a in answers if a.sent >= back_at}
    assert before == {b"normal"}
    assert during == {b"shifted-1", b"shifted-2"}  # taken in turn, as at the start
    assert after == {b"normal"}
    assert {b"shifted-1", b"shifted-2", b"normal"} <= set(router.bodies)
    with pytest.raises(ValueError, match="at least one body"):
        load.set_bodies([])


def test_a_connection_the_server_closes_is_opened_again() -> None:
    router = Router(served_by("iris-v1", Connection="close"))
    try:
        run_for(Load("127.0.0.1", router.port, rate=40, clients=1), 0.5)
        assert len(router.bodies) >= 2
    finally:
        router.close()
