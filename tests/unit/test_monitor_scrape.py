"""The router-metrics provider against real HTTP servers on loopback: every pod answers, some do not (a
partial sample), none does (an Error), none runs yet (nothing to measure); two windows of a Monitor,
the first one its baseline; during a rollout, the stable version's traffic of the same window; and the
admin token /predictions asks for, sent, or refused (then the Secret is applied again)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from modelfleet.analysis import assess
from modelfleet.api.monitor import Metric, MonitorSpec, Verdict
from modelfleet.providers import Reading, Target, window
from modelfleet.providers.http import Http
from modelfleet.providers.router import NO_ROUTERS, RouterMetrics, Scraped, scrape_routers

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
METRICS = (
    "# TYPE modelfleet_requests_total counter\n"
    'modelfleet_requests_total{deployment="iris",version="iris-v1",code="200"} 42\n'
)


@asynccontextmanager
async def router_admin(
    metrics: str | Callable[[], str] = METRICS, token: str | None = None, seen: list[bytes] | None = None
) -> AsyncIterator[int]:
    """A router's admin port on loopback answering /metrics (`metrics`, or what it returns at each
    scrape) to anyone and /predictions (with `token`, only to its bearer: 401 without one, 403 with
    another); yields the port. `seen` collects the requests' heads."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(request)
        status = b"200 OK"
        if not request.startswith(b"GET /metrics"):
            body = b'{"iris-v1": [0, 1]}'
            sent = re.search(rb"\r\nauthorization: Bearer (\S+)\r\n", request, re.IGNORECASE)
            if token is not None and sent is None:
                status, body = b"401 Unauthorized", b'{"error": "no token"}'
            elif token is not None and sent is not None and sent.group(1) != token.encode():
                status, body = b"403 Forbidden", b'{"error": "another token"}'
        else:
            body = (metrics if isinstance(metrics, str) else metrics()).encode()
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
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


async def scrape(pods: list[tuple[str, str]], port: int, token: str | None = None) -> Scraped:
    http = Http()
    try:
        return await scrape_routers(http, pods, NOW, port=port, token=token)
    finally:
        await http.close()


def test_every_router_pod_answering_gives_a_whole_sample() -> None:
    async def scenario() -> Scraped:
        async with router_admin() as port:
            return await scrape([("router-a", "127.0.0.1")], port)

    result, predictions, error, partial, refused = asyncio.run(scenario())

    assert error == ""
    assert partial == ""
    assert result is not None
    assert set(result.pods) == {"router-a"}
    assert predictions == {"iris-v1": [0, 1]}
    assert refused == ()


def test_a_router_pod_that_does_not_answer_makes_the_sample_partial_not_an_error() -> None:
    async def scenario() -> Scraped:
        async with router_admin() as port:
            # both pods are asked on the same port; the second address has nothing listening there
            return await scrape([("router-a", "127.0.0.1"), ("router-b", "127.0.0.2")], port)

    result, _, error, partial, _ = asyncio.run(scenario())

    assert error == ""
    assert result is not None
    assert set(result.pods) == {"router-a"}
    assert partial.startswith("1 of 2 router pods answered; scrape of router pod router-b (127.0.0.2:")


def test_no_router_pod_answering_is_an_error_naming_each() -> None:
    port = closed_port()
    result, _, error, partial, _ = asyncio.run(
        scrape([("router-a", "127.0.0.1"), ("router-b", "127.0.0.1")], port)
    )

    assert result is None
    assert partial == ""
    assert f"scrape of router pod router-a (127.0.0.1:{port}) failed" in error
    assert f"scrape of router pod router-b (127.0.0.1:{port}) failed" in error


def test_no_router_pod_running_yet_is_neither_a_sample_nor_an_error() -> None:
    assert asyncio.run(scrape([], closed_port())) == (None, {}, "", "", ())


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


def rollout_page(scrape: int, stable_requests: int = 400) -> str:
    """Router counters after `scrape` windows: each window the canary iris-v2 answers 100 requests, all
    between 0.1 s and 1 s, and stable iris-v1 answers `stable_requests`, all within 0.1 s."""
    canary, stable = 100 * scrape, stable_requests * scrape
    series = {
        'modelfleet_requests_total{deployment="iris",version="iris-v1",code="200"}': stable,
        'modelfleet_requests_total{deployment="iris",version="iris-v2",code="200"}': canary,
        'modelfleet_request_duration_seconds_bucket{deployment="iris",version="iris-v1",le="0.1"}': stable,
        'modelfleet_request_duration_seconds_bucket{deployment="iris",version="iris-v1",le="+Inf"}': stable,
        'modelfleet_request_duration_seconds_bucket{deployment="iris",version="iris-v2",le="0.1"}': 0,
        'modelfleet_request_duration_seconds_bucket{deployment="iris",version="iris-v2",le="1"}': canary,
        'modelfleet_request_duration_seconds_bucket{deployment="iris",version="iris-v2",le="+Inf"}': canary,
    }
    lines = [
        "# TYPE modelfleet_requests_total counter",
        "# TYPE modelfleet_request_duration_seconds histogram",
        *(f"{name} {value}" for name, value in series.items()),
    ]
    return "\n".join(lines) + "\n"


P99_VS_STABLE = Metric.model_validate(
    {"name": "p99", "type": "latency", "quantile": 0.99, "maxRatioToStable": 1.2}
)
ROLLOUT = Target(("ml", "iris-quality"), "ml", "iris", "iris-v2", reference="iris-v1")


