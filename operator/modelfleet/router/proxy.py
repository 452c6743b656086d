"""The request path: weighted split, pinning, mirroring and the fallback chain.

For each client request:

1. `X-Modelfleet-Version: <version>` pins the request to that version: no split, no fallback, no circuit.
2. Otherwise a version is drawn by weight. A request drawn for stable is copied to the canary with
   probability `mirrorPercent` / 100 (the copy's response is discarded).
3. The fallback chain, chosen version -> stable -> previous -> fallback version -> static response: a
   version whose circuit is open is skipped (`circuit_open`); a canary attempt that fails (5xx, timeout,
   refused or broken connection) is retried on stable when `retryOnStable` (`retry_on_stable`). When a
   previous version is configured (the stable one before the last promotion, still warm) and
   `retryOnStable`, it covers stable the same way: a stable attempt that fails is retried on it
   (`retry_on_previous`). When a fallback version is configured (the Deployment's `fallback.version`),
   it comes next, whatever `retryOnStable` says: the last version of the chain (`retry_on_fallback`).
   When still nothing answered, the static response, if configured, answers (`static_response`);
   otherwise the client gets the last failure: the version's own 5xx response, or a JSON 502 (connection
   failed), 504 (timed out) or 503 (circuit open).
4. With `fallback.active` (the stable version fails its Monitor, `onDegraded: Fallback`), a request drawn
   for stable goes to the fallback version instead (`degraded`, counted against stable), and stable gets a
   copy of it, answer discarded, so that the Monitor keeps measuring stable and can release the fallback.
   The chain becomes fallback version -> stable -> previous -> static response; a failing canary is retried
   on the fallback version. Without a fallback version, the static response answers those requests.

Each step counts one `modelfleet_fallbacks_total` against the version it moved on from, the reason naming
the version it moved on to (`retry_on_stable`, `retry_on_previous`, `retry_on_fallback`) or `circuit_open`
when the version it moved on from was skipped by its open circuit; a version an open circuit skipped with
nothing after it to take the request counts only its 503 attempt.

With `capture` configured, every answer a version gave that reaches the client (see `_deliver`) is captured
with probability `capture.percent` / 100, drawn like the split: one append to a bounded buffer, written by
another thread (`capture`). Mirrored copies, the static response and the router's own errors are not.

Every response carries `X-Modelfleet-Served-By` (a version, `fallback-static`, or `router` for errors the
router made itself), `X-Modelfleet-Request-Id` (the client's own id or one the router made, see
`requestid`) and, after a fallback, `X-Modelfleet-Fallback: <reason>` (the last step).

The path runs on callbacks, not coroutines: `Router.handle` starts an `_Exchange`, and each upstream
answer is handled (and the client answered) from inside the upstream connection's `data_received`, so a
request costs no task, no future and no extra turn of the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable

from modelfleet.api.routerconfig import Fallback, RouterConfig, Version, format_duration
from modelfleet.httpcore import Request, Response
from modelfleet.oip import HEADER_LENGTH
from modelfleet.router.capture import Capture, open_sink, pod_name
from modelfleet.router.circuit import CircuitBreaker
from modelfleet.router.feedback import Feedback
from modelfleet.router.inputs import InputSample
from modelfleet.router.metrics import CounterChild, RouterMetrics
from modelfleet.router.predictions import PredictionSample
from modelfleet.router.requestid import RequestIds, id_header
from modelfleet.router.upstream import HOP_BY_HOP, Pool, Result, UpstreamResponse, UpstreamTimeout

log = logging.getLogger(__name__)

PIN_HEADER = b"x-modelfleet-version"
STATIC = "fallback-static"
SERVED_BY_ROUTER = b"x-modelfleet-served-by: router\r\n"
RETRY_ON_STABLE, RETRY_ON_PREVIOUS, RETRY_ON_FALLBACK = (
    "retry_on_stable",
    "retry_on_previous",
    "retry_on_fallback",
)
CIRCUIT_OPEN, STATIC_RESPONSE, DEGRADED = "circuit_open", "static_response", "degraded"
FALLBACK_REASONS = (
    RETRY_ON_STABLE,
    RETRY_ON_PREVIOUS,
    RETRY_ON_FALLBACK,
    CIRCUIT_OPEN,
    STATIC_RESPONSE,
    DEGRADED,
)
FEEDBACK_PATH = re.compile(rb"/v2/models/[^/?]+(?:/versions/[^/?]+)?/feedback(?:\?|$)")
_FALLBACK_HEADER = {
    reason: f"x-modelfleet-fallback: {reason}\r\n".encode()
    for reason in (RETRY_ON_STABLE, RETRY_ON_PREVIOUS, RETRY_ON_FALLBACK, CIRCUIT_OPEN, DEGRADED)
}
_FALLBACK_HEADER_STATIC = f"x-modelfleet-fallback: {STATIC_RESPONSE}\r\n".encode()
#: The reason a request that moves on to a version of this role is counted with.
_RETRY_REASON = {"stable": RETRY_ON_STABLE, "previous": RETRY_ON_PREVIOUS, "fallback": RETRY_ON_FALLBACK}

# Request headers that are not passed upstream: hop-by-hop ones, those the router sets itself, the pin.
_NOT_FORWARDED: frozenset[bytes] = frozenset(
    {
        b"host",
        b"content-length",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        PIN_HEADER,
    }
)


def forward_headers(request: Request) -> bytes:
    """The client's end-to-end headers, encoded for the upstream request."""
    return b"".join([b"%s: %s\r\n" % pair for pair in request.headers if pair[0] not in _NOT_FORWARDED])


