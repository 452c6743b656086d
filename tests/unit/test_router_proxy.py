"""The router's request path, in one process on loopback: fake versions behind a real router.

Each test gives a configuration and fake versions that answer, fail, hang or refuse, then checks what the
client saw (status, body, served-by and fallback headers) and what the metrics counted.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop

from modelfleet import oip
from modelfleet.api.routerconfig import RouterConfig
from modelfleet.httpcore import HTTPServer, Request, Response
from modelfleet.router.admin import admin_handler
from modelfleet.router.proxy import SERVED_BY_ROUTER, Router
from modelfleet.router.upstream import Pool, UpstreamResponse


class FakeVersion:
    """A model version whose behaviour a test sets: ok, error (500), slow (sleeps), or down (refuses)."""

    def __init__(self, name: str, mode: str = "ok", label: int = 0) -> None:
        self.name = name
        self.mode = mode
        self.label = label
        self.requests: list[Request] = []
        self.server: HTTPServer | None = None
        self.port = 0
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        self.requests.append(request)
        self.arrived.set()
        if self.mode == "error":
            return Response.error(
                500, f"{self.name} is broken", b"x-version: " + self.name.encode() + b"\r\n"
            )
        if self.mode == "slow":
            return self._slow()
        body = {"model_name": "iris", "outputs": [{"name": "label", "data": [self.label, self.label]}]}
        return Response.json(
            200, body, b"x-version: " + self.name.encode() + b"\r\nconnection: keep-alive\r\n"
        )

    async def _slow(self) -> Response:
        await self.release.wait()
        return Response.json(200, {"outputs": [{"data": [self.label]}]})

    async def start(self) -> None:
        if self.mode == "down":
            self.port = free_port()
            return
        self.server = HTTPServer(self.handle, name=self.name)
        _, self.port = await self.server.listen("127.0.0.1", 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.close(0.1)


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(
    stable: FakeVersion,
    canary: FakeVersion | None = None,
    canary_weight: int = 0,
    mirror: float = 0,
    previous: FakeVersion | None = None,
    fallback_version: FakeVersion | None = None,
    **fallback: Any,
) -> RouterConfig:
    versions = [{"name": stable.name, "url": stable.url, "weight": 100 - canary_weight, "role": "stable"}]
    if canary is not None:
        versions.append({"name": canary.name, "url": canary.url, "weight": canary_weight, "role": "canary"})
    if previous is not None:
        versions.append({"name": previous.name, "url": previous.url, "weight": 0, "role": "previous"})
    if fallback_version is not None:
        versions.append(
            {"name": fallback_version.name, "url": fallback_version.url, "weight": 0, "role": "fallback"}
        )
    return RouterConfig.model_validate(
        {"deployment": "iris", "versions": versions, "mirrorPercent": mirror, "fallback": fallback}
    )


class Client:
    def __init__(self, port: int) -> None:
        self.pool = Pool("127.0.0.1", port)

    async def send(
        self, path: str = "/v2/models/iris/infer", body: bytes = b"{}", headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = f"POST {path} HTTP/1.1\r\nhost: router\r\n{lines}content-length: {len(body)}\r\n\r\n".encode()
        return await self.pool.request(head, body, 10.0)

    async def get(self, path: str) -> UpstreamResponse:
        return await self.pool.request(f"GET {path} HTTP/1.1\r\nhost: router\r\n\r\n".encode(), b"", 10.0)


class Harness:
    def __init__(self, router: Router, client: Client, admin: Client) -> None:
        self.router = router
        self.client = client
        self.admin = admin

    def count(self, family: str, **labels: str) -> float:
        """Sum of a metric family's children whose labels match."""
        metric = getattr(self.router.metrics, family)
        names = metric.labelnames
        total = 0.0
        for values, child in metric.children.items():
            if all(dict(zip(names, values, strict=True)).get(k) == v for k, v in labels.items()):
                total += child.value if hasattr(child, "value") else child.count
        return total


@asynccontextmanager
async def running(cfg: RouterConfig | None, *versions: FakeVersion, **router_args: Any) -> Any:
    router = Router(**router_args)
    if cfg is not None:
        router.apply(cfg)
    traffic = HTTPServer(router.handle, name="router", extra_headers=SERVED_BY_ROUTER)
    admin = HTTPServer(admin_handler(router, lambda: True), name="admin")
    _, port = await traffic.listen("127.0.0.1", 0)
    _, admin_port = await admin.listen("127.0.0.1", 0)
    try:
        yield Harness(router, Client(port), Client(admin_port))
    finally:
        for version in versions:
            await version.stop()
        await traffic.close(0.5)
        await admin.close(0.1)
        await router.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(scenario())


async def started(*versions: FakeVersion) -> None:
    for version in versions:
        await version.start()


def header(response: UpstreamResponse, name: str) -> str | None:
    value = response.header(name.encode())
    return None if value is None else value.decode()


# -- split and pinning -------------------------------------------------------------------------------


def test_without_a_configuration_the_router_answers_503_json() -> None:
    async def scenario() -> None:
        async with running(None) as h:
            response = await h.client.send()
            assert response.status == 503
            assert json.loads(response.body) == {"error": "no configuration loaded yet"}
            assert header(response, "x-modelfleet-served-by") == "router"
            assert (await h.admin.get("/readyz")).status == 503

    run(scenario)


def test_every_response_says_which_version_answered_and_passes_its_headers_back() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", label=0), FakeVersion("iris-v2", label=2)
        await started(stable, canary)
        async with running(config(stable, canary, canary_weight=50), stable, canary) as h:
            seen = {}
            for _ in range(60):
                response = await h.client.send()
                assert response.status == 200
                served_by = header(response, "x-modelfleet-served-by")
                assert header(response, "x-version") == served_by  # the version's own header came through
                assert header(response, "x-modelfleet-fallback") is None
                assert response.header(b"connection") is None  # hop-by-hop headers are the router's own
                seen[served_by] = seen.get(served_by, 0) + 1
            assert set(seen) == {"iris-v1", "iris-v2"}
            assert h.count("requests", version="iris-v1", code="200") == seen["iris-v1"]
            assert h.count("requests", version="iris-v2", code="200") == seen["iris-v2"]

    run(scenario)


def test_the_pin_header_chooses_the_version_and_is_not_forwarded() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2")
        await started(stable, canary)
        async with running(config(stable, canary, canary_weight=0), stable, canary) as h:
            for _ in range(5):
                response = await h.client.send(headers={"X-Modelfleet-Version": "iris-v2"})
                assert header(response, "x-modelfleet-served-by") == "iris-v2"
            assert len(canary.requests) == 5
            assert stable.requests == []
            assert canary.requests[0].header(b"x-modelfleet-version") is None

    run(scenario)


def test_a_pinned_request_gets_the_versions_own_failure_without_fallback() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        cfg = config(stable, canary, canary_weight=50, retryOnStable=True, response={"body": "{}"})
        async with running(cfg, stable, canary) as h:
            response = await h.client.send(headers={"X-Modelfleet-Version": "iris-v2"})
            assert response.status == 500
            assert json.loads(response.body) == {"error": "iris-v2 is broken"}
            assert header(response, "x-modelfleet-served-by") == "iris-v2"
            assert header(response, "x-modelfleet-fallback") is None
            assert stable.requests == []

    run(scenario)


def test_pinning_an_unknown_version_is_a_400_that_names_the_versions() -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        async with running(config(stable), stable) as h:
            response = await h.client.send(headers={"X-Modelfleet-Version": "iris-v9"})
            assert response.status == 400
            message = json.loads(response.body)["error"]
            assert "'iris-v9'" in message
            assert "iris-v1" in message
            assert header(response, "x-modelfleet-served-by") == "router"
            assert stable.requests == []
            assert h.count("rejected", code="400") == 1

    run(scenario)


