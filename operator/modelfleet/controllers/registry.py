"""The registry controllers: status of Models and ModelVersions, from the rules in `modelfleet.registry`.

What triggers what:
- a ModelVersion created, changed or found at start-up: its own status, then its Model's `versions`;
- a ModelVersion deleted: its Model's status;
- a Model created, changed or found at start-up: its status, then every one of its versions
  (governance may have changed); a Model deleted: its versions (they become Pending);
- a modelfleet Deployment whose served versions (stable, canary at weight > 0) change: its Model's
  `servingVersions` and the `servedBy` of the versions that started or stopped serving; one whose
  history gains an entry, or whose stable version changes, or that is deleted: the production record
  (`status.history`) of the versions it names;
- an artifact version: a check pod (`modelfleet fetch --check` with the version's credentials Secret)
  runs before anything rolls it out; its report (the container's termination message) becomes the
  `ArtifactVerified` condition and `status.artifact`, and the pod is removed. A check that may pass
  later (store unreachable, Secret missing) runs again after a growing delay. A change of a check pod
  or of a (Cluster)Runtime reconciles the versions concerned;
- a Runtime or ClusterRuntime: its own `Ready` condition.

Reads come from kopf indexes (the watch caches: no GET or LIST per reconcile; what each Deployment's
status says of each version it names is an index of its own, slim, computed by
`modelfleet.registry.history.deployment_records`; run alone, without the
shared caches, the registry reads the object it writes with one GET). Each status is computed whole and
written only when it changed (one status writer), guarded by the resourceVersion it was computed from.
The state between reconciles is the `RegistryController`'s, kept in kopf's memo.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelfleet.api import (
    GROUP,
    VERSION,
    ClusterRuntime,
    DeploymentStatus,
    InvalidResourceError,
    Model,
    ModelVersion,
    Runtime,
    RuntimeStatus,
    SourceStatus,
    get_condition,
    set_condition,
)
from modelfleet.builders import MANAGED_BY
from modelfleet.builders.artifacts import (
    CHECK_DIGEST_ANNOTATION,
    COMPONENT_ARTIFACT_CHECK,
    MODEL_VERSION_ANNOTATION,
    FetchSettings,
    build_artifact_check_pod,
)
from modelfleet.controllers import events, kube
from modelfleet.controllers.cache import Cache
from modelfleet.registry import (
    ARTIFACT_VERIFIED,
    Notice,
    Observed,
    model_notices,
    model_status,
    observe,
    observed_changes,
    served_versions,
    version_notices,
    version_status,
)
from modelfleet.registry.artifacts import CheckOutcome, CheckReason, check_due, check_outcome
from modelfleet.registry.history import DeploymentRecord, deployment_records

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


def _deployment_status(status: Mapping[str, Any]) -> DeploymentStatus | None:
    try:
        return DeploymentStatus.model_validate(dict(status or {}))
    except ValidationError:
        return None


def _served(status: Mapping[str, Any]) -> frozenset[str]:
    parsed = _deployment_status(status)
    return served_versions(parsed) if parsed is not None else frozenset()


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


@kopf.index(GROUP, VERSION, "deployments")
def registry_records(
    namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> dict[Key, DeploymentRecord]:
    """(namespace, version) -> what each Deployment's status says of that version: whether it is the
    stable one, and the entries of the version's production record there."""
    parsed = _deployment_status(status)
    if parsed is None:
        return {}
    return {(namespace or "", v): record for v, record in deployment_records(name, parsed).items()}


