"""The router's admin port: /metrics, /predictions, /inputs, /feedback, /healthz, /readyz and /config.

The paths that show what clients sent and were answered, or how the router is set up (/predictions,
/inputs, /feedback, /config), need `Authorization: Bearer <admin token>` when the router has an admin
token file (`--admin-token-file`; the operator mounts the Secret `<deployment>-router-admin` there):
401 without a token, 403 with another, 503 while the file cannot be read. /metrics, /healthz and /readyz
stay open, for Prometheus and the kubelet's probes; the metrics' labels name deployments, versions,
status codes and outcomes, never anything a client sent. Without a token file (a plain process outside a
cluster) nothing is asked of anyone.
"""

from __future__ import annotations

from collections.abc import Callable

from modelfleet.httpcore import Request, Response
from modelfleet.router.auth import TokenFile, check
from modelfleet.router.metrics import CONTENT_TYPE
from modelfleet.router.proxy import Router

PATHS = ("/metrics", "/predictions", "/inputs", "/feedback", "/healthz", "/readyz", "/config")
PROTECTED = frozenset({b"/predictions", b"/inputs", b"/feedback", b"/config"})
"""The admin paths that need the admin token: what they show comes from clients, or is the configuration."""

_CHALLENGE = b'www-authenticate: Bearer realm="modelfleet-admin"\r\n'


def admin_handler(
    router: Router, ready: Callable[[], bool], token: TokenFile | None = None
) -> Callable[[Request], Response]:
    """The handler of the admin port. `ready` turns false while the router shuts down; with `token`, the
    `PROTECTED` paths need its bearer token."""
    metrics_type = b"content-type: " + CONTENT_TYPE + b"\r\n"

    def refusal(request: Request, path: bytes) -> Response | None:
        """None when the request may read `path`, else the answer that refuses it (counted)."""
        if token is None:
            return None
        verdict = check(request, token)
        if verdict == "ok":
            return None
        shown = path.decode()
        if verdict == "unauthorized":
            response = Response.error(
                401,
                f"{shown} needs Authorization: Bearer <admin token> (the key token of the Secret "
                "<deployment>-router-admin)",
                _CHALLENGE,
            )
        elif verdict == "forbidden":
            response = Response.error(403, "the bearer token is not this router's admin token")
        else:
            response = Response.error(
                503, "the router cannot read its admin token; try again later", b"retry-after: 1\r\n"
            )
        deployment = router.route.config.deployment if router.route is not None else ""
        router.metrics.admin_refused.labels(deployment, str(response.status)).inc()
        return response

    def handle(request: Request) -> Response:
        if request.method not in (b"GET", b"HEAD"):
            return Response.error(405, "the admin port only answers GET", b"allow: GET, HEAD\r\n")
        path, _, query = request.path.partition(b"?")
        if path in PROTECTED:
            refused = refusal(request, path)
            if refused is not None:
                return refused
        if path == b"/metrics":
            router.refresh_gauges()
            return Response(200, router.metrics.render(), metrics_type)
        if path == b"/predictions":
            return Response.json(200, router.predictions())
        if path == b"/inputs":
            return Response.json(200, router.inputs())
        if path == b"/feedback":
            after = _after(query)
            if after is None:
                return Response.error(400, "after must be a sequence number: /feedback?after=<cursor>")
            return Response.json(200, router.feedback.snapshot(after))
        if path == b"/healthz":
            return Response.json(200, {"status": "ok"})
        if path == b"/readyz":
            route = router.route
            if route is None:
                return Response.error(503, "no configuration loaded yet")
            if not ready():
                return Response.error(503, "shutting down")
            return Response.json(200, {"status": "ready", "generation": route.generation})
        if path == b"/config":
            route = router.route
            if route is None:
                return Response.error(404, "no configuration loaded yet")
            return Response(200, route.config.to_json().encode(), b"content-type: application/json\r\n")
        return Response.error(404, f"no such path; the admin port serves {', '.join(PATHS)}")

    return handle


def _after(query: bytes) -> int | None:
    """The `after` parameter of a query (0 without one), or None when it is not a whole number."""
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"after":
            return int(value) if value.isdigit() and len(value) <= 18 else None
    return 0
