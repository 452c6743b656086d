"""The router as a real process in front of real model-server processes, on loopback."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import math
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from routerkit import (
    INFER_BODY,
    INFER_PATH,
    SETOSA,
    VIRGINICA,
    FakeKubeAPI,
    Process,
    Reply,
    Tally,
    get_json,
    get_status,
    get_text,
    load,
    metric,
    router,
    send,
    wait_until,
    write_config,
)

ADMIN_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
"""What the operator puts into the Secret <deployment>-router-admin, which the router pod mounts."""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "router.json"


@pytest.fixture
def started_routers() -> Iterator[list[Process]]:
    routers: list[Process] = []
    yield routers
    for process in routers:
        process.stop()


def start(routers: list[Process], *flags: str) -> Process:
    process = router(*flags)
    routers.append(process)
    return process


def test_a_failing_canary_at_weight_50_costs_clients_nothing_over_10000_requests(
    config_file: Path, started_routers: list[Process], stable_server: Process, failing_server: Process
) -> None:
    """Given a canary that answers every request with 500 at weight 50 and retryOnStable, when 10,000
    requests go through, then every client gets a 200 from stable and the metrics show the fallbacks."""
    write_config(
        config_file,
        [("iris-v1", stable_server, 50, "stable"), ("iris-v2", failing_server, 50, "canary")],
        fallback={"retryOnStable": True},
    )
    proxy = start(started_routers, "--config", str(config_file))
    tally = asyncio.run(load(proxy.port, requests=10_000, concurrency=32))

    assert tally.failures == []
    assert tally.replies == 10_000
    assert dict(tally.statuses) == {200: 10_000}
    assert dict(tally.served_by) == {"iris-v1": 10_000}
    # About half the requests were drawn for the canary and fell back (retry, then the open circuit).
    fell_back = sum(tally.fallbacks.values())
    assert abs(fell_back - 5_000) <= 5 * math.sqrt(10_000 * 0.25)
    assert set(tally.fallbacks) <= {"retry_on_stable", "circuit_open"}

    text = get_text(proxy.admin_port, "/metrics")
    retried = metric(text, "modelfleet_fallbacks_total", version="iris-v2", reason="retry_on_stable")
    skipped = metric(text, "modelfleet_fallbacks_total", version="iris-v2", reason="circuit_open")
    assert retried == tally.fallbacks["retry_on_stable"]
    assert skipped == tally.fallbacks["circuit_open"]
    assert retried >= 20  # the circuit opens only after minRequests failures
    assert metric(text, "modelfleet_requests_total", version="iris-v2", code="500") == retried
    assert metric(text, "modelfleet_requests_total", version="iris-v1", code="200") == 10_000
    assert metric(text, "modelfleet_circuit_open", version="iris-v2") == 1
    assert metric(text, "modelfleet_request_duration_seconds_count", version="iris-v1") == 10_000


def test_a_failing_stable_is_covered_by_the_warm_previous_version(
    config_file: Path, started_routers: list[Process], stable_server: Process, failing_server: Process
) -> None:
    """Given a newly promoted stable that answers every request with 500 and the former stable kept warm as
    the previous version, when 400 requests go through, then every client gets a 200 from the previous
    version: retried at first, sent there directly once stable's circuit is open."""
    write_config(
        config_file,
        [("iris-v2", failing_server, 100, "stable"), ("iris-v1", stable_server, 0, "previous")],
        fallback={"retryOnStable": True},
    )
    proxy = start(started_routers, "--config", str(config_file))
    tally = asyncio.run(load(proxy.port, requests=400, concurrency=8))

    assert tally.failures == []
    assert dict(tally.statuses) == {200: 400}
    assert dict(tally.served_by) == {"iris-v1": 400}
    assert set(tally.fallbacks) == {"retry_on_previous", "circuit_open"}
    assert sum(tally.fallbacks.values()) == 400

    text = get_text(proxy.admin_port, "/metrics")
    retried = metric(text, "modelfleet_fallbacks_total", version="iris-v2", reason="retry_on_previous")
    skipped = metric(text, "modelfleet_fallbacks_total", version="iris-v2", reason="circuit_open")
    assert retried == tally.fallbacks["retry_on_previous"]
    assert skipped == tally.fallbacks["circuit_open"]
    assert retried >= 20  # the circuit opens only after minRequests failures
    assert metric(text, "modelfleet_requests_total", version="iris-v2", code="500") == retried
    assert metric(text, "modelfleet_requests_total", version="iris-v1", code="200") == 400
    assert metric(text, "modelfleet_fallbacks_total", version="iris-v1") == 0
    assert metric(text, "modelfleet_circuit_open", version="iris-v2") == 1