@dataclass(frozen=True)
class Views:
    """The indexes, as the handlers receive them."""

    models: kopf.Index[Key, Model]
    versions: kopf.Index[Key, str]
    version_models: kopf.Index[Key, str]
    serving: kopf.Index[Key, frozenset[str]]
    served_by: kopf.Index[Key, str]
    records: kopf.Index[Key, DeploymentRecord]
    cache: Cache | None = None
    """The shared watch caches (runtimes, check pods); None when the registry runs alone."""
    fetch: FetchSettings | None = None
    """How artifacts are checked; None when the registry runs alone (no checks)."""

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> Views:
        memo = kwargs.get("memo")
        try:
            cache: Cache | None = Cache(kwargs)
        except ValueError:  # the registry's handlers alone, without the shared caches
            cache = None
        return cls(
            models=kwargs["registry_models"],
            versions=kwargs["registry_versions"],
            version_models=kwargs["registry_version_models"],
            serving=kwargs["registry_serving"],
            served_by=kwargs["registry_served_by"],
            records=kwargs["registry_records"],
            cache=cache,
            fetch=getattr(memo, "fetch", None) if memo is not None else None,
        )

    def all_versions(self, namespace: str | None = None) -> list[Key]:
        """(namespace, version) of every version (of one namespace)."""
        return sorted(k for k in self.version_models if namespace is None or k[0] == namespace)

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

    def records_of(self, namespace: str, version: str) -> list[DeploymentRecord]:
        """What the statuses of the Deployments naming `version` say of it."""
        return list(self.records.get((namespace, version), ()))

    def existing_deployments(self, namespace: str, names: Iterable[str]) -> set[str] | None:
        """Those of `names` that are Deployments in the watch cache; None (not known) when the registry
        runs alone."""
        if self.cache is None:
            return None
        return {n for n in names if self.cache.deployment(namespace, n) is not None}


# --- reconciling: read, decide (pure), write if changed -------------------------------------------


class StatusConflict(Exception):
    """The object changed between read and write; read again."""


#: Failures worth another try: a lost race, an API error, an unreachable API server.
RETRYABLE = (StatusConflict, ApiException, urllib3.exceptions.HTTPError, OSError)


async def _write_status(kind: str, body: Mapping[str, Any], status: dict[str, Any]) -> None:
    meta = body["metadata"]
    try:
        namespace = meta.get("namespace", "")
        await asyncio.to_thread(
            kube.replace_status, kind, namespace, meta["name"], status, meta["resourceVersion"]
        )
    except kube.Conflict as error:
        raise StatusConflict(str(error)) from None


async def _read(
    views: Views, kind: str, namespace: str, name: str, fresh: bool = False
) -> Mapping[str, Any] | None:
    """The object from the watch cache; from the API server when `fresh` (an attempt after a lost race)
    or when the registry runs without the cache. A cached object a little behind costs one refused write:
    the status write names the resourceVersion it read. The retry must not wait for the cache: kopf
    updates an object's index entry only between that object's handlers, and this may run in one."""
    if views.cache is not None and not fresh:
        return (
            views.cache.model_version(namespace, name)
            if kind == "ModelVersion"
            else views.cache.model(namespace, name)
        )
    return await asyncio.to_thread(kube.get, f"{GROUP}/{VERSION}", kind, namespace, name)


R = TypeVar("R", Model, ModelVersion)


async def _read_parsed(
    views: Views, kind: type[R], namespace: str, name: str, fresh: bool
) -> tuple[Mapping[str, Any], R] | None:
    """The object as read (`_read`) and parsed; None when it is gone or does not parse (the API server
    validates, so only a CRD older than the operator gets there: logged, not reconciled)."""
    body = await _read(views, kind.KIND, namespace, name, fresh)
    if body is None:
        return None
    try:
        return body, kind.from_k8s(body)
    except InvalidResourceError as error:
        logger.warning("not reconciled: %s", error)
        return None


def _last_check(conditions: Iterable[Any]) -> CheckReason | None:
    checked = get_condition(tuple(conditions), ARTIFACT_VERIFIED)
    if checked is None:
        return None
    known = {r.value for r in CheckReason}
    return CheckReason(checked.reason) if checked.reason in known else CheckReason.CHECK_FAILED


def _check_key(version: ModelVersion) -> str:
    artifact = version.spec.artifact
    return f"{artifact.uri}@{artifact.digest or ''}" if artifact is not None else ""


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