class Backend:
    """One version as the router sees it: its connection pool, circuit breaker, metric children, prediction
    and input samples, and the header bytes computed once."""

    def __init__(
        self,
        deployment: str,
        version: Version,
        fallback: Fallback,
        metrics: RouterMetrics,
        samples: int = 1000,
        samples_per_second: float = 200.0,
        input_samples: int = 1000,
        input_reads_per_second: float = 20.0,
    ) -> None:
        self.deployment = deployment
        self.name = version.name
        self.url = version.url
        self.role = version.role
        self.retry_reason = _RETRY_REASON.get(version.role, RETRY_ON_STABLE)
        self.pool = Pool(version.host, version.port)
        host = f"[{version.host}]" if ":" in version.host else version.host  # an IPv6 literal
        self.host_header = f"host: {host}{'' if version.port == 80 else f':{version.port}'}\r\n".encode()
        self.served_by = f"x-modelfleet-served-by: {version.name}\r\n".encode()
        self.metrics = metrics
        self.duration = metrics.duration.labels(deployment, version.name)
        self.mirrored = metrics.mirrored.labels(deployment, version.name)
        self.fallbacks = {
            reason: metrics.fallbacks.labels(deployment, version.name, reason) for reason in FALLBACK_REASONS
        }
        self._codes: dict[int, CounterChild] = {}
        self.predictions = PredictionSample(version.protocol, samples, samples_per_second)
        self.inputs = InputSample(version.protocol, input_samples, input_reads_per_second)
        self.breaker: CircuitBreaker | None = None
        self._breaker_settings: object = None
        self.update(version, fallback)

    def update(self, version: Version, fallback: Fallback) -> None:
        """Take a new role, protocol or circuit-breaker settings without losing connections or samples."""
        self.role = version.role
        self.retry_reason = _RETRY_REASON.get(version.role, RETRY_ON_STABLE)
        self.predictions.protocol = version.protocol
        self.inputs.protocol = version.protocol
        settings = fallback.circuit_breaker
        if settings != self._breaker_settings:
            self._breaker_settings = settings
            self.breaker = (
                None
                if settings is None
                else CircuitBreaker(
                    settings.error_rate, settings.min_requests, settings.window, settings.open_for
                )
            )

    def count(self, code: int) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.metrics.requests.labels(self.deployment, self.name, str(code))
        child.value += 1

    def allow(self, now: float) -> bool:
        return self.breaker is None or self.breaker.allow(now)

    def close(self) -> None:
        self.pool.close()


