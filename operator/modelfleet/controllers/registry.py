"""The registry controllers: status of Models and ModelVersions, from the rules in `modelfleet.registry`.

What triggers what:
- a ModelVersion created, changed or found at start-up: its own status, then its Model's `versions`;
- a ModelVersion deleted: its Model's status;
- a Model created, changed or found at start-up: its status, then every one of its versions
  (governance may have changed); a Model deleted: its versions (they become Pending);
- a modelfleet Deployment whose served versions (stable, canary at weight > 0) change: its Model's
  `servingVersions` and the `servedBy` of the versions that started or stopped serving.

Lookups come from kopf indexes (memory, no API list calls); each status is computed whole from a fresh
read of the object and written only when it changed (one status writer). Reconciles of one Model and
its versions are serialised by a lock, so the last write always saw the newest inputs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelfleet.api import (
    GROUP,
    VERSION,
    DeploymentStatus,
    InvalidResourceError,
    Model,
    ModelVersion,
)
from modelfleet.controllers import events, kube
from modelfleet.registry import (
    Served,
    model_notices,
    model_status,
    served_changes,
    served_versions,
    version_notices,
    version_status,
)

logger = logging.getLogger(__name__)

Key = tuple[str, str]
T = TypeVar("T")

#: Delays between attempts of a write that lost a race or met an API error.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)

# --- indexes: what the handlers look up, kept by kopf from the watch streams -------------------------


@kopf.index(GROUP, VERSION, "models")
def registry_models(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Model]:
    """(namespace, name) -> the Model."""
    try:
        return {(namespace or "", name): Model.from_k8s(body)}
    except InvalidResourceError as error:  # the API server validates; only a CRD older than us gets here
        logger.warning("ignoring invalid Model: %s", error)
        return {}


@kopf.index(GROUP, VERSION, "modelversions")
def registry_versions(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Key, str]:
    """(namespace, model) -> names of the ModelVersions of that Model."""
    model = spec.get("model")
    return {(namespace or "", model): name} if isinstance(model, str) and model else {}


def _served(status: Mapping[str, Any]) -> frozenset[str]:
    try:
        return served_versions(DeploymentStatus.model_validate(dict(status or {})))
    except ValidationError:
        return frozenset()


@kopf.index(GROUP, VERSION, "modelversions")
def registry_version_models(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Key, str]:
    """(namespace, version) -> the name of its Model."""
    model = spec.get("model")
    return {(namespace or "", name): model} if isinstance(model, str) and model else {}


@kopf.index(GROUP, VERSION, "deployments")
def registry_serving(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[Key, frozenset[str]]:
    """(namespace, model) -> the versions each Deployment of that Model serves."""
    model = spec.get("model")
    return {(namespace or "", model): _served(status)} if isinstance(model, str) and model else {}


@kopf.index(GROUP, VERSION, "deployments")
def registry_served_by(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[Key, str]:
    """(namespace, version) -> names of the Deployments serving that version."""
    return {(namespace or "", version): name for version in _served(status)}


@dataclass(frozen=True)
class Views:
    """The indexes, as the handlers receive them."""

    models: kopf.Index[Key, Model]
    versions: kopf.Index[Key, str]
    version_models: kopf.Index[Key, str]
    serving: kopf.Index[Key, frozenset[str]]
    served_by: kopf.Index[Key, str]

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> Views:
        return cls(
            models=kwargs["registry_models"],
            versions=kwargs["registry_versions"],
            version_models=kwargs["registry_version_models"],
            serving=kwargs["registry_serving"],
            served_by=kwargs["registry_served_by"],
        )

    def model(self, namespace: str, name: str) -> Model | None:
        found = self.models.get((namespace, name), ())
        return next(iter(found), None)

    def versions_of(self, namespace: str, model: str) -> list[str]:
        return sorted(set(self.versions.get((namespace, model), ())))

    def model_of(self, namespace: str, version: str) -> str:
        return next(iter(self.version_models.get((namespace, version), ())), "")

    def serving_versions_of(self, namespace: str, model: str) -> set[str]:
        return {v for served in self.serving.get((namespace, model), ()) for v in served}

    def deployments_serving(self, namespace: str, version: str) -> list[str]:
        return sorted(set(self.served_by.get((namespace, version), ())))


# --- reconciling: read, decide (pure), write if changed -------------------------------------------

_locks: dict[Key, asyncio.Lock] = {}


def _lock(namespace: str, model: str) -> asyncio.Lock:
    """One lock per Model: its status and its versions' statuses are written one at a time."""
    return _locks.setdefault((namespace, model), asyncio.Lock())


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class StatusConflict(Exception):
    """The object changed between read and write; read again."""