def test_the_fallback_version_covers_a_failing_stable_and_takes_all_its_traffic_while_active(
    config_file: Path,
    started_routers: list[Process],
    stable_server: Process,
    failing_server: Process,
    shifted_server: Process,
) -> None:
    """Given a stable version that answers every request with 500 and a fallback version, when 300
    requests go through, then the fallback version answers them all. Given then a stable version that
    answers but drifts, with the fallback active, when 300 more go through, then the fallback version
    still answers them all (degraded), stable gets a copy of each whose answers only the metrics and the
    prediction sample see; released, stable answers again."""
    write_config(
        config_file,
        [("iris-v2", failing_server, 100, "stable"), ("iris-rules", stable_server, 0, "fallback")],
    )
    proxy = start(started_routers, "--config", str(config_file), "--prediction-samples", "100")
    tally = asyncio.run(load(proxy.port, requests=300, concurrency=8))

    assert tally.failures == []
    assert dict(tally.statuses) == {200: 300}
    assert dict(tally.served_by) == {"iris-rules": 300}
    assert set(tally.fallbacks) == {"retry_on_fallback", "circuit_open"}
    text = get_text(proxy.admin_port, "/metrics")
    retried = metric(text, "modelfleet_fallbacks_total", version="iris-v2", reason="retry_on_fallback")
    assert retried == tally.fallbacks["retry_on_fallback"] >= 20  # until stable's circuit opens
    assert metric(text, "modelfleet_requests_total", version="iris-v2", code="500") == retried
    assert metric(text, "modelfleet_requests_total", version="iris-rules", code="200") == 300

    write_config(
        config_file,
        [("iris-v3", shifted_server, 100, "stable"), ("iris-rules", stable_server, 0, "fallback")],
        fallback={"active": True},
    )
    wait_until(lambda: get_json(proxy.admin_port, "/config")["fallback"]["active"] is True, 2)
    tally = asyncio.run(load(proxy.port, requests=300, concurrency=8))

    assert tally.failures == []
    assert dict(tally.statuses) == {200: 300}
    assert dict(tally.served_by) == {"iris-rules": 300}
    assert dict(tally.fallbacks) == {"degraded": 300}

    def copies() -> float:
        text = get_text(proxy.admin_port, "/metrics")
        return metric(text, "modelfleet_requests_total", version="iris-v3", code="200")

    wait_until(lambda: copies() == 300, 5)
    text = get_text(proxy.admin_port, "/metrics")
    assert metric(text, "modelfleet_mirrored_requests_total", version="iris-v3") == 300
    assert metric(text, "modelfleet_fallbacks_total", version="iris-v3", reason="degraded") == 300
    assert metric(text, "modelfleet_requests_total", version="iris-rules", code="200") == 600
    samples = get_json(proxy.admin_port, "/predictions")
    assert set(samples["iris-rules"]) == {0, 2}  # what clients got: setosa and virginica
    assert set(samples["iris-v3"]) == {1, 0}  # what stable answered the copies: shifted, seen by no client

    write_config(
        config_file,
        [("iris-v3", shifted_server, 100, "stable"), ("iris-rules", stable_server, 0, "fallback")],
    )
    wait_until(lambda: get_json(proxy.admin_port, "/config")["fallback"]["active"] is False, 2)
    tally = asyncio.run(load(proxy.port, requests=50, concurrency=4))
    assert dict(tally.served_by) == {"iris-v3": 50}
    assert tally.fallbacks == {}


