"""Ground truth: the true labels clients send for the predictions the router served, joined per version.

With `feedback` in the configuration, the router remembers its newest successful answers to clients in a
`PredictionStore`: request id -> (version, protocol, answer body, time). Remembering one costs a dict
insert on the request path and no parse: an answer is read only when a label for it arrives, the way
prediction samples read answers (`predictions.extract`: v2 `outputs[0]`, v1 `predictions`). The store holds
at most `maxPredictions` answers (10,000) and `MAX_BYTES` of bodies, each at most `MAX_BODY`; the oldest go
first.

`POST /v2/models/<name>/feedback` with `{"id": "<request id>", "label": <true value>}` (or the id in the
`X-Modelfleet-Request-Id` header) and `Authorization: Bearer <token>` joins the label with what was served:
one label for an answer of one value, or a list of labels, one for each value of a batch answer (nested
lists are flattened row-major, as predictions are). Each version counts its joined pairs (`labels`), those
where prediction and label are equal (`correct`: accuracy), and, for pairs of two numbers, the count and
the sum of |prediction - label| (mean absolute error); it keeps its newest `maxPairs` pairs for the
operator, each numbered by one sequence (`cursor`) across versions.

The first label for an id counts; later ones are refused (409). A label for an answer the router no longer
keeps is refused as late (410), one for an id it never served (or forgot long ago) as unknown (404). Every
outcome is counted in `modelfleet_router_feedback_total{outcome}`; each is answered with a JSON error,
whatever the body holds.

The token is read from `tokenFile` (the Deployment's `spec.feedback.tokenSecret`, mounted), at most once a
second, so a rotated Secret takes effect without a restart; it is compared in constant time
(`modelfleet.router.auth`).
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from modelfleet.api.routerconfig import RouterConfig
from modelfleet.httpcore import Request, Response
from modelfleet.router.auth import TokenFile, check
from modelfleet.router.metrics import CounterChild, RouterMetrics
from modelfleet.router.predictions import MAX_VALUES_PER_RESPONSE, Scalar, extract
from modelfleet.router.requestid import REQUEST_ID_HEADER, sane

MAX_BODY = 16 * 1024
"""Answers longer than this are not remembered (a label for them is unknown)."""
MAX_BYTES = 16 * 1024 * 1024
"""The bodies one router remembers, in all."""
MAX_FEEDBACK_BODY = 64 * 1024
MAX_LABEL_TEXT = 1024

OUTCOMES = (
    "joined",
    "duplicate",
    "expired",
    "unknown",
    "invalid",
    "mismatch",
    "unauthorized",
    "forbidden",
    "disabled",
    "unavailable",
)

Entry = tuple[str, str, bytes | None, bytes | None, float]
"""(version, protocol, answer body or None once labelled, Inference-Header-Content-Length, time)."""


class PredictionStore:
    """The newest answers the router gave with a 2xx status, by request id, for labels to join.

    A labelled answer keeps its place without its body, so a second label is told from an unknown id; the
    ids of the `capacity` answers evicted last are remembered, so a late label is told from an unknown id.
    """

    __slots__ = ("_entries", "_evicted", "bytes", "capacity", "max_body", "max_bytes")

    def __init__(self, capacity: int = 10_000, max_bytes: int = MAX_BYTES, max_body: int = MAX_BODY) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_body = max_body
        self.bytes = 0
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._evicted: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self,
        request_id: bytes,
        version: str,
        protocol: str,
        body: bytes,
        header_length: bytes | None,
        now: float,
    ) -> None:
        """Remember an answer (O(1): no parse, no copy of the body)."""
        entries = self._entries
        old = entries.pop(request_id, None)  # a client that reuses its id: the newest answer counts
        if old is not None and old[2] is not None:
            self.bytes -= len(old[2])
        if len(body) > self.max_body:
            return
        entries[request_id] = (version, protocol, body, header_length, now)
        self.bytes += len(body)
        if len(entries) > self.capacity or self.bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        entries, evicted = self._entries, self._evicted
        while entries and (len(entries) > self.capacity or self.bytes > self.max_bytes):
            key, (_, _, body, _, _) = entries.popitem(last=False)
            if body is not None:
                self.bytes -= len(body)
            evicted[key] = None
            if len(evicted) > self.capacity:
                evicted.popitem(last=False)

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._evict()
        while len(self._evicted) > capacity:
            self._evicted.popitem(last=False)

    def get(self, request_id: bytes) -> Entry | str:
        """The answer for `request_id`, or why there is none: "duplicate" (already labelled), "expired"
        (evicted) or "unknown"."""
        entry = self._entries.get(request_id)
        if entry is None:
            return "expired" if request_id in self._evicted else "unknown"
        if entry[2] is None:
            return "duplicate"
        return entry

    def labelled(self, request_id: bytes) -> None:
        """Mark the answer for `request_id` as labelled: it keeps its place and drops its body."""
        entry = self._entries.get(request_id)
        if entry is not None and entry[2] is not None:
            self.bytes -= len(entry[2])
            self._entries[request_id] = (entry[0], entry[1], None, None, entry[4])

    def oldest(self) -> float | None:
        """When the oldest answer kept was given (the store's clock), or None when it is empty."""
        for entry in self._entries.values():
            return entry[4]
        return None


def score(prediction: Scalar, label: Scalar) -> tuple[bool, float | None]:
    """(equal, absolute error): values are compared as JSON values (1 and 1.0 are equal, "1" and 1 are
    not); the absolute error is there only when both are finite numbers (not booleans)."""
    numbers = _number(prediction) and _number(label)
    correct = (numbers or type(prediction) is type(label)) and prediction == label
    if numbers:
        error = abs(float(prediction) - float(label))
        if math.isfinite(error):
            return correct, error
    return correct, None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class VersionFeedback:
    """What the labels joined so far say about one version."""

    __slots__ = (
        "_absolute_error",
        "_correct",
        "_labels",
        "_numeric",
        "absolute_error",
        "correct",
        "labels",
        "numeric",
        "pairs",
    )

    def __init__(self, metrics: RouterMetrics, deployment: str, version: str, max_pairs: int) -> None:
        self.labels = 0
        self.correct = 0
        self.numeric = 0
        self.absolute_error = 0.0
        self.pairs: deque[tuple[int, Scalar, Scalar]] = deque(maxlen=max_pairs)
        self._labels: CounterChild = metrics.labels.labels(deployment, version)
        self._correct: CounterChild = metrics.correct.labels(deployment, version)
        self._numeric: CounterChild = metrics.numeric_labels.labels(deployment, version)
        self._absolute_error: CounterChild = metrics.absolute_error.labels(deployment, version)

    def add(self, seq: int, prediction: Scalar, label: Scalar) -> bool:
        correct, error = score(prediction, label)
        self.labels += 1
        self._labels.value += 1
        if correct:
            self.correct += 1
            self._correct.value += 1
        if error is not None:
            self.numeric += 1
            self.absolute_error += error
            self._numeric.value += 1
            self._absolute_error.value += error
        self.pairs.append((seq, prediction, label))
        return correct

    def snapshot(self, after: int) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "correct": self.correct,
            "accuracy": self.correct / self.labels if self.labels else None,
            "numericLabels": self.numeric,
            "absoluteError": self.absolute_error,
            "meanAbsoluteError": self.absolute_error / self.numeric if self.numeric else None,
            "pairs": [
                {"seq": seq, "prediction": prediction, "label": label}
                for seq, prediction, label in self.pairs
                if seq > after
            ],
        }


