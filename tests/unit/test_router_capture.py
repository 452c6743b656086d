"""Payload capture in the router (`modelfleet.router.capture`): redaction of OIP v2, v1 and plain JSON, the
lines and object keys written, batching, the bounded buffer, a store that refuses or hangs, and the flush
on shutdown. The writer is driven by hand (`start=False`, `write_ready`) unless the test is about the
thread itself."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelfleet import oip
from modelfleet.api.routerconfig import Capture as Settings
from modelfleet.router.capture import (
    Capture,
    DirectorySink,
    S3Sink,
    StoreError,
    encode_record,
    object_key,
    open_sink,
    pod_name,
    redact,
)
from modelfleet.router.metrics import RouterMetrics

# 2024-05-01T12:34:56.789Z
WHEN = 1714566896.789
NAMES = frozenset({"email", "petal_width", "secret"})


def settings(**changes: Any) -> Settings:
    return Settings.model_validate({"percent": 100, "uri": "file:///captures", **changes})


class ListSink:
    """Keeps what it is given; `fail` makes every write raise it."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.types: set[str] = set()
        self.fail: Exception | None = None
        self.closed = False

    def write(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.objects[key] = data
        self.types.add(content_type)

    def where(self, key: str) -> str:
        return f"mem://{key}"

    def close(self) -> None:
        self.closed = True

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for key in sorted(self.objects, key=lambda k: int(k.rsplit("-", 1)[1].split(".")[0])):
            data = self.objects[key]
            text = gzip.decompress(data) if key.endswith(".gz") else data
            out += [json.loads(line) for line in text.splitlines()]
        return out


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def capture(sink: ListSink, metrics: RouterMetrics | None = None, **changes: Any) -> Capture:
    return Capture(
        "iris",
        settings(**changes),
        metrics or RouterMetrics(),
        sink,
        "iris-router-7d9f-abcde",
        wall=lambda: WHEN,
        clock=Clock(),
        start=False,
    )


def offer(subject: Capture, request: bytes = b'{"x":1}', answer: bytes = b'{"y":2}', n: int = 1) -> None:
    for index in range(n):
        subject.offer(
            f"id-{index}".encode(), "iris-v1", b"/v2/models/iris/infer", request, None, 200, answer, None
        )


def counted(metrics: RouterMetrics, family: str, **labels: str) -> float:
    metric = getattr(metrics, family)
    total = 0.0
    for values, child in metric.children.items():
        if all(dict(zip(metric.labelnames, values, strict=True)).get(k) == v for k, v in labels.items()):
            total += child.value
    return total


# -- redaction ------------------------------------------------------------------------------------------


def test_a_v2_input_or_output_named_in_redact_keeps_its_name_datatype_and_shape_but_not_its_data() -> None:
    request = {
        "id": "r-1",
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]},
            {
                "name": "email",
                "datatype": "BYTES",
                "shape": [1],
                "data": ["ann@example.com"],
                "parameters": {"content_type": "str"},
            },
        ],
    }
    answer = {"outputs": [{"name": "secret", "datatype": "INT64", "shape": [1], "data": [7]}]}

    assert redact(request, NAMES) == {
        "id": "r-1",
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]},
            {"name": "email", "datatype": "BYTES", "shape": [1], "redacted": True},
        ],
    }
    assert redact(answer, NAMES) == {
        "outputs": [{"name": "secret", "datatype": "INT64", "shape": [1], "redacted": True}]
    }
    assert "ann@example.com" not in json.dumps(redact(request, NAMES))


def test_a_v2_column_named_by_parameters_names_is_cut_from_data_shape_and_names() -> None:
    request = {
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [2, 4],
                "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
                "parameters": {"names": ["sepal_length", "sepal_width", "petal_length", "petal_width"]},
            }
        ]
    }

    (tensor,) = redact(request, NAMES)["inputs"]
    assert tensor == {
        "name": "input-0",
        "datatype": "FP64",
        "shape": [2, 3],
        "data": [5.1, 3.5, 1.4, 6.7, 3.0, 5.2],
        "parameters": {"names": ["sepal_length", "sepal_width", "petal_length"]},
        "redactedColumns": ["petal_width"],
    }
    assert request["inputs"][0]["shape"] == [2, 4]  # the original is left as it was