class Route:
    """One configuration, compiled: what `Router.handle` reads for each request. Replaced whole on change."""

    def __init__(self, config: RouterConfig, backends: dict[str, Backend], generation: int) -> None:
        self.config = config
        self.generation = generation
        self.backends = [backends[version.name] for version in config.versions]
        self.by_name = {backend.name.encode(): backend for backend in self.backends}
        self.stable = stable = backends[config.stable.name]
        # The version that covers stable, when there is one and retries are on; None keeps the chain as it
        # was without a previous version.
        previous = config.previous
        self.previous = (
            backends[previous.name] if previous is not None and config.fallback.retry_on_stable else None
        )
        fallback = config.fallback_version
        self.fallback_version = backends[fallback.name] if fallback is not None else None
        covers = (self.previous,) if self.previous is not None else ()
        last = (self.fallback_version,) if self.fallback_version is not None else ()
        self.active = config.fallback.active
        # The chain a request drawn for stable walks, from its first version; a canary's request walks it
        # after the canary (`retry_chain` after a failure, `stable_chain` past an open circuit). While the
        # fallback is active the fallback version comes first, stable next; without a fallback version the
        # static response answers instead and the chain is empty.
        if self.active:
            self.stable_chain: tuple[Backend, ...] = (*last, stable, *covers) if last else ()
        else:
            self.stable_chain = (stable, *covers, *last)
        self.retry_chain = self.stable_chain if config.fallback.retry_on_stable else last
        self.timeout = config.fallback.timeout
        self.timeout_text = format_duration(config.fallback.timeout)
        self.retry_on_stable = config.fallback.retry_on_stable
        total = 0
        self.cumulative: list[tuple[float, Backend]] = []
        for version in config.versions:
            if version.weight > 0:
                total += version.weight
                self.cumulative.append((total, backends[version.name]))
        self.total_weight = float(total)
        self.only = self.cumulative[0][1] if len(self.cumulative) == 1 else None
        canaries = [backends[version.name] for version in config.canaries]
        self.mirror_target = canaries[0] if canaries and config.mirror_percent > 0 else None
        self.mirror_share = config.mirror_percent / 100.0
        static = config.fallback.response
        self.static: Response | None = None
        self.static_degraded: Response | None = None  # the static response standing in for stable
        if static is not None:
            head = f"content-type: {static.content_type}\r\nx-modelfleet-served-by: {STATIC}\r\n".encode()
            self.static = Response(static.status_code, static.body.encode(), head + _FALLBACK_HEADER_STATIC)
            self.static_degraded = Response(
                static.status_code, static.body.encode(), head + _FALLBACK_HEADER[DEGRADED]
            )

    def pick(self, draw: float) -> Backend:
        """The version for a draw in [0, 1), by weight."""
        if self.only is not None:
            return self.only
        point = draw * self.total_weight
        for bound, backend in self.cumulative:
            if point < bound:
                return backend
        return self.cumulative[-1][1]