def second_window(target: Target, stable_requests: int = 400) -> Reading:
    """The reading of a Monitor's second window (the first is its baseline)."""

    async def scenario() -> Reading:
        scrapes = iter(range(10))
        async with router_admin(lambda: rollout_page(next(scrapes), stable_requests)) as port:

            async def pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
                return [("router-a", "127.0.0.1")]

            provider = RouterMetrics(pods, Http(), port=port)
            try:
                assert (await provider.measure(target, [P99_VS_STABLE], NOW)).baseline
                return await provider.measure(target, [P99_VS_STABLE], NOW.replace(second=10))
            finally:
                await provider.close()

    return asyncio.run(scenario())


def test_during_a_rollout_the_stable_traffic_of_the_same_window_is_read_for_ratio_bounds() -> None:
    reading = second_window(ROLLOUT)

    assert reading.traffic is not None
    assert reading.stable_traffic is not None
    assert reading.traffic.requests == 100
    assert reading.stable_traffic.requests == 400
    merged = window("iris-v2", [reading], stable="iris-v1")
    spec = MonitorSpec(deployment="iris", metrics=(P99_VS_STABLE,))
    (result,) = assess(spec, merged, NOW).results
    assert result.verdict == Verdict.FAIL
    assert result.message == "p99 0.991 s is 10x stable's 0.099 s > 1.2x"


def test_a_stable_version_without_requests_in_the_window_reads_as_none_not_missing() -> None:
    reading = second_window(ROLLOUT, stable_requests=0)

    assert reading.stable_traffic is not None
    assert reading.stable_traffic.requests == 0
    merged = window("iris-v2", [reading], stable="iris-v1")
    (result,) = assess(MonitorSpec(deployment="iris", metrics=(P99_VS_STABLE,)), merged, NOW).results
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.message == "stable iris-v1: 0 requests < minRequests 20"


def test_in_steady_state_no_stable_traffic_is_read() -> None:
    steady = Target(("ml", "iris-quality"), "ml", "iris", "iris-v1")

    reading = second_window(steady)

    assert reading.traffic is not None
    assert reading.traffic.requests == 400
    assert reading.stable_traffic is None


# --- the admin token /predictions asks for ----------------------------------------------------------------

ADMIN_TOKEN = "3c0ffee1" * 8
UID_TARGET = Target(("ml", "iris-quality"), "ml", "iris", "iris-v1", uid="u-1")


def test_the_admin_token_is_sent_for_predictions_and_never_for_metrics() -> None:
    seen: list[bytes] = []

    async def scenario() -> Scraped:
        async with router_admin(token=ADMIN_TOKEN, seen=seen) as port:
            return await scrape([("router-a", "127.0.0.1")], port, token=ADMIN_TOKEN)

    result = asyncio.run(scenario())

    assert result.predictions == {"iris-v1": [0, 1]}
    assert result.refused == ()
    (metrics,) = [head for head in seen if head.startswith(b"GET /metrics")]
    (predictions,) = [head for head in seen if head.startswith(b"GET /predictions")]
    assert b"authorization" not in metrics.lower()  # /metrics is open: the token goes only where needed
    assert f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode() in predictions


def test_a_router_refusing_the_token_still_counts_for_traffic_and_is_named() -> None:
    async def scenario() -> tuple[Scraped, Scraped]:
        async with router_admin(token=ADMIN_TOKEN) as port:
            pods = [("router-a", "127.0.0.1")]
            return await scrape(pods, port, token="an-old-token"), await scrape(pods, port)

    forbidden, unauthorized = asyncio.run(scenario())

    assert forbidden.scrape is not None  # the traffic metrics are there
    assert forbidden.predictions == {}
    assert forbidden.refused == ("router-a: HTTP 403",)
    assert forbidden.error == forbidden.partial == ""
    assert unauthorized.refused == ("router-a: HTTP 401",)


def test_a_refused_token_asks_for_the_admin_secret_to_be_applied_again() -> None:
    told: list[tuple[str, str]] = []
    asked: list[Target] = []

    async def scenario() -> Reading:
        async with router_admin(token=ADMIN_TOKEN) as port:

            async def pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
                return [("router-a", "127.0.0.1")]

            async def stale(target: Target) -> str | None:
                asked.append(target)
                return "a-token-the-router-does-not-hold"

            provider = RouterMetrics(
                pods, Http(), port=port, admin_token=stale, refused=lambda ns, name: told.append((ns, name))
            )
            try:
                await provider.measure(UID_TARGET, [ERRORS], NOW)
                return await provider.measure(UID_TARGET, [ERRORS], NOW.replace(second=10))
            finally:
                await provider.close()

    reading = asyncio.run(scenario())

    assert asked == [UID_TARGET, UID_TARGET]
    assert told == [("ml", "iris"), ("ml", "iris")]
    assert reading.traffic is not None  # judged on the traffic metrics as before
    assert list(reading.predictions) == []


def test_with_the_right_token_the_window_has_the_prediction_samples_and_nothing_is_told() -> None:
    told: list[tuple[str, str]] = []

    async def scenario() -> Reading:
        async with router_admin(token=ADMIN_TOKEN) as port:

            async def pods(namespace: str, deployment: str) -> list[tuple[str, str]]:
                return [("router-a", "127.0.0.1")]

            async def token(target: Target) -> str | None:
                return ADMIN_TOKEN

            provider = RouterMetrics(
                pods, Http(), port=port, admin_token=token, refused=lambda ns, name: told.append((ns, name))
            )
            try:
                await provider.measure(UID_TARGET, [ERRORS], NOW)
                return await provider.measure(UID_TARGET, [ERRORS], NOW.replace(second=10))
            finally:
                await provider.close()

    reading = asyncio.run(scenario())

    assert list(reading.predictions) == [0, 1]
    assert told == []
