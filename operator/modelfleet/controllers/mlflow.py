"""The MLflow sync: Models with `spec.source.mlflow` mirror an MLflow registered model.

One loop per such Model (`modelfleet.controllers.loops`), woken when the Model's spec changes, when one of
its mirrored ModelVersions changes (its phase, who serves it: the tags written back follow), by a
verified webhook call, and every `pollInterval`. A sync reads the registered model's aliases and
versions (and, for versions not mirrored yet, their download URI and run) through the MLflow adapter,
asks the pure `modelfleet.registry.mlflow.plan_sync` what that means, applies the ModelVersions it
names (server-side apply, field manager `modelfleet-mlflow`), writes the tags back to MLflow, and hands
the Model's `status.source` to the registry controller, the Model's one status writer.

A tracking server that is down, refuses the credentials or does not know the registered model changes
nothing: the versions stay as they are, and the `Synced` condition says why. Credentials come from the
Secret the Model names; they are sent to the tracking server only and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf
from aiohttp import web

from modelfleet import metrics
from modelfleet.api import (
    GROUP,
    VERSION,
    InvalidResourceError,
    MlflowSource,
    Model,
    ModelVersion,
    SourceStatus,
)
from modelfleet.controllers import events, kube
from modelfleet.controllers.loops import Gone, Loops
from modelfleet.controllers.secrets import read_secret
from modelfleet.providers.mlflow import (
    BadResponse,
    Credentials,
    MlflowClient,
    MlflowError,
    NotFound,
)
from modelfleet.providers.mlflow import Run as TrackedRun
from modelfleet.registry.mlflow import (
    SOURCE_LABEL,
    SOURCE_MLFLOW,
    SYNC_FIELD_MANAGER,
    Dataset,
    RegisteredVersion,
    Run,
    Snapshot,
    SyncReason,
    TagChange,
    failed_sync,
    plan_sync,
    version_name,
)
from modelfleet.registry.webhooks import (
    MAX_BODY_BYTES,
    MODEL_EVENTS,
    Refusal,
    Refused,
    SeenDeliveries,
    verify,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: A burst of ModelVersion changes (a rollout step) makes one sync, this long after the first.
VERSION_CHANGE_DELAY = 1.0


class SyncError(Exception):
    """A sync that could not read the tracking server: the reason of the Synced condition and a short,
    secret-free message."""

    def __init__(self, reason: SyncReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


Connect = Callable[[str, Credentials], MlflowClient]
ReadSecret = Callable[[str, str], Awaitable[Mapping[str, str] | None]]


def connect(tracking_uri: str, credentials: Credentials) -> MlflowClient:
    """A client of the tracking server (one per sync; its connections end with the sync)."""
    return MlflowClient(tracking_uri, credentials)


def lineage_run(run: TrackedRun) -> Run:
    """What lineage takes from a run the client read."""
    return Run(
        run_id=run.id,
        experiment_id=run.experiment_id,
        params=dict(run.params),
        metrics=dict(run.metrics),
        tags=dict(run.tags),
        datasets=tuple(
            Dataset(name=d.name, digest=d.digest, source=d.source, context=d.context) for d in run.datasets
        ),
    )


class Views(Protocol):
    """What the sync reads from the watch caches (the registry's views)."""

    def model(self, namespace: str, name: str) -> Model | None: ...
    def versions_of(self, namespace: str, model: str) -> list[str]: ...


class MlflowSync:
    """Mirrors MLflow registered models into ModelVersions, one loop per Model.

    Constructed with how to reach a tracking server (`connect`), how to read a Secret, how to read a
    ModelVersion from the watch cache, the registry controller's `publish` (which writes the Model's
    status with the sync's `status.source`) and a clock. What it keeps in memory (the generation each
    Model was last synced at, pending wake-ups) is rebuilt by a restart.
    """

    def __init__(
        self,
        publish: Callable[[Views, str, str, SourceStatus], Awaitable[None]],
        model_version: Callable[[str, str], Mapping[str, Any] | None],
        *,
        connect: Connect = connect,
        read: ReadSecret = read_secret,
        apply: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connect = connect
        self.publish = publish
        self.model_version = model_version
        self.read = read
        self.apply = apply or (lambda manifest: kube.run(kube.apply, manifest, SYNC_FIELD_MANAGER))
        self.clock = clock
        self.loops = Loops("mlflow", self.sync)
        self.views: Views | None = None
        self.seen: dict[Key, int | None] = {}
        self.pending: dict[Key, asyncio.TimerHandle] = {}
        self.requests = 0
        """HTTP requests sent to tracking servers, all syncs together."""

    def now(self) -> datetime:
        return self.clock().replace(microsecond=0)

    async def stop(self) -> None:
        for timer in self.pending.values():
            timer.cancel()
        self.pending.clear()
        await self.loops.stop_all()

    # --- what wakes a Model's loop --------------------------------------------------------------------

    def on_model(self, views: Views, type: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """A Model event: start, wake or end its loop. Status changes (the registry's own writes) wake
        nothing."""
        self.views = views
        key = (namespace, name)
        source = ((body.get("spec") or {}).get("source") or {}).get("mlflow")
        if type == "DELETED" or not source:
            self.seen.pop(key, None)
            self.loops.stop(namespace, name)
            return
        generation = (body.get("metadata") or {}).get("generation")
        if key in self.loops and self.seen.get(key) == generation:
            return
        self.seen[key] = generation
        self.loops.wake(namespace, name)

    def on_version(self, namespace: str, model: str) -> None:
        """A mirrored ModelVersion changed (phase, who serves it): sync soon, once per burst."""
        key = (namespace, model)
        if key not in self.loops or key in self.pending:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.pending.pop(key, None)
            if key in self.loops:
                self.loops.wake(*key)

        self.pending[key] = loop.call_later(VERSION_CHANGE_DELAY, fire)

    def on_webhook(self, namespace: str, model: str) -> bool:
        """A verified webhook call for this Model: sync now. False when the Model is not followed."""
        if (namespace, model) not in self.loops:
            return False
        self.loops.wake(namespace, model)
        return True

    # --- one sync ---------------------------------------------------------------------------------------

    async def sync(self, namespace: str, name: str) -> float | None:
        """Read the registered model, mirror it, write the tags back; returns when to come back."""
        started = time.perf_counter()
        try:
            return await self._sync(namespace, name)
        finally:
            metrics.RECONCILE_DURATION.labels("mlflow").observe(time.perf_counter() - started)

    async def _sync(self, namespace: str, name: str) -> float | None:
        views = self.views
        model = views.model(namespace, name) if views is not None else None
        if views is None or model is None or model.spec.source is None or model.spec.source.mlflow is None:
            raise Gone(f"{namespace}/{name}")
        source = model.spec.source.mlflow
        existing = self._existing(namespace, name, views.versions_of(namespace, name))
        now = self.now()
        try:
            credentials = await self._credentials(namespace, source)
            client = self.connect(source.tracking_uri, credentials)
            try:
                snapshot = await self._snapshot(client, model, source, existing)
                plan = plan_sync(model, snapshot, existing, now)
                await self._apply(model, plan.apply, existing)
                await self._write_tags(client, source, plan.tags)
            finally:
                await client.close()
                self.requests += client.request_count
                for endpoint, count in client.requests.items():
                    metrics.MLFLOW_REQUESTS.labels(endpoint).inc(count)
        except (MlflowError, SyncError) as error:
            reason = SyncReason(error.reason.value)
            metrics.MLFLOW_SYNCS.labels(reason.value).inc()
            log.warning("Model %s/%s: MLflow sync: %s", namespace, name, error.message)
            await self.publish(views, namespace, name, failed_sync(model, reason, error.message, now))
            return source.poll_interval
        for version, why in sorted(plan.skipped.items()):
            log.info("Model %s/%s: MLflow version %s not mirrored: %s", namespace, name, version, why)
        metrics.MLFLOW_SYNCS.labels("Synced").inc()
        await self.publish(views, namespace, name, plan.source)
        return source.poll_interval

    def _existing(self, namespace: str, model: str, names: Sequence[str]) -> dict[str, ModelVersion]:
        out: dict[str, ModelVersion] = {}
        for version in names:
            body = self.model_version(namespace, version)
            if body is None:
                continue
            try:
                out[version] = ModelVersion.from_k8s(body)
            except InvalidResourceError as error:
                log.warning("not compared with MLflow: %s", error)
        return out

    async def _credentials(self, namespace: str, source: MlflowSource) -> Credentials:
        if source.credentials is None:
            return Credentials()
        secret = source.credentials.secret_name
        try:
            data = await self.read(namespace, secret)
        except kube.ApiError as error:
            if error.status == 403:
                raise SyncError(
                    SyncReason.CREDENTIALS_MISSING,
                    f"the operator may not read Secret {secret} (the chart's mlflow.readSecrets)",
                ) from None
            raise SyncError(SyncReason.CREDENTIALS_MISSING, f"Secret {secret} not read: {error}") from None
        if data is None:
            raise SyncError(SyncReason.CREDENTIALS_MISSING, f"Secret {secret} not found")
        try:
            return Credentials.from_secret(data)
        except MlflowError as error:
            raise SyncError(SyncReason.CREDENTIALS_MISSING, f"Secret {secret}: {error.message}") from None

    async def _snapshot(
        self, client: MlflowClient, model: Model, source: MlflowSource, existing: Mapping[str, ModelVersion]
    ) -> Snapshot:
        """The registered model now. Versions already mirrored keep the storage location and lineage
        they were mirrored with (immutable), so only new versions cost more requests than the listing:
        their download URI, MLmodel file (flavors, signature) and run."""
        registered = source.registered_model
        tracked = await client.snapshot(registered)
        versions: list[RegisteredVersion] = []
        runs: dict[str, Run] = {}
        for info in tracked.versions:
            number = str(info.version)
            mirrored = existing.get(version_name(model.metadata.name, number))
            uri, inputs, outputs, flavors = "", "", "", None
            if mirrored is not None and mirrored.spec.artifact is not None:
                uri = mirrored.spec.artifact.uri
            elif info.status == "READY":
                uri = await client.get_download_uri(registered, info.version)
                inputs, outputs, flavors = await self._mlmodel(client, registered, info.version)
                if info.run_id and info.run_id not in runs:
                    with contextlib.suppress(NotFound):  # a deleted run: mirrored with its run id only
                        runs[info.run_id] = lineage_run(await client.get_run(info.run_id))
            versions.append(
                RegisteredVersion(
                    version=number,
                    storage_uri=uri,
                    status=info.status,
                    run_id=info.run_id,
                    tags=dict(info.tags),
                    description=info.description,
                    signature_inputs=inputs,
                    signature_outputs=outputs,
                    flavors=flavors,
                )
            )
        aliases = {alias: str(number) for alias, number in tracked.model.aliases.items()}
        return Snapshot(registered, tuple(versions), aliases, runs)

    async def _mlmodel(
        self, client: MlflowClient, registered: str, version: int
    ) -> tuple[str, str, tuple[str, ...] | None]:
        """The signature (inputs, outputs) and flavors of a version's MLmodel; flavors () when it has no
        MLmodel file, None when the server could not read it (its store is not its own to read): the
        version is then mirrored without a signature and its check decides."""
        try:
            mlmodel = await client.get_mlmodel(registered, version)
        except NotFound:
            return "", "", ()
        except BadResponse as error:
            log.info("MLflow %s version %s: MLmodel not read: %s", registered, version, error.message)
            return "", "", None
        signature = mlmodel.signature
        inputs, outputs = (signature.inputs, signature.outputs) if signature is not None else ("", "")
        return inputs, outputs, mlmodel.flavors

    async def _apply(
        self, model: Model, manifests: Sequence[dict[str, Any]], existing: Mapping[str, ModelVersion]
    ) -> None:
        for manifest in manifests:
            name = manifest["metadata"]["name"]
            try:
                await self.apply(manifest)
            except kube.ApiError as error:
                # one refused version (a CRD older than the operator, a quota) must not stop the others
                log.warning("Model %s: ModelVersion %s not applied: %s", model.metadata.name, name, error)
                continue
            if name not in existing:
                number = manifest["spec"]["version"]
                message = f"MLflow version {number} mirrored as ModelVersion {name}"
                log.info("Model %s/%s: %s", model.metadata.namespace, model.metadata.name, message)
                await kube.run(events.post, model, "Normal", "VersionImported", message)

    async def _write_tags(
        self, client: MlflowClient, source: MlflowSource, tags: Sequence[TagChange]
    ) -> None:
        for change in tags:
            number = int(change.version)
            if change.value is None:
                await client.delete_version_tag(source.registered_model, number, change.key)
            else:
                await client.set_version_tag(source.registered_model, number, change.key, change.value)


# --- webhooks ----------------------------------------------------------------------------------------

#: The environment variable naming the port of the webhook receiver (unset or 0: no receiver).
WEBHOOK_PORT_VARIABLE = "MODELFLEET_WEBHOOK_PORT"
#: Where MLflow delivers a Model's events: POST /mlflow/webhooks/<namespace>/<model>.
WEBHOOK_PATH = "/mlflow/webhooks/{namespace}/{model}"


class WebhookReceiver:
    """MLflow's webhook deliveries for the Models the sync follows: a delivery signed with the Model's
    webhook secret (`spec.source.mlflow.webhook`), fresh and not seen before, about its registered
    model, wakes that Model's sync at once. Anything else changes nothing: a forged, stale or unsigned
    call is answered 401, a replay of an accepted one 200 (so MLflow stops retrying it) and ignored.
    """

    def __init__(
        self,
        sync: MlflowSync,
        *,
        read: ReadSecret = read_secret,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sync = sync
        self.read = read
        self.clock = clock
        self.seen = SeenDeliveries()
        self.counts: dict[str, int] = {}
        """Deliveries by outcome (accepted, ignored, and each refusal), for tests and logs."""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(WEBHOOK_PATH, self.handle)
        return app

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("MLflow webhooks: listening on port %d", port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        metrics.MLFLOW_WEBHOOKS.labels(outcome).inc()

    async def handle(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["model"]
        views = self.sync.views
        model = views.model(namespace, name) if views is not None else None
        source = model.spec.source.mlflow if model is not None and model.spec.source is not None else None
        if source is None or source.webhook is None:
            self._count("unknown")
            return web.json_response(
                {"error": f"no Model {namespace}/{name} takes MLflow webhooks"}, status=404
            )
        body = await request.read()
        try:
            values = await self.read(namespace, source.webhook.secret_name)
        except kube.ApiError as error:
            log.warning("Model %s/%s: webhook secret not read: HTTP %s", namespace, name, error.status)
            values = None
        secret = (values or {}).get(source.webhook.key, "")
        if not secret:
            self._count("no-secret")
            log.warning(
                "Model %s/%s: webhook refused: Secret %s has no key %s",
                namespace,
                name,
                source.webhook.secret_name,
                source.webhook.key,
            )
            return web.json_response({"error": "the webhook secret is not configured"}, status=503)
        try:
            delivery = verify(request.headers, body, secret, self.clock(), self.seen)
        except Refused as refused:
            if refused.reason == Refusal.REPLAYED:
                self._count("replayed")
                return web.json_response({"ignored": "replayed"})
            self._count(refused.reason.value)
            log.warning("Model %s/%s: webhook call refused: %s", namespace, name, refused)
            return web.json_response({"error": str(refused)}, status=401)
        if delivery.model != source.registered_model or delivery.event not in MODEL_EVENTS:
            self._count("ignored")
            return web.json_response({"ignored": delivery.event})
        self._count("accepted")
        self.sync.on_webhook(namespace, name)
        log.info("Model %s/%s: MLflow %s: syncing now", namespace, name, delivery.event)
        return web.json_response({"accepted": delivery.event})


def webhook_port() -> int:
    """The receiver's port from MODELFLEET_WEBHOOK_PORT; 0 (none) when unset."""
    text = os.environ.get(WEBHOOK_PORT_VARIABLE, "").strip()
    if not text:
        return 0
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{WEBHOOK_PORT_VARIABLE}={text!r}: not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{WEBHOOK_PORT_VARIABLE}={port}: not a port number")
    return port


# --- kopf --------------------------------------------------------------------------------------------


@kopf.on.startup()
async def _start_webhooks(memo: kopf.Memo, **_: Any) -> None:
    controller = _sync(memo)
    port = webhook_port()
    if controller is not None and port:
        memo.mlflow_webhooks = WebhookReceiver(controller)
        await memo.mlflow_webhooks.start(port)


def _sync(memo: Any) -> MlflowSync | None:
    controller: MlflowSync | None = getattr(memo, "mlflow", None)
    return controller


@kopf.on.cleanup()
async def _stop(memo: kopf.Memo, **_: Any) -> None:
    receiver: WebhookReceiver | None = getattr(memo, "mlflow_webhooks", None)
    if receiver is not None:
        await receiver.stop()
    controller = _sync(memo)
    if controller is not None:
        await controller.stop()


@kopf.on.event(GROUP, VERSION, "models")
async def _model_event(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any
) -> None:
    controller = _sync(memo)
    if controller is None or not namespace:
        return
    from modelfleet.controllers.registry import Views

    controller.on_model(Views.of({**kwargs, "memo": memo}), type or "", namespace, name, body)


@kopf.on.event(GROUP, VERSION, "modelversions", labels={SOURCE_LABEL: SOURCE_MLFLOW})
async def _version_event(
    type: str, namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    controller = _sync(memo)
    model = spec.get("model")
    if controller is not None and type and namespace and isinstance(model, str):
        controller.on_version(namespace, model)
