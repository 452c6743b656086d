"""Clients' traffic to a router: Open Inference Protocol v2 requests from this host, every answer recorded.

Used by the e2e tests (tests/e2e/helpers.py) and the demo: `clients` keep-alive connections send at
`rate` requests per second in all (each at rate/clients, so that one slow answer does not stall the
load), until stopped or for at most `limit` seconds. Every answer is recorded with its code,
X-Modelfleet-Served-By, X-Modelfleet-Fallback and X-Modelfleet-Request-Id (the id a label names, see
support/feedback.py), the body it answered, when it was sent and when it came; a connection that fails is
recorded as code 0 with what went wrong. `set_bodies` changes what the clients send while they run (the
inputs shift, and come back).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

IRIS_REQUEST = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [6.1, 2.8, 4.7, 1.2]}]}
).encode()


@dataclass(frozen=True)
class Answer:
    """One request as the client saw it. Times are the Load's clock (time.time() unless told)."""

    sent: float
    """When the request was sent."""
    time: float
    """When the answer (or the error) came."""
    code: int
    """The HTTP status; 0 when the connection failed."""
    served_by: str = ""
    fallback: str = ""
    detail: str = ""
    """What went wrong, for code 0."""
    request_id: str = ""
    """X-Modelfleet-Request-Id: the id the router gave the request, which a label names."""
    body: bytes = field(default=b"", repr=False)
    """The request body sent (one of the Load's bodies, the same object: nothing is copied)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def describe(self) -> str:
        """`200 iris-v1`, `503 iris-v2`, `0 error: ConnectionRefusedError: ...`."""
        return f"{self.code} {f'error: {self.detail}' if self.code == 0 else self.served_by}"


@dataclass
class Load:
    """Requests to http://host:port`path`, the bodies taken in turn, at `rate` per second (0: paused)."""

    host: str
    port: int = 80
    rate: float = 40.0
    limit: float = 300.0
    clients: int = 4
    bodies: Sequence[bytes] = (IRIS_REQUEST,)
    path: str = "/v2/models/iris/infer"
    clock: Callable[[], float] = time.time
    """The clock of the answers' times: time.time() (the tests') or time.monotonic() (the demo's)."""
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bodies_lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the bodies change, and while a client takes its body and its sending time."""

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._client, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    def set_bodies(self, bodies: Sequence[bytes]) -> float:
        """Send `bodies` from now on, in turn, instead of the current ones; when (the Load's clock). The
        requests sent (`Answer.sent`) before that time carry the old bodies, those sent at it or later
        the new ones; a request already on its way keeps the body it was sent with."""
        if not bodies:
            raise ValueError("a Load needs at least one body to send")
        with self._bodies_lock:
            self.bodies = tuple(bodies)
            return self.clock()

    def _client(self, index: int) -> None:
        started = time.monotonic()
        # the clients take turns: client i sends i/clients of a period after client 0
        next_at = started + (index / self.rate if self.rate > 0 else 0.0)
        conn: http.client.HTTPConnection | None = None
        sent = 0
        while not self._stop.is_set() and time.monotonic() - started < self.limit:
            if self.rate <= 0:
                self._stop.wait(0.05)
                next_at = time.monotonic()
                continue
            next_at += self.clients / self.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break
            else:
                next_at = time.monotonic()
            with self._bodies_lock:  # a body and a time on the same side of a set_bodies
                body = self.bodies[(sent * self.clients + index) % len(self.bodies)]
                sent_at = self.clock()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                sent += 1
                response = conn.getresponse()
                response.read()
                answer = Answer(
                    sent_at,
                    self.clock(),
                    response.status,
                    response.getheader("X-Modelfleet-Served-By", ""),
                    response.getheader("X-Modelfleet-Fallback", ""),
                    request_id=response.getheader("X-Modelfleet-Request-Id", ""),
                    body=body,
                )
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as error:
                answer = Answer(
                    sent_at, self.clock(), 0, detail=f"{type(error).__name__}: {error}", body=body
                )
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.answers.append(answer)
        if conn is not None:
            conn.close()

    # what clients saw

    def snapshot(self) -> list[Answer]:
        """Every answer so far, in the order they came."""
        with self._lock:
            return list(self.answers)

    def between(self, start: float, end: float = float("inf")) -> list[Answer]:
        """The answers to the requests sent in [start, end): a request belongs to the moment it was sent (a
        connection that hung since before the router was ready is not an error of what came after)."""
        return [a for a in self.snapshot() if start <= a.sent < end]

    def codes(self, since: float = 0.0) -> Counter[int]:
        """Status codes of the answers that came at `since` or later."""
        return Counter(a.code for a in self.snapshot() if a.time >= since)

    def served_by(self, since: float = 0.0) -> Counter[str]:
        """Versions that served the answers that came at `since` or later ("" for errors without one)."""
        return Counter(a.served_by for a in self.snapshot() if a.time >= since)

    def errors(self, since: float = 0.0) -> list[Answer]:
        """Answers that came at `since` or later and were not 2xx (code 0: no answer)."""
        return [a for a in self.snapshot() if a.time >= since and not a.ok]

    def wait_serving(self, version: str, timeout: float) -> Answer:
        """Wait for 10 answers in a row with 200 from `version`; the first of them. TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = self.snapshot()[-10:]
            if len(recent) == 10 and all(a.code == 200 and a.served_by == version for a in recent):
                return recent[0]
            time.sleep(0.2)
        codes = dict(self.codes())
        raise TimeoutError(
            f"the router did not answer from {version} within {timeout:.0f}s (codes seen: {codes})"
        )