def test_weights_change_under_load_within_a_second_and_no_request_fails(
    config_file: Path, started_routers: list[Process], stable_server: Process, shifted_server: Process
) -> None:
    """Given steady load, when the configuration file changes the weights three times, then each change
    shows within about a second, the 50/50 phase splits within binomial bounds, and nothing fails."""
    write_config(
        config_file, [("iris-v1", stable_server, 100, "stable"), ("iris-v3", shifted_server, 0, "canary")]
    )
    proxy = start(started_routers, "--config", str(config_file))

    async def scenario() -> tuple[Tally, list[float], Tally]:
        stop = asyncio.Event()
        background = Tally()
        hammer = asyncio.ensure_future(load(proxy.port, concurrency=8, tally=background, stop=stop))
        delays = []
        measured = Tally()
        for generation, weights in enumerate([(50, 50), (0, 100), (100, 0)], start=2):
            await asyncio.sleep(0.3)
            write_config(
                config_file,
                [
                    ("iris-v1", stable_server, weights[0], "stable"),
                    ("iris-v3", shifted_server, weights[1], "canary"),
                ],
            )
            written = time.monotonic()
            for _ in range(500):
                if get_json(proxy.admin_port, "/readyz")["generation"] == generation:
                    break
                await asyncio.sleep(0.01)
            delays.append(time.monotonic() - written)
            if weights == (50, 50):
                measured = await load(proxy.port, requests=4_000, concurrency=8)
            if weights == (0, 100):
                only_canary = await load(proxy.port, requests=200, concurrency=4)
                assert dict(only_canary.served_by) == {"iris-v3": 200}
        stop.set()
        await hammer
        return background, delays, measured

    background, delays, split = asyncio.run(scenario())
    assert background.failures == []
    assert background.replies > 100
    assert set(background.statuses) == {200}
    assert set(background.served_by) == {"iris-v1", "iris-v3"}
    assert max(delays) < 1.0, delays
    assert split.statuses == {200: 4_000}
    assert abs(split.served_by["iris-v3"] - 2_000) <= 5 * math.sqrt(4_000 * 0.25)


def test_predictions_and_metrics_on_the_admin_port_show_a_drifting_canary(
    config_file: Path,
    started_routers: list[Process],
    stable_server: Process,
    shifted_server: Process,
    tmp_path: Path,
) -> None:
    """Given a router with an admin token (as the operator starts it), when a canary drifts, then its
    predictions are shown only to whoever sends the token, while /metrics and the probes answer anyone."""
    admin_token = tmp_path / "admin-token"
    admin_token.write_text(ADMIN_TOKEN)
    write_config(
        config_file, [("iris-v1", stable_server, 50, "stable"), ("iris-v3", shifted_server, 50, "canary")]
    )
    proxy = start(
        started_routers,
        "--config",
        str(config_file),
        "--prediction-samples",
        "100",
        "--admin-token-file",
        str(admin_token),
    )
    asyncio.run(load(proxy.port, requests=400, concurrency=4))
    assert get_status(proxy.admin_port, "/predictions") == 401
    assert get_status(proxy.admin_port, "/predictions", "guess") == 403
    samples = get_json(proxy.admin_port, "/predictions", ADMIN_TOKEN)
    assert set(samples) == {"iris-v1", "iris-v3"}
    assert len(samples["iris-v1"]) == len(samples["iris-v3"]) == 100
    assert set(samples["iris-v1"]) == {0, 2}  # setosa and virginica
    assert set(samples["iris-v3"]) == {1, 0}  # the same rows, every class shifted by one
    text = get_text(proxy.admin_port, "/metrics")
    for name in (
        "modelfleet_requests_total",
        "modelfleet_request_duration_seconds_bucket",
        "modelfleet_fallbacks_total",
        "modelfleet_mirrored_requests_total",
    ):
        assert metric(text, name, deployment="iris", version="iris-v1") >= 0
        assert f'{name}{{deployment="iris",version="iris-v3"' in text
    assert get_json(proxy.admin_port, "/healthz") == {"status": "ok"}
    assert get_json(proxy.admin_port, "/readyz")["status"] == "ready"
    assert metric(text, "modelfleet_router_admin_refused_total", deployment="iris", code="401") == 1
    assert metric(text, "modelfleet_router_admin_refused_total", deployment="iris", code="403") == 1


def test_mirrored_traffic_reaches_the_canary_and_its_answers_are_discarded(
    config_file: Path, started_routers: list[Process], stable_server: Process, failing_server: Process
) -> None:
    write_config(
        config_file,
        [("iris-v1", stable_server, 100, "stable"), ("iris-v2", failing_server, 0, "canary")],
        mirrorPercent=100,
    )
    proxy = start(started_routers, "--config", str(config_file))
    tally = asyncio.run(load(proxy.port, requests=300, concurrency=4))
    assert dict(tally.statuses) == {200: 300}
    assert dict(tally.served_by) == {"iris-v1": 300}
    assert tally.fallbacks == {}

    def mirrored() -> float:
        return metric(
            get_text(proxy.admin_port, "/metrics"), "modelfleet_mirrored_requests_total", version="iris-v2"
        )

    # The canary's circuit opens after its first failures; copies stop until it lets a probe through.
    wait_until(lambda: mirrored() >= 20, 5)
    text = get_text(proxy.admin_port, "/metrics")
    assert metric(text, "modelfleet_requests_total", version="iris-v2", code="500") == mirrored()