#: Failures worth another try: a lost race, an API error, an unreachable API server.
RETRYABLE = (StatusConflict, ApiException, urllib3.exceptions.HTTPError, OSError)


async def _write_status(kind: str, body: Mapping[str, Any], status: dict[str, Any]) -> None:
    meta = body["metadata"]
    try:
        await asyncio.to_thread(
            kube.replace_status, kind, meta["namespace"], meta["name"], status, meta["resourceVersion"]
        )
    except kube.Conflict as error:
        raise StatusConflict(str(error)) from None


async def _reconcile_version(views: Views, namespace: str, name: str) -> None:
    """Write the status of one ModelVersion (caller holds its Model's lock)."""
    body = await asyncio.to_thread(kube.get, f"{GROUP}/{VERSION}", "ModelVersion", namespace, name)
    if body is None:
        return
    try:
        version = ModelVersion.from_k8s(body)
    except InvalidResourceError as error:  # the API server validates; only a CRD older than us gets here
        logger.warning("not reconciled: %s", error)
        return
    model = views.model(namespace, version.spec.model)
    new = version_status(model, version, views.deployments_serving(namespace, name), now=_now())
    if new.to_k8s() == version.status.to_k8s():
        return
    await _write_status("ModelVersion", body, new.to_k8s())
    events.post_all(body, version_notices(version.status, new))


async def _reconcile_model(views: Views, namespace: str, name: str) -> None:
    """Write the status of one Model (caller holds its lock)."""
    body = await asyncio.to_thread(kube.get, f"{GROUP}/{VERSION}", "Model", namespace, name)
    if body is None:
        return
    try:
        model = Model.from_k8s(body)
    except InvalidResourceError as error:
        logger.warning("not reconciled: %s", error)
        return
    versions = views.versions_of(namespace, name)
    new = model_status(model, versions, views.serving_versions_of(namespace, name), now=_now())
    if new.to_k8s() == model.status.to_k8s():
        return
    await _write_status("Model", body, new.to_k8s())
    old_generation = model.status.observed_generation
    spec_changed = old_generation is not None and old_generation != model.metadata.generation
    events.post_all(body, model_notices(model.status, new, spec_changed=spec_changed))


