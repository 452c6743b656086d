"""The node cache: artifacts kept on the node (a hostPath) by digest, so that a second pod on the node
with the same digest downloads nothing.

    <cache>/sha256-<hex>.lock       flock(2): one fetch of a digest at a time on the node
    <cache>/sha256-<hex>/content/   the artifact, laid out as in a destination
    <cache>/sha256-<hex>/complete   written last (JSON: digest, files): an entry without it is unfinished

Pods on one node share the cache safely: the fetch that finds no complete entry downloads under the
lock while the others wait, then finds it complete. Entries are hard-linked into the destination
(copied when the destination is on another filesystem) and verified against the digest as they are
read; an entry that no longer matches is deleted and downloaded again.

Each use of an entry touches its marker, so the marker's mtime is when it was last used. With a size
limit (`--cache-max-bytes`), a fetch that put an entry in the cache, or took one from it, then removes
the least recently used complete entries until the cache fits, never the one it just used and never one
another fetch holds (each is removed under its lock, taken without waiting). Removing an entry does not
disturb a pod that has it: the pod's files are hard links (or copies) of their own. By hand: `flock
<cache>/sha256-<hex>.lock rm -rf <cache>/sha256-<hex>`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelfleet.fetch.digest import CHUNK, FileDigest, check_relative_path, parse_digest
from modelfleet.fetch.transfer import Downloaded, Progress

MARKER = "complete"


class CacheEntryCorrupt(Exception):
    """A complete entry whose content no longer matches its digest."""


class CacheEntry:
    def __init__(self, root: Path, digest: str) -> None:
        self.digest = digest
        self.dir = root / f"sha256-{parse_digest(digest)}"
        self.content = self.dir / "content"
        self.marker = self.dir / MARKER

    def complete(self) -> Downloaded | None:
        """What the entry holds, when it is complete."""
        try:
            data = json.loads(self.marker.read_text())
            files = tuple(FileDigest(check_relative_path(p), h, int(s)) for p, h, s in data["files"])
            found = Downloaded(files, bool(data["directory"]), 0.0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return found if found.digest == self.digest else None

    def reset(self) -> Path:
        """An empty content directory to download into (whatever an unfinished fetch left is removed)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.content.mkdir(parents=True)
        return self.content

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def touch(self) -> None:
        """Mark the entry as used now (the marker's mtime orders the eviction)."""
        os.utime(self.marker)

    def seal(self, downloaded: Downloaded) -> None:
        """Mark the entry complete: its files read-only, then the marker, written last and atomically."""
        for f in downloaded.files:
            (self.content / f.path).chmod(0o444)
        data = {
            "digest": downloaded.digest,
            "directory": downloaded.is_directory,
            "files": [[f.path, f.sha256, f.size] for f in downloaded.files],
        }
        partial = self.dir / f".{MARKER}.{os.getpid()}"
        with partial.open("w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        partial.rename(self.marker)

    def materialize(self, held: Downloaded, into: Path, progress: Progress, verify: bool) -> bool:
        """Link (or copy) the entry's files under `into`, hashing them when `verify`. True when linked.
        CacheEntryCorrupt when a file is missing or its bytes no longer match."""
        linked = True
        progress.total = held.size
        for f in held.files:
            progress.current = f.path
            source, target = self.content / f.path, into / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if linked:
                    try:
                        os.link(source, target)
                    except OSError as error:
                        if error.errno not in {errno.EXDEV, errno.EPERM, errno.EMLINK}:
                            raise
                        linked = False
                if not linked:
                    _copy(source, target, f, progress)
                elif verify:
                    _check(source, f, progress)
            except FileNotFoundError:
                raise CacheEntryCorrupt(f"{f.path} is missing") from None
        return linked


def _check(path: Path, expected: FileDigest, progress: Progress) -> None:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            progress.advance(len(chunk))
    if hasher.hexdigest() != expected.sha256:
        raise CacheEntryCorrupt(f"{expected.path} no longer matches its digest")


def _copy(source: Path, target: Path, expected: FileDigest, progress: Progress) -> None:
    hasher = hashlib.sha256()
    with source.open("rb") as src, target.open("xb") as out:
        while chunk := src.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            progress.advance(len(chunk))
    if hasher.hexdigest() != expected.sha256:
        raise CacheEntryCorrupt(f"{expected.path} no longer matches its digest")


@dataclass(frozen=True)
class Evicted:
    name: str
    size: int


class NodeCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def entries(self) -> list[tuple[float, int, CacheEntry]]:
        """(last use, size in bytes, entry) of the complete entries, least recently used first."""
        found = []
        for marker in self.root.glob(f"sha256-*/{MARKER}"):
            try:
                entry = CacheEntry(self.root, "sha256:" + marker.parent.name.removeprefix("sha256-"))
                held = entry.complete()
                used = marker.stat().st_mtime
            except (OSError, ValueError):  # removed meanwhile, or a name that is no digest
                continue
            if held is not None:
                found.append((used, held.size, entry))
        return sorted(found, key=lambda item: (item[0], item[2].dir.name))

    def evict(self, max_bytes: int, keep: str) -> list[Evicted]:
        """Remove least recently used entries until the complete ones add up to `max_bytes` at most; never
        the entry of `keep`, nor one another fetch holds the lock of. What was removed, in order."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed: list[Evicted] = []
        for _, size, entry in entries:
            if total <= max_bytes:
                break
            if entry.digest == keep:
                continue
            with (self.root / f"{entry.dir.name}.lock").open("a") as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use: another fetch on this node reads or writes it
                try:
                    entry.discard()
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            total -= size
            removed.append(Evicted(entry.dir.name, size))
        return removed

    @contextmanager
    def locked(self, digest: str, waiting: Callable[[], None] | None = None) -> Iterator[CacheEntry]:
        """The entry for `digest`, held exclusively on this node (across pods) until the block ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = CacheEntry(self.root, digest)
        with (self.root / f"{entry.dir.name}.lock").open("a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield entry
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