@pytest.mark.parametrize(
    "tensor",
    [
        {
            "name": "t",
            "datatype": "FP64",
            "shape": [2, 2],
            "data": [1, 2, 3],
            "parameters": {"names": ["a", "email"]},
        },
        {
            "name": "t",
            "datatype": "FP64",
            "shape": [4],
            "data": [1, 2, 3, 4],
            "parameters": {"names": ["a", "email"]},
        },
        {"name": "t", "datatype": "FP64", "shape": [1, 2], "parameters": {"feature_names": ["a", "email"]}},
    ],
    ids=["data-does-not-fill-the-shape", "not-2-d", "no-json-data"],
)
def test_a_tensor_whose_named_column_cannot_be_cut_out_is_redacted_whole(tensor: dict[str, Any]) -> None:
    (shown,) = redact({"inputs": [tensor]}, NAMES)["inputs"]
    assert shown == {"name": "t", "datatype": "FP64", "shape": tensor["shape"], "redacted": True}


def test_v1_instances_and_predictions_lose_the_listed_keys() -> None:
    request = {"instances": [{"petal_length": 1.4, "email": "a@x"}, {"petal_length": 5.2, "email": "b@y"}]}
    answer = {"predictions": [{"label": 0, "secret": "s"}, {"label": 2, "secret": "t"}]}

    assert redact(request, NAMES) == {"instances": [{"petal_length": 1.4}, {"petal_length": 5.2}]}
    assert redact(answer, NAMES) == {"predictions": [{"label": 0}, {"label": 2}]}


def test_plain_json_loses_the_listed_keys_at_the_top_and_at_any_depth() -> None:
    document = {
        "email": "top@x",
        "customer": {"name": "Ann", "contact": {"email": "deep@x", "phone": "1"}},
        "rows": [{"email": "row@x", "v": 1}, [{"secret": 2, "w": 3}]],
        "note": "email",  # a value that happens to be a listed name stays
    }

    assert redact(document, NAMES) == {
        "customer": {"name": "Ann", "contact": {"phone": "1"}},
        "rows": [{"v": 1}, [{"w": 3}]],
        "note": "email",
    }
    assert redact([{"email": 1}, {"x": 2}], NAMES) == [{}, {"x": 2}]
    assert redact({"email": 1}, frozenset()) == {"email": 1}


# -- what a line holds -------------------------------------------------------------------------------------


def record(request: bytes, answer: bytes, names: frozenset[str] = NAMES, **lengths: bytes) -> dict[str, Any]:
    line = encode_record(
        "iris",
        (
            WHEN,
            b"3f9a0c1b2d4e-1a",
            "iris-v2",
            b"/v2/models/iris/infer?token=abc",
            request,
            lengths.get("request_length"),
            200,
            answer,
            lengths.get("answer_length"),
            names,
        ),
    )
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_line_holds_time_id_deployment_version_path_without_query_status_and_both_bodies() -> None:
    line = record(b'{"inputs": [], "email": "a@x"}', b'{"outputs": []}')

    assert line == {
        "time": "2024-05-01T12:34:56.789Z",
        "requestId": "3f9a0c1b2d4e-1a",
        "deployment": "iris",
        "version": "iris-v2",
        "path": "/v2/models/iris/infer",
        "status": 200,
        "request": {"inputs": []},
        "response": {"outputs": []},
    }


def test_binary_tensor_data_is_written_as_json_data_and_redacted_like_it() -> None:
    body, length = oip.encode(
        {"id": "b-1"},
        [
            oip.Tensor("input-0", "FP32", [1, 2], data=[1.5, 2.5]),
            oip.Tensor("email", "BYTES", [1], data=[b"ann@example.com"]),
        ],
        [True, True],
    )
    # oip.encode writes "outputs"; as a request the same tensors are its inputs
    assert length is not None
    request = body.replace(b'"outputs"', b'"inputs"', 1)
    line = record(request, b"{}", request_length=str(length - 1).encode())

    assert line["request"] == {
        "id": "b-1",
        "inputs": [
            {"name": "input-0", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]},
            {"name": "email", "datatype": "BYTES", "shape": [1], "redacted": True},
        ],
    }
    assert b"ann@example.com" not in json.dumps(line).encode()


def test_a_body_that_is_not_json_is_base64_without_redaction_and_left_out_with_it() -> None:
    kept = record(b"\x00\x01raw", b"plain text", names=frozenset())
    assert (kept["request"], kept["requestBase64"]) == (None, "AAFyYXc=")
    assert kept["responseBase64"] == "cGxhaW4gdGV4dA=="

    hidden = record(b"email=a@x", b"{not json", names=NAMES)
    assert hidden["request"] is None
    assert hidden["requestOmitted"] is True
    assert hidden["response"] is None
    assert hidden["responseOmitted"] is True
    assert "requestBase64" not in hidden
    assert "a@x" not in json.dumps(hidden)

    assert record(b"", b"{}")["request"] is None  # no body at all