def test_request_headers_path_and_body_reach_the_version_and_hop_by_hop_ones_do_not() -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        async with running(config(stable), stable) as h:
            body = b'{"inputs": []}'
            await h.client.send(
                "/v2/models/iris/infer?trace=1",
                body,
                {"X-Request-Id": "abc", "Content-Type": "application/json", "Keep-Alive": "timeout=5"},
            )
            [request] = stable.requests
            assert request.path == b"/v2/models/iris/infer?trace=1"
            assert request.body == body
            assert request.header(b"x-request-id") == b"abc"
            assert request.header(b"content-type") == b"application/json"
            assert request.header(b"keep-alive") is None
            assert request.header(b"host") == f"127.0.0.1:{stable.port}".encode()

    run(scenario)


# -- request ids ---------------------------------------------------------------------------------------


def test_every_answer_carries_a_request_id_the_router_made_unless_the_client_gave_one() -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        async with running(config(stable), stable) as h:
            made = [header(await h.client.send(), "x-modelfleet-request-id") for _ in range(3)]
            assert len(set(made)) == 3
            assert all(
                value is not None and value.startswith(h.router.ids.tag.decode() + "-") for value in made
            )
            given = await h.client.send(headers={"X-Request-Id": "order-17"})
            assert header(given, "x-modelfleet-request-id") == "order-17"
            assert stable.requests[-1].header(b"x-request-id") == b"order-17"  # passed on as it came
            oip_id = await h.client.send(body=b'{"id": "req-42", "inputs": []}')
            assert header(oip_id, "x-modelfleet-request-id") == "req-42"
            odd = header(
                await h.client.send(headers={"X-Request-Id": "two words"}), "x-modelfleet-request-id"
            )
            assert odd is not None
            assert odd.startswith(h.router.ids.tag.decode() + "-")  # not echoed: one of the router's own

    run(scenario)


def test_answers_the_router_makes_itself_carry_the_request_id_too() -> None:
    async def scenario() -> None:
        async with running(None) as h:
            not_ready = await h.client.send(headers={"X-Request-Id": "a1"})
            assert (not_ready.status, header(not_ready, "x-modelfleet-request-id")) == (503, "a1")
        stable, canary = FakeVersion("iris-v1", mode="down"), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        cfg = config(stable, canary, canary_weight=50, retryOnStable=False, circuitBreaker=None)
        async with running(cfg, stable, canary) as h:
            unknown_pin = await h.client.send(
                headers={"X-Modelfleet-Version": "iris-v9", "X-Request-Id": "b2"}
            )
            assert (unknown_pin.status, header(unknown_pin, "x-modelfleet-request-id")) == (400, "b2")
            failed = await h.client.send(headers={"X-Modelfleet-Version": "iris-v1", "X-Request-Id": "c3"})
            assert (failed.status, header(failed, "x-modelfleet-request-id")) == (502, "c3")
            broken = await h.client.send(headers={"X-Modelfleet-Version": "iris-v2", "X-Request-Id": "d4"})
            assert (broken.status, header(broken, "x-modelfleet-request-id")) == (500, "d4")
        static = {"statusCode": 200, "body": "{}"}
        async with running(config(stable, response=static), stable) as h:
            for request_id in ("e5", "e6"):  # the static response is shared: each answer has its own id
                fallback = await h.client.send(headers={"X-Request-Id": request_id})
                assert header(fallback, "x-modelfleet-served-by") == "fallback-static"
                assert header(fallback, "x-modelfleet-request-id") == request_id

    run(scenario)


def with_feedback(cfg: RouterConfig, token_file: Path) -> RouterConfig:
    return RouterConfig.model_validate(
        {**json.loads(cfg.to_json()), "feedback": {"tokenFile": str(token_file)}}
    )


def test_labels_join_the_answer_the_client_got_from_the_version_that_gave_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        token = tmp_path / "token"
        token.write_text("t0ken")
        stable, canary = FakeVersion("iris-v1", label=1), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        cfg = with_feedback(config(stable, canary, canary_weight=100, retryOnStable=True), token)
        async with running(cfg, stable, canary) as h:
            served = await h.client.send()
            assert header(served, "x-modelfleet-fallback") == "retry_on_stable"
            request_id = header(served, "x-modelfleet-request-id")
            assert request_id is not None
            auth = {"Authorization": "Bearer t0ken", "X-Modelfleet-Request-Id": request_id}
            joined = await h.client.send("/v2/models/iris/feedback", b'{"label": [1, 0]}', auth)
            assert (joined.status, json.loads(joined.body)) == (
                200,
                {"id": request_id, "version": "iris-v1", "labels": 2, "correct": 1},
            )
            pinned = await h.client.send(headers={"X-Modelfleet-Version": "iris-v2", "X-Request-Id": "p1"})
            assert pinned.status == 500
            bearer = {"Authorization": "Bearer t0ken"}
            refused = await h.client.send("/v2/models/iris/feedback", b'{"id": "p1", "label": 1}', bearer)
            assert refused.status == 404  # only successful answers are kept
            shown = json.loads((await h.admin.get("/feedback")).body)
            assert shown["versions"]["iris-v1"]["accuracy"] == 0.5
            assert "iris-v2" not in shown["versions"]
            assert len(stable.requests) == 1  # labels never reach a version
            assert len(canary.requests) == 2
            assert h.count("feedback", outcome="joined") == 1
            assert h.count("feedback", outcome="unknown") == 1

    run(scenario)


# -- the fallback chain ------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "code"), [("error", "500"), ("slow", "504"), ("down", "502")])
def test_a_failing_canary_is_answered_by_stable_when_retry_on_stable(mode: str, code: str) -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", label=1), FakeVersion("iris-v2", mode=mode)
        await started(stable, canary)
        cfg = config(stable, canary, canary_weight=100, timeout="200ms", retryOnStable=True)
        async with running(cfg, stable, canary) as h:
            started_at = asyncio.get_running_loop().time()
            response = await h.client.send()
            elapsed = asyncio.get_running_loop().time() - started_at
            assert response.status == 200
            assert json.loads(response.body)["outputs"][0]["data"] == [1, 1]
            assert header(response, "x-modelfleet-served-by") == "iris-v1"
            assert header(response, "x-modelfleet-fallback") == "retry_on_stable"
            assert h.count("requests", version="iris-v2", code=code) == 1
            assert h.count("requests", version="iris-v1", code="200") == 1
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_stable") == 1
            assert h.count("fallbacks", reason="static_response") == 0
            assert elapsed < 1.0  # a hanging canary costs one per-attempt timeout, not more

    run(scenario)


@pytest.mark.parametrize(
    ("mode", "status", "served_by", "message"),
    [
        ("error", 500, "iris-v2", "iris-v2 is broken"),  # the version's own 5xx answer, passed through
        ("slow", 504, "router", "version iris-v2 did not answer within 200ms"),
        ("down", 502, "router", "version iris-v2 failed: cannot connect to 127.0.0.1:"),
    ],
)
def test_without_retry_or_static_response_the_client_gets_a_clear_error(
    mode: str, status: int, served_by: str, message: str
) -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", mode=mode)
        await started(stable, canary)
        cfg = config(stable, canary, canary_weight=100, timeout="200ms", retryOnStable=False)
        async with running(cfg, stable, canary) as h:
            response = await h.client.send()
            assert response.status == status
            assert message in json.loads(response.body)["error"]
            assert header(response, "x-modelfleet-served-by") == served_by
            assert header(response, "content-type") == "application/json"
            assert stable.requests == []
            assert h.count("fallbacks") == 0

    run(scenario)


