"""The router-metrics provider against real HTTP servers on loopback: every pod answers, some do not (a
partial sample), none does (an Error), none runs yet (nothing to measure); and two windows of a Monitor,
the first one its baseline."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from modelfleet.api.monitor import Metric
from modelfleet.providers import Target, window
from modelfleet.providers.http import Http
from modelfleet.providers.router import NO_ROUTERS, RouterMetrics, scrape_routers

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
METRICS = (
    "# TYPE modelfleet_requests_total counter\n"
    'modelfleet_requests_total{deployment="iris",version="iris-v1",code="200"} 42\n'
)


@asynccontextmanager
async def router_admin(metrics: str = METRICS) -> AsyncIterator[int]:
    """A router's admin port on loopback answering /metrics and /predictions; yields the port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        body = (metrics if request.startswith(b"GET /metrics") else '{"iris-v1": [0, 1]}').encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def scrape(pods: list[tuple[str, str]], port: int) -> tuple[object, dict[str, list[object]], str, str]:
    http = Http()
    try:
        return await scrape_routers(http, pods, NOW, port=port)
    finally:
        await http.close()


def test_every_router_pod_answering_gives_a_whole_sample() -> None:
    async def scenario() -> tuple[object, dict[str, list[object]], str, str]:
        async with router_admin() as port:
            return await scrape([("router-a", "127.0.0.1")], port)

    result, predictions, error, partial = asyncio.run(scenario())

    assert error == ""
    assert partial == ""
    assert set(result.pods) == {"router-a"}  # type: ignore[attr-defined]
    assert predictions == {"iris-v1": [0, 1]}


def test_a_router_pod_that_does_not_answer_makes_the_sample_partial_not_an_error() -> None:
    async def scenario() -> tuple[object, dict[str, list[object]], str, str]:
        async with router_admin() as port:
            # both pods are asked on the same port; the second address has nothing listening there
            return await scrape([("router-a", "127.0.0.1"), ("router-b", "127.0.0.2")], port)

    result, _, error, partial = asyncio.run(scenario())

    assert error == ""
    assert set(result.pods) == {"router-a"}  # type: ignore[attr-defined]
    assert partial.startswith("1 of 2 router pods answered; scrape of router pod router-b (127.0.0.2:")


def test_no_router_pod_answering_is_an_error_naming_each() -> None:
    port = closed_port()
    result, _, error, partial = asyncio.run(
        scrape([("router-a", "127.0.0.1"), ("router-b", "127.0.0.1")], port)
    )

    assert result is None
    assert partial == ""
    assert f"scrape of router pod router-a (127.0.0.1:{port}) failed" in error
    assert f"scrape of router pod router-b (127.0.0.1:{port}) failed" in error


def test_no_router_pod_running_yet_is_neither_a_sample_nor_an_error() -> None:
    assert asyncio.run(scrape([], closed_port())) == (None, {}, "", "")


ERRORS = Metric.model_validate({"name": "errors", "type": "errorRate", "max": 0.05})
TARGET = Target(("ml", "iris-quality"), "ml", "iris", "iris-v1")


def test_the_first_window_of_a_monitor_is_its_baseline_and_the_next_one_is_judged() -> None:
    async def scenario() -> list[object]:
        async with router_admin() as port:

            async def pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
                assert (namespace, deployment) == ("ml", "iris")
                return [("router-a", "127.0.0.1")]

            provider = RouterMetrics(pods, Http(), port=port)
            first = await provider.measure(TARGET, [ERRORS], NOW)
            later = NOW.replace(second=10)
            second = await provider.measure(TARGET, [ERRORS], later)
            provider.forget(TARGET.monitor)
            third = await provider.measure(TARGET, [ERRORS], later.replace(second=20))
            await provider.close()
            return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert first.baseline  # type: ignore[attr-defined]
    assert not second.baseline  # type: ignore[attr-defined]
    assert second.traffic is not None  # type: ignore[attr-defined]
    assert second.traffic.requests == 0  # type: ignore[attr-defined]  # the counter did not move
    assert third.baseline  # type: ignore[attr-defined]  # forgotten: a new baseline


def test_a_deployment_without_router_pods_reads_as_nothing_to_measure_yet() -> None:
    async def pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
        return []

    reading = asyncio.run(RouterMetrics(pods, Http()).measure(TARGET, [ERRORS], NOW))

    assert reading.traffic is None
    assert reading.traffic_pending == NO_ROUTERS
    assert window("iris-v1", [reading]).traffic_pending == NO_ROUTERS