def test_objects_are_laid_out_by_deployment_and_utc_hour_then_pod_first_record_and_sequence() -> None:
    assert (
        object_key("iris", "iris-router-7d9f-abcde", WHEN, 3, "gzip")
        == "iris/2024/05/01/12/iris-router-7d9f-abcde-1714566896789-3.jsonl.gz"
    )
    assert object_key("iris", "p", WHEN, 0, "none").endswith("/p-1714566896789-0.jsonl")
    assert pod_name({"HOSTNAME": "iris-router-5c/x y"}) == "iris-router-5c-x-y"


# -- batches ---------------------------------------------------------------------------------------------


def test_a_full_batch_is_written_at_once_and_the_rest_waits_for_the_interval_or_a_flush() -> None:
    sink = ListSink()
    metrics = RouterMetrics()
    subject = capture(sink, metrics, batchRecords=1000)
    offer(subject, n=2500)

    assert subject.write_ready() == 2  # two full batches; 500 records are not a batch yet
    assert len(sink.objects) == 2
    assert subject.held_records == 500
    assert subject.write_ready(force=True) == 1  # the interval came (or shutdown)
    assert subject.held_records == 0
    assert subject.held_bytes == 0

    assert sorted(sink.objects) == [
        f"iris/2024/05/01/12/iris-router-7d9f-abcde-1714566896789-{seq}.jsonl.gz" for seq in (0, 1, 2)
    ]
    assert sink.types == {"application/gzip"}
    lines = sink.lines()
    assert [line["requestId"] for line in lines] == [f"id-{n}" for n in range(2500)]
    assert counted(metrics, "capture_records", version="iris-v1") == 2500
    assert counted(metrics, "capture_written_records") == 2500
    assert counted(metrics, "capture_batches", outcome="written") == 3
    assert counted(metrics, "capture_written_bytes") == sum(len(d) for d in sink.objects.values())
    assert counted(metrics, "capture_dropped") == 0


def test_a_batch_is_also_cut_by_bytes_and_uncompressed_objects_are_plain_json_lines() -> None:
    sink = ListSink()
    subject = capture(sink, batchRecords=1000, batchBytes=4096, compression="none")
    offer(subject, request=b'{"x":"' + b"a" * 1000 + b'"}', n=10)

    subject.write_ready()
    sizes = [len(data.splitlines()) for data in sink.objects.values()]
    assert sizes
    assert all(n <= 4 for n in sizes)
    assert all(key.endswith(".jsonl") for key in sink.objects)
    assert sink.types == {"application/x-ndjson"}


def test_a_full_buffer_drops_and_counts_and_takes_records_again_once_written() -> None:
    sink = ListSink()
    metrics = RouterMetrics()
    subject = capture(sink, metrics, batchRecords=3, bufferRecords=3)
    offer(subject, n=5)

    assert subject.held_records == 3
    assert counted(metrics, "capture_dropped", reason="buffer_full") == 2
    assert counted(metrics, "capture_records") == 3
    subject.write_ready()
    offer(subject, n=1)
    assert subject.held_records == 1


def test_the_buffer_is_bounded_by_bytes_and_a_record_over_max_record_bytes_is_dropped() -> None:
    sink = ListSink()
    metrics = RouterMetrics()
    subject = capture(sink, metrics, bufferBytes=8192, maxRecordBytes=4096)
    offer(subject, request=b"x" * 3000, n=3)  # about 3.3 KB each: two fit in 8 KiB
    offer(subject, request=b"x" * 5000)

    assert subject.held_records == 2
    assert subject.held_bytes <= 8192
    assert counted(metrics, "capture_dropped", reason="buffer_full") == 1
    assert counted(metrics, "capture_dropped", reason="too_large") == 1


# -- a store that refuses ------------------------------------------------------------------------------------


def test_a_refused_batch_is_dropped_counted_and_logged_once_a_minute_without_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = ListSink()
    sink.fail = StoreError("the store answered AccessDenied (403)")
    metrics = RouterMetrics()
    clock = Clock()
    subject = Capture(
        "iris", settings(batchRecords=2), metrics, sink, "pod", wall=lambda: WHEN, clock=clock, start=False
    )
    caplog.set_level(logging.WARNING, "modelfleet.router.capture")

    for _ in range(3):
        offer(subject, request=b'{"email": "ann@example.com"}', n=2)
        subject.write_ready()
    assert counted(metrics, "capture_batches", outcome="failed") == 3
    assert counted(metrics, "capture_dropped", reason="store_error") == 6
    assert subject.held_records == 0  # nothing is kept for a retry
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("capture: a batch of 2 records was not written to mem://iris/2024/05/01/12/")
    assert message.endswith("the store answered AccessDenied (403); dropped")
    assert "ann@example.com" not in caplog.text

    clock.now += 61
    sink.fail = RuntimeError("a sink's own bug, with a@x in it")
    offer(subject, n=2)
    subject.write_ready()
    assert len(caplog.records) == 2
    assert (
        caplog.records[1]
        .getMessage()
        .endswith("RuntimeError; dropped (2 more failed batches since the last report)")
    )
    assert "a@x" not in caplog.text

    sink.fail = None  # the store is back: the next batch goes through
    offer(subject, n=2)
    subject.write_ready()
    assert counted(metrics, "capture_batches", outcome="written") == 1