def _observe(type: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> Observed | None:
    model = spec.get("model")
    if type == "DELETED" or not isinstance(model, str) or not model:
        return None
    return observe(model, _deployment_status(status) or DeploymentStatus())


class RegistryController:
    """Writes the status of Models, ModelVersions and Runtimes, and runs the artifact checks.

    Its state is its own (nothing module-level), memory only and rebuilt by a restart: one lock per
    Model (its status and its versions' statuses are written one at a time, so the last write always saw
    the newest inputs), the timers of the artifact checks to run again (a restarted operator checks the
    versions that are due at once and schedules the others), and what each Deployment served and the
    marks of its history when last seen (after a restart every Deployment counts as changed once,
    which re-checks its Model and the versions it names).
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.locks: dict[Key, asyncio.Lock] = {}
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.background: set[asyncio.Task[bool]] = set()
        self.seen: dict[Key, Observed] = {}
        self.sources: dict[Key, SourceStatus] = {}

    def now(self) -> datetime:
        return self.clock().replace(microsecond=0)

    def lock(self, namespace: str, model: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, model), asyncio.Lock())

    async def stop(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)

    # --- one family: a Model and (some of) its versions ---------------------------------------------

    async def reconcile_family(
        self,
        views: Views,
        namespace: str,
        model: str,
        *,
        with_model: bool = True,
        versions: Iterable[str] = (),
    ) -> None:
        """Reconcile the given versions of `model`, then the Model itself, under the Model's lock."""
        members = sorted(set(versions))

        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            fresh, attempts = attempts > 0, attempts + 1
            async with self.lock(namespace, model):
                for version in members:
                    await self.reconcile_version(views, namespace, version, fresh=fresh)
                if with_model:
                    await self.reconcile_model(views, namespace, model, fresh=fresh)

        await _retrying(f"{namespace}/{model}", attempt)

    async def reconcile_version(self, views: Views, namespace: str, name: str, fresh: bool = False) -> None:
        """Write the status of one ModelVersion (caller holds its Model's lock)."""
        found = await _read_parsed(views, ModelVersion, namespace, name, fresh)
        if found is None:
            return
        body, version = found
        model = views.model(namespace, version.spec.model)
        runtimes = views.cache.runtimes(namespace) if views.cache is not None else None
        now = self.now()
        started, outcome, pod = await self.check_artifact(views, body, version, now)
        records = views.records_of(namespace, name)
        named = {e.deployment for e in version.status.history} | {r.deployment for r in records}
        new = version_status(
            model,
            version,
            views.deployments_serving(namespace, name),
            now=now,
            runtimes=runtimes,
            check_started=started,
            outcome=outcome,
            records=records,
            present=views.existing_deployments(namespace, named | set(version.status.served_by)),
        )
        if new.to_k8s() != version.status.to_k8s():
            await _write_status("ModelVersion", body, new.to_k8s())
            notices = version_notices(version.status, new)
            if started and version.spec.artifact is not None:
                checks = new.artifact.checks if new.artifact is not None else 1
                uri = version.spec.artifact.uri
                notices.insert(0, Notice("Normal", "ArtifactCheck", f"checking {uri} (check {checks})"))
            events.post_all(body, notices)
        if outcome is not None and pod is not None:
            await asyncio.to_thread(kube.delete, "v1", "Pod", namespace, pod)
        waiting_for_pod = (started and outcome is None) or (pod is not None and outcome is None)
        if version.spec.artifact is not None and not waiting_for_pod:
            due = check_due(new.artifact, _last_check(new.conditions), now)
            if due is not None:
                self.schedule(views, namespace, version.spec.model, name, max(due.total_seconds(), 1.0))

    async def check_artifact(
        self, views: Views, body: Mapping[str, Any], version: ModelVersion, now: datetime
    ) -> tuple[bool, CheckOutcome | None, str | None]:
        """Run the artifact check of a version: (a check started now, what a finished check found, the
        name of the check pod to remove once its outcome is written)."""
        artifact = version.spec.artifact
        if artifact is None or views.cache is None or views.fetch is None:
            return False, None, None
        namespace, name = version.metadata.namespace, version.metadata.name
        pod = views.cache.check_pod(namespace, name)
        if pod is not None:
            pod_name = str(pod["metadata"]["name"])
            annotations = pod["metadata"].get("annotations") or {}
            if annotations.get(CHECK_DIGEST_ANNOTATION) != _check_key(version):
                await asyncio.to_thread(kube.delete, "v1", "Pod", namespace, pod_name)
                return False, None, None
            return False, check_outcome(pod), pod_name
        if check_due(version.status.artifact, _last_check(version.status.conditions), now) != timedelta(0):
            return False, None, None
        manifest = build_artifact_check_pod(namespace, name, version.metadata.uid, artifact, views.fetch)
        try:
            await asyncio.to_thread(kube.create, manifest)
        except kube.ApiError as error:
            # counted as a check that failed, so the next one comes after the backoff
            logger.warning("ModelVersion %s/%s: check pod not created: %s", namespace, name, error)
            failed = CheckOutcome(CheckReason.CHECK_FAILED, f"check pod not created: {error.message}")
            return True, failed, None
        logger.info("ModelVersion %s/%s: checking %s", namespace, name, artifact.uri)
        return True, None, None

    def schedule(self, views: Views, namespace: str, model: str, version: str, delay: float) -> None:
        """Check this version again in `delay` seconds (replacing an earlier timer of it)."""
        key = (namespace, version)
        old = self.timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.timers.pop(key, None)
            work = self.reconcile_family(views, namespace, model, with_model=False, versions=[version])
            task = loop.create_task(_logged(work, f"ModelVersion {namespace}/{version}"))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

        self.timers[key] = loop.call_later(delay + 0.5, fire)

    async def reconcile_model(self, views: Views, namespace: str, name: str, fresh: bool = False) -> None:
        """Write the status of one Model (caller holds its lock)."""
        found = await _read_parsed(views, Model, namespace, name, fresh)
        if found is None:
            return
        body, model = found
        versions = views.versions_of(namespace, name)
        serving = views.serving_versions_of(namespace, name)
        source = self.sources.get((namespace, name))
        new = model_status(model, versions, serving, now=self.now(), source=source)
        if new.to_k8s() == model.status.to_k8s():
            return
        await _write_status("Model", body, new.to_k8s())
        old_generation = model.status.observed_generation
        spec_changed = old_generation is not None and old_generation != model.metadata.generation
        events.post_all(body, model_notices(model.status, new, spec_changed=spec_changed))

    async def publish_source(self, views: Views, namespace: str, name: str, source: SourceStatus) -> None:
        """The MLflow sync's latest `status.source` of a Model: written with the rest of its status."""
        self.sources[(namespace, name)] = source
        await self.reconcile_family(views, namespace, name)

    async def reconcile_versions_of(self, views: Views, namespace: str | None) -> None:
        """Every version (of one namespace): a runtime that appeared or went away may change them all."""
        families: dict[Key, set[str]] = {}
        for ns, version in views.all_versions(namespace):
            model = views.model_of(ns, version)
            if model:
                families.setdefault((ns, model), set()).add(version)
        for (ns, model), members in sorted(families.items()):
            work = self.reconcile_family(views, ns, model, with_model=False, versions=members)
            await _logged(work, f"{ns}/{model}")

    # --- modelfleet Deployments: who serves what -----------------------------------------------------

    def deployment_changed(
        self, type: str, namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]
    ) -> bool:
        """Whether this event changes what the Deployment serves or its record of a version (most do
        not: a measurement, a step, a weight at the same served versions)."""
        return _observe(type, spec, status) != self.seen.get((namespace, name))

    async def on_deployment_changed(
        self,
        views: Views,
        type: str,
        namespace: str,
        name: str,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
    ) -> None:
        """A Deployment's served versions or its history changed: update those versions and the
        Models concerned."""
        new = _observe(type, spec, status)
        old = self.seen.get((namespace, name))
        models, versions = observed_changes(old, new)
        if not models and not versions:
            return
        # Versions are reconciled under their own Model's lock; a Deployment may name a version of
        # another Model (it will not roll it out, but the version still says who serves it).
        families: dict[str, set[str]] = {m: set() for m in models}
        for version in versions:
            owner = views.model_of(namespace, version)
            if owner:
                families.setdefault(owner, set()).add(version)
        done = True
        for family, members in sorted(families.items()):
            work = self.reconcile_family(
                views, namespace, family, with_model=family in models, versions=members
            )
            done = await _logged(work, f"Deployment {namespace}/{name}") and done
        if done:  # else not remembered: the Deployment's next event tries again
            self.remember(namespace, name, new)

    def remember(self, namespace: str, name: str, observed: Observed | None) -> None:
        if observed is None:
            self.seen.pop((namespace, name), None)
        else:
            self.seen[(namespace, name)] = observed

    # --- runtimes ------------------------------------------------------------------------------------

    def runtime_status(
        self, kind: type[Runtime] | type[ClusterRuntime], body: Mapping[str, Any]
    ) -> RuntimeStatus | None:
        """The Ready condition of a (Cluster)Runtime, or None when its status is already right."""
        try:
            runtime = kind.from_k8s(body)
        except InvalidResourceError as error:
            logger.warning("not reconciled: %s", error)
            return None
        formats = ", ".join(runtime.spec.formats)
        conditions = set_condition(
            runtime.status.conditions,
            "Ready",
            True,
            "Accepted",
            f"serves {formats} with {runtime.spec.image}",
            now=self.now(),
            observed_generation=runtime.metadata.generation,
        )
        new = RuntimeStatus(observed_generation=runtime.metadata.generation, conditions=conditions)
        return None if new.to_k8s() == runtime.status.to_k8s() else new


