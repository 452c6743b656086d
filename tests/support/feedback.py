"""Ground truth from clients: the true labels of the answers a `Load` got, sent to the router's feedback
endpoint, as an application that learns the truth later would send them.

`send_label(conn, token, request_id, label)` sends one label: `POST /v2/models/<model>/feedback` with
`Authorization: Bearer <token>` and `{"id": <the answer's X-Modelfleet-Request-Id>, "label": <the true
value, or a list of one per predicted value>}`, and gives what the router answered as a `Label`
(docs/router.md, "Ground truth (feedback)").

`Feedback(load, token, truth)` does that from a background thread for the answers of `load` as they come,
over one keep-alive connection to the load's host and port: for every `every`-th successful answer with a
request id for which `truth(answer)` is not None (the true labels of the body it answered, e.g.
`support.iris_data.truth`). Each router joins only the labels of the answers it gave itself: with one
router replica (the Deployment's default) every label reaches the router that served it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from support.load import Answer, Load


@dataclass(frozen=True)
class Label:
    """One label as the client saw its answer. `time` is the Load's clock."""

    time: float
    """When the router's answer (or the error) came."""
    request_id: str
    """The id of the answer the label is for."""
    served_by: str
    """The version that gave that answer (its X-Modelfleet-Served-By)."""
    code: int
    """The router's status: 200 joined, 404 unknown or disabled, 409 duplicate, ...; 0 no answer."""
    version: str = ""
    """The version the router joined the label with (200 only)."""
    labels: int = 0
    """Values joined (200 only)."""
    correct: int = 0
    """Of those, the ones equal to the prediction (200 only)."""
    detail: str = ""
    """The router's error text, or what went wrong for code 0."""


def send_label(
    conn: http.client.HTTPConnection, token: str, request_id: str, label: Any, *, model: str = "iris"
) -> tuple[int, dict[str, Any]]:
    """POST one label on `conn`; the router's status and JSON answer ({} when it is not JSON).
    OSError and http.client.HTTPException when the connection fails."""
    body = json.dumps({"id": request_id, "label": label}).encode()
    conn.request(
        "POST",
        f"/v2/models/{model}/feedback",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    response = conn.getresponse()
    text = response.read()
    if response.getheader("Connection", "").lower() == "close":
        conn.close()
    try:
        document = json.loads(text)
    except ValueError:
        document = {}
    return response.status, document if isinstance(document, dict) else {}


@dataclass
class Feedback:
    """Labels for `load`'s answers, sent from a background thread until stopped."""

    load: Load
    token: str
    truth: Callable[[Answer], Any]
    """The true label(s) of an answer, or None for an answer not to label."""
    model: str = "iris"
    every: int = 1
    """Label every n-th answer that can be labelled (1: all)."""
    timeout: float = 10.0
    labels: list[Label] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Feedback:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be at least 1, got {self.every}")
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        seen = 0
        candidates = 0
        while not self._stop.is_set():
            answers = self.load.snapshot()
            fresh, seen = answers[seen:], len(answers)
            for answer in fresh:
                if self._stop.is_set():
                    break
                if not answer.ok or not answer.request_id:
                    continue
                label = self.truth(answer)
                if label is None:
                    continue
                candidates += 1
                if (candidates - 1) % self.every:
                    continue
                if conn is None:  # a closed connection opens again by itself on the next request
                    conn = http.client.HTTPConnection(self.load.host, self.load.port, timeout=self.timeout)
                result = self._send(conn, answer, label)
                if result.code == 0:
                    conn.close()
                    conn = None
                with self._lock:
                    self.labels.append(result)
            if not fresh:
                self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def _send(self, conn: http.client.HTTPConnection, answer: Answer, label: Any) -> Label:
        clock = self.load.clock
        try:
            code, document = send_label(conn, self.token, answer.request_id, label, model=self.model)
        except (OSError, http.client.HTTPException) as error:
            return Label(
                clock(), answer.request_id, answer.served_by, 0, detail=f"{type(error).__name__}: {error}"
            )
        if code != 200:
            detail = str(document.get("error", ""))[:200]
            return Label(clock(), answer.request_id, answer.served_by, code, detail=detail)
        return Label(
            clock(),
            answer.request_id,
            answer.served_by,
            code,
            version=str(document.get("version", "")),
            labels=int(document.get("labels", 0)),
            correct=int(document.get("correct", 0)),
        )

    # what the client saw

    def snapshot(self) -> list[Label]:
        with self._lock:
            return list(self.labels)

    def codes(self, since: float = 0.0) -> Counter[int]:
        """The router's answers to the labels, by status, among those that came at `since` or later."""
        return Counter(label.code for label in self.snapshot() if label.time >= since)

    def joined(self, since: float = 0.0) -> dict[str, tuple[int, int]]:
        """Per version the router joined labels with: (values joined, of them correct), among the
        answers that came at `since` or later."""
        out: dict[str, tuple[int, int]] = {}
        for label in self.snapshot():
            if label.code == 200 and label.time >= since:
                labels, correct = out.get(label.version, (0, 0))
                out[label.version] = (labels + label.labels, correct + label.correct)
        return out

    def wait_joined(self, version: str, values: int, timeout: float) -> None:
        """Wait until the router has joined `values` label values with `version`; TimeoutError after
        `timeout` seconds, saying what the router answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.joined().get(version, (0, 0))[0] >= values:
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"the router joined fewer than {values} labels with {version} within {timeout:.0f}s "
            f"(joined: {self.joined()}, answers: {dict(self.codes())})"
        )