class Router:
    """Holds the current `Route` and serves requests through it."""

    def __init__(
        self,
        metrics: RouterMetrics | None = None,
        prediction_samples: int = 1000,
        prediction_reads_per_second: float = 200.0,
        input_samples: int = 1000,
        input_reads_per_second: float = 20.0,
        max_mirrors: int = 256,
        random_draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        capture_pod: str | None = None,
    ) -> None:
        self.metrics = metrics or RouterMetrics()
        self.prediction_samples = prediction_samples
        self.prediction_reads_per_second = prediction_reads_per_second
        self.input_samples = input_samples
        self.input_reads_per_second = input_reads_per_second
        self.max_mirrors = max_mirrors
        self.mirrors_in_flight = 0
        self.route: Route | None = None
        self._backends: dict[str, Backend] = {}
        self._draw = random_draw
        self._clock = clock
        self._generation = 0
        self.ids = RequestIds()
        self.feedback = Feedback(self.metrics, self.ids.tag.decode(), clock)
        self.capture: Capture | None = None
        self.capture_pod = capture_pod or pod_name()
        self._not_ready = Response.error(
            503, "no configuration loaded yet", SERVED_BY_ROUTER + b"retry-after: 1\r\n"
        )

    # -- configuration ----------------------------------------------------------------------------------

    def apply(self, config: RouterConfig) -> None:
        """Switch to `config` at once; requests under way finish on what they started with."""
        old = self._backends
        backends: dict[str, Backend] = {}
        for version in config.versions:
            backend = old.get(version.name)
            if backend is not None and backend.url == version.url and backend.deployment == config.deployment:
                backend.update(version, config.fallback)
            else:
                backend = Backend(
                    config.deployment,
                    version,
                    config.fallback,
                    self.metrics,
                    self.prediction_samples,
                    self.prediction_reads_per_second,
                    self.input_samples,
                    self.input_reads_per_second,
                )
            backends[version.name] = backend
        for name, backend in old.items():
            if backends.get(name) is not backend:
                backend.close()
        self._generation += 1
        self._backends = backends
        self.feedback.configure(config)
        self._configure_capture(config)
        self.route = Route(config, backends, self._generation)

    def _configure_capture(self, config: RouterConfig) -> None:
        """Start, retune, replace or stop payload capture. A new percent or redact list keeps the buffer;
        a new destination or bounds start a new writer, the old one writing what it holds and ending."""
        settings = config.capture
        current = self.capture
        if (
            current is not None
            and settings is not None
            and current.deployment == config.deployment
            and current.settings.model_dump(exclude={"percent", "redact"})
            == settings.model_dump(exclude={"percent", "redact"})
        ):
            current.retune(settings)
            return
        if current is not None:
            current.stop()
        self.capture = (
            None
            if settings is None
            else Capture(config.deployment, settings, self.metrics, open_sink(settings.uri), self.capture_pod)
        )

    def apply_json(self, text: str | bytes) -> str | None:
        """Parse and apply a `config.json`; returns None, or why it was refused (the old config stays)."""
        try:
            config = RouterConfig.model_validate_json(text)
        except ValueError as error:
            self.metrics.config_loads.labels("invalid").inc()
            return str(error)
        if self.route is not None and config == self.route.config:
            return None
        self.apply(config)
        self.metrics.config_loads.labels("applied").inc()
        log.info(
            "configuration %d applied: %s",
            self._generation,
            ", ".join(f"{v.name}={v.weight} ({v.role})" for v in config.versions),
        )
        return None

    def predictions(self) -> dict[str, list[int | float | str | bool]]:
        return {name: backend.predictions.snapshot() for name, backend in self._backends.items()}

    def inputs(self) -> dict[str, dict[str, list[int | float | str | bool]]]:
        return {name: backend.inputs.snapshot() for name, backend in self._backends.items()}

    def refresh_gauges(self) -> None:
        now = self._clock()
        for backend in self._backends.values():
            opened = backend.breaker is not None and backend.breaker.is_open(now)
            self.metrics.circuit_open.labels(backend.deployment, backend.name).set(1.0 if opened else 0.0)
        records, held = self.metrics.capture_buffered_records, self.metrics.capture_buffered_bytes
        for child in (*records.children.values(), *held.children.values()):
            child.set(0.0)
        capture = self.capture
        if capture is not None:
            records.labels(capture.deployment).set(float(capture.held_records))
            held.labels(capture.deployment).set(float(capture.held_bytes))

    # -- requests ---------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response | None:
        """Answer at once (no configuration, unknown pin) or start the request on its way and return None:
        the answer is given from the upstream callbacks through `request.respond`."""
        route = self.route
        if b"/feedback" in request.path and FEEDBACK_PATH.match(request.path) is not None:
            if route is None:
                return self._not_ready
            return _with(self.feedback.answer(request), SERVED_BY_ROUTER)
        request_id = self.ids.of(request)
        if route is None:
            return _with(self._not_ready, id_header(request_id))
        pin = request.header(PIN_HEADER)
        if pin is None:
            _Exchange(self, route, request, request_id=request_id).start(route.pick(self._draw()))
            return None
        backend = route.by_name.get(pin)
        if backend is None:
            self.metrics.rejected.labels(route.config.deployment, "400").inc()
            known = ", ".join(b.name for b in route.backends)
            return Response.error(
                400,
                f"X-Modelfleet-Version names no version of this deployment: "
                f"{pin.decode(errors='replace')!r} (versions: {known})",
                SERVED_BY_ROUTER + id_header(request_id),
            )
        _Exchange(self, route, request, request_id=request_id).pinned(backend)
        return None

    def _last_resort(self, route: Route, backend: Backend, failure: Response) -> Response:
        """The static response if there is one (counted against `backend`), else the failure itself."""
        static = route.static
        if static is None:
            return failure
        backend.fallbacks[STATIC_RESPONSE].value += 1
        self.metrics.requests.labels(route.config.deployment, STATIC, str(static.status)).inc()
        return static

    def _mirror(self, route: Route, target: Backend, request: Request, fields: bytes) -> None:
        if self.mirrors_in_flight >= self.max_mirrors or not target.allow(self._clock()):
            return
        target.mirrored.value += 1
        self.mirrors_in_flight += 1
        _Exchange(self, route, request, fields).mirror(target)

    async def close(self, capture_timeout: float = 3.0) -> None:
        """Close the upstream connections, then give the capture writer up to `capture_timeout` seconds
        to write what it holds (off the event loop)."""
        for backend in self._backends.values():
            backend.close()
        capture, self.capture = self.capture, None
        if capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, capture.close, capture_timeout)


