"""Payload capture on real pods: the routers write a share of the requests and their answers to a real S3
store (versitygw in the test's namespace), in batches, with the fields named in `redact` left out.

- Given a Deployment capturing every request into s3://captures/iris/ with petal_length redacted, when
  clients send iris rows that name their features, then gzip JSON Lines objects appear under
  iris/<deployment>/<date>/, one line per answer with its request id, and the petal_length column is
  absent from every captured request while the other three columns are the values the client sent;
  no client sees an error.
"""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import helpers
from helpers import Fleet

from support import iris_data
from support.cluster import Cluster
from support.objectstore import start_object_store

BUCKET = "captures"
REDACTED = "petal_length"
KEPT = [name for name in iris_data.FEATURES if name != REDACTED]


def captured_lines(client: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The keys of the captured objects under the Deployment's prefix and their lines, parsed."""
    keys: list[str] = []
    lines: list[dict[str, Any]] = []
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix="iris/iris/")
    for item in listing.get("Contents", []):
        keys.append(item["Key"])
        data = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        text = gzip.decompress(data).decode() if item["Key"].endswith(".gz") else data.decode()
        lines.extend(json.loads(line) for line in text.splitlines() if line)
    return keys, lines


def columns(tensor: dict[str, Any], names: list[str]) -> dict[str, list[float]]:
    """A 2-D tensor's columns by name."""
    rows, width = tensor["shape"]
    assert width == len(names), tensor["shape"]
    data = tensor["data"]
    return {name: [data[row * width + index] for row in range(rows)] for index, name in enumerate(names)}


def test_captured_payloads_land_in_the_store_without_the_redacted_fields(
    fleet: Fleet, cluster: Cluster, namespace: str
) -> None:
    store = start_object_store(cluster, namespace)
    store.create_bucket(BUCKET)
    store.make_secret(namespace, "capture-store")
    capture = {
        "percent": 100,
        "destination": {"uri": f"s3://{BUCKET}/iris/", "credentials": {"secretName": "capture-store"}},
        "redact": [REDACTED],
    }
    started = time.time()
    load = fleet.serve_v1(
        helpers.model_version("iris-v1", "1"), capture=capture, bodies=iris_data.bodies(), rate=20
    )
    client = store.client()

    def enough() -> tuple[list[str], list[dict[str, Any]]] | None:
        found = captured_lines(client)
        return found if len(found[1]) >= 50 else None

    keys, lines = cluster.wait_for("50 captured answers in the store", enough, timeout=90, interval=2)
    first_object = time.time() - started
    load.stop()

    sent = {a.request_id: a for a in load.snapshot() if a.ok and a.request_id}
    assert all(key.endswith(".jsonl.gz") for key in keys), keys
    assert all(key.startswith(time.strftime("iris/iris/%Y/", time.gmtime())) for key in keys), keys
    matched = 0
    for line in lines:
        assert line["deployment"] == "iris", line
        assert line["version"] == "iris-v1", line
        assert line["status"] == 200, line
        assert line["path"] == "/v2/models/iris/infer", line
        assert "outputs" in line["response"], line
        tensor = line["request"]["inputs"][0]
        assert tensor["parameters"]["names"] == KEPT, tensor["parameters"]
        assert tensor["redactedColumns"] == [REDACTED], tensor
        answer = sent.get(line["requestId"])
        if answer is None:  # an answer the load had not recorded yet when it stopped
            continue
        matched += 1
        original = json.loads(answer.body)["inputs"][0]
        want = columns(original, list(iris_data.FEATURES))
        got = columns(tensor, KEPT)
        assert got == {name: want[name] for name in KEPT}, line["requestId"]
        # the redacted column is nowhere in the line: no run of its values, in the order sent
        assert json.dumps(want[REDACTED])[1:-1] not in json.dumps(line), line["requestId"]
    assert matched >= 40, (matched, len(lines))
    assert fleet.client_errors() == [], load.codes(since=fleet.serving_since)
    helpers.record_result(
        "payload_capture",
        {
            "objects": len(keys),
            "lines": len(lines),
            "matchedToClientAnswers": matched,
            "secondsFromApplyToFiftyCaptured": round(first_object, 1),
            "clientErrors": len(fleet.client_errors()),
            "requests": len(load.answers),
        },
    )