def test_when_stable_fails_too_the_static_response_answers() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v2", mode="down")
        await started(stable, canary)
        static = {"statusCode": 200, "contentType": "application/json", "body": '{"outputs":[{"data":[0]}]}'}
        cfg = config(stable, canary, canary_weight=100, retryOnStable=True, response=static)
        async with running(cfg, stable, canary) as h:
            response = await h.client.send()
            assert response.status == 200
            assert response.body == b'{"outputs":[{"data":[0]}]}'
            assert header(response, "content-type") == "application/json"
            assert header(response, "x-modelfleet-served-by") == "fallback-static"
            assert header(response, "x-modelfleet-fallback") == "static_response"
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_stable") == 1
            assert h.count("fallbacks", version="iris-v1", reason="static_response") == 1
            assert h.count("requests", version="fallback-static", code="200") == 1
            assert h.count("requests", version="iris-v1", code="500") == 1
            assert h.count("requests", version="iris-v2", code="502") == 1

    run(scenario)


def test_a_failing_stable_is_answered_by_the_static_response_with_its_own_status() -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1", mode="down")
        await started(stable)
        static = {"statusCode": 203, "contentType": "text/plain", "body": "heuristic"}
        async with running(config(stable, response=static), stable) as h:
            response = await h.client.send()
            assert (response.status, response.body) == (203, b"heuristic")
            assert header(response, "content-type") == "text/plain"
            assert h.count("fallbacks", version="iris-v1", reason="static_response") == 1

    run(scenario)


def test_an_open_circuit_sends_canary_traffic_to_stable_without_touching_the_canary() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        breaker = {"errorRate": 0.5, "minRequests": 5, "window": "10s", "openFor": "30s"}
        cfg = config(stable, canary, canary_weight=100, retryOnStable=True, circuitBreaker=breaker)
        async with running(cfg, stable, canary) as h:
            for _ in range(5):
                response = await h.client.send()
                assert header(response, "x-modelfleet-fallback") == "retry_on_stable"
            assert len(canary.requests) == 5
            for _ in range(20):
                response = await h.client.send()
                assert response.status == 200
                assert header(response, "x-modelfleet-served-by") == "iris-v1"
                assert header(response, "x-modelfleet-fallback") == "circuit_open"
            assert len(canary.requests) == 5  # the open circuit kept requests away
            assert h.count("fallbacks", version="iris-v2", reason="circuit_open") == 20
            assert h.count("requests", version="iris-v2", code="503") == 20
            metrics = (await h.admin.get("/metrics")).body.decode()
            assert 'modelfleet_circuit_open{deployment="iris",version="iris-v2"} 1' in metrics

    run(scenario)


def test_an_open_stable_circuit_gives_the_static_response_or_a_503() -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1", mode="error")
        await started(stable)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        async with running(config(stable, circuitBreaker=breaker), stable) as h:
            for _ in range(2):
                assert (await h.client.send()).status == 500
            response = await h.client.send()
            assert response.status == 503
            assert json.loads(response.body) == {"error": "circuit open for version iris-v1"}
            assert header(response, "retry-after") == "1"
            assert header(response, "x-modelfleet-served-by") == "router"
            assert len(stable.requests) == 2
            # The same open circuit, now with a static response configured, keeps its state.
            h.router.apply(config(stable, circuitBreaker=breaker, response={"body": "static"}))
            response = await h.client.send()
            assert (response.status, response.body) == (200, b"static")
            assert len(stable.requests) == 2

    run(scenario)


# -- the previous version ------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "code"), [("error", "500"), ("slow", "504"), ("down", "502")])
def test_a_failing_stable_is_answered_by_the_previous_version(mode: str, code: str) -> None:
    """Given a stable version that fails and a warm previous version, when a request is drawn for stable,
    then the previous version answers it, and the headers and metrics say so."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode=mode), FakeVersion("iris-v0", label=2)
        await started(stable, previous)
        cfg = config(stable, previous=previous, timeout="200ms", retryOnStable=True)
        async with running(cfg, stable, previous) as h:
            started_at = asyncio.get_running_loop().time()
            response = await h.client.send()
            elapsed = asyncio.get_running_loop().time() - started_at
            assert response.status == 200
            assert json.loads(response.body)["outputs"][0]["data"] == [2, 2]
            assert header(response, "x-modelfleet-served-by") == "iris-v0"
            assert header(response, "x-modelfleet-fallback") == "retry_on_previous"
            assert header(response, "x-version") == "iris-v0"
            assert len(previous.requests) == 1
            assert h.count("requests", version="iris-v1", code=code) == 1
            assert h.count("requests", version="iris-v0", code="200") == 1
            assert h.count("duration", version="iris-v0") == 1
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_previous") == 1
            assert h.count("fallbacks") == 1
            assert elapsed < 1.0  # a hanging stable costs one per-attempt timeout, not more

    run(scenario)


@pytest.mark.parametrize("static", [None, {"statusCode": 203, "contentType": "text/plain", "body": "s"}])
def test_without_a_previous_version_a_failing_stable_ends_the_chain_as_before(
    static: dict[str, Any] | None,
) -> None:
    """Given no previous version, when stable fails, then the static response or stable's own failure
    answers, as it always did."""

    async def scenario() -> None:
        stable = FakeVersion("iris-v1", mode="error")
        await started(stable)
        extra = {} if static is None else {"response": static}
        async with running(config(stable, retryOnStable=True, **extra), stable) as h:
            response = await h.client.send()
            if static is None:
                assert response.status == 500
                assert json.loads(response.body) == {"error": "iris-v1 is broken"}
                assert header(response, "x-modelfleet-served-by") == "iris-v1"
                assert h.count("fallbacks") == 0
            else:
                assert (response.status, response.body) == (203, b"s")
                assert header(response, "x-modelfleet-fallback") == "static_response"
                assert h.count("fallbacks", version="iris-v1", reason="static_response") == 1
            assert h.count("fallbacks", reason="retry_on_previous") == 0

    run(scenario)


def test_without_retry_on_stable_the_previous_version_is_not_tried() -> None:
    """Given a previous version but retryOnStable off, when stable fails, then the client gets stable's
    failure and the previous version sees nothing."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v0")
        await started(stable, previous)
        async with running(config(stable, previous=previous, retryOnStable=False), stable, previous) as h:
            response = await h.client.send()
            assert response.status == 500
            assert header(response, "x-modelfleet-served-by") == "iris-v1"
            assert previous.requests == []
            assert h.count("fallbacks") == 0

    run(scenario)


