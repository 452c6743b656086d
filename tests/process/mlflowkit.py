"""A real MLflow tracking server for the process tests: `mlflow server` 3.17.2 (from the dev extras) on
127.0.0.1, with a SQLite backend, a local artifact store it proxies, and its basic-auth app, in a
fresh directory; and a webhook receiver on loopback that verifies what MLflow delivers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from aiohttp import web

from modelfleet.registry.webhooks import Delivery, Refused, SeenDeliveries, verify

ADMIN = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MlflowServer:
    """`mlflow server --app-name basic-auth` on a free loopback port. `admin_password` is the admin's;
    webhooks may target loopback over plain HTTP (MLflow refuses both by default)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_password = f"admin-{uuid.uuid4().hex}"
        self.log = workdir / "mlflow-server.log"
        auth_config = workdir / "basic_auth.ini"
        auth_config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{workdir}/auth.db\n"
            f"admin_username = {ADMIN}\n"
            f"admin_password = {self.admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # PBKDF2 on every request costs about 0.2 s of CPU: check each password once a minute
            "auth_cache_ttl_seconds = 60\n"
        )
        env = {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
            # without a fixed key every server process encrypts webhook secrets with a key of its own:
            # after a restart (or in another worker) no signed webhook is delivered
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",  # default 60: a new webhook would wait up to a minute
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # one process less (the job runner)
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--app-name",
                    "basic-auth",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{workdir}/mlflow.db",
                    "--artifacts-destination",
                    str(workdir / "artifacts"),
                ],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the CLI starts uvicorn: stop them together
            )
        self.started = time.monotonic()
        deadline = self.started + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (URLError, OSError):
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"mlflow server did not answer /health in 90 s:\n{self.tail()}")
        self.ready_after = time.monotonic() - self.started

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def client_env(self, username: str = ADMIN, password: str | None = None) -> dict[str, str]:
        """The environment MLflow's own client reads."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": self.admin_password if password is None else password,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # uvicorn, if the CLI went first
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class Received:
    """One call the receiver got: what verify() said of it."""

    headers: dict[str, str]
    body: bytes
    delivery: Delivery | None = None
    refused: Refused | None = None


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 that verifies every call with `secret`, as the operator would:
    204 for a delivery it accepts or has already accepted, 401 for one it refuses."""

    secret: str
    seen: SeenDeliveries = field(default_factory=SeenDeliveries)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mlflow"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/mlflow", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = Received(headers=dict(request.headers), body=body)
        try:
            call.delivery = verify(request.headers, body, self.secret, datetime.now(UTC), self.seen)
        except Refused as refused:
            call.refused = refused
        self.received.append(call)
        self._arrived.set()
        if call.refused is not None and call.refused.reason != "Replayed":
            return web.Response(status=401, text=str(call.refused))
        return web.Response(status=204)

    def deliveries(self, model: str) -> list[Delivery]:
        return [c.delivery for c in self.received if c.delivery is not None and c.delivery.model == model]

    async def wait_for(self, model: str, count: int, seconds: float = 20.0) -> list[Delivery]:
        """The first `count` verified deliveries for `model`, waiting up to `seconds` for them."""
        deadline = time.monotonic() + seconds
        while len(self.deliveries(model)) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                got = [(c.delivery.event if c.delivery else str(c.refused)) for c in self.received]
                raise AssertionError(f"{count} deliveries for {model} expected in {seconds}s, got: {got}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.deliveries(model)[:count]


def mlflow_delivery_headers(secret: str, body: bytes, timestamp: int) -> dict[str, Any]:
    """Headers made by MLflow's own signing code (mlflow.webhooks.delivery) for `body`."""
    from mlflow.webhooks.constants import (
        WEBHOOK_DELIVERY_ID_HEADER,
        WEBHOOK_SIGNATURE_HEADER,
        WEBHOOK_TIMESTAMP_HEADER,
    )
    from mlflow.webhooks.delivery import _generate_hmac_signature

    delivery_id = str(uuid.uuid4())
    return {
        WEBHOOK_DELIVERY_ID_HEADER: delivery_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: _generate_hmac_signature(
            secret, delivery_id, str(timestamp), body.decode()
        ),
    }
