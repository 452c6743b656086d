"""Downloading an artifact into a directory: streamed, hashed on the way, bounded in bytes and time,
with a progress line on stderr every few seconds."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelfleet.api.common import format_duration
from modelfleet.fetch.digest import PREFIX, FileDigest, manifest_digest
from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import Entry, Listing, Source

Clock = Callable[[], float]


def human_bytes(count: float) -> str:
    """`1.5 MiB`, `20 GiB`, `512 B`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            break
        count /= 1024
    text = f"{count:.0f}" if unit == "B" else f"{count:.1f}".removesuffix(".0")
    return f"{text} {unit}"


@dataclass
class Progress:
    """How far a fetch got; prints a line at most every `every` seconds."""

    say: Callable[[str], None]
    clock: Clock = time.monotonic
    every: float = 5.0
    total: int | None = None
    done: int = 0
    files_done: int = 0
    current: str = ""
    started: float = field(default=0.0)
    _last: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self._last = self.clock()

    def advance(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.say(self.line(now))

    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else self.clock()) - self.started, 1e-9)
        done = human_bytes(self.done)
        if self.total:
            done += f" / {human_bytes(self.total)} ({100 * self.done / self.total:.0f}%)"
        return f"{done} at {human_bytes(self.done / elapsed)}/s, {self.current}"

    def so_far(self) -> str:
        """For error messages: `1.2 GiB of 4 GiB done, at iris/model.bin`."""
        text = human_bytes(self.done) + (f" of {human_bytes(self.total)}" if self.total else "") + " done"
        return text + (f", at {self.current}" if self.current else "")


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    timeout: float  # seconds for the whole fetch

    @property
    def size_limit(self) -> str:
        return f"the limit of {human_bytes(self.max_bytes)} (--max-bytes)"

    def timed_out(self, shown: str, progress: Progress) -> FetchError:
        return FetchError(
            Reason.FETCH_TIMEOUT,
            f"{shown}: not fetched within {format_duration(self.timeout)} (--timeout); {progress.so_far()}",
        )


@dataclass(frozen=True)
class Downloaded:
    files: tuple[FileDigest, ...]
    is_directory: bool
    seconds: float

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        if self.is_directory:
            return manifest_digest(self.files)
        return PREFIX + self.files[0].sha256


def download(source: Source, listing: Listing, into: Path, limits: Limits, progress: Progress) -> Downloaded:
    """Write every entry of `listing` under `into`, hashing as it streams; FetchError past a limit."""
    shown = source.uri.display
    total = listing.known_size
    if total is not None and total > limits.max_bytes:
        count = len(listing.entries)
        raise FetchError(
            Reason.ARTIFACT_TOO_LARGE,
            f"{shown}: {human_bytes(total)} in {count} file{'s' if count != 1 else ''} is over "
            f"{limits.size_limit}; nothing was downloaded",
        )
    progress.total = total
    deadline = progress.started + limits.timeout
    files: list[FileDigest] = []
    for entry in listing.entries:
        files.append(_download_entry(source, entry, into, limits, progress, deadline, listing.is_directory))
        progress.files_done += 1
    return Downloaded(tuple(files), listing.is_directory, progress.elapsed())


def _download_entry(
    source: Source,
    entry: Entry,
    into: Path,
    limits: Limits,
    progress: Progress,
    deadline: float,
    in_directory: bool,
) -> FileDigest:
    shown = source.uri.display
    progress.current = entry.path
    stream = source.open(entry)
    try:
        if stream.size is not None and progress.done + stream.size > limits.max_bytes:
            raise FetchError(
                Reason.ARTIFACT_TOO_LARGE,
                f"{shown}: {entry.path} ({human_bytes(stream.size)}) takes the artifact over "
                f"{limits.size_limit}; {progress.so_far()}",
            )
        if progress.total is None and stream.size is not None and not in_directory:
            progress.total = stream.size
        target = into / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        written = 0
        with target.open("xb") as out:
            for chunk in stream.chunks():
                if progress.done + len(chunk) > limits.max_bytes:
                    raise FetchError(
                        Reason.ARTIFACT_TOO_LARGE, f"{shown}: over {limits.size_limit}; {progress.so_far()}"
                    )
                if progress.clock() > deadline:
                    raise limits.timed_out(shown, progress)
                hasher.update(chunk)
                out.write(chunk)
                written += len(chunk)
                progress.advance(len(chunk))
    finally:
        stream.close()
    expected = stream.size if stream.size is not None else entry.size
    if expected is not None and written != expected:
        raise FetchError(
            Reason.ARTIFACT_UNREACHABLE,
            f"{shown}: {entry.path} ended after {human_bytes(written)} of {human_bytes(expected)}",
        )
    return FileDigest(entry.path, hasher.hexdigest(), written)
