"""The request path: weighted split, pinning, mirroring and the fallback chain.

For each client request:

1. `X-Modelfleet-Version: <version>` pins the request to that version: no split, no fallback, no circuit.
2. Otherwise a version is drawn by weight. A request drawn for stable is copied to the canary with
   probability `mirrorPercent` / 100 (the copy's response is discarded).
3. The fallback chain, chosen version -> stable -> previous -> static response: a version whose circuit is
   open is skipped for stable (`circuit_open`); a canary attempt that fails (5xx, timeout, refused or
   broken connection) is retried on stable when `retryOnStable` (`retry_on_stable`). When a previous
   version is configured (the stable one before the last promotion, still warm) and `retryOnStable`,
   it covers stable the same way: a stable attempt that fails is retried on it (`retry_on_previous`), and
   a request bound for stable while stable's circuit is open goes to it (`circuit_open`). When still
   nothing answered, the static response, if configured, answers (`static_response`); otherwise the
   client gets the last failure: the version's own 5xx response, or a JSON 502 (connection failed), 504
   (timed out) or 503 (circuit open).

Each step counts one `modelfleet_fallbacks_total` against the version it moved on from; a version an open
circuit skipped at the end of the chain counts only its 503 attempt.

Every response carries `X-Modelfleet-Served-By` (a version, `fallback-static`, or `router` for errors the
router made itself), `X-Modelfleet-Request-Id` (the client's own id or one the router made, see
`requestid`) and, after a fallback, `X-Modelfleet-Fallback: <reason>`.

The path runs on callbacks, not coroutines: `Router.handle` starts an `_Exchange`, and each upstream
answer is handled (and the client answered) from inside the upstream connection's `data_received`, so a
request costs no task, no future and no extra turn of the event loop.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable

from modelfleet.api.routerconfig import Fallback, RouterConfig, Version, format_duration
from modelfleet.httpcore import Request, Response
from modelfleet.oip import HEADER_LENGTH
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
RETRY_ON_STABLE, RETRY_ON_PREVIOUS = "retry_on_stable", "retry_on_previous"
CIRCUIT_OPEN, STATIC_RESPONSE = "circuit_open", "static_response"
FALLBACK_REASONS = (RETRY_ON_STABLE, RETRY_ON_PREVIOUS, CIRCUIT_OPEN, STATIC_RESPONSE)
FEEDBACK_PATH = re.compile(rb"/v2/models/[^/?]+(?:/versions/[^/?]+)?/feedback(?:\?|$)")
_FALLBACK_HEADER = {
    reason: f"x-modelfleet-fallback: {reason}\r\n".encode()
    for reason in (RETRY_ON_STABLE, RETRY_ON_PREVIOUS, CIRCUIT_OPEN)
}

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
        self.stable = backends[config.stable.name]
        # The version that covers stable, when there is one and retries are on; None keeps the chain as it
        # was without a previous version.
        previous = config.previous
        self.previous = (
            backends[previous.name] if previous is not None and config.fallback.retry_on_stable else None
        )
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
        if static is not None:
            self.static = Response(
                static.status_code,
                static.body.encode(),
                f"content-type: {static.content_type}\r\n".encode()
                + f"x-modelfleet-served-by: {STATIC}\r\n".encode()
                + f"x-modelfleet-fallback: {STATIC_RESPONSE}\r\n".encode(),
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
        self.route = Route(config, backends, self._generation)

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

    async def close(self) -> None:
        for backend in self._backends.values():
            backend.close()


class _Exchange:
    """One client request on its way through the fallback chain, driven by upstream callbacks."""

    __slots__ = (
        "backend",
        "fields",
        "id_header",
        "next_step",
        "note",
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
        # Steps are kept as plain functions, not bound methods: a bound method stored on the object would
        # make a reference cycle per request, left for the garbage collector instead of freed at once.
        self.next_step: Callable[[_Exchange, Result], None] = _Exchange._first_answer

    # The steps ------------------------------------------------------------------------------------------

    def start(self, backend: Backend) -> None:
        router, route = self.router, self.route
        stable = route.stable
        if route.mirror_target is not None and backend is stable and router._draw() < route.mirror_share:
            router._mirror(route, route.mirror_target, self.request, self.fields)
        if backend.allow(router._clock()):
            self._attempt(backend, _Exchange._first_answer)
            return
        if backend is not stable:
            backend.count(503)
            if stable.allow(router._clock()):
                backend.fallbacks[CIRCUIT_OPEN].value += 1
                self.note = _FALLBACK_HEADER[CIRCUIT_OPEN]
                self._attempt(stable, _Exchange._first_answer)
                return
        if not self._past_open_stable(None if backend is stable else backend, CIRCUIT_OPEN):
            failure = Response.error(
                503, f"circuit open for version {backend.name}", SERVED_BY_ROUTER + b"retry-after: 1\r\n"
            )
            self._respond(router._last_resort(route, backend, failure))

    def pinned(self, backend: Backend) -> None:
        self._attempt(backend, _Exchange._pinned_answer)

    def mirror(self, backend: Backend) -> None:
        self._attempt(backend, _Exchange._mirror_answer)

    def _first_answer(self, result: Result) -> None:
        backend, route = self.backend, self.route
        if type(result) is UpstreamResponse and result.status < 500:
            self._deliver(backend, result, self.note)
            return
        stable = route.stable
        if backend is stable:
            self._stable_failed(result)
            return
        if route.retry_on_stable:
            if stable.allow(self.router._clock()):
                backend.fallbacks[RETRY_ON_STABLE].value += 1
                self._attempt(stable, _Exchange._retry_answer)
                return
            if self._past_open_stable(backend, RETRY_ON_STABLE):
                return
        failure = _failure_reply(backend, result, route)
        self._respond(self.router._last_resort(route, backend, failure))

    def _retry_answer(self, result: Result) -> None:
        if type(result) is UpstreamResponse and result.status < 500:
            self._deliver(self.backend, result, _FALLBACK_HEADER[RETRY_ON_STABLE])
            return
        self._stable_failed(result)

    def _stable_failed(self, result: Result) -> None:
        """Stable (`self.backend`) failed: on to the previous version if it may be tried, else the end."""
        if self._to_previous(RETRY_ON_PREVIOUS):
            return
        stable, route = self.backend, self.route
        failure = _failure_reply(stable, result, route)
        self._respond(self.router._last_resort(route, stable, failure))

    def _past_open_stable(self, moved_from: Backend | None, reason: str) -> bool:
        """Stable's circuit is open, and the request was bound for it (`moved_from` None) or is moving on to
        it from `moved_from`: count stable's 503 and go on to the previous version if it may be tried,
        counting the step against `moved_from` (as `reason`) and stable (as circuit_open). Returns whether
        the request went on."""
        self.route.stable.count(503)
        if not self._to_previous(CIRCUIT_OPEN):
            return False
        if moved_from is not None:
            moved_from.fallbacks[reason].value += 1
        return True

    def _to_previous(self, reason: str) -> bool:
        """Send the request to the previous version, counting the step against stable as `reason`, when
        there is one and its circuit lets the request through (an open one counts its 503). Returns whether
        it did."""
        previous = self.route.previous
        if previous is None:
            return False
        if not previous.allow(self.router._clock()):
            previous.count(503)
            return False
        self.route.stable.fallbacks[reason].value += 1
        self.note = _FALLBACK_HEADER[reason]
        self._attempt(previous, _Exchange._previous_answer)
        return True

    def _previous_answer(self, result: Result) -> None:
        previous, route = self.backend, self.route
        if type(result) is UpstreamResponse and result.status < 500:
            self._deliver(previous, result, self.note)
            return
        failure = _failure_reply(previous, result, route)
        self._respond(self.router._last_resort(route, previous, failure))

    def _pinned_answer(self, result: Result) -> None:
        if type(result) is UpstreamResponse:
            self._deliver(self.backend, result, b"")
        else:
            self._respond(_failure_reply(self.backend, result, self.route))

    def _mirror_answer(self, result: Result) -> None:
        self.router.mirrors_in_flight -= 1

    # Answering the client ---------------------------------------------------------------------------------

    def _deliver(self, backend: Backend, upstream: UpstreamResponse, note: bytes) -> None:
        """Answer the client with what a version answered; remember a 2xx answer for labels to join."""
        feedback = self.router.feedback
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


def _failure_reply(backend: Backend, result: Result, route: Route) -> Response:
    """What the client gets for a failed attempt when nothing else answers: the version's own 5xx answer,
    or the router's JSON 502 (connection failed) or 504 (timed out)."""
    if type(result) is UpstreamResponse:
        return _reply(backend, result, b"")
    if isinstance(result, UpstreamTimeout):
        message = f"version {backend.name} did not answer within {route.timeout_text}"
        return Response.error(504, message, SERVED_BY_ROUTER)
    return Response.error(502, f"version {backend.name} failed: {result}", SERVED_BY_ROUTER)