class _Refusal(Exception):
    def __init__(self, outcome: str, status: int, message: str, headers: bytes = b"") -> None:
        super().__init__(message)
        self.outcome = outcome
        self.status = status
        self.headers = headers


_CHALLENGE = b'www-authenticate: Bearer realm="modelfleet-feedback"\r\n'


class Feedback:
    """The router's ground truth: the store of answers, the feedback endpoint and each version's joins."""

    def __init__(
        self, metrics: RouterMetrics, instance: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.instance = instance
        self._clock = clock
        self.deployment = ""
        self.enabled = False
        self.store: PredictionStore | None = None
        """None without `feedback` in the configuration: then nothing is remembered."""
        self.token: TokenFile | None = None
        self.max_pairs = 1000
        self.versions: dict[str, VersionFeedback] = {}
        self.current: frozenset[str] = frozenset()
        """The versions of the configuration: labels for answers of others are late."""
        self.cursor = 0

    def configure(self, config: RouterConfig) -> None:
        """Follow a new configuration: turn the store on or off, resize it, drop versions that left."""
        settings = config.feedback
        if config.deployment != self.deployment:
            self.versions = {}
        self.deployment = config.deployment
        self.current = frozenset(version.name for version in config.versions)
        self.versions = {name: stats for name, stats in self.versions.items() if name in self.current}
        if settings is None:
            self.enabled = False
            self.store = None
            self.token = None
            return
        self.enabled = True
        if self.store is None:
            self.store = PredictionStore(settings.max_predictions)
        elif self.store.capacity != settings.max_predictions:
            self.store.resize(settings.max_predictions)
        if self.token is None or self.token.path != settings.token_file:
            self.token = TokenFile(settings.token_file, self._clock)
        if settings.max_pairs != self.max_pairs:
            self.max_pairs = settings.max_pairs
            for stats in self.versions.values():
                stats.pairs = deque(stats.pairs, maxlen=settings.max_pairs)

    def remember(
        self, request_id: bytes, version: str, protocol: str, body: bytes, header_length: bytes | None
    ) -> None:
        store = self.store
        if store is not None:
            store.put(request_id, version, protocol, body, header_length, self._clock())

    # -- the endpoint ---------------------------------------------------------------------------------------

    def answer(self, request: Request) -> Response:
        """The answer to a request for the feedback endpoint; the outcome is counted."""
        try:
            outcome, response = "joined", self._join(request)
        except _Refusal as refusal:
            outcome = refusal.outcome
            response = Response.error(refusal.status, str(refusal), refusal.headers)
        self.metrics.feedback.labels(self.deployment, outcome).inc()
        return response

    def _join(self, request: Request) -> Response:
        if request.method != b"POST":
            raise _Refusal("invalid", 405, "the feedback endpoint takes POST", b"allow: POST\r\n")
        store, token = self.store, self.token
        if store is None or token is None:
            raise _Refusal(
                "disabled", 404, "feedback is not enabled for this deployment (it has no spec.feedback)"
            )
        self._authorize(request, token)
        request_id, labels = _parse(request)
        shown = request_id.decode()
        entry = store.get(request_id)
        if isinstance(entry, str):
            raise _refusal(entry, shown, store.capacity)
        version, protocol, body, header_length, _ = entry
        if version not in self.current:
            raise _Refusal(
                "expired", 410, f"version {version}, which answered id {shown!r}, is no longer deployed"
            )
        predictions = extract(body or b"", protocol, header_length)
        if not predictions:
            raise _Refusal(
                "mismatch",
                422,
                f"the answer for id {shown!r} holds no prediction the router can read "
                "(v2 outputs[0] data, v1 predictions)",
            )
        if len(labels) != len(predictions):
            wanted = "one label" if len(predictions) == 1 else f"a list of {len(predictions)} labels"
            raise _Refusal(
                "mismatch",
                422,
                f"the answer for id {shown!r} holds {len(predictions)} predicted value"
                f"{'' if len(predictions) == 1 else 's'}, the feedback {len(labels)} label"
                f"{'' if len(labels) == 1 else 's'}: send {wanted}",
            )
        stats = self.versions.get(version)
        if stats is None:
            stats = self.versions[version] = VersionFeedback(
                self.metrics, self.deployment, version, self.max_pairs
            )
        store.labelled(request_id)
        correct = 0
        for prediction, label in zip(predictions, labels, strict=True):
            self.cursor += 1
            correct += stats.add(self.cursor, prediction, label)
        return Response.json(
            200, {"id": shown, "version": version, "labels": len(labels), "correct": correct}
        )

    def _authorize(self, request: Request, token: TokenFile) -> None:
        verdict = check(request, token)
        if verdict == "unauthorized":
            raise _Refusal(
                "unauthorized",
                401,
                "feedback needs Authorization: Bearer <token> (the deployment's spec.feedback.tokenSecret)",
                _CHALLENGE,
            )
        if verdict == "unavailable":
            raise _Refusal(
                "unavailable",
                503,
                "the router cannot read its feedback token; try again later",
                b"retry-after: 1\r\n",
            )
        if verdict == "forbidden":
            raise _Refusal("forbidden", 403, "the bearer token is not this deployment's feedback token")

    # -- for the operator -----------------------------------------------------------------------------------

    def snapshot(self, after: int = 0) -> dict[str, Any]:
        """What the admin port's /feedback shows: counts since the router started, and the pairs joined after
        `after` (all of them when `after` is past the cursor: a new router instance)."""
        if after > self.cursor:
            after = 0
        store = self.store
        kept: dict[str, Any] | None = None
        if store is not None:
            oldest = store.oldest()
            kept = {
                "count": len(store),
                "limit": store.capacity,
                "bytes": store.bytes,
                "oldestSeconds": None if oldest is None else round(self._clock() - oldest, 3),
            }
        return {
            "enabled": self.enabled,
            "instance": self.instance,
            "cursor": self.cursor,
            "predictions": kept,
            "versions": {name: stats.snapshot(after) for name, stats in sorted(self.versions.items())},
        }


def _refusal(outcome: str, shown: str, capacity: int) -> _Refusal:
    if outcome == "duplicate":
        return _Refusal(outcome, 409, f"a label for id {shown!r} was already joined; the first one counts")
    if outcome == "expired":
        return _Refusal(
            outcome,
            410,
            f"the prediction for id {shown!r} is no longer kept: this router remembers its newest "
            f"{capacity} predictions",
        )
    return _Refusal(
        "unknown",
        404,
        f"no prediction with id {shown!r} was served by this router (only successful answers are kept)",
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a label")


def _parse(request: Request) -> tuple[bytes, list[Scalar]]:
    """(request id, labels) of a feedback body, or a 400 (413) saying what is wrong."""
    body = request.body
    if len(body) > MAX_FEEDBACK_BODY:
        raise _Refusal("invalid", 413, f"feedback body over the limit of {MAX_FEEDBACK_BODY} bytes")
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise _Refusal("invalid", 400, f"feedback body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _Refusal("invalid", 400, 'feedback body must be a JSON object {"id": ..., "label": ...}')
    in_header = request.header(REQUEST_ID_HEADER)
    in_body = document.get("id")
    if in_body is None and in_header is None:
        raise _Refusal(
            "invalid", 400, 'name the request: "id" in the body, or the X-Modelfleet-Request-Id header'
        )
    if in_body is not None and not isinstance(in_body, str):
        raise _Refusal("invalid", 400, f'"id" must be a string, got {type(in_body).__name__}')
    request_id = in_body.encode() if in_body is not None else (in_header or b"").strip()
    if not sane(request_id):
        raise _Refusal(
            "invalid", 400, "the id is not one the router gives: 1 to 128 letters, digits or ._:/+=@-"
        )
    if in_body is not None and in_header is not None and in_header.strip() != request_id:
        raise _Refusal("invalid", 400, '"id" and the X-Modelfleet-Request-Id header name different requests')
    if "label" not in document:
        raise _Refusal("invalid", 400, 'missing "label": the true value (a list, for a batch)')
    labels: list[Any] = []
    try:
        _flatten(document["label"], labels)
    except ValueError as error:
        raise _Refusal("invalid", 400, str(error)) from None
    except RecursionError:
        raise _Refusal("invalid", 400, '"label" nests lists too deeply') from None
    if not labels:
        raise _Refusal("invalid", 400, '"label" is an empty list')
    return request_id, labels


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        for item in value:
            _flatten(item, out)
        return
    if len(out) >= MAX_VALUES_PER_RESPONSE:
        raise ValueError(f'"label" holds more than {MAX_VALUES_PER_RESPONSE} values')
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        if isinstance(value, str) and len(value) > MAX_LABEL_TEXT:
            raise ValueError(f"a label text is over {MAX_LABEL_TEXT} characters")
        out.append(value)
        return
    shown = "a non-finite number" if isinstance(value, float) else json.dumps(value)[:40]
    raise ValueError(f'"label" must be a value or a list of values (numbers, texts, booleans), not {shown}')