def test_when_the_previous_version_fails_too_its_failure_or_the_static_response_answers() -> None:
    """Given stable and previous both failing, when a request comes, then both are tried once, and the
    client gets the previous version's failure, or the static response once one is configured."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v0", mode="down")
        await started(stable, previous)
        async with running(config(stable, previous=previous), stable, previous) as h:
            response = await h.client.send()
            assert response.status == 502
            assert (
                "version iris-v0 failed: cannot connect to 127.0.0.1:" in json.loads(response.body)["error"]
            )
            assert header(response, "x-modelfleet-served-by") == "router"
            assert h.count("requests", version="iris-v1", code="500") == 1
            assert h.count("requests", version="iris-v0", code="502") == 1
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_previous") == 1
            h.router.apply(config(stable, previous=previous, response={"body": "static"}))
            response = await h.client.send()
            assert (response.status, response.body) == (200, b"static")
            assert header(response, "x-modelfleet-served-by") == "fallback-static"
            assert header(response, "x-modelfleet-fallback") == "static_response"
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_previous") == 2
            assert h.count("fallbacks", version="iris-v0", reason="static_response") == 1
            assert h.count("requests", version="iris-v0", code="502") == 2

    run(scenario)


def test_an_open_stable_circuit_sends_stable_traffic_to_the_previous_version() -> None:
    """Given a failing stable whose circuit opens, when more requests come, then the previous version
    answers them (circuit_open) and stable is left alone."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v0")
        await started(stable, previous)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        async with running(config(stable, previous=previous, circuitBreaker=breaker), stable, previous) as h:
            for _ in range(2):
                response = await h.client.send()
                assert header(response, "x-modelfleet-fallback") == "retry_on_previous"
            for _ in range(10):
                response = await h.client.send()
                assert response.status == 200
                assert header(response, "x-modelfleet-served-by") == "iris-v0"
                assert header(response, "x-modelfleet-fallback") == "circuit_open"
            assert len(stable.requests) == 2
            assert len(previous.requests) == 12
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_previous") == 2
            assert h.count("fallbacks", version="iris-v1", reason="circuit_open") == 10
            assert h.count("requests", version="iris-v1", code="503") == 10
            assert h.count("requests", version="iris-v0", code="200") == 12

    run(scenario)


def test_when_stable_and_previous_circuits_are_open_the_chain_ends_without_touching_either() -> None:
    """Given stable and previous both failing until both circuits open, when a request comes, then it gets
    the 503 for stable's open circuit (or the static response), and neither version sees it."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v0", mode="error")
        await started(stable, previous)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        async with running(config(stable, previous=previous, circuitBreaker=breaker), stable, previous) as h:
            for _ in range(2):
                response = await h.client.send()
                assert response.status == 500
                assert json.loads(response.body) == {"error": "iris-v0 is broken"}
            response = await h.client.send()
            assert response.status == 503
            assert json.loads(response.body) == {"error": "circuit open for version iris-v1"}
            assert header(response, "x-modelfleet-served-by") == "router"
            assert (len(stable.requests), len(previous.requests)) == (2, 2)
            assert h.count("requests", version="iris-v1", code="503") == 1
            assert h.count("requests", version="iris-v0", code="503") == 1
            assert h.count("fallbacks", reason="circuit_open") == 0
            h.router.apply(config(stable, previous=previous, circuitBreaker=breaker, response={"body": "s"}))
            response = await h.client.send()
            assert (response.status, response.body) == (200, b"s")
            assert h.count("fallbacks", version="iris-v1", reason="static_response") == 1
            assert (len(stable.requests), len(previous.requests)) == (2, 2)

    run(scenario)


def test_a_canary_and_stable_that_both_fail_are_answered_by_the_previous_version() -> None:
    """Given a failing canary at weight 100, a failing stable and a warm previous version, when a request
    comes, then it is tried on the canary, then stable, then answered by the previous version."""

    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v2", mode="slow")
        previous = FakeVersion("iris-v0", label=2)
        await started(stable, canary, previous)
        cfg = config(stable, canary, canary_weight=100, previous=previous, timeout="200ms")
        async with running(cfg, stable, canary, previous) as h:
            response = await h.client.send()
            assert response.status == 200
            assert json.loads(response.body)["outputs"][0]["data"] == [2, 2]
            assert header(response, "x-modelfleet-served-by") == "iris-v0"
            assert header(response, "x-modelfleet-fallback") == "retry_on_previous"
            assert (len(canary.requests), len(stable.requests), len(previous.requests)) == (1, 1, 1)
            assert h.count("requests", version="iris-v2", code="504") == 1
            assert h.count("requests", version="iris-v1", code="500") == 1
            assert h.count("requests", version="iris-v0", code="200") == 1
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_stable") == 1
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_previous") == 1
            assert h.count("fallbacks") == 2

    run(scenario)


def test_a_failed_canary_is_retried_on_the_previous_version_while_stables_circuit_is_open() -> None:
    """Given stable's circuit open and a failing canary, when a request drawn for the canary fails, then
    the previous version answers it in stable's place."""

    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v2", mode="error")
        previous = FakeVersion("iris-v0")
        await started(stable, canary, previous)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        draws = iter([0.1, 0.1, 0.9] + [0.5] * 10)  # weights 50/50: stable, stable, then the canary
        cfg = config(stable, canary, canary_weight=50, previous=previous, circuitBreaker=breaker)
        async with running(cfg, stable, canary, previous, random_draw=lambda: next(draws)) as h:
            for _ in range(2):
                await h.client.send()  # stable fails twice (the previous version answers): its circuit opens
            response = await h.client.send()
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == "iris-v0"
            assert header(response, "x-modelfleet-fallback") == "circuit_open"
            assert (len(canary.requests), len(stable.requests), len(previous.requests)) == (1, 2, 3)
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_stable") == 1
            assert h.count("fallbacks", version="iris-v1", reason="circuit_open") == 1
            assert h.count("requests", version="iris-v1", code="503") == 1

    run(scenario)


def test_when_canary_and_stable_circuits_are_open_the_previous_version_answers() -> None:
    """Given a canary at weight 100 and stable that both fail until their circuits open, when another
    request comes, then the previous version answers it and neither of the others sees it."""

    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v2", mode="error")
        previous = FakeVersion("iris-v0")
        await started(stable, canary, previous)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        cfg = config(stable, canary, canary_weight=100, previous=previous, circuitBreaker=breaker)
        async with running(cfg, stable, canary, previous) as h:
            for _ in range(2):  # the canary fails, then stable: the previous version answers
                response = await h.client.send()
                assert header(response, "x-modelfleet-fallback") == "retry_on_previous"
            response = await h.client.send()
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == "iris-v0"
            assert header(response, "x-modelfleet-fallback") == "circuit_open"
            assert (len(canary.requests), len(stable.requests), len(previous.requests)) == (2, 2, 3)
            assert h.count("fallbacks", version="iris-v2", reason="circuit_open") == 1
            assert h.count("fallbacks", version="iris-v1", reason="circuit_open") == 1
            assert h.count("requests", version="iris-v2", code="503") == 1
            assert h.count("requests", version="iris-v1", code="503") == 1

    run(scenario)


def test_a_pin_may_name_the_previous_version_and_a_pinned_stable_does_not_fall_back() -> None:
    """Given a previous version, when requests pin it or pin a failing stable, then each gets exactly what
    the pinned version answered."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v0")
        await started(stable, previous)
        async with running(config(stable, previous=previous), stable, previous) as h:
            response = await h.client.send(headers={"X-Modelfleet-Version": "iris-v0"})
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == "iris-v0"
            assert header(response, "x-modelfleet-fallback") is None
            response = await h.client.send(headers={"X-Modelfleet-Version": "iris-v1"})
            assert response.status == 500
            assert header(response, "x-modelfleet-served-by") == "iris-v1"
            assert len(previous.requests) == 1
            assert h.count("fallbacks") == 0

    run(scenario)


def test_the_previous_version_takes_no_live_traffic_and_no_mirrored_copies() -> None:
    """Given healthy versions, a previous one among them, and mirroring at 100%, when requests come, then
    stable and the canary get them all, and the previous version none."""

    async def scenario() -> None:
        stable, canary, previous = FakeVersion("iris-v1"), FakeVersion("iris-v2"), FakeVersion("iris-v0")
        await started(stable, canary, previous)
        cfg = config(stable, canary, canary_weight=20, mirror=100, previous=previous)
        async with running(cfg, stable, canary, previous) as h:
            for _ in range(50):
                response = await h.client.send()
                assert response.status == 200
                assert header(response, "x-modelfleet-served-by") in {"iris-v1", "iris-v2"}
            await asyncio.sleep(0.05)
            assert previous.requests == []
            assert h.count("mirrored", version="iris-v0") == 0
            assert h.count("mirrored", version="iris-v2") == len(stable.requests)

    run(scenario)


def test_a_promotion_keeps_the_former_stable_versions_connections_and_circuit_as_previous() -> None:
    """Given iris-v1 stable, when a promotion makes iris-v2 stable and iris-v1 previous, then iris-v1 keeps
    its backend (connections, circuit, samples) and becomes the chain's previous version."""
    old, new = FakeVersion("iris-v1"), FakeVersion("iris-v2")
    old.port, new.port = 1, 2
    router = Router()
    router.apply(config(old, new, canary_weight=10))
    assert router.route is not None
    backend = router.route.stable
    assert router.route.previous is None
    router.apply(config(new, previous=old))
    assert router.route.previous is backend
    assert backend.role == "previous"
    assert router.route.stable.name == "iris-v2"
    router.apply(config(new, previous=old, retryOnStable=False))
    assert router.route.previous is None  # without retries the chain ends at stable