async def _retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt`, again after a short delay when it lost a race or the API failed."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return await attempt()
        except RETRYABLE as error:
            if delay is None:
                raise
            logger.info("%s: %s; retrying in %.1fs", what, _short(error), delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _short(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"API error {error.status} {error.reason}"
    return str(error) or type(error).__name__


async def reconcile_family(
    views: Views, namespace: str, model: str, *, with_model: bool = True, versions: Iterable[str] = ()
) -> None:
    """Reconcile the given versions of `model`, then the Model itself, under the Model's lock."""
    members = sorted(set(versions))

    async def attempt() -> None:
        async with _lock(namespace, model):
            for version in members:
                await _reconcile_version(views, namespace, version)
            if with_model:
                await _reconcile_model(views, namespace, model)

    await _retrying(f"{namespace}/{model}", attempt)


async def _as_temporary(work: Awaitable[None]) -> None:
    """In change handlers: a failure after the quick retries is retried by kopf a little later."""
    try:
        await work
    except RETRYABLE as error:
        raise kopf.TemporaryError(f"status not written: {_short(error)}", delay=5) from None


async def _logged(work: Awaitable[None], what: str) -> bool:
    """In event handlers (kopf does not retry those): log a failure after the quick retries."""
    try:
        await work
    except RETRYABLE as error:
        logger.error("%s: status not written: %s", what, _short(error))
        return False
    return True


# --- ModelVersion ----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "modelversions")
@kopf.on.create(GROUP, VERSION, "modelversions")
@kopf.on.update(GROUP, VERSION, "modelversions")
async def version_changed(namespace: str | None, name: str, spec: kopf.Spec, **kwargs: Any) -> None:
    """A version appeared or changed: its status, then its Model's list of versions."""
    model = str(spec.get("model", ""))
    await _as_temporary(reconcile_family(Views.of(kwargs), namespace or "", model, versions=[name]))


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "modelversions", when=_deleted)
async def version_deleted(namespace: str | None, spec: kopf.Spec, **kwargs: Any) -> None:
    """A version was deleted: its Model no longer lists it."""
    model = str(spec.get("model", ""))
    work = reconcile_family(Views.of(kwargs), namespace or "", model)
    await _logged(work, f"Model {namespace}/{model}")


# --- Model -----------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "models")
@kopf.on.create(GROUP, VERSION, "models")
@kopf.on.update(GROUP, VERSION, "models")
async def model_changed(namespace: str | None, name: str, **kwargs: Any) -> None:
    """A Model appeared or changed: re-evaluate all its versions against its rules, then its status."""
    views, ns = Views.of(kwargs), namespace or ""
    await _as_temporary(reconcile_family(views, ns, name, versions=views.versions_of(ns, name)))


@kopf.on.event(GROUP, VERSION, "models", when=_deleted)
async def model_deleted(namespace: str | None, name: str, **kwargs: Any) -> None:
    """A Model was deleted: its versions say their Model is missing."""
    views, ns = Views.of(kwargs), namespace or ""
    work = reconcile_family(views, ns, name, with_model=False, versions=views.versions_of(ns, name))
    await _logged(work, f"versions of Model {ns}/{name}")


# --- modelfleet Deployments: who serves what -------------------------------------------------------

#: What each Deployment served when last reconciled. Memory only: after a restart every Deployment
#: counts as changed once, which re-checks its Model and versions.
_served_seen: dict[Key, Served] = {}


def _observe(type: str, spec: kopf.Spec, status: kopf.Status) -> Served | None:
    model = spec.get("model")
    return (model, _served(status)) if type != "DELETED" and isinstance(model, str) and model else None


def _serving_changed(
    type: str, namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> bool:
    """Filter: only events that change what a Deployment serves reach the handler (most do not)."""
    return _observe(type, spec, status) != _served_seen.get((namespace or "", name))


@kopf.on.event(GROUP, VERSION, "deployments", when=_serving_changed)
async def deployment_serving_changed(
    type: str, namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **kwargs: Any
) -> None:
    """A Deployment's served versions changed: update those versions and the Models concerned."""
    ns = namespace or ""
    new = _observe(type, spec, status)
    old = _served_seen.get((ns, name))
    models, versions = served_changes(old, new)
    if not models and not versions:
        return
    views = Views.of(kwargs)
    # Versions are reconciled under their own Model's lock; a Deployment may name a version of
    # another Model (it will not roll it out, but the version still says who serves it).
    families: dict[str, set[str]] = {m: set() for m in models}
    for version in versions:
        owner = views.model_of(ns, version)
        if owner:
            families.setdefault(owner, set()).add(version)
    done = True
    for family, members in sorted(families.items()):
        work = reconcile_family(views, ns, family, with_model=family in models, versions=members)
        done = await _logged(work, f"Deployment {ns}/{name}") and done
    if not done:
        return  # not remembered: the Deployment's next event tries again
    if new is None:
        _served_seen.pop((ns, name), None)
    else:
        _served_seen[(ns, name)] = new
