"""The router's admin port with an admin token: the paths that show what clients sent and were answered,
and the configuration, ask for it (401 without, 403 with another, 503 while the file cannot be read, each
counted); /metrics, /healthz and /readyz answer anyone; without a token file nothing is asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelfleet.api.routerconfig import RouterConfig
from modelfleet.httpcore import Request, Response
from modelfleet.router.admin import admin_handler
from modelfleet.router.auth import TokenFile
from modelfleet.router.proxy import Router

ADMIN_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
PROTECTED = ("/predictions", "/inputs", "/feedback", "/config")
INFER = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [5.1, 3.5]}]})


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


CONFIG = RouterConfig.model_validate(
    {
        "deployment": "iris",
        "versions": [
            {"name": "iris-v1", "url": "http://iris-iris-v1.ml.svc:8080", "weight": 100, "role": "stable"}
        ],
    }
)


def serving_router() -> Router:
    """A router that served one answer (class 2 for the row [5.1, 3.5]) and sampled it."""
    router = Router()
    router.apply(CONFIG)
    assert router.route is not None
    (backend,) = router.route.backends
    backend.predictions.offer(
        b'{"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}]}'
    )
    backend.inputs.offer(INFER.encode())
    return router


def get(handler: Any, path: str, authorization: str | None = None) -> Response:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    response: Response = handler(Request(b"GET", path.encode(), headers, b""))
    return response


def body(response: Response) -> Any:
    return json.loads(response.body)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(ADMIN_TOKEN + "\n")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router() -> Router:
    return serving_router()


def test_with_the_admin_token_the_protected_paths_show_what_the_router_holds(
    router: Router, token_file: Path, clock: Clock
) -> None:
    admin = admin_handler(router, lambda: True, TokenFile(str(token_file), clock, what="admin token"))
    bearer = f"Bearer {ADMIN_TOKEN}"

    predictions = get(admin, "/predictions", bearer)
    inputs = get(admin, "/inputs", bearer)
    feedback = get(admin, "/feedback?after=0", bearer)
    config = get(admin, "/config", bearer)

    assert (predictions.status, body(predictions)) == (200, {"iris-v1": [2]})
    assert (inputs.status, body(inputs)) == (200, {"iris-v1": {"f0": [5.1], "f1": [3.5]}})
    assert feedback.status == 200
    assert body(feedback)["enabled"] is False
    assert (config.status, RouterConfig.model_validate(body(config))) == (200, CONFIG)
    assert "modelfleet_router_admin_refused_total{" not in router.metrics.render().decode()


@pytest.mark.parametrize("path", PROTECTED)
def test_without_a_bearer_token_a_protected_path_is_refused_with_a_challenge(
    router: Router, token_file: Path, clock: Clock, path: str
) -> None:
    admin = admin_handler(router, lambda: True, TokenFile(str(token_file), clock, what="admin token"))

    for authorization in (None, f"Basic {ADMIN_TOKEN}", "Bearer ", "Bearer"):
        refused = get(admin, path, authorization)
        assert refused.status == 401, authorization
        assert b'www-authenticate: Bearer realm="modelfleet-admin"\r\n' in refused.headers
        assert body(refused) == {
            "error": f"{path} needs Authorization: Bearer <admin token> (the key token of the Secret "
            "<deployment>-router-admin)"
        }
    assert b"iris-v1" not in refused.body


@pytest.mark.parametrize("path", PROTECTED)
def test_another_token_is_forbidden_and_shows_nothing(
    router: Router, token_file: Path, clock: Clock, path: str
) -> None:
    admin = admin_handler(router, lambda: True, TokenFile(str(token_file), clock, what="admin token"))

    for guess in ("Bearer guess", f"Bearer {ADMIN_TOKEN[:-1]}", f"Bearer {ADMIN_TOKEN}0"):
        refused = get(admin, path, guess)
        assert (refused.status, body(refused)) == (
            403,
            {"error": "the bearer token is not this router's admin token"},
        )


def test_every_refusal_is_counted_by_status(router: Router, token_file: Path, clock: Clock) -> None:
    admin = admin_handler(router, lambda: True, TokenFile(str(token_file), clock, what="admin token"))
    get(admin, "/predictions")
    get(admin, "/inputs")
    get(admin, "/config", "Bearer guess")
    get(admin, "/predictions", f"Bearer {ADMIN_TOKEN}")

    text = router.metrics.render().decode()
    assert 'modelfleet_router_admin_refused_total{deployment="iris",code="401"} 2' in text
    assert 'modelfleet_router_admin_refused_total{deployment="iris",code="403"} 1' in text
    assert 'code="503"' not in text


def test_metrics_and_probes_answer_anyone(router: Router, token_file: Path, clock: Clock) -> None:
    admin = admin_handler(router, lambda: True, TokenFile(str(token_file), clock, what="admin token"))

    metrics = get(admin, "/metrics")
    assert metrics.status == 200
    assert b"modelfleet_requests_total" in metrics.body
    assert (get(admin, "/healthz").status, body(get(admin, "/healthz"))) == (200, {"status": "ok"})
    assert body(get(admin, "/readyz")) == {"status": "ready", "generation": 1}
    missing = get(admin, "/secrets")
    assert missing.status == 404  # an unknown path tells nothing either way


def test_while_the_token_file_cannot_be_read_nobody_is_let_in(tmp_path: Path, clock: Clock) -> None:
    router = serving_router()
    path = tmp_path / "token"  # not there yet: the Secret is missing (an optional volume)
    admin = admin_handler(router, lambda: True, TokenFile(str(path), clock, what="admin token"))

    unavailable = get(admin, "/predictions", f"Bearer {ADMIN_TOKEN}")
    assert (unavailable.status, body(unavailable)) == (
        503,
        {"error": "the router cannot read its admin token; try again later"},
    )
    assert b"retry-after: 1\r\n" in unavailable.headers
    assert get(admin, "/predictions").status == 401  # no credentials: told so, whatever the file
    assert get(admin, "/metrics").status == 200

    path.write_text("   \n")  # an empty key counts as no token
    clock.now += 1.0
    assert get(admin, "/predictions", "Bearer x").status == 503

    path.write_text(ADMIN_TOKEN)
    clock.now += 1.0
    assert get(admin, "/predictions", f"Bearer {ADMIN_TOKEN}").status == 200
    assert (
        'modelfleet_router_admin_refused_total{deployment="iris",code="503"} 2'
        in router.metrics.render().decode()
    )


def test_a_token_changed_in_place_takes_effect_within_a_second(
    router: Router, token_file: Path, clock: Clock
) -> None:
    admin = admin_handler(router, lambda: True, TokenFile(str(token_file), clock, what="admin token"))
    assert get(admin, "/config", f"Bearer {ADMIN_TOKEN}").status == 200

    token_file.write_text("a-new-token")  # the kubelet updates the mounted Secret
    clock.now += 0.5
    assert get(admin, "/config", f"Bearer {ADMIN_TOKEN}").status == 200  # not read again yet
    clock.now += 0.5
    assert get(admin, "/config", f"Bearer {ADMIN_TOKEN}").status == 403
    assert get(admin, "/config", "Bearer a-new-token").status == 200


def test_without_a_token_file_the_admin_port_asks_no_one(router: Router) -> None:
    admin = admin_handler(router, lambda: True)

    assert body(get(admin, "/predictions")) == {"iris-v1": [2]}
    assert get(admin, "/config").status == 200
    assert get(admin, "/inputs", "Bearer anything").status == 200