# -- the fallback version -------------------------------------------------------------------------------


async def settled(version: FakeVersion, requests: int) -> None:
    """Wait (briefly) until `version` has seen `requests` requests: copies run in the background."""
    for _ in range(100):
        if len(version.requests) >= requests:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("mode", "code"), [("error", "500"), ("slow", "504"), ("down", "502")])
def test_a_failing_stable_is_answered_by_the_fallback_version(mode: str, code: str) -> None:
    """Given a stable version that fails and a fallback version, when a request is drawn for stable, then
    the fallback version answers it, and the headers and metrics say so."""

    async def scenario() -> None:
        stable, rules = FakeVersion("iris-v1", mode=mode), FakeVersion("iris-rules", label=1)
        await started(stable, rules)
        cfg = config(stable, fallback_version=rules, timeout="200ms")
        async with running(cfg, stable, rules) as h:
            response = await h.client.send()
            assert response.status == 200
            assert json.loads(response.body)["outputs"][0]["data"] == [1, 1]
            assert header(response, "x-modelfleet-served-by") == "iris-rules"
            assert header(response, "x-modelfleet-fallback") == "retry_on_fallback"
            assert len(rules.requests) == 1
            assert h.count("requests", version="iris-v1", code=code) == 1
            assert h.count("requests", version="iris-rules", code="200") == 1
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_fallback") == 1
            assert h.count("fallbacks") == 1

    run(scenario)


def test_the_fallback_version_comes_after_the_previous_version_and_before_the_static_response() -> None:
    """Given stable and previous failing, a fallback version and a static response, when a request comes,
    then stable, previous and the fallback version are each tried once and the fallback version answers;
    once it fails too, the static response answers."""

    async def scenario() -> None:
        stable, previous = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v0", mode="down")
        rules = FakeVersion("iris-rules", label=1)
        await started(stable, previous, rules)
        cfg = config(stable, previous=previous, fallback_version=rules, response={"body": "static"})
        async with running(cfg, stable, previous, rules) as h:
            response = await h.client.send()
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == "iris-rules"
            assert header(response, "x-modelfleet-fallback") == "retry_on_fallback"
            assert (len(stable.requests), len(rules.requests)) == (1, 1)
            assert h.count("requests", version="iris-v0", code="502") == 1
            assert h.count("fallbacks", version="iris-v1", reason="retry_on_previous") == 1
            assert h.count("fallbacks", version="iris-v0", reason="retry_on_fallback") == 1

            rules.mode = "error"
            response = await h.client.send()
            assert (response.status, response.body) == (200, b"static")
            assert header(response, "x-modelfleet-served-by") == "fallback-static"
            assert header(response, "x-modelfleet-fallback") == "static_response"
            assert h.count("requests", version="iris-rules", code="500") == 1
            assert h.count("fallbacks", version="iris-rules", reason="static_response") == 1
            assert h.count("requests", version="fallback-static", code="200") == 1

    run(scenario)


def test_a_failing_canary_reaches_the_fallback_version_even_without_retry_on_stable() -> None:
    """Given retryOnStable off, a failing canary at weight 100 and a fallback version, when a request
    comes, then stable is not tried and the fallback version answers: it was asked for by name."""

    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", mode="error")
        rules = FakeVersion("iris-rules", label=1)
        await started(stable, canary, rules)
        cfg = config(stable, canary, canary_weight=100, fallback_version=rules, retryOnStable=False)
        async with running(cfg, stable, canary, rules) as h:
            response = await h.client.send()
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == "iris-rules"
            assert header(response, "x-modelfleet-fallback") == "retry_on_fallback"
            assert stable.requests == []
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_fallback") == 1

    run(scenario)


def test_an_open_stable_circuit_sends_stable_traffic_to_the_fallback_version() -> None:
    """Given a failing stable whose circuit opens and a fallback version, when more requests come, then the
    fallback version answers them (circuit_open) and stable is left alone."""

    async def scenario() -> None:
        stable, rules = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-rules")
        await started(stable, rules)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        async with running(
            config(stable, fallback_version=rules, circuitBreaker=breaker), stable, rules
        ) as h:
            for _ in range(2):
                response = await h.client.send()
                assert header(response, "x-modelfleet-fallback") == "retry_on_fallback"
            for _ in range(5):
                response = await h.client.send()
                assert response.status == 200
                assert header(response, "x-modelfleet-served-by") == "iris-rules"
                assert header(response, "x-modelfleet-fallback") == "circuit_open"
            assert (len(stable.requests), len(rules.requests)) == (2, 7)
            assert h.count("fallbacks", version="iris-v1", reason="circuit_open") == 5
            assert h.count("requests", version="iris-v1", code="503") == 5

    run(scenario)


def test_the_fallback_version_takes_no_live_traffic_and_no_copies_while_inactive() -> None:
    async def scenario() -> None:
        stable, canary, rules = FakeVersion("iris-v1"), FakeVersion("iris-v2"), FakeVersion("iris-rules")
        await started(stable, canary, rules)
        cfg = config(stable, canary, canary_weight=20, mirror=100, fallback_version=rules)
        async with running(cfg, stable, canary, rules) as h:
            for _ in range(30):
                response = await h.client.send()
                assert header(response, "x-modelfleet-served-by") in {"iris-v1", "iris-v2"}
            await asyncio.sleep(0.05)
            assert rules.requests == []
            assert h.count("mirrored", version="iris-rules") == 0

    run(scenario)


def test_an_active_fallback_answers_all_stable_traffic_and_stable_gets_a_copy_of_each_request() -> None:
    """Given the fallback active (stable fails its Monitor), when 20 requests come, then the fallback
    version answers every one (X-Modelfleet-Fallback: degraded), and stable gets a copy of each whose
    answer no client sees, so the Monitor keeps measuring it."""

    async def scenario() -> None:
        stable, rules = FakeVersion("iris-v1", label=0), FakeVersion("iris-rules", label=1)
        await started(stable, rules)
        async with running(config(stable, fallback_version=rules, active=True), stable, rules) as h:
            for _ in range(20):
                response = await h.client.send(body=b'{"x": 2}')
                assert response.status == 200
                assert json.loads(response.body)["outputs"][0]["data"] == [1, 1]
                assert header(response, "x-modelfleet-served-by") == "iris-rules"
                assert header(response, "x-modelfleet-fallback") == "degraded"
            await settled(stable, 20)
            assert len(rules.requests) == 20
            assert len(stable.requests) == 20
            assert {r.body for r in stable.requests} == {b'{"x": 2}'}
            assert h.count("fallbacks", version="iris-v1", reason="degraded") == 20
            assert h.count("fallbacks") == 20
            assert h.count("mirrored", version="iris-v1") == 20
            assert h.count("requests", version="iris-v1", code="200") == 20
            assert h.count("requests", version="iris-rules", code="200") == 20
            assert h.router.predictions() == {"iris-v1": [0] * 40, "iris-rules": [1] * 40}

            h.router.apply(config(stable, fallback_version=rules))  # released: back to stable
            response = await h.client.send()
            assert header(response, "x-modelfleet-served-by") == "iris-v1"
            assert header(response, "x-modelfleet-fallback") is None
            assert len(rules.requests) == 20

    run(scenario)


