"""Payload capture: a share of the answers versions gave clients, with their requests, written to storage in
batches, off the request path (`spec.capture`; the router configuration's `capture`).

What is captured: an answer a version gave that the client received, whatever its status (a request drawn
by weight, after any fallback, while the fallback is active, or pinned with `X-Modelfleet-Version`),
with probability `percent` / 100 from the router's draw. Mirrored copies are never captured (no client
sees their answers), nor what the router answered itself: the static `fallback.response`, its JSON
errors (502, 503, 504, 400), the feedback endpoint.

The request path only appends a record (wall-clock time, request id, version, path, the request and
answer bodies as they are, no copy, the status) to a buffer bounded by `bufferRecords` and `bufferBytes`;
a record that does not fit is dropped and counted (`buffer_full`), one larger than `maxRecordBytes` too
(`too_large`). A record holds its bytes until its batch has been written or dropped, so those two bounds
hold everything capture keeps.

A writer thread (so that a slow store never holds the event loop) takes batches of at most `batchRecords`
records and about `batchBytes`, once that much waits or every `flushInterval`, redacts them, encodes them
as JSON Lines (gzip unless `compression: none`) and writes one object per batch:

    <uri>/<deployment>/<YYYY>/<MM>/<DD>/<HH>/<pod>-<unix-ms>-<seq>.jsonl.gz

(UTC hour and milliseconds of the batch's first record; `pod` is the router pod's name, `seq` counts the
pod's batches from 0). For s3:// with one PutObject (path-style addressing, endpoint and credentials from
the environment only, as the fetcher's client); for file:/// into a file written under a temporary name
and renamed. A batch the store refuses, or that does not get there in time, is dropped and counted
(`store_error`), its failure logged at most once a minute: never retried, so capture never waits on the
store for long and never holds more than its bounds. On shutdown the writer writes what is left, for at
most the router's `--capture-flush-timeout`; what it cannot is dropped (`shutdown`).

One line per record:

    {"time": "2024-05-01T12:00:00.123Z", "requestId": "...", "deployment": "iris", "version": "iris-v2",
     "path": "/v2/models/iris/infer", "status": 200, "request": {...}, "response": {...}}

`path` is the request's path without its query string (which could carry what redaction cannot see); no
header is captured. A JSON body is written as JSON (re-encoded), a body with Open Inference Protocol
binary tensor data (`Inference-Header-Content-Length`) as its JSON header with the binary tensors' values
written as JSON `data`; NaN and infinities are written as null, so that every line is strict JSON. Any
other body is written base64 (`requestBase64`, `responseBase64`) when nothing is to be redacted; with
`redact` set it is left out (`"requestOmitted": true`), because its fields cannot be found.

Redaction (`redact`: field names), applied by the writer with the names the configuration had when the
record was captured:
- an object key with a listed name is removed, at any depth (v1 `instances` and `predictions` objects,
  plain JSON, OIP `parameters`);
- an OIP v2 input or output (an entry of top-level `inputs` or `outputs`) whose `name` is listed keeps
  `name`, `datatype` and `shape` and gets `"redacted": true`: its `data` and `parameters` are gone;
- a column of a 2-D OIP tensor named by its `parameters.names` (or `feature_names`) is removed from its
  `data`, `shape` and names; when its data cannot be split into columns the whole tensor is redacted.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelfleet import oip
from modelfleet.api.routerconfig import Capture as CaptureSettings
from modelfleet.router.metrics import CounterChild, RouterMetrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DROP_REASONS = ("buffer_full", "too_large", "store_error", "unencodable", "shutdown")
BATCH_OUTCOMES = ("written", "failed")
RECORD_OVERHEAD = 256
"""Bytes a record is taken to hold besides its bodies (its other fields, the tuple)."""
LOG_EVERY = 60.0
"""Seconds between two log lines about failed batches (the ones between are counted in the next)."""
S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, S3_ATTEMPTS = 2.0, 10.0, 2

# (wall time, request id, version, path, request body, its header length, status, answer body, its header
# length, the names to redact)
Record = tuple[float, bytes, str, bytes, bytes, bytes | None, int, bytes, bytes | None, frozenset[str]]


# -- redaction ------------------------------------------------------------------------------------------


def redact(document: Any, names: frozenset[str]) -> Any:
    """`document` (parsed JSON) without the fields named in `names`: see the module's docstring."""
    if not names:
        return document
    if isinstance(document, dict):
        out = _without_keys(document, names)
        for key in ("inputs", "outputs"):
            tensors = out.get(key)
            if isinstance(tensors, list):
                out[key] = [_redact_tensor(t, names) if isinstance(t, dict) else t for t in tensors]
        return out
    return _strip(document, names)