def test_readiness_waits_for_a_configuration_and_a_bad_one_keeps_the_last_good(
    config_file: Path, started_routers: list[Process], stable_server: Process
) -> None:
    proxy = start(started_routers, "--config", str(config_file))
    with pytest.raises(Exception, match="503"):
        get_json(proxy.admin_port, "/readyz")
    write_config(config_file, [("iris-v1", stable_server, 100, "stable")])
    assert wait_until(lambda: _ready(proxy), 2) < 1.0
    config_file.write_text('{"deployment": "iris", "versions": [{"name": "x"}]}')
    wait_until(lambda: "refused, keeping the previous configuration" in proxy.log, 2)
    tally = asyncio.run(load(proxy.port, requests=20, concurrency=2))
    assert dict(tally.statuses) == {200: 20}
    text = get_text(proxy.admin_port, "/metrics")
    assert metric(text, "modelfleet_router_config_loads_total", result="invalid") == 1


def _ready(proxy: Process) -> bool:
    try:
        return bool(get_json(proxy.admin_port, "/readyz")["status"] == "ready")
    except OSError:
        return False


def test_limits_hold_in_a_real_process(
    config_file: Path, started_routers: list[Process], slow_server: Process
) -> None:
    write_config(config_file, [("iris-v1", slow_server, 100, "stable")])
    proxy = start(
        started_routers,
        "--config",
        str(config_file),
        "--max-body-size",
        "2KiB",
        "--header-timeout",
        "500ms",
        "--max-concurrency",
        "4",
    )

    async def scenario() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        big = await send(reader, writer, INFER_PATH, b"x" * 4096)
        assert big.status == 413
        assert json.loads(big.body)["error"] == "request body over the limit of 2048 bytes"
        assert big.headers["x-modelfleet-served-by"] == "router"
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\n")  # and then nothing
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(4096), 3)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 1.5
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"\x16\x03\x01 this is not http\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(4096), 3)).startswith(b"HTTP/1.1 400 ")
        writer.close()

        # The slow version holds 4 requests for 400 ms; more at once get 503 with Retry-After.
        tally = await load(proxy.port, requests=12, concurrency=12)
        assert tally.statuses[503] >= 4
        assert tally.statuses[200] >= 4
        assert tally.failures == []

    asyncio.run(scenario())
    tally = asyncio.run(load(proxy.port, requests=4, concurrency=4))
    assert dict(tally.statuses) == {200: 4}
    text = get_text(proxy.admin_port, "/metrics")
    assert metric(text, "modelfleet_router_rejected_total", code="413") == 1
    assert metric(text, "modelfleet_router_rejected_total", code="408") == 1
    assert metric(text, "modelfleet_router_rejected_total", code="503") >= 4


def test_sigterm_lets_a_request_under_way_finish(
    config_file: Path, started_routers: list[Process], slow_server: Process
) -> None:
    write_config(config_file, [("iris-v1", slow_server, 100, "stable")])
    proxy = start(started_routers, "--config", str(config_file))

    async def scenario() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        pending = asyncio.ensure_future(send(reader, writer, INFER_PATH, INFER_BODY))
        await asyncio.sleep(0.1)
        proxy.signal(signal.SIGTERM)
        reply = await pending
        writer.close()
        return reply.status

    assert asyncio.run(scenario()) == 200
    assert proxy.proc.wait(10) == 0
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1),
    ):
        pass


def test_configmap_mode_follows_the_configmap_through_the_api(
    started_routers: list[Process], stable_server: Process, shifted_server: Process
) -> None:
    def document(canary_weight: int) -> str:
        return json.dumps(
            {
                "deployment": "iris",
                "versions": [
                    {
                        "name": "iris-v1",
                        "url": stable_server.url,
                        "weight": 100 - canary_weight,
                        "role": "stable",
                    },
                    {"name": "iris-v3", "url": shifted_server.url, "weight": canary_weight, "role": "canary"},
                ],
            }
        )

    api = FakeKubeAPI("ml", "iris-router", document(0))
    try:
        proxy = start(started_routers, "--configmap", "ml/iris-router", "--kube-api", api.url)
        wait_until(lambda: _ready(proxy), 5)
        assert dict(asyncio.run(load(proxy.port, requests=50, concurrency=2)).served_by) == {"iris-v1": 50}
        api.update(document(100))
        changed = time.monotonic()
        wait_until(lambda: get_json(proxy.admin_port, "/readyz")["generation"] == 2, 3)
        assert time.monotonic() - changed < 1.0
        assert dict(asyncio.run(load(proxy.port, requests=50, concurrency=2)).served_by) == {"iris-v3": 50}
        assert any("watch=true" in path and "resourceVersion=1" in path for path in api.requests)
    finally:
        api.close()