def test_while_the_fallback_is_active_the_canary_keeps_its_weight() -> None:
    """Given a rollout at weight 50 while the fallback is active, when requests come, then those drawn for
    the canary go to the canary, those drawn for stable to the fallback version."""

    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", label=2)
        rules = FakeVersion("iris-rules", label=1)
        await started(stable, canary, rules)
        draws = iter([0.1, 0.9, 0.2, 0.8])  # stable, canary, stable, canary
        cfg = config(stable, canary, canary_weight=50, fallback_version=rules, active=True)
        async with running(cfg, stable, canary, rules, random_draw=lambda: next(draws)) as h:
            served = [header(await h.client.send(), "x-modelfleet-served-by") for _ in range(4)]
            assert served == ["iris-rules", "iris-v2", "iris-rules", "iris-v2"]
            await settled(stable, 2)
            assert (len(stable.requests), len(canary.requests), len(rules.requests)) == (2, 2, 2)
            assert h.count("fallbacks", version="iris-v1", reason="degraded") == 2

    run(scenario)


def test_while_the_fallback_is_active_a_failing_fallback_version_is_answered_by_stable() -> None:
    """Given the fallback active and a fallback version that fails, when a request comes, then stable (next
    in the chain) answers it: retry_on_stable, counted against the fallback version."""

    async def scenario() -> None:
        stable, rules = FakeVersion("iris-v1"), FakeVersion("iris-rules", mode="error")
        await started(stable, rules)
        async with running(config(stable, fallback_version=rules, active=True), stable, rules) as h:
            response = await h.client.send()
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == "iris-v1"
            assert header(response, "x-modelfleet-fallback") == "retry_on_stable"
            assert h.count("fallbacks", version="iris-rules", reason="retry_on_stable") == 1
            assert h.count("fallbacks", version="iris-v1", reason="degraded") == 1
            await settled(stable, 2)
            assert len(stable.requests) == 2  # its copy and the retry

    run(scenario)


def test_while_the_fallback_is_active_a_failing_canary_is_retried_on_the_fallback_version() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", mode="error")
        rules = FakeVersion("iris-rules", label=1)
        await started(stable, canary, rules)
        cfg = config(stable, canary, canary_weight=100, fallback_version=rules, active=True)
        async with running(cfg, stable, canary, rules) as h:
            response = await h.client.send()
            assert header(response, "x-modelfleet-served-by") == "iris-rules"
            assert header(response, "x-modelfleet-fallback") == "retry_on_fallback"
            assert stable.requests == []
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_fallback") == 1

    run(scenario)


def test_an_active_fallback_without_a_fallback_version_answers_with_the_static_response() -> None:
    """Given the fallback active with only a static response, when requests come, then the static response
    answers them all (X-Modelfleet-Fallback: degraded), stable gets the copies, and a pin still reaches
    stable."""

    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        static = {"statusCode": 200, "contentType": "text/plain", "body": "heuristic"}
        async with running(config(stable, active=True, response=static), stable) as h:
            for _ in range(5):
                response = await h.client.send()
                assert (response.status, response.body) == (200, b"heuristic")
                assert header(response, "x-modelfleet-served-by") == "fallback-static"
                assert header(response, "x-modelfleet-fallback") == "degraded"
                assert header(response, "content-type") == "text/plain"
                assert header(response, "x-modelfleet-request-id") is not None
            await settled(stable, 5)
            assert len(stable.requests) == 5
            assert h.count("fallbacks", version="iris-v1", reason="degraded") == 5
            assert h.count("requests", version="fallback-static", code="200") == 5
            assert h.count("mirrored", version="iris-v1") == 5

            response = await h.client.send(headers={"X-Modelfleet-Version": "iris-v1"})
            assert header(response, "x-modelfleet-served-by") == "iris-v1"

    run(scenario)


def test_a_fallback_version_keeps_its_backend_when_the_fallback_is_engaged_and_released() -> None:
    rules, stable = FakeVersion("iris-rules"), FakeVersion("iris-v1")
    rules.port, stable.port = 1, 2
    router = Router()
    router.apply(config(stable, fallback_version=rules))
    assert router.route is not None
    backend = router.route.fallback_version
    assert backend is not None
    assert router.route.stable_chain == (router.route.stable, backend)
    router.apply(config(stable, fallback_version=rules, active=True))
    assert router.route.fallback_version is backend
    assert router.route.stable_chain == (backend, router.route.stable)
    assert router.route.retry_chain == (backend, router.route.stable)
    router.apply(config(stable, fallback_version=rules, retryOnStable=False))
    assert router.route.retry_chain == (backend,)


# -- mirroring ---------------------------------------------------------------------------------------


def test_mirroring_copies_stable_traffic_to_the_canary_and_discards_its_answers() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", label=0), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        async with running(config(stable, canary, canary_weight=0, mirror=100), stable, canary) as h:
            for _ in range(10):
                response = await h.client.send(body=b'{"x": 1}')
                assert response.status == 200
                assert header(response, "x-modelfleet-served-by") == "iris-v1"
            for _ in range(100):
                if len(canary.requests) == 10:
                    break
                await asyncio.sleep(0.01)
            assert len(canary.requests) == 10
            assert {r.body for r in canary.requests} == {b'{"x": 1}'}
            assert h.count("mirrored", version="iris-v2") == 10
            assert h.count("requests", version="iris-v2", code="500") == 10
            assert h.count("fallbacks") == 0  # mirror failures never touch the client's request

    run(scenario)


def test_a_share_of_stable_traffic_is_mirrored() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2", label=2)
        await started(stable, canary)
        draws = iter([0.0, 0.05, 0.5, 0.2, 0.95, 0.09] * 10)  # the split draw, then the mirror draw
        cfg = config(stable, canary, canary_weight=0, mirror=10)
        async with running(cfg, stable, canary, random_draw=lambda: next(draws)) as h:
            for _ in range(3):
                await h.client.send()
            await asyncio.sleep(0.1)
            assert h.count("mirrored", version="iris-v2") == 2  # mirror draws 0.05 and 0.09 are below 0.10
            assert h.router.predictions()["iris-v2"] == [2, 2, 2, 2]

    run(scenario)


# -- predictions and admin ---------------------------------------------------------------------------


def test_predictions_are_sampled_per_version_and_served_on_the_admin_port() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", label=0), FakeVersion("iris-v2", label=2)
        await started(stable, canary)
        async with running(
            config(stable, canary, canary_weight=50), stable, canary, prediction_samples=6
        ) as h:
            for _ in range(40):
                await h.client.send()
            response = await h.admin.get("/predictions")
            samples = json.loads(response.body)
            assert samples == {"iris-v1": [0] * 6, "iris-v2": [2] * 6}
            ready = await h.admin.get("/readyz")
            assert ready.status == 200
            assert json.loads(ready.body)["generation"] == 1
            shown = json.loads((await h.admin.get("/config")).body)
            assert shown["versions"][1]["weight"] == 50
            assert (await h.admin.get("/healthz")).status == 200
            assert (await h.admin.get("/nope")).status == 404

    run(scenario)