# --- kopf: the handlers hand over to the controller in the memo ---------------------------------------


def _registry(memo: Any) -> RegistryController:
    controller: RegistryController = memo.registry
    return controller


@kopf.on.startup()
def _build(memo: kopf.Memo, **_: Any) -> None:
    # built here too, so that a kopf run of this module alone (the registry's tests) has one
    if getattr(memo, "registry", None) is None:
        memo.registry = RegistryController()


@kopf.on.cleanup()
async def _stop(memo: kopf.Memo, **_: Any) -> None:
    controller: RegistryController | None = getattr(memo, "registry", None)
    if controller is not None:
        await controller.stop()


# --- ModelVersion ----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "modelversions")
@kopf.on.create(GROUP, VERSION, "modelversions")
@kopf.on.update(GROUP, VERSION, "modelversions")
async def version_changed(namespace: str | None, name: str, spec: kopf.Spec, **kwargs: Any) -> None:
    """A version appeared or changed: its status, then its Model's list of versions."""
    model = str(spec.get("model", ""))
    work = _registry(kwargs["memo"]).reconcile_family(
        Views.of(kwargs), namespace or "", model, versions=[name]
    )
    await _as_temporary(work)


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "modelversions", when=_deleted)
async def version_deleted(namespace: str | None, spec: kopf.Spec, **kwargs: Any) -> None:
    """A version was deleted: its Model no longer lists it."""
    model = str(spec.get("model", ""))
    work = _registry(kwargs["memo"]).reconcile_family(Views.of(kwargs), namespace or "", model)
    await _logged(work, f"Model {namespace}/{model}")


