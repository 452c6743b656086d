"""Reference profiles: a ModelVersion's `spec.reference`, the training-data profile its dataDrift metric
compares live inputs with, read from its store and kept.

The file is read as the fetcher reads an artifact (`modelfleet.fetch.read.read_file`: s3:// or
http(s)://, the sha256 `digest` checked when given, secret-free errors), with the credentials of
`reference.credentials`: the Secret's keys are what the fetcher takes from its environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION;
MODELFLEET_HTTP_AUTHORIZATION ...). The artifact check hands that Secret to a pod; a profile is read by
the operator itself, so it reads the Secret (`get`, which the chart grants with
`referenceProfiles.readSecrets`), and uses it for that one read, nowhere else.

Parsed profiles are kept by (namespace, credentials Secret, uri, digest), the newest `MAX_PROFILES`, so a
profile is read once, not every window: one with a digest for as long as it is kept (the digest says it
cannot change), one without for `UNCHECKED_TTL`. A profile that could not be had (store unreachable,
credentials refused, digest mismatch, not a profile) is a `ProviderError` naming the cause, never a
credential, and is tried again only after `RETRY_AFTER`, so that a store that is down does not hold every
window up for its timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from modelfleet.analysis import ProviderError
from modelfleet.analysis.datadrift import Profile, ProfileError, load_profile
from modelfleet.api.modelversion import ReferenceData
from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.read import read_file
from modelfleet.fetch.sources import Timeouts
from modelfleet.fetch.uri import display_uri

log = logging.getLogger("modelfleet.providers.reference")

MAX_PROFILES = 64
"""Parsed profiles (and failures) kept, the least recently used dropped first."""
MAX_PROFILE_BYTES = 8 * 1024 * 1024
READ_TIMEOUTS = Timeouts(connect=3.0, read=5.0)
READ_SECONDS = 10.0
"""The longest one read of a profile may take."""
UNCHECKED_TTL = 300.0
"""How long a profile without a digest is kept before it is read again (it may be replaced)."""
RETRY_AFTER = 30.0
"""How long a failure is answered again before the profile is read again."""
CREDENTIAL_KEYS = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "MODELFLEET_HTTP_AUTHORIZATION",
        "MODELFLEET_HTTP_USERNAME",
        "MODELFLEET_HTTP_PASSWORD",
    }
)
"""The keys of a credentials Secret that the read takes, as the fetcher takes them from its environment."""


class SecretUnreadable(Exception):
    """A credentials Secret could not be read; the message says why (never what it holds)."""


ReadSecret = Callable[[str, str], Awaitable[Mapping[str, str] | None]]
"""(namespace, name) -> the Secret's data, decoded; None when it does not exist; SecretUnreadable when it
may not or cannot be read."""
ReadFile = Callable[[str, Mapping[str, str], str | None], bytes]
"""(uri, credentials, digest) -> the file's bytes, checked; FetchError otherwise. Blocking: run in a
thread."""


def read_reference(uri: str, env: Mapping[str, str], digest: str | None) -> bytes:
    """A reference profile's bytes, as the fetcher reads an artifact."""
    return read_file(
        uri, env, digest=digest, max_bytes=MAX_PROFILE_BYTES, timeouts=READ_TIMEOUTS, seconds=READ_SECONDS
    )


@dataclass(frozen=True)
class _Kept:
    found: Profile | ProviderError
    until: float
    """When it is to be read again (monotonic clock); infinite for a profile with a digest."""


CacheKey = tuple[str, str, str, str]


class ReferenceProfiles:
    """Reads and keeps the reference profiles of ModelVersions."""

    def __init__(
        self,
        read_secret: ReadSecret | None,
        read: ReadFile = read_reference,
        clock: Callable[[], float] = time.monotonic,
        limit: int = MAX_PROFILES,
    ) -> None:
        self.read_secret = read_secret
        """Reads a credentials Secret; None: the operator reads none (a reference naming one is an Error)."""
        self.read = read
        self.clock = clock
        self.limit = limit
        self._kept: OrderedDict[CacheKey, _Kept] = OrderedDict()
        self._reading: dict[CacheKey, asyncio.Future[Profile | ProviderError]] = {}
        self.reads = 0
        """How many times a profile was read from its store (not from what is kept)."""

    async def profile(
        self, namespace: str, version: str, reference: ReferenceData
    ) -> Profile | ProviderError:
        """The parsed profile of `reference` (the ModelVersion `version`'s), or why there is none."""
        secret = reference.credentials.secret_name if reference.credentials is not None else ""
        key = (namespace, secret, reference.uri, reference.digest or "")
        kept = self._kept.get(key)
        if kept is not None and self.clock() < kept.until:
            self._kept.move_to_end(key)
            return kept.found
        reading = self._reading.get(key)
        if reading is not None:  # another Monitor's window is reading it now
            return await asyncio.shield(reading)
        future: asyncio.Future[Profile | ProviderError] = asyncio.get_running_loop().create_future()
        self._reading[key] = future
        try:
            found = await self._load(namespace, version, reference, secret)
        except BaseException:  # cancelled (the operator stops): those waiting are told, not cancelled
            future.set_result(ProviderError(f"reference profile of {version}: not read (interrupted)"))
            raise
        else:
            future.set_result(found)
        finally:
            del self._reading[key]
        now = self.clock()
        if isinstance(found, ProviderError):
            until = now + RETRY_AFTER
        else:
            until = float("inf") if reference.digest else now + UNCHECKED_TTL
        self._kept[key] = _Kept(found, until)
        self._kept.move_to_end(key)
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)
        return found

    async def _load(
        self, namespace: str, version: str, reference: ReferenceData, secret: str
    ) -> Profile | ProviderError:
        where = f"reference profile of {version}"
        env: dict[str, str] = {}
        if secret:
            if self.read_secret is None:
                return ProviderError(f"{where}: the operator reads no Secret, and credentials name {secret}")
            try:
                data = await self.read_secret(namespace, secret)
            except SecretUnreadable as error:
                return ProviderError(f"{where}: {error}"[:1024])
            if data is None:
                return ProviderError(f"{where}: credentials Secret {secret} not found")
            env = {k: v for k, v in data.items() if k in CREDENTIAL_KEYS}
        self.reads += 1
        try:
            text = await asyncio.to_thread(self.read, reference.uri, env, reference.digest)
        except FetchError as error:
            return ProviderError(f"{where}: {error.message}"[:1024])
        except Exception as error:  # a client library's own text may quote a signed request: name it only
            log.warning("%s: %s reading %s", where, type(error).__name__, display_uri(reference.uri))
            return ProviderError(f"{where}: {type(error).__name__} while reading it")
        try:
            return load_profile(text)
        except ProfileError as error:
            return ProviderError(f"{where}: {error}"[:1024])