def test_inputs_are_sampled_per_version_and_served_on_the_admin_port() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1"), FakeVersion("iris-v2")
        await started(stable, canary)
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [[1.5, 2.5]]}]}
        ).encode()
        async with running(
            config(stable, canary, canary_weight=100, mirror=0),
            stable,
            canary,
            input_samples=3,
            input_reads_per_second=0,
        ) as h:
            for _ in range(5):
                await h.client.send(body=body)
            await h.client.send(body=body, headers={"X-Modelfleet-Version": "iris-v1"})
            samples = json.loads((await h.admin.get("/inputs")).body)
            assert samples == {
                "iris-v1": {"f0": [1.5], "f1": [2.5]},
                "iris-v2": {"f0": [1.5] * 3, "f1": [2.5] * 3},
            }

    run(scenario)


# -- reconfiguration ---------------------------------------------------------------------------------


def test_a_new_configuration_applies_to_new_requests_while_those_under_way_finish() -> None:
    async def scenario() -> None:
        stable, slow, other = (
            FakeVersion("iris-v1"),
            FakeVersion("iris-v2", mode="slow"),
            FakeVersion("iris-v3"),
        )
        await started(stable, slow, other)
        async with running(config(stable, slow, canary_weight=100), stable, slow, other) as h:
            pending = asyncio.ensure_future(h.client.send())
            await asyncio.wait_for(slow.arrived.wait(), 5)
            h.router.apply(config(stable, other, canary_weight=100))  # iris-v2 leaves the configuration
            response = await h.client.send()
            assert header(response, "x-modelfleet-served-by") == "iris-v3"
            slow.release.set()
            finished = await pending
            assert finished.status == 200
            assert header(finished, "x-modelfleet-served-by") == "iris-v2"
            assert h.router.route is not None
            assert h.router.route.generation == 2

    run(scenario)


def test_reapplying_the_same_version_keeps_its_connections_and_circuit() -> None:
    stable = FakeVersion("iris-v1")
    stable.port = 1
    router = Router()
    router.apply(config(stable))
    assert router.route is not None
    backend = router.route.stable
    assert router.apply_json(config(stable, timeout="1s").to_json()) is None
    assert router.route.stable is backend
    assert router.route.timeout == 1.0
    problem = router.apply_json('{"deployment": "iris", "versions": []}')
    assert problem is not None
    assert "versions" in problem
    assert router.route.timeout == 1.0  # the refused configuration changed nothing
    assert router.metrics.config_loads.labels("invalid").value == 1
    assert router.metrics.config_loads.labels("applied").value == 1


def test_when_both_circuits_are_open_the_static_response_answers_and_neither_version_is_touched() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        cfg = config(stable, canary, canary_weight=100, retryOnStable=True, circuitBreaker=breaker)
        async with running(cfg, stable, canary) as h:
            for _ in range(2):  # each fails on the canary, then on stable: both circuits open
                assert (await h.client.send()).status == 500
            assert (len(canary.requests), len(stable.requests)) == (2, 2)
            # Without a static response: the canary's open circuit is the answer.
            response = await h.client.send()
            assert response.status == 503
            assert json.loads(response.body) == {"error": "circuit open for version iris-v2"}
            assert h.count("requests", version="iris-v1", code="503") == 1
            assert h.count("requests", version="iris-v2", code="503") == 1
            h.router.apply(
                config(stable, canary, canary_weight=100, circuitBreaker=breaker, response={"body": "s"})
            )
            response = await h.client.send()
            assert (response.status, response.body) == (200, b"s")
            assert header(response, "x-modelfleet-served-by") == "fallback-static"
            assert h.count("fallbacks", version="iris-v2", reason="static_response") == 1
            assert (len(canary.requests), len(stable.requests)) == (2, 2)

    run(scenario)


def test_a_failed_canary_is_not_retried_on_a_stable_whose_circuit_is_open() -> None:
    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", mode="error"), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        breaker = {"errorRate": 0.5, "minRequests": 2, "window": "10s", "openFor": "30s"}
        draws = iter([0.1, 0.1, 0.9] + [0.5] * 10)  # weights 50/50: stable, stable, then the canary
        cfg = config(stable, canary, canary_weight=50, retryOnStable=True, circuitBreaker=breaker)
        async with running(cfg, stable, canary, random_draw=lambda: next(draws)) as h:
            for _ in range(2):
                await h.client.send()  # stable fails twice: its circuit opens
            response = await h.client.send()  # drawn for the canary, which fails; stable is not tried
            assert response.status == 500
            assert json.loads(response.body) == {"error": "iris-v2 is broken"}
            assert header(response, "x-modelfleet-served-by") == "iris-v2"
            assert (len(canary.requests), len(stable.requests)) == (1, 2)
            assert h.count("fallbacks", version="iris-v2", reason="retry_on_stable") == 0
            assert h.count("requests", version="iris-v1", code="503") == 1

    run(scenario)


@pytest.mark.parametrize(
    ("url", "host_header"),
    [
        ("http://iris-v1.ml.svc:8080", b"host: iris-v1.ml.svc:8080\r\n"),
        ("http://iris-v1.ml.svc", b"host: iris-v1.ml.svc\r\n"),
        ("http://[fd00::7]:8080", b"host: [fd00::7]:8080\r\n"),
    ],
)
def test_the_host_header_names_the_versions_service(url: str, host_header: bytes) -> None:
    router = Router()
    router.apply(
        RouterConfig.model_validate(
            {"deployment": "iris", "versions": [{"name": "v", "url": url, "weight": 1, "role": "stable"}]}
        )
    )
    assert router.route is not None
    assert router.route.stable.host_header == host_header


# -- the binary tensor data extension ------------------------------------------------------------------


class BinaryVersion(FakeVersion):
    """Answers as the model server does with the binary extension: raw INT64 labels after a JSON header."""

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        if self.mode != "ok":
            return super().handle(request)
        self.requests.append(request)
        document, raw = oip.split(request.body, request.header(oip.HEADER_LENGTH))
        rows = oip.read_tensors(document, raw)[0].shape[0]
        labels = oip.Tensor("label", "INT64", [rows], data=[self.label] * rows)
        body, length = oip.encode({"model_name": "iris"}, [labels], [True])
        return Response(200, body, b"inference-header-content-length: %d\r\n" % (length or 0))


def binary_request(rows: int = 3) -> tuple[bytes, str]:
    raw = oip.pack("FP32", [5.1, 3.5, 1.4, 0.2] * rows)
    inputs = [
        {
            "name": "input-0",
            "shape": [rows, 4],
            "datatype": "FP32",
            "parameters": {"binary_data_size": len(raw)},
        }
    ]
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return head + raw, str(len(head))