class _Exchange:
    """One client request on its way through the fallback chain, driven by upstream callbacks."""

    __slots__ = (
        "backend",
        "chain",
        "fields",
        "id_header",
        "next_step",
        "note",
        "position",
        "request",
        "request_id",
        "route",
        "router",
        "started",
    )

    def __init__(
        self,
        router: Router,
        route: Route,
        request: Request,
        fields: bytes | None = None,
        request_id: bytes = b"",
    ) -> None:
        self.router = router
        self.route = route
        self.request = request
        self.fields = forward_headers(request) if fields is None else fields
        self.request_id = request_id
        self.id_header = id_header(request_id) if request_id else b""  # a mirrored copy answers no client
        self.note = b""
        self.started = 0.0
        self.backend: Backend = route.stable
        self.chain: tuple[Backend, ...] = ()
        self.position = 0  # of `backend` in `chain`, once the request walks it
        # Steps are kept as plain functions, not bound methods: a bound method stored on the object would
        # make a reference cycle per request, left for the garbage collector instead of freed at once.
        self.next_step: Callable[[_Exchange, Result], None] = _Exchange._canary_answer

    # The steps ------------------------------------------------------------------------------------------

    def start(self, backend: Backend) -> None:
        router, route = self.router, self.route
        if backend is route.stable:
            if route.mirror_target is not None and router._draw() < route.mirror_share:
                router._mirror(route, route.mirror_target, self.request, self.fields)
            if route.active:
                self._degraded()
                return
            if backend.allow(router._clock()):
                self.chain = route.stable_chain
                self._attempt(backend, _Exchange._chain_answer)
                return
        elif backend.allow(router._clock()):
            self._attempt(backend, _Exchange._canary_answer)
            return
        # skipped by its open circuit: on along the chain (after stable, or from its start for a canary)
        backend.count(503)
        chain = route.stable_chain
        if not self._walk(chain, 1 if backend is route.stable else 0, backend, failed=False):
            self._respond(router._last_resort(route, backend, _circuit_open(backend)))

    def _degraded(self) -> None:
        """The fallback is active: a request drawn for stable goes to the fallback version (or the static
        response), and stable gets a copy to be measured on."""
        router, route = self.router, self.route
        stable = route.stable
        stable.fallbacks[DEGRADED].value += 1
        chain = route.stable_chain
        if not chain:  # no fallback version: the static response stands in for stable
            static = route.static_degraded
            if (
                static is None
            ):  # not a configuration that validates (`fallback.active` needs one or the other)
                self._respond(Response.error(503, "no fallback configured", SERVED_BY_ROUTER))
                return
            router._mirror(route, stable, self.request, self.fields)
            router.metrics.requests.labels(route.config.deployment, STATIC, str(static.status)).inc()
            self._respond(static)
            return
        head = chain[0]
        if head.allow(router._clock()):
            router._mirror(route, stable, self.request, self.fields)
            self.note = _FALLBACK_HEADER[DEGRADED]
            self.chain = chain
            self._attempt(head, _Exchange._chain_answer)
            return
        head.count(503)
        if not self._walk(chain, 1, head, failed=False):
            self._respond(router._last_resort(route, head, _circuit_open(head)))

    def pinned(self, backend: Backend) -> None:
        self._attempt(backend, _Exchange._pinned_answer)

    def mirror(self, backend: Backend) -> None:
        self._attempt(backend, _Exchange._mirror_answer)

    def _canary_answer(self, result: Result) -> None:
        """The answer of a canary drawn by weight: on failure, on along the retry chain."""
        backend, route = self.backend, self.route
        if type(result) is UpstreamResponse and result.status < 500:
            self._deliver(backend, result, b"")
            return
        if not self._walk(route.retry_chain, 0, backend, failed=True):
            self._give_up(backend, result)

    def _chain_answer(self, result: Result) -> None:
        """The answer of the version at `position` in `chain`: on failure, on to the next one."""
        backend = self.backend
        if type(result) is UpstreamResponse and result.status < 500:
            self._deliver(backend, result, self.note)
            return
        if not self._walk(self.chain, self.position + 1, backend, failed=True):
            self._give_up(backend, result)

    def _give_up(self, backend: Backend, result: Result) -> None:
        """Nothing after `backend` took the request: the static response if there is one, else the last
        failure: the version's own 5xx answer (delivered as it is, like any answer of a version), or the
        router's JSON 502 or 504."""
        route = self.route
        if route.static is None and type(result) is UpstreamResponse:
            self._deliver(backend, result, b"")
            return
        self._respond(self.router._last_resort(route, backend, _failure_reply(backend, result, route)))

    def _walk(self, chain: tuple[Backend, ...], start: int, moved_from: Backend, *, failed: bool) -> bool:
        """Send the request on to the first version of `chain[start:]` whose circuit lets it through.
        `moved_from` failed (it counts the reason named after `chain[start]`, e.g. retry_on_stable) or was
        skipped by its open circuit (it counts circuit_open); each version skipped on the way counts its
        503 and, when a version after it takes the request, circuit_open. Returns whether one took it."""
        now = self.router._clock()
        for index in range(start, len(chain)):
            backend = chain[index]
            if not backend.allow(now):
                backend.count(503)
                continue
            reason = chain[start].retry_reason if failed else CIRCUIT_OPEN
            moved_from.fallbacks[reason].value += 1
            for skipped in chain[start:index]:
                skipped.fallbacks[CIRCUIT_OPEN].value += 1
            self.note = _FALLBACK_HEADER[reason if index == start else CIRCUIT_OPEN]
            self.chain, self.position = chain, index
            self._attempt(backend, _Exchange._chain_answer)
            return True
        return False

    def _pinned_answer(self, result: Result) -> None:
        if type(result) is UpstreamResponse:
            self._deliver(self.backend, result, b"")
        else:
            self._respond(_failure_reply(self.backend, result, self.route))

    def _mirror_answer(self, result: Result) -> None:
        self.router.mirrors_in_flight -= 1

    # Answering the client ---------------------------------------------------------------------------------

    def _deliver(self, backend: Backend, upstream: UpstreamResponse, note: bytes) -> None:
        """Answer the client with what a version answered; remember a 2xx answer for labels to join; capture
        the share of answers `capture` asks for, whatever their status."""
        router = self.router
        capture = router.capture
        if capture is not None and router._draw() < capture.share:
            request = self.request
            capture.offer(
                self.request_id,
                backend.name,
                request.path,
                request.body,
                request.header(HEADER_LENGTH),
                upstream.status,
                upstream.body,
                upstream.header(HEADER_LENGTH),
            )
        feedback = router.feedback
        if feedback.store is not None and 200 <= upstream.status < 300:
            feedback.remember(
                self.request_id,
                backend.name,
                backend.predictions.protocol,
                upstream.body,
                upstream.header(HEADER_LENGTH),
            )
        self.request.respond(_reply(backend, upstream, note + self.id_header))

    def _respond(self, response: Response) -> None:
        """Answer the client with a response the router chose (a failure, the static response)."""
        self.request.respond(_with(response, self.id_header))

    # One attempt -----------------------------------------------------------------------------------------

    def _attempt(self, backend: Backend, next_step: Callable[[_Exchange, Result], None]) -> None:
        """Send the request to one version with the route's timeout; `_answered` takes it from there."""
        request = self.request
        body = request.body
        head = b"".join(
            (
                b"GET" if request.method == b"HEAD" else request.method,
                b" ",
                request.path,
                b" HTTP/1.1\r\n",
                backend.host_header,
                self.fields,
                b"content-length: %d\r\n\r\n" % len(body),
            )
        )
        self.backend = backend
        self.next_step = next_step
        self.started = time.perf_counter()
        backend.pool.send(head, body, self.route.timeout, self._answered)

    def _answered(self, result: Result) -> None:
        """Record one attempt's outcome (metrics, circuit, prediction and input samples), then take the next
        step."""
        finished = time.perf_counter()
        backend = self.backend
        if type(result) is UpstreamResponse:
            code = result.status
            if 200 <= code < 300:
                if backend.predictions.wants(finished):
                    backend.predictions.offer(result.body, result.header(HEADER_LENGTH))
                if backend.inputs.wants(finished):
                    backend.inputs.offer(self.request.body, self.request.header(HEADER_LENGTH))
        else:
            code = 504 if isinstance(result, UpstreamTimeout) else 502
        backend.duration.observe(finished - self.started)
        backend.count(code)
        if backend.breaker is not None:
            backend.breaker.record(self.router._clock(), code < 500)
        try:
            self.next_step(self, result)
        except Exception:
            log.exception("router: request to %s failed", backend.name)
            if self.next_step is not _Exchange._mirror_answer:  # a copy never answers the client
                self._respond(Response.error(500, "internal error", SERVED_BY_ROUTER))