# --- Model -----------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "models")
@kopf.on.create(GROUP, VERSION, "models")
@kopf.on.update(GROUP, VERSION, "models")
async def model_changed(namespace: str | None, name: str, **kwargs: Any) -> None:
    """A Model appeared or changed: re-evaluate all its versions against its rules, then its status."""
    views, ns = Views.of(kwargs), namespace or ""
    work = _registry(kwargs["memo"]).reconcile_family(views, ns, name, versions=views.versions_of(ns, name))
    await _as_temporary(work)


@kopf.on.event(GROUP, VERSION, "models", when=_deleted)
async def model_deleted(namespace: str | None, name: str, **kwargs: Any) -> None:
    """A Model was deleted: its versions say their Model is missing."""
    views, ns = Views.of(kwargs), namespace or ""
    versions = views.versions_of(ns, name)
    controller = _registry(kwargs["memo"])
    controller.sources.pop((ns, name), None)
    work = controller.reconcile_family(views, ns, name, with_model=False, versions=versions)
    await _logged(work, f"versions of Model {ns}/{name}")


# --- modelfleet Deployments: who serves what, and what happened to each version ----------------------


def _deployment_changed(
    type: str,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    **_: Any,
) -> bool:
    """Filter: only events that change what a Deployment serves or its history reach the handler (most
    do not)."""
    return _registry(memo).deployment_changed(type, namespace or "", name, spec, status)


