"""One small file read into memory the way the fetcher reads an artifact: the same sources (s3://,
http(s)://, with credentials from the environment given and nowhere else), the same digest check, the
same errors, free of secrets. The operator reads a ModelVersion's reference profile this way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from modelfleet.fetch.digest import PREFIX, parse_digest
from modelfleet.fetch.errors import FetchError, Redactor
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import Timeouts, open_source
from modelfleet.fetch.transfer import human_bytes
from modelfleet.fetch.uri import parse_uri, uri_secrets

_NO_CLAIMS = Path("/nonexistent")


def read_file(
    uri: str,
    env: Mapping[str, str],
    *,
    digest: str | None,
    max_bytes: int,
    timeouts: Timeouts,
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> bytes:
    """The bytes of the single file `uri` names, checked against `digest` (sha256:...) when given, at most
    `max_bytes` of them, within `seconds` in all. FetchError otherwise, its message naming the URI (without
    user:password or query) and the cause, with every secret of `env` and `uri` masked."""
    redact = Redactor.from_env(env)
    for secret in uri_secrets(uri):
        redact.add(secret)
    try:
        return _read(uri, env, digest, max_bytes, timeouts, clock() + seconds, clock)
    except FetchError as error:
        raise FetchError(error.reason, redact(error.message)) from None


def _read(
    uri: str,
    env: Mapping[str, str],
    digest: str | None,
    max_bytes: int,
    timeouts: Timeouts,
    deadline: float,
    clock: Callable[[], float],
) -> bytes:
    parsed = parse_uri(uri)
    shown = parsed.display
    if parsed.scheme == "pvc":
        raise FetchError(
            Reason.UNSUPPORTED_SCHEME, f"{shown}: a pvc:// file is read only by a pod that mounts the claim"
        )
    if parsed.is_prefix:
        raise FetchError(Reason.INVALID_ARTIFACT, f"{shown}: names a directory, not one file")
    if digest is not None:
        try:
            parse_digest(digest)
        except ValueError as error:
            raise FetchError(Reason.INVALID_ARTIFACT, str(error)) from None
    try:
        source = open_source(parsed, env, _NO_CLAIMS, timeouts)
    except ValueError:  # the S3 client refuses an endpoint URL it cannot use
        raise FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: the store's endpoint is not a URL") from None
    hasher = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        (entry,) = source.listing().entries
        stream = source.open(entry)
        try:
            if stream.size is not None and stream.size > max_bytes:
                raise FetchError(
                    Reason.ARTIFACT_TOO_LARGE,
                    f"{shown}: {human_bytes(stream.size)} is over the limit of {human_bytes(max_bytes)}",
                )
            for chunk in stream.chunks():
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(
                        Reason.ARTIFACT_TOO_LARGE, f"{shown}: over the limit of {human_bytes(max_bytes)}"
                    )
                if clock() > deadline:
                    raise FetchError(Reason.FETCH_TIMEOUT, f"{shown}: not read in time")
                hasher.update(chunk)
                chunks.append(chunk)
        finally:
            stream.close()
    finally:
        source.close()
    if stream.size is not None and size != stream.size:
        raise FetchError(
            Reason.ARTIFACT_UNREACHABLE,
            f"{shown}: ended after {human_bytes(size)} of {human_bytes(stream.size)}",
        )
    got = PREFIX + hasher.hexdigest()
    if digest is not None and got != digest:
        raise FetchError(
            Reason.DIGEST_MISMATCH, f"{shown}: digest {got} does not match the expected {digest}"
        )
    return b"".join(chunks)
