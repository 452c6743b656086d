"""Where artifacts come from: one small module per scheme, each a `Source`.

A source lists what an artifact is made of (one file, or the files of a directory with their paths
relative to it) and opens each entry as a stream of byte chunks. It raises only `FetchError`, with a
message that names the URI (never a credential) and what the other side said.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelfleet.fetch.uri import ArtifactUri

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    path: str  # relative POSIX path in the destination (a single file: its base name)
    size: int | None  # bytes, when the listing says
    ref: str  # what the source opens: an object key, a file path, a URL


@dataclass(frozen=True)
class Listing:
    entries: tuple[Entry, ...]
    is_directory: bool

    @property
    def known_size(self) -> int | None:
        sizes = [e.size for e in self.entries]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


class Stream(Protocol):
    """One entry's bytes: `size` once the other side has answered (None when it does not say)."""

    size: int | None

    def chunks(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Source(Protocol):
    uri: ArtifactUri

    def listing(self) -> Listing: ...

    def open(self, entry: Entry) -> Stream: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 60.0  # one read on a socket; the whole fetch has its own limit


def open_source(uri: ArtifactUri, env: Mapping[str, str], pvc_root: Path, timeouts: Timeouts) -> Source:
    """The source for `uri`, with credentials taken from `env` only."""
    if uri.scheme == "s3":
        from modelfleet.fetch.sources.s3 import S3Source

        return S3Source(uri, env, timeouts)
    if uri.scheme in {"http", "https"}:
        from modelfleet.fetch.sources.http import HttpSource

        return HttpSource(uri, env, timeouts)
    from modelfleet.fetch.sources.pvc import PvcSource

    return PvcSource(uri, pvc_root)