def _with(response: Response, headers: bytes) -> Response:
    """`response` with more header lines, as a new Response (shared ones, like the static one, stay as they
    are)."""
    return Response(response.status, response.body, response.headers + headers)


def _reply(backend: Backend, upstream: UpstreamResponse, note: bytes) -> Response:
    headers = b"".join([b"%s: %s\r\n" % pair for pair in upstream.headers if pair[0] not in HOP_BY_HOP])
    return Response(upstream.status, upstream.body, headers + backend.served_by + note)


def _circuit_open(backend: Backend) -> Response:
    """The router's answer when `backend` was skipped by its open circuit and nothing else answered."""
    return Response.error(
        503, f"circuit open for version {backend.name}", SERVED_BY_ROUTER + b"retry-after: 1\r\n"
    )


def _failure_reply(backend: Backend, result: Result, route: Route) -> Response:
    """What the client gets for a failed attempt when nothing else answers: the version's own 5xx answer,
    or the router's JSON 502 (connection failed) or 504 (timed out)."""
    if type(result) is UpstreamResponse:
        return _reply(backend, result, b"")
    if isinstance(result, UpstreamTimeout):
        message = f"version {backend.name} did not answer within {route.timeout_text}"
        return Response.error(504, message, SERVED_BY_ROUTER)
    return Response.error(502, f"version {backend.name} failed: {result}", SERVED_BY_ROUTER)