def _strip(value: Any, names: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return _without_keys(value, names)
    if isinstance(value, list):
        return [_strip(item, names) for item in value]
    return value


def _without_keys(value: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {key: _strip(item, names) for key, item in value.items() if key not in names}


def _redact_tensor(tensor: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """One OIP input or output, already without the listed keys."""
    name = tensor.get("name")
    if isinstance(name, str) and name in names:
        return _redacted_stub(tensor)
    parameters = tensor.get("parameters")
    if not isinstance(parameters, dict):
        return tensor
    for key in ("names", "feature_names"):
        columns = parameters.get(key)
        if isinstance(columns, list) and any(isinstance(c, str) and c in names for c in columns):
            return _without_columns(tensor, parameters, key, columns, names)
    return tensor


def _redacted_stub(tensor: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {key: tensor[key] for key in ("name", "datatype", "shape") if key in tensor}
    kept["redacted"] = True
    return kept


def _without_columns(
    tensor: dict[str, Any], parameters: dict[str, Any], key: str, columns: list[Any], names: frozenset[str]
) -> dict[str, Any]:
    """A 2-D tensor without its columns named in `names`; the whole tensor redacted when its data cannot
    be split into those columns."""
    shape = tensor.get("shape")
    data = tensor.get("data")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or shape[1] != len(columns)
        or not isinstance(shape[0], int)
        or data is None
    ):
        return _redacted_stub(tensor)
    values = oip.flatten(data)
    rows, width = shape[0], len(columns)
    if len(values) != rows * width:
        return _redacted_stub(tensor)
    gone = [isinstance(column, str) and column in names for column in columns]
    keep = [index for index in range(width) if not gone[index]]
    removed = [column for column, out_ in zip(columns, gone, strict=True) if out_]
    out = dict(tensor)
    out["shape"] = [rows, len(keep)]
    out["data"] = [values[row * width + index] for row in range(rows) for index in keep]
    out["parameters"] = {**parameters, key: [columns[index] for index in keep]}
    for other in ("names", "feature_names"):  # a second list of the same columns goes the same way
        listed = parameters.get(other)
        if other != key and isinstance(listed, list) and len(listed) == width:
            out["parameters"][other] = [listed[index] for index in keep]
    out["redactedColumns"] = removed
    return out


# -- encoding -------------------------------------------------------------------------------------------


def _as_json_data(document: dict[str, Any], binary: memoryview, key: str) -> dict[str, Any]:
    """An OIP JSON header with the binary data of its `key` tensors written in as JSON `data`."""
    tensors = oip.read_tensors(document, binary, key)
    entries = []
    for entry, tensor in zip(document[key], tensors, strict=True):
        if tensor.raw is None:
            entries.append(entry)
            continue
        values = tensor.values()
        parameters = {k: v for k, v in tensor.parameters.items() if k != "binary_data_size"}
        shown: dict[str, Any] = {
            **{k: v for k, v in entry.items() if k != "parameters"},
            "data": [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values],
        }
        if parameters:
            shown["parameters"] = parameters
        entries.append(shown)
    return {**document, key: entries}


def _body_fields(
    field: str, body: bytes, header_length: bytes | None, key: str, names: frozenset[str]
) -> dict[str, Any]:
    """The record's fields for one body: `field` as JSON, or `<field>Base64`, or `<field>Omitted`."""
    if not body:
        return {field: None}
    try:
        if header_length is not None:
            document, binary = oip.split(body, header_length)
            value: Any = _as_json_data(document, binary, key) if binary else document
        else:
            value = json.loads(body)
    except (ValueError, RecursionError):  # oip.ProtocolError is a ValueError
        if names:
            return {field: None, f"{field}Omitted": True}
        return {field: None, f"{field}Base64": base64.b64encode(body).decode()}
    return {field: redact(value, names)}


def _timestamp(seconds: float) -> str:
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"


def encode_record(deployment: str, record: Record) -> bytes:
    """One JSON line for a captured request and answer, redacted."""
    when, request_id, version, path, request, request_length, status, answer, answer_length, names = record
    line: dict[str, Any] = {
        "time": _timestamp(when),
        "requestId": request_id.decode(errors="replace"),
        "deployment": deployment,
        "version": version,
        "path": path.partition(b"?")[0].decode(errors="replace"),
        "status": status,
    }
    line.update(_body_fields("request", request, request_length, "inputs", names))
    line.update(_body_fields("response", answer, answer_length, "outputs", names))
    try:
        text = json.dumps(line, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or an infinity (binary tensor data, or a lenient JSON body): null, as MLServer
        text = json.dumps(_finite(line), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode() + b"\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def object_key(deployment: str, pod: str, first: float, seq: int, compression: str) -> str:
    """Where a batch goes, under the destination: `<deployment>/<YYYY>/<MM>/<DD>/<HH>/<pod>-<ms>-<seq>`."""
    hour = time.strftime("%Y/%m/%d/%H", time.gmtime(int(first)))
    suffix = ".jsonl.gz" if compression == "gzip" else ".jsonl"
    return f"{deployment}/{hour}/{pod}-{int(first * 1000)}-{seq}{suffix}"


def pod_name(env: Mapping[str, str] | None = None) -> str:
    """This router's name in object keys: the pod's (HOSTNAME), or the host's, made safe for a key."""
    source = os.environ if env is None else env
    name = source.get("HOSTNAME") or socket.gethostname() or "router"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:128].strip(".") or "router"


# -- where batches go -------------------------------------------------------------------------------------


class StoreError(Exception):
    """A batch the store did not take; the message is ours, short, without payload or credentials."""


class Sink(Protocol):
    def write(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` (relative to the destination), or raise StoreError."""

    def where(self, key: str) -> str:
        """`key` as a URI, for a log line."""

    def close(self) -> None: ...


class DirectorySink:
    """Files under a directory (a mounted claim): each written under a temporary name, then renamed, so a
    reader never sees half a batch."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, key: str, data: bytes, content_type: str) -> None:
        path = self.root / key
        scratch = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with scratch.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(scratch, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                scratch.unlink(missing_ok=True)
            raise StoreError(error.strerror or type(error).__name__) from None

    def where(self, key: str) -> str:
        return f"file://{self.root / key}"

    def close(self) -> None:
        pass


class S3Sink:
    """Objects under s3://BUCKET/PREFIX, with the fetcher's client conventions: path-style addressing,
    endpoint and credentials from the environment only, unsigned without an access key. The client is
    made on first use, in the writer thread (importing boto3 takes a while)."""

    def __init__(self, uri: str, env: Mapping[str, str]) -> None:
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.env = dict(env)
        self._client: S3Client | None = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _connect(self) -> S3Client:
        try:
            from modelfleet.fetch.sources import Timeouts
            from modelfleet.fetch.sources.s3 import make_client
        except ImportError as error:  # pragma: no cover - boto3 is a dependency of the image
            raise StoreError(f"no S3 client ({error.name} is not installed)") from None
        self._client = make_client(
            self.env,
            Timeouts(connect=S3_CONNECT_TIMEOUT, read=S3_READ_TIMEOUT),
            agent="modelfleet-router-capture",
            attempts=S3_ATTEMPTS,
        )
        return self._client

    def write(self, key: str, data: bytes, content_type: str) -> None:
        import botocore.exceptions

        try:
            client = self._client or self._connect()
            client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            shown = code if code.isalnum() else "an error"
            raise StoreError(f"the store answered {shown} ({status})") from None
        except (
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
        ):
            raise StoreError(f"{self._endpoint()} did not answer in time") from None
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
        ):
            raise StoreError(f"cannot reach {self._endpoint()}") from None
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError):
            raise StoreError("incomplete credentials (an access key without its secret)") from None
        except botocore.exceptions.BotoCoreError as error:  # its text can quote a signed request
            raise StoreError(f"{type(error).__name__} from {self._endpoint()}") from None
        except ValueError:  # e.g. an endpoint URL that is not one
            raise StoreError(f"{self._endpoint()} is not a usable endpoint") from None

    def _endpoint(self) -> str:
        from modelfleet.fetch.sources.s3 import endpoint_from_env
        from modelfleet.fetch.uri import display_uri

        endpoint = endpoint_from_env(self.env)
        return display_uri(endpoint) if endpoint and "://" in endpoint else "the AWS endpoint"

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def open_sink(uri: str, env: Mapping[str, str] | None = None) -> Sink:
    """The sink of a configuration's `uri` (s3:// or file:///)."""
    if uri.startswith("s3://"):
        return S3Sink(uri, os.environ if env is None else env)
    if uri.startswith("file://"):
        return DirectorySink(Path(uri[len("file://") :]))
    raise ValueError(f"no capture sink for {uri!r}")


# -- the buffer and its writer ----------------------------------------------------------------------------


class Capture:
    """One deployment's capture: the bounded buffer the request path appends to and the writer thread.

    `offer` runs on the event loop; everything else of the writer on its thread. The two share the buffer
    and its held counts under one lock; each metric child is written by one thread only (while a
    writer retired by a new configuration finishes beside its successor, both count on the same children
    for that moment)."""

    def __init__(
        self,
        deployment: str,
        settings: CaptureSettings,
        metrics: RouterMetrics,
        sink: Sink,
        pod: str,
        *,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        self.deployment = deployment
        self.settings = settings
        self.metrics = metrics
        self.sink = sink
        self.pod = pod
        self.share = settings.percent / 100.0
        self.redact = frozenset(settings.redact)
        self.closed = False
        self._wall = wall
        self._clock = clock
        self._buffer: deque[Record] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.held_records = 0  # buffered or being written
        self.held_bytes = 0
        self._waiting_bytes = 0  # of the buffered ones only: what makes a batch ready
        self._seq = 0
        self._records: dict[str, CounterChild] = {}
        dropped = metrics.capture_dropped
        self._dropped = {reason: dropped.labels(deployment, reason) for reason in DROP_REASONS}
        self._batches = {
            outcome: metrics.capture_batches.labels(deployment, outcome) for outcome in BATCH_OUTCOMES
        }
        self._written_records = metrics.capture_written_records.labels(deployment)
        self._written_bytes = metrics.capture_written_bytes.labels(deployment)
        self._last_log = -LOG_EVERY
        self._unlogged = 0
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name=f"capture-{deployment}", daemon=True)
            self._thread.start()

    # The request path -----------------------------------------------------------------------------------

    def offer(
        self,
        request_id: bytes,
        version: str,
        path: bytes,
        request: bytes,
        request_length: bytes | None,
        status: int,
        answer: bytes,
        answer_length: bytes | None,
    ) -> None:
        """Take one request and its answer into the buffer, or count why not. No copy, no parse."""
        if self.closed:  # retired by a new configuration: its successor takes the next ones
            return
        size = len(request) + len(answer) + len(path) + len(request_id) + RECORD_OVERHEAD
        settings = self.settings
        if size > settings.max_record_bytes:
            self._dropped["too_large"].value += 1
            return
        full = ready = False
        with self._lock:
            if self.held_records >= settings.buffer_records or self.held_bytes + size > settings.buffer_bytes:
                full = True
            else:
                self._buffer.append(
                    (
                        self._wall(),
                        request_id,
                        version,
                        path,
                        request,
                        request_length,
                        status,
                        answer,
                        answer_length,
                        self.redact,
                    )
                )
                self.held_records += 1
                self.held_bytes += size
                self._waiting_bytes += size
                ready = (
                    len(self._buffer) >= settings.batch_records or self._waiting_bytes >= settings.batch_bytes
                )
        if full:
            self._dropped["buffer_full"].value += 1
            return
        child = self._records.get(version)
        if child is None:
            child = self._records[version] = self.metrics.capture_records.labels(self.deployment, version)
        child.value += 1
        if ready and not self._wake.is_set():
            self._wake.set()

    def retune(self, settings: CaptureSettings) -> None:
        """A new percent or redact list; records already captured keep the names they were captured with."""
        self.settings = settings
        self.share = settings.percent / 100.0
        self.redact = frozenset(settings.redact)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # The writer ------------------------------------------------------------------------------------------

    def _take(self, force: bool) -> list[Record]:
        """The next batch: once a full one waits, or whatever waits when `force`."""
        settings = self.settings
        with self._lock:
            buffer = self._buffer
            if not buffer:
                return []
            full = len(buffer) >= settings.batch_records or self._waiting_bytes >= settings.batch_bytes
            if not force and not full:
                return []
            batch: list[Record] = []
            taken = 0
            while buffer and len(batch) < settings.batch_records and taken < settings.batch_bytes:
                record = buffer.popleft()
                batch.append(record)
                taken += _size(record)
            self._waiting_bytes -= taken
            return batch

    def _release(self, batch: list[Record]) -> None:
        size = sum(_size(record) for record in batch)
        with self._lock:
            self.held_records -= len(batch)
            self.held_bytes -= size

    def write_ready(self, force: bool = False) -> int:
        """Write every full batch (and, with `force`, what else waits); returns the batches tried."""
        tried = 0
        while True:
            batch = self._take(force)
            if not batch:
                return tried
            tried += 1
            try:
                self._write(batch)
            finally:
                self._release(batch)

    def _write(self, batch: list[Record]) -> None:
        lines = []
        for record in batch:
            try:
                lines.append(encode_record(self.deployment, record))
            except Exception:  # never the payload in the log: only that one record could not be encoded
                self._dropped["unencodable"].value += 1
        if not lines:
            return
        data = b"".join(lines)
        compression = self.settings.compression
        if compression == "gzip":
            data = gzip.compress(data, compresslevel=6, mtime=0)
        key = object_key(self.deployment, self.pod, batch[0][0], self._seq, compression)
        self._seq += 1
        content_type = "application/gzip" if compression == "gzip" else "application/x-ndjson"
        try:
            self.sink.write(key, data, content_type)
        except StoreError as error:
            self._failed(len(lines), key, str(error))
            return
        except Exception as error:  # a sink's bug must not end the writer
            self._failed(len(lines), key, type(error).__name__)
            return
        self._batches["written"].value += 1
        self._written_records.value += len(lines)
        self._written_bytes.value += len(data)

    def _failed(self, records: int, key: str, why: str) -> None:
        self._batches["failed"].value += 1
        self._dropped["store_error"].value += records
        now = self._clock()
        if now - self._last_log < LOG_EVERY:
            self._unlogged += 1
            return
        also = f" ({self._unlogged} more failed batches since the last report)" if self._unlogged else ""
        self._last_log, self._unlogged = now, 0
        log.warning(
            "capture: a batch of %d records was not written to %s: %s; dropped%s",
            records,
            self.sink.where(key),
            why,
            also,
        )

    def _run(self) -> None:
        interval = self.settings.flush_interval
        due_at = self._clock() + interval
        while True:
            self._wake.wait(max(0.0, due_at - self._clock()))
            self._wake.clear()
            stopping = self._stopping.is_set()
            due = stopping or self._clock() >= due_at
            try:
                self.write_ready(force=due)
            except Exception:
                log.exception("capture: the writer failed; it goes on with the next batch")
            if due:
                interval = self.settings.flush_interval
                due_at = self._clock() + interval
            if stopping and not self._buffer:
                self.sink.close()
                return

    # Stopping --------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Take no more records; the writer writes what is buffered and ends (without waiting for it)."""
        self.closed = True
        self._stopping.set()
        self._wake.set()

    def close(self, timeout: float) -> int:
        """Stop and wait up to `timeout` seconds for the writer to write what is left; returns the records
        it could not (counted as dropped: shutdown)."""
        self.stop()
        thread = self._thread
        if thread is None:
            self.write_ready(force=True)
            return 0
        thread.join(timeout)
        if not thread.is_alive():
            return 0
        with self._lock:
            left = self.held_records
        self._dropped["shutdown"].value += left
        log.warning("capture: %d records not written within %.1fs of shutting down, dropped", left, timeout)
        return left


def _size(record: Record) -> int:
    return len(record[4]) + len(record[7]) + len(record[3]) + len(record[1]) + RECORD_OVERHEAD