def test_during_the_drain_delay_it_is_not_ready_but_still_serves(
    config_file: Path, started_routers: list[Process], stable_server: Process
) -> None:
    write_config(config_file, [("iris-v1", stable_server, 100, "stable")])
    proxy = start(started_routers, "--config", str(config_file), "--drain-delay", "1s")
    wait_until(lambda: _ready(proxy), 5)
    proxy.signal(signal.SIGTERM)
    wait_until(lambda: not _ready(proxy), 2)
    tally = asyncio.run(load(proxy.port, requests=20, concurrency=2))
    assert dict(tally.statuses) == {200: 20}
    assert tally.failures == []  # each answer closed its connection, and the client opened another
    assert proxy.proc.wait(10) == 0


def post(port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, raw, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        fields = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, fields, response.read())
    finally:
        connection.close()


FEEDBACK_PATH = "/v2/models/iris/feedback"


def test_labels_join_the_predictions_a_real_router_served_and_its_inputs_are_sampled(
    config_file: Path, started_routers: list[Process], stable_server: Process, tmp_path: Path
) -> None:
    """Given a router with feedback whose token is in a file, when clients ask three predictions (two rows
    each: setosa and virginica, predicted 0 and 2) and label them, then every answer carried its request id,
    labels with the token join (accuracy 3/4), those without it or with another are refused, an unknown id
    and a second label are counted, and the inputs were sampled by column."""
    token = tmp_path / "feedback-token"
    token.write_text("s3cret\n")
    admin_token = tmp_path / "admin-token"
    admin_token.write_text(ADMIN_TOKEN)
    write_config(config_file, [("iris-v1", stable_server, 100, "stable")], feedback={"tokenFile": str(token)})
    proxy = start(
        started_routers,
        "--config",
        str(config_file),
        "--input-reads",
        "0",
        "--admin-token-file",
        str(admin_token),
    )
    wait_until(lambda: _ready(proxy), 5)

    made = post(proxy.port, INFER_PATH, INFER_BODY)
    given = post(proxy.port, INFER_PATH, INFER_BODY, {"X-Request-Id": "client-7"})
    oip_body = json.loads(INFER_BODY)
    oip_id = post(proxy.port, INFER_PATH, json.dumps({"id": "oip-9", **oip_body}).encode())
    assert [reply.status for reply in (made, given, oip_id)] == [200, 200, 200]
    assert json.loads(made.body)["outputs"][0]["data"] == [0, 2]
    first = made.headers["x-modelfleet-request-id"]
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", first)
    assert given.headers["x-modelfleet-request-id"] == "client-7"
    assert oip_id.headers["x-modelfleet-request-id"] == "oip-9"

    bearer = {"Authorization": "Bearer s3cret"}
    no_token = post(proxy.port, FEEDBACK_PATH, {"id": first, "label": [0, 2]})
    assert no_token.status == 401
    assert no_token.headers["www-authenticate"] == 'Bearer realm="modelfleet-feedback"'
    assert "Authorization: Bearer <token>" in json.loads(no_token.body)["error"]
    wrong = post(proxy.port, FEEDBACK_PATH, {"id": first, "label": [0, 2]}, {"Authorization": "Bearer guess"})
    assert wrong.status == 403
    joined = post(proxy.port, FEEDBACK_PATH, {"id": first, "label": [0, 2]}, bearer)
    assert (joined.status, json.loads(joined.body)) == (
        200,
        {"id": first, "version": "iris-v1", "labels": 2, "correct": 2},
    )
    by_header = post(
        proxy.port, FEEDBACK_PATH, {"label": [0, 1]}, {**bearer, "X-Modelfleet-Request-Id": "client-7"}
    )
    assert json.loads(by_header.body)["correct"] == 1
    again = post(proxy.port, FEEDBACK_PATH, {"id": first, "label": [1, 1]}, bearer)
    assert again.status == 409
    unknown = post(proxy.port, FEEDBACK_PATH, {"id": "nobody", "label": 0}, bearer)
    assert unknown.status == 404
    assert json.loads(unknown.body)["error"].startswith("no prediction with id 'nobody'")
    malformed = post(proxy.port, FEEDBACK_PATH, b"{oops", bearer)
    assert malformed.status == 400

    # the joins are the admin port's, behind the admin token: the feedback token does not open them
    assert get_status(proxy.admin_port, "/feedback") == 401
    assert get_status(proxy.admin_port, "/feedback", "s3cret") == 403
    shown = get_json(proxy.admin_port, "/feedback", ADMIN_TOKEN)
    version = shown["versions"]["iris-v1"]
    assert (version["labels"], version["correct"], version["accuracy"]) == (4, 3, 0.75)
    assert (version["numericLabels"], version["meanAbsoluteError"]) == (4, 0.25)
    assert [(pair["prediction"], pair["label"]) for pair in version["pairs"]] == [
        (0, 0),
        (2, 2),
        (0, 0),
        (2, 1),
    ]
    assert shown["cursor"] == 4
    assert shown["predictions"]["count"] == 3
    assert get_json(proxy.admin_port, "/feedback?after=4", ADMIN_TOKEN)["versions"]["iris-v1"]["pairs"] == []
    text = get_text(proxy.admin_port, "/metrics")
    counted = {
        outcome: metric(text, "modelfleet_router_feedback_total", deployment="iris", outcome=outcome)
        for outcome in ("joined", "unauthorized", "forbidden", "duplicate", "unknown", "invalid")
    }
    assert counted == {
        "joined": 2,
        "unauthorized": 1,
        "forbidden": 1,
        "duplicate": 1,
        "unknown": 1,
        "invalid": 1,
    }
    assert metric(text, "modelfleet_feedback_labels_total", version="iris-v1") == 4
    assert metric(text, "modelfleet_feedback_correct_total", version="iris-v1") == 3
    assert metric(text, "modelfleet_feedback_absolute_error_total", version="iris-v1") == 1

    # /metrics answers anyone, and none of its labels carries what clients sent: no request id, no label,
    # no feature, only deployments, versions, codes, reasons and outcomes
    assert set(re.findall(r'(\w+)="', text)) <= {
        "deployment",
        "version",
        "code",
        "reason",
        "outcome",
        "result",
        "le",
    }
    for sent in ("client-7", "oip-9", first, "5.1", "3.5"):
        assert sent not in text

    assert get_status(proxy.admin_port, "/inputs") == 401
    inputs = get_json(proxy.admin_port, "/inputs", ADMIN_TOKEN)["iris-v1"]
    assert inputs == {f"f{n}": [SETOSA[n], VIRGINICA[n]] * 3 for n in range(4)}
    assert get_json(proxy.admin_port, "/config", ADMIN_TOKEN)["feedback"]["tokenFile"] == str(token)

    write_config(config_file, [("iris-v1", stable_server, 100, "stable")])  # spec.feedback removed
    wait_until(lambda: get_json(proxy.admin_port, "/readyz")["generation"] == 2, 3)
    served = post(proxy.port, INFER_PATH, INFER_BODY)
    off = post(
        proxy.port, FEEDBACK_PATH, {"id": served.headers["x-modelfleet-request-id"], "label": [0, 2]}, bearer
    )
    assert (off.status, json.loads(off.body)) == (
        404,
        {"error": "feedback is not enabled for this deployment (it has no spec.feedback)"},
    )
    assert get_json(proxy.admin_port, "/feedback", ADMIN_TOKEN)["enabled"] is False


