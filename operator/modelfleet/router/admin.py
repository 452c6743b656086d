"""The router's admin port: /metrics, /predictions, /inputs, /feedback, /healthz, /readyz and /config.

Nothing here asks who is reading: whoever reaches the port (the pod IP, port 9090) reads it all.
"""

from __future__ import annotations

from collections.abc import Callable

from modelfleet.httpcore import Request, Response
from modelfleet.router.metrics import CONTENT_TYPE
from modelfleet.router.proxy import Router

PATHS = ("/metrics", "/predictions", "/inputs", "/feedback", "/healthz", "/readyz", "/config")


def admin_handler(router: Router, ready: Callable[[], bool]) -> Callable[[Request], Response]:
    """The handler of the admin port. `ready` turns false while the router shuts down."""
    metrics_type = b"content-type: " + CONTENT_TYPE + b"\r\n"

    def handle(request: Request) -> Response:
        if request.method not in (b"GET", b"HEAD"):
            return Response.error(405, "the admin port only answers GET", b"allow: GET, HEAD\r\n")
        path, _, query = request.path.partition(b"?")
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
