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
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf

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
from modelfleet.registry.mlflow import (
    SOURCE_LABEL,
    SOURCE_MLFLOW,
    SYNC_FIELD_MANAGER,
    RegisteredVersion,
    Run,
    Snapshot,
    SyncReason,
    failed_sync,
    plan_sync,
    version_name,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: Keys of the credentials Secret.
TOKEN_KEY = "MLFLOW_TRACKING_TOKEN"
USERNAME_KEY = "MLFLOW_TRACKING_USERNAME"
PASSWORD_KEY = "MLFLOW_TRACKING_PASSWORD"
#: A burst of ModelVersion changes (a rollout step) makes one sync, this long after the first.
VERSION_CHANGE_DELAY = 1.0


class SyncError(Exception):
    """A sync that could not read the tracking server: the reason of the Synced condition and a short,
    secret-free message."""

    def __init__(self, reason: SyncReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Credentials:
    """What the tracking server is called with; never logged (repr hides it)."""

    token: str = ""
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:
        kind = "token" if self.token else "basic" if self.username else "none"
        return f"Credentials({kind})"


@dataclass(frozen=True)
class VersionInfo:
    """A version as the registered model's listing gives it (no download URI, no run)."""

    version: str
    status: str
    run_id: str
    tags: Mapping[str, str]
    description: str = ""


class Tracking(Protocol):
    """The MLflow tracking server, as the sync uses it. Methods raise SyncError."""

    async def aliases(self, registered_model: str) -> Mapping[str, str]: ...
    async def versions(self, registered_model: str) -> Sequence[VersionInfo]: ...
    async def download_uri(self, registered_model: str, version: str) -> str: ...
    async def run(self, run_id: str) -> Run | None: ...
    async def signature(self, registered_model: str, version: str) -> tuple[str, str]: ...
    async def set_tag(self, registered_model: str, version: str, key: str, value: str) -> None: ...
    async def delete_tag(self, registered_model: str, version: str, key: str) -> None: ...
    async def close(self) -> None: ...


Connect = Callable[[str, Credentials], Tracking]
ReadSecret = Callable[[str, str], Awaitable[Mapping[str, str] | None]]


async def read_secret(namespace: str, name: str) -> Mapping[str, str] | None:
    """The Secret's data, decoded; None when it does not exist."""
    body = await kube.run(kube.get, "v1", "Secret", namespace, name)
    if body is None:
        return None
    out: dict[str, str] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out


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
        connect: Connect,
        publish: Callable[[Views, str, str, SourceStatus], Awaitable[None]],
        model_version: Callable[[str, str], Mapping[str, Any] | None],
        *,
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
        views = self.views
        model = views.model(namespace, name) if views is not None else None
        if views is None or model is None or model.spec.source is None or model.spec.source.mlflow is None:
            raise Gone(f"{namespace}/{name}")
        source = model.spec.source.mlflow
        existing = self._existing(namespace, name, views.versions_of(namespace, name))
        now = self.now()
        try:
            credentials = await self._credentials(namespace, source)
            tracking = self.connect(source.tracking_uri, credentials)
            try:
                snapshot = await self._snapshot(tracking, model, source, existing)
                plan = plan_sync(model, snapshot, existing, now)
                await self._apply(model, plan.apply, existing)
                await self._write_tags(tracking, source, plan.tags)
            finally:
                await tracking.close()
        except SyncError as error:
            log.warning("Model %s/%s: MLflow sync: %s", namespace, name, error.message)
            await self.publish(views, namespace, name, failed_sync(model, error.reason, error.message, now))
            return source.poll_interval
        for version, why in sorted(plan.skipped.items()):
            log.info("Model %s/%s: MLflow version %s not mirrored: %s", namespace, name, version, why)
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
        if data.get(TOKEN_KEY):
            return Credentials(token=data[TOKEN_KEY])
        if data.get(USERNAME_KEY) and data.get(PASSWORD_KEY):
            return Credentials(username=data[USERNAME_KEY], password=data[PASSWORD_KEY])
        raise SyncError(
            SyncReason.CREDENTIALS_MISSING,
            f"Secret {secret} has neither {TOKEN_KEY} nor {USERNAME_KEY} and {PASSWORD_KEY}",
        )

    async def _snapshot(
        self, tracking: Tracking, model: Model, source: MlflowSource, existing: Mapping[str, ModelVersion]
    ) -> Snapshot:
        """The registered model now. Versions already mirrored keep the storage location and lineage
        they were mirrored with (immutable), so only new versions cost more requests than the listing."""
        registered = source.registered_model
        aliases = await tracking.aliases(registered)
        listed = await tracking.versions(registered)
        versions: list[RegisteredVersion] = []
        runs: dict[str, Run] = {}
        for info in listed:
            mirrored = existing.get(version_name(model.metadata.name, info.version))
            if mirrored is not None and mirrored.spec.artifact is not None:
                uri, inputs, outputs = mirrored.spec.artifact.uri, "", ""
            elif info.status != "READY":
                uri, inputs, outputs = "", "", ""
            else:
                uri = await tracking.download_uri(registered, info.version)
                inputs, outputs = await tracking.signature(registered, info.version)
                if info.run_id and info.run_id not in runs:
                    run = await tracking.run(info.run_id)
                    if run is not None:
                        runs[info.run_id] = run
            versions.append(
                RegisteredVersion(
                    version=info.version,
                    storage_uri=uri,
                    status=info.status,
                    run_id=info.run_id,
                    tags=dict(info.tags),
                    description=info.description,
                    signature_inputs=inputs,
                    signature_outputs=outputs,
                )
            )
        return Snapshot(registered, tuple(versions), dict(aliases), runs)

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

    async def _write_tags(self, tracking: Tracking, source: MlflowSource, tags: Sequence[Any]) -> None:
        for change in tags:
            if change.value is None:
                await tracking.delete_tag(source.registered_model, change.version, change.key)
            else:
                await tracking.set_tag(source.registered_model, change.version, change.key, change.value)


# --- kopf --------------------------------------------------------------------------------------------


def _sync(memo: Any) -> MlflowSync | None:
    controller: MlflowSync | None = getattr(memo, "mlflow", None)
    return controller


@kopf.on.cleanup()
async def _stop(memo: kopf.Memo, **_: Any) -> None:
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