# -- payload capture -------------------------------------------------------------------------------------

CAPTURED_BODY = json.dumps(
    {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": [SETOSA, VIRGINICA],
                "parameters": {"names": ["sepal_length", "sepal_width", "petal_length", "petal_width"]},
            },
            {
                "name": "email",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["ann@example.com", "bob@example.com"],
            },
        ]
    }
).encode()
"""An iris request with its feature names and a field no capture may keep (the model reads input-0 only)."""
REDACT = ["petal_width", "email", "model_version"]


def capture_lines(directory: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(directory.rglob("*.jsonl.gz")):
        lines += [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    return lines


def assert_redacted(line: dict[str, Any]) -> None:
    """One captured pair of CAPTURED_BODY and its answer, as redaction leaves it."""
    features, email = line["request"]["inputs"]
    assert features["shape"] == [2, 3]
    assert features["data"] == [*SETOSA[:3], *VIRGINICA[:3]]
    assert features["parameters"]["names"] == ["sepal_length", "sepal_width", "petal_length"]
    assert email == {"name": "email", "shape": [2], "datatype": "BYTES", "redacted": True}
    assert "model_version" not in line["response"]
    assert line["response"]["outputs"][0]["data"] == [0, 2]
    assert "example.com" not in json.dumps(line)


def test_capture_writes_redacted_requests_and_answers_to_a_directory_in_batches_and_on_sigterm(
    config_file: Path, started_routers: list[Process], stable_server: Process, tmp_path: Path
) -> None:
    """Given a router capturing every answer into a directory (as a mounted claim) with petal_width, email
    and model_version redacted, when 30 requests go through and later 5 more right before SIGTERM, then
    every request and answer is in the gzip JSON Lines files under <deployment>/<YYYY>/<MM>/<DD>/<HH>/ with
    the redacted fields absent, and the metrics count them."""
    directory = tmp_path / "captures"
    write_config(
        config_file,
        [("iris-v1", stable_server, 100, "stable")],
        capture={"percent": 100, "uri": f"file://{directory}", "redact": REDACT, "flushInterval": "200ms"},
    )
    proxy = start(started_routers, "--config", str(config_file))
    wait_until(lambda: _ready(proxy), 5)

    tally = asyncio.run(load(proxy.port, requests=30, concurrency=4, body=CAPTURED_BODY))
    assert dict(tally.statuses) == {200: 30}
    named = post(proxy.port, INFER_PATH, CAPTURED_BODY, {"X-Request-Id": "client-42"})
    assert named.status == 200
    wait_until(lambda: len(capture_lines(directory)) == 31, 10)

    lines = capture_lines(directory)
    for line in lines:
        assert_redacted(line)
        assert (line["deployment"], line["version"], line["status"]) == ("iris", "iris-v1", 200)
        assert line["path"] == INFER_PATH
    assert "client-42" in {line["requestId"] for line in lines}
    for path in directory.rglob("*"):
        if path.is_file():
            relative = path.relative_to(directory).as_posix()
            assert re.fullmatch(
                r"iris/\d{4}/\d{2}/\d{2}/\d{2}/[A-Za-z0-9._-]+-\d{13}-\d+\.jsonl\.gz", relative
            )
    text = get_text(proxy.admin_port, "/metrics")
    assert metric(text, "modelfleet_capture_records_total", deployment="iris", version="iris-v1") == 31
    assert metric(text, "modelfleet_capture_written_records_total", deployment="iris") == 31
    assert metric(text, "modelfleet_capture_batches_total", outcome="written") >= 1
    assert metric(text, "modelfleet_capture_dropped_total") == 0

    # the last ones are still in the buffer when SIGTERM comes: written on the way out
    write_config(
        config_file,
        [("iris-v1", stable_server, 100, "stable")],
        capture={"percent": 100, "uri": f"file://{directory}", "redact": REDACT, "flushInterval": "1h"},
    )
    wait_until(lambda: get_json(proxy.admin_port, "/readyz")["generation"] == 2, 3)
    for index in range(5):
        assert post(proxy.port, INFER_PATH, CAPTURED_BODY, {"X-Request-Id": f"last-{index}"}).status == 200
    assert proxy.stop() == 0
    lines = capture_lines(directory)
    assert len(lines) == 36
    assert [line["requestId"] for line in lines if line["requestId"].startswith("last-")] == [
        f"last-{index}" for index in range(5)
    ]
    for line in lines:
        assert_redacted(line)


def test_capture_into_a_directory_that_cannot_be_written_leaves_requests_unaffected(
    config_file: Path, started_routers: list[Process], stable_server: Process, tmp_path: Path
) -> None:
    """Given a capture destination that cannot be written (a file where the directory should be), when 400
    requests go through, then every one is answered 200, the batches are dropped and counted, and the
    failure is logged once, without the payload."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    write_config(
        config_file,
        [("iris-v1", stable_server, 100, "stable")],
        capture={
            "percent": 100,
            "uri": f"file://{blocker}/captures",
            "redact": REDACT,
            "flushInterval": "100ms",
            "batchRecords": 50,
            "bufferRecords": 100,
        },
    )
    proxy = start(started_routers, "--config", str(config_file))
    wait_until(lambda: _ready(proxy), 5)

    tally = asyncio.run(load(proxy.port, requests=400, concurrency=8, body=CAPTURED_BODY))
    assert tally.failures == []
    assert dict(tally.statuses) == {200: 400}
    wait_until(
        lambda: (
            metric(
                get_text(proxy.admin_port, "/metrics"), "modelfleet_capture_batches_total", outcome="failed"
            )
            >= 1
        ),
        5,
    )
    text = get_text(proxy.admin_port, "/metrics")
    assert metric(text, "modelfleet_capture_batches_total", outcome="written") == 0
    dropped = metric(text, "modelfleet_capture_dropped_total", reason="store_error") + metric(
        text, "modelfleet_capture_dropped_total", reason="buffer_full"
    )
    assert dropped + metric(text, "modelfleet_capture_buffered_records") == 400
    failures = [line for line in proxy.lines if "capture: a batch of" in line]
    assert len(failures) == 1  # at most one a minute
    assert "Not a directory; dropped" in failures[0]
    assert "example.com" not in proxy.log


def test_capture_writes_objects_to_a_real_s3_store_and_drops_batches_while_it_is_down(
    config_file: Path, started_routers: list[Process], stable_server: Process, tmp_path: Path
) -> None:
    """Given versitygw on loopback (posix backend) and a router capturing into s3://BUCKET/captures/ with
    the store's credentials in its environment, when 20 requests go through, then gzip JSON Lines objects
    land under captures/iris/<YYYY>/<MM>/<DD>/<HH>/<pod>-<ms>-<seq>.jsonl.gz with the redacted fields
    absent; when the store goes away, 50 more requests are all answered and the batches dropped and
    counted, the log naming neither the payload nor the secret key."""
    from fetchkit import S3Store

    store = S3Store(tmp_path / "s3")
    try:
        bucket = store.bucket()
        write_config(
            config_file,
            [("iris-v1", stable_server, 100, "stable")],
            capture={
                "percent": 100,
                "uri": f"s3://{bucket}/captures/",
                "redact": REDACT,
                "flushInterval": "200ms",
            },
        )
        proxy = Process(
            [
                "router",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--config",
                str(config_file),
            ],
            {**store.env(AWS_REGION="us-east-1"), "HOSTNAME": "iris-router-6f7c9-x2kq"},
        )
        started_routers.append(proxy)
        wait_until(lambda: _ready(proxy), 5)

        tally = asyncio.run(load(proxy.port, requests=20, concurrency=4, body=CAPTURED_BODY))
        assert dict(tally.statuses) == {200: 20}

        def objects() -> list[str]:
            listed = store.client.list_objects_v2(Bucket=bucket, Prefix="captures/")
            return sorted(item["Key"] for item in listed.get("Contents", []))

        def lines() -> list[dict[str, Any]]:
            out = []
            for key in objects():
                data = store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
                out += [json.loads(line) for line in gzip.decompress(data).splitlines()]
            return out

        wait_until(lambda: len(lines()) == 20, 15)
        for key in objects():
            assert re.fullmatch(
                r"captures/iris/\d{4}/\d{2}/\d{2}/\d{2}/iris-router-6f7c9-x2kq-\d{13}-\d+\.jsonl\.gz", key
            )
        for line in lines():
            assert_redacted(line)
        text = get_text(proxy.admin_port, "/metrics")
        assert metric(text, "modelfleet_capture_written_records_total", deployment="iris") == 20
        assert store.requests(bucket)["s3_PutObject"] >= 1

        store.stop()
        tally = asyncio.run(load(proxy.port, requests=50, concurrency=4, body=CAPTURED_BODY))
        assert tally.failures == []
        assert dict(tally.statuses) == {200: 50}
        wait_until(
            lambda: (
                metric(
                    get_text(proxy.admin_port, "/metrics"),
                    "modelfleet_capture_dropped_total",
                    reason="store_error",
                )
                == 50
            ),
            20,
        )
        text = get_text(proxy.admin_port, "/metrics")
        assert metric(text, "modelfleet_capture_batches_total", outcome="failed") >= 1
        failures = [line for line in proxy.lines if "capture: a batch of" in line]
        assert len(failures) == 1
        assert f"s3://{bucket}/captures/iris/" in failures[0]
        assert f"cannot reach {store.endpoint}" in failures[0]
        assert store.secret_key not in proxy.log
        assert "example.com" not in proxy.log
    finally:
        store.stop()
