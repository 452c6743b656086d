"""The operator's key for the routers' admin tokens.

Each Deployment's routers ask for a bearer token on the admin paths that show what clients sent and
were answered (/predictions, /inputs, /feedback, /config). The operator derives that token from one key
of its own (`modelfleet.builders.router_admin_token`: an HMAC of the Deployment's namespace, name and
uid), applies it in the Secret `<deployment>-router-admin` that the router pods mount, and derives it
again, without reading that Secret, when it scrapes them. So the operator never reads, lists or watches
the Secrets of the namespaces it serves, a reconcile never makes a new token, and every operator process
with the same key (a restart, the next leader) builds the same Secrets.

The key is 32 random bytes under `data.key` of the Secret MODELFLEET_ROUTER_ADMIN_KEY_SECRET (default
`modelfleet-router-admin-key`) in the operator's own namespace. The first operator that finds none makes
it (a create, which fails for the second of two racing operators; that one reads the first one's key).
Deleting the Secret, then restarting the operator, rotates every Deployment's admin token. The key is
read once per process; while it cannot be read (the API server away, RBAC missing) it is asked for again
at most every 30 s, and the routers refuse the admin paths (503) to everyone meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

from modelfleet.builders import MANAGED_BY
from modelfleet.controllers import kube

log = logging.getLogger("modelfleet.adminkey")

KEY_SECRET_VARIABLE = "MODELFLEET_ROUTER_ADMIN_KEY_SECRET"
DEFAULT_KEY_SECRET = "modelfleet-router-admin-key"
KEY_DATA = "key"
KEY_BYTES = 32
RETRY_SECONDS = 30.0


class KeyUnavailable(Exception):
    """The key could not be had; the message says why, without any secret."""


class AdminKey:
    """The key, loaded once (thread-safe: reconciles run in worker threads). Calling it returns the key,
    or None while it cannot be had."""

    def __init__(
        self,
        namespace: str,
        name: str = DEFAULT_KEY_SECRET,
        *,
        get: Callable[[str, str, str, str], kube.Obj | None] = kube.get,
        create: Callable[[kube.Obj], bool] = kube.create,
        clock: Callable[[], float] = time.monotonic,
        retry: float = RETRY_SECONDS,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._get = get
        self._create = create
        self._clock = clock
        self._retry = retry
        self._random = random
        self._lock = threading.Lock()
        self._key: bytes | None = None
        self._next_try = 0.0

    @classmethod
    def from_environment(cls, namespace: str) -> AdminKey:
        """The key Secret MODELFLEET_ROUTER_ADMIN_KEY_SECRET (else the default name) in `namespace`."""
        return cls(namespace, os.environ.get(KEY_SECRET_VARIABLE, "").strip() or DEFAULT_KEY_SECRET)

    @property
    def loaded(self) -> bytes | None:
        """The key if it was had already (no API call)."""
        return self._key

    def __call__(self) -> bytes | None:
        if self._key is not None:
            return self._key
        with self._lock:
            if self._key is not None or self._clock() < self._next_try:
                return self._key
            try:
                self._key = self._load()
            except Exception as error:  # the API server away, RBAC, a malformed key: try again later
                self._next_try = self._clock() + self._retry
                log.warning(
                    "router admin key Secret %s/%s not available (the routers refuse their admin paths to "
                    "everyone until it is; asked again in %.0fs): %s",
                    self.namespace,
                    self.name,
                    self._retry,
                    _reason(error),
                )
            return self._key

    def _load(self) -> bytes:
        body = self._get("v1", "Secret", self.namespace, self.name)
        if body is None:
            key = self._random(KEY_BYTES)
            if self._create(self._manifest(key)):
                log.info("router admin key: made the Secret %s/%s", self.namespace, self.name)
                return key
            body = self._get("v1", "Secret", self.namespace, self.name)  # another operator made it first
            if body is None:
                raise KeyUnavailable("it was made by another operator and is gone again")
        encoded = (body.get("data") or {}).get(KEY_DATA, "")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < KEY_BYTES:
            raise KeyUnavailable(
                f"its data.{KEY_DATA} is not {KEY_BYTES} bytes or more; delete the Secret and the operator "
                "makes a new key (every router admin token changes)"
            )
        log.info("router admin key: read the Secret %s/%s", self.namespace, self.name)
        return key

    def _manifest(self, key: bytes) -> kube.Obj:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/name": "modelfleet",
                    "app.kubernetes.io/component": "router-admin-key",
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                },
                "annotations": {
                    "modelfleet.io/description": "the key the operator derives each Deployment's router "
                    "admin token from; deleting it (and restarting the operator) changes every one of them"
                },
            },
            "type": "Opaque",
            "data": {KEY_DATA: base64.b64encode(key).decode()},
        }


def _reason(error: BaseException) -> str:
    if isinstance(error, kube.ApiError) and error.status == 403:
        return "the operator may not get or create it (the chart's RBAC for the release namespace)"
    return str(error) or type(error).__name__