@kopf.on.event(GROUP, VERSION, "deployments", when=_deployment_changed)
async def deployment_changed(
    type: str, namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **kwargs: Any
) -> None:
    """A Deployment's served versions or history changed: update those versions and the Models concerned."""
    controller = _registry(kwargs["memo"])
    await controller.on_deployment_changed(Views.of(kwargs), type, namespace or "", name, spec, status)


# --- artifact checks and runtimes --------------------------------------------------------------------


@kopf.on.event(
    "",
    "v1",
    "pods",
    labels={
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": COMPONENT_ARTIFACT_CHECK,
    },
)
async def check_pod_changed(type: str, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    """A check pod made progress (or was removed): its version's status."""
    if not type or type == "DELETED" or not namespace:
        return
    version = str((body.get("metadata", {}).get("annotations") or {}).get(MODEL_VERSION_ANNOTATION, ""))
    views = Views.of(kwargs)
    model = views.model_of(namespace, version)
    if version and model:
        work = _registry(kwargs["memo"]).reconcile_family(
            views, namespace, model, with_model=False, versions=[version]
        )
        await _logged(work, version)


@kopf.on.resume(GROUP, VERSION, "runtimes")
@kopf.on.create(GROUP, VERSION, "runtimes")
@kopf.on.update(GROUP, VERSION, "runtimes")
async def runtime_changed(namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
    """A Runtime appeared or changed: its Ready condition, then the versions of its namespace."""
    controller = _registry(kwargs["memo"])
    new = controller.runtime_status(Runtime, body)
    if new is not None:
        await _as_temporary(_write_status("Runtime", body, new.to_k8s()))
    await controller.reconcile_versions_of(Views.of(kwargs), namespace or "")


@kopf.on.resume(GROUP, VERSION, "clusterruntimes")
@kopf.on.create(GROUP, VERSION, "clusterruntimes")
@kopf.on.update(GROUP, VERSION, "clusterruntimes")
async def cluster_runtime_changed(body: kopf.Body, **kwargs: Any) -> None:
    """A ClusterRuntime appeared or changed: its Ready condition, then every version."""
    controller = _registry(kwargs["memo"])
    new = controller.runtime_status(ClusterRuntime, body)
    if new is not None:
        await _as_temporary(_write_status("ClusterRuntime", body, new.to_k8s()))
    await controller.reconcile_versions_of(Views.of(kwargs), None)


@kopf.on.event(GROUP, VERSION, "runtimes", when=_deleted)
async def runtime_deleted(namespace: str | None, **kwargs: Any) -> None:
    await _registry(kwargs["memo"]).reconcile_versions_of(Views.of(kwargs), namespace or "")


@kopf.on.event(GROUP, VERSION, "clusterruntimes", when=_deleted)
async def cluster_runtime_deleted(**kwargs: Any) -> None:
    await _registry(kwargs["memo"]).reconcile_versions_of(Views.of(kwargs), None)