def test_a_directory_sink_renames_complete_files_into_place_and_says_why_it_cannot_write(
    tmp_path: Path,
) -> None:
    sink = open_sink(f"file://{tmp_path}/captures")
    assert isinstance(sink, DirectorySink)
    sink.write("iris/2024/05/01/12/p-1-0.jsonl", b'{"a":1}\n', "application/x-ndjson")
    assert (tmp_path / "captures/iris/2024/05/01/12/p-1-0.jsonl").read_bytes() == b'{"a":1}\n'
    assert [p.name for p in (tmp_path / "captures/iris/2024/05/01/12").iterdir()] == ["p-1-0.jsonl"]

    (tmp_path / "blocker").write_text("a file where a directory should be")
    blocked = DirectorySink(tmp_path / "blocker")
    with pytest.raises(StoreError, match="Not a directory"):
        blocked.write("iris/x.jsonl", b"{}\n", "application/x-ndjson")


def test_an_s3_store_that_cannot_be_reached_is_a_store_error_naming_the_endpoint_only() -> None:
    sink = S3Sink(
        "s3://captures/iris/",
        {
            "AWS_ENDPOINT_URL": "http://user:pw@127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "AKIDCAPTURE",
            "AWS_SECRET_ACCESS_KEY": "not-to-be-seen",
        },
    )
    assert sink.where("iris/x.jsonl.gz") == "s3://captures/iris/iris/x.jsonl.gz"
    with pytest.raises(StoreError) as raised:
        sink.write("iris/x.jsonl.gz", b"data", "application/gzip")
    assert str(raised.value) == "cannot reach http://127.0.0.1:9"
    sink.close()


# -- the writer thread -----------------------------------------------------------------------------------


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


def test_the_writer_thread_writes_every_flush_interval_and_everything_on_close() -> None:
    sink = ListSink()
    subject = Capture("iris", settings(flushInterval="50ms"), RouterMetrics(), sink, "pod")
    offer(subject, n=3)
    wait_until(lambda: len(sink.objects) == 1)

    subject.retune(settings(flushInterval="1h", percent=5))
    offer(subject, n=4)
    assert subject.close(timeout=5) == 0
    assert [line["requestId"] for line in sink.lines()] == ["id-0", "id-1", "id-2"] + [
        f"id-{n}" for n in range(4)
    ]
    assert sink.closed
    offer(subject, n=1)  # a closed capture takes nothing more
    assert subject.held_records == 0


def test_on_shutdown_a_hanging_store_costs_at_most_the_timeout_and_what_is_left_is_counted() -> None:
    release = threading.Event()

    class Hanging(ListSink):
        def write(self, key: str, data: bytes, content_type: str) -> None:
            release.wait(10)

    metrics = RouterMetrics()
    subject = Capture("iris", settings(flushInterval="1h"), metrics, Hanging(), "pod")
    offer(subject, n=5)
    started = time.monotonic()
    assert subject.close(timeout=0.3) == 5
    assert time.monotonic() - started < 2
    assert counted(metrics, "capture_dropped", reason="shutdown") == 5
    release.set()


def test_records_keep_the_redact_names_they_were_captured_with() -> None:
    sink = ListSink()
    subject = capture(sink, redact=["email"])
    offer(subject, request=b'{"email": "a@x", "v": 1}')
    subject.retune(settings(redact=[]))
    offer(subject, request=b'{"email": "b@y", "v": 2}')
    subject.write_ready(force=True)

    assert [line["request"] for line in sink.lines()] == [{"v": 1}, {"email": "b@y", "v": 2}]


def test_nan_and_infinities_are_written_as_null_so_every_line_is_strict_json() -> None:
    body, length = oip.encode(
        {}, [oip.Tensor("input-0", "FP64", [3], data=[1.0, float("nan"), float("inf")])], [True]
    )
    assert length is not None
    request = body.replace(b'"outputs"', b'"inputs"', 1)
    line = encode_record(
        "iris", (WHEN, b"n", "v", b"/", request, str(length - 1).encode(), 200, b"{}", None, NAMES)
    )
    assert b"NaN" not in line
    assert b"Infinity" not in line
    assert json.loads(line)["request"]["inputs"][0]["data"] == [1.0, None, None]