@pytest.mark.parametrize(
    ("path", "served_by", "fallback"),
    [
        ("weights", "iris-v2", None),
        ("retry_on_stable", "iris-v1", "retry_on_stable"),
        ("retry_on_previous", "iris-v0", "retry_on_previous"),
        ("mirror", "iris-v1", None),
    ],
)
def test_binary_requests_pass_through_untouched_on_every_path(
    path: str, served_by: str, fallback: str | None
) -> None:
    """Given versions that speak the binary extension, when a binary request takes each path through the
    router, then every version it reaches gets the very bytes and header the client sent, the client gets
    the answering version's bytes and header, and the prediction sample holds the binary answer's labels."""

    async def scenario() -> None:
        stable = BinaryVersion("iris-v1", mode="error" if path == "retry_on_previous" else "ok", label=1)
        canary = BinaryVersion("iris-v2", mode="error" if path == "retry_on_stable" else "ok", label=2)
        previous = BinaryVersion("iris-v0", label=0)
        await started(stable, canary, previous)
        weight = 100 if path in ("weights", "retry_on_stable") else 0
        cfg = config(
            stable,
            canary,
            weight,
            mirror=100 if path == "mirror" else 0,
            previous=previous,
            retryOnStable=True,
        )
        body, length = binary_request()
        async with running(cfg, stable, canary, previous, prediction_reads_per_second=0) as h:
            response = await h.client.send(body=body, headers={"Inference-Header-Content-Length": length})
            assert response.status == 200
            assert header(response, "x-modelfleet-served-by") == served_by
            assert header(response, "x-modelfleet-fallback") == fallback
            answering = {"iris-v0": previous, "iris-v1": stable, "iris-v2": canary}[served_by]
            expected = oip.encode(
                {"model_name": "iris"},
                [oip.Tensor("label", "INT64", [3], data=[answering.label] * 3)],
                [True],
            )
            assert (response.body, header(response, "inference-header-content-length")) == (
                expected[0],
                str(expected[1]),
            )
            if path == "mirror":
                for _ in range(100):
                    if h.router.predictions()["iris-v2"]:  # the copy was answered and sampled
                        break
                    await asyncio.sleep(0.01)
            reached = [v for v in (stable, canary, previous) if v.requests]
            assert (
                reached
                == {
                    "weights": [canary],
                    "retry_on_stable": [stable, canary],
                    "retry_on_previous": [stable, previous],
                    "mirror": [stable, canary],
                }[path]
            )
            for version in reached:
                [request] = version.requests
                assert request.body == body
                assert request.header(oip.HEADER_LENGTH) == length.encode()
            samples = h.router.predictions()
            assert samples[served_by] == [answering.label] * 3
            if path == "mirror":
                assert samples["iris-v2"] == [2, 2, 2]  # the mirrored copy's binary answer is sampled too

    run(scenario)


# -- payload capture -------------------------------------------------------------------------------------


def with_capture(cfg: RouterConfig, directory: Path, percent: float = 100, **extra: Any) -> RouterConfig:
    """`cfg` capturing `percent` of the answers into `directory` as plain JSON Lines, written on close."""
    capture = {"percent": percent, "uri": f"file://{directory}", "compression": "none", "flushInterval": "1h"}
    return RouterConfig.model_validate({**cfg.model_dump(by_alias=True), "capture": {**capture, **extra}})


def captured(directory: Path) -> list[dict[str, Any]]:
    """Every line written under `directory`, in the order of the objects' sequence numbers."""
    files = sorted(directory.rglob("*.jsonl"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def test_capture_takes_what_versions_answered_clients_after_fallback_or_pinned_not_copies_or_router_errors(
    tmp_path: Path,
) -> None:
    """Given a failing canary at weight 50 that also gets a copy of every stable request, when 20 requests
    go through, one is pinned to the canary and one to an unknown version, then the capture holds the 20
    answers stable gave (after retries too) and the canary's own 500 to the pinned request, each with its
    request id, and nothing of the copies or of the router's 400."""

    async def scenario() -> None:
        stable, canary = FakeVersion("iris-v1", label=0), FakeVersion("iris-v2", mode="error")
        await started(stable, canary)
        cfg = with_capture(config(stable, canary, canary_weight=50, mirror=100, retryOnStable=True), tmp_path)
        async with running(cfg, stable, canary) as h:
            ids = []
            for index in range(20):
                response = await h.client.send(body=json.dumps({"id": f"r{index}", "inputs": []}).encode())
                assert response.status == 200
                ids.append(header(response, "x-modelfleet-request-id"))
            pinned = await h.client.send(headers={"X-Modelfleet-Version": "iris-v2", "X-Request-Id": "p-1"})
            assert pinned.status == 500
            unknown = await h.client.send(headers={"X-Modelfleet-Version": "iris-v9"})
            assert unknown.status == 400
            assert h.count("mirrored", version="iris-v2") > 0
            assert h.count("capture_records", version="iris-v1") == 20
            assert h.count("capture_records", version="iris-v2") == 1
        # the router closed: the writer wrote what it held

        lines = captured(tmp_path)
        assert [(line["requestId"], line["version"], line["status"]) for line in lines] == [
            *((request_id, "iris-v1", 200) for request_id in ids),
            ("p-1", "iris-v2", 500),
        ]
        assert lines[0]["request"] == {"id": "r0", "inputs": []}
        assert lines[0]["response"]["outputs"] == [{"name": "label", "data": [0, 0]}]
        assert lines[-1]["response"] == {"error": "iris-v2 is broken"}
        assert {line["path"] for line in lines} == {"/v2/models/iris/infer"}

    run(scenario)


def test_a_versions_failure_passed_on_is_captured_the_static_response_is_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1", mode="error")
        await started(stable)
        async with running(with_capture(config(stable), tmp_path), stable) as h:
            for _ in range(3):
                assert (await h.client.send()).status == 500  # stable's own answer, passed on
            h.router.apply(with_capture(config(stable, response={"body": "{}"}), tmp_path))
            for _ in range(2):
                response = await h.client.send()
                assert header(response, "x-modelfleet-served-by") == "fallback-static"
        assert [(line["version"], line["status"]) for line in captured(tmp_path)] == [("iris-v1", 500)] * 3

    run(scenario)


def test_the_share_captured_is_drawn_from_the_routers_draw(tmp_path: Path) -> None:
    """Given percent 50 and draws that alternate below and above one half for capture, then every other
    answer is captured; each request also takes its draw for the split first."""
    draws = iter([0.0, 0.4, 0.0, 0.6] * 5)

    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        cfg = with_capture(config(stable), tmp_path, percent=50)
        async with running(cfg, stable, random_draw=lambda: next(draws)) as h:
            for index in range(10):
                await h.client.send(headers={"X-Request-Id": f"q{index}"})
        assert [line["requestId"] for line in captured(tmp_path)] == ["q0", "q2", "q4", "q6", "q8"]

    run(scenario)


def test_a_new_percent_or_redact_list_keeps_the_writer_and_removing_capture_flushes_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        async with running(with_capture(config(stable), tmp_path), stable) as h:
            writer = h.router.capture
            await h.client.send(body=b'{"email": "a@x", "v": 1}')
            h.router.apply(with_capture(config(stable), tmp_path, redact=["email"]))
            assert h.router.capture is writer
            await h.client.send(body=b'{"email": "b@y", "v": 2}')
            h.router.apply(config(stable))  # spec.capture removed
            assert h.router.capture is None
            await h.client.send(body=b'{"email": "c@z", "v": 3}')
            assert writer is not None
            for _ in range(200):  # the retired writer writes what it holds on its own
                if not writer.held_records:
                    break
                await asyncio.sleep(0.01)
        assert [line["request"] for line in captured(tmp_path)] == [{"email": "a@x", "v": 1}, {"v": 2}]

    run(scenario)


def test_a_capture_directory_that_cannot_be_written_costs_clients_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        stable = FakeVersion("iris-v1")
        await started(stable)
        (tmp_path / "blocker").write_text("a file where the capture directory should be")
        cfg = with_capture(config(stable), tmp_path / "blocker", batchRecords=5, bufferRecords=10)
        async with running(cfg, stable) as h:
            for _ in range(40):
                assert (await h.client.send()).status == 200
            for _ in range(200):
                if h.count("capture_batches", outcome="failed") >= 1:
                    break
                await asyncio.sleep(0.01)
            assert h.count("capture_batches", outcome="failed") >= 1
            assert h.count("capture_batches", outcome="written") == 0
            dropped = sum(h.count("capture_dropped", reason=r) for r in ("store_error", "buffer_full"))
            assert dropped + h.router.capture.held_records == 40  # type: ignore[union-attr]

    run(scenario)
