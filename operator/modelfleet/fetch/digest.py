"""Artifact digests: sha256 of a file's bytes, or of a directory's manifest.

The manifest of a directory is one line per regular file, sorted by relative POSIX path (bytewise),
each `<sha256 hex of the file>  <relative path>\\n`: the output of `sha256sum` run on the sorted files.
Symbolic links and empty directories are not part of an artifact. The same digest comes out of
`modelfleet digest DIR` and of

    cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PREFIX = "sha256:"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1024 * 1024


def parse_digest(text: str) -> str:
    """The hex part of `sha256:<64 lowercase hex>`; ValueError naming the expected form otherwise."""
    if not DIGEST_RE.match(text):
        raise ValueError(f"invalid digest {text[:80]!r}: expected sha256:<64 lowercase hex digits>")
    return text[len(PREFIX) :]


@dataclass(frozen=True)
class FileDigest:
    path: str  # relative POSIX path inside the artifact
    sha256: str  # hex
    size: int


def check_relative_path(path: str) -> str:
    """`path` when it is a safe relative POSIX path inside an artifact; ValueError otherwise."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in {"", ".", ".."} for p in parts) or "\x00" in path:
        raise ValueError(f"unsafe path {path[:200]!r} in the artifact")
    if "\n" in path or "\r" in path:
        raise ValueError(f"path {path[:200]!r} has a line break, which a manifest cannot hold")
    return path


def _sort_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def manifest(files: Iterable[FileDigest]) -> str:
    """The manifest text of a directory artifact made of `files`."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: _sort_key(f.path)))


def manifest_digest(files: Iterable[FileDigest]) -> str:
    return PREFIX + hashlib.sha256(manifest(files).encode("utf-8", "surrogateescape")).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of one file's bytes."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def regular_files(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files under `root`, sorted bytewise (no symlinks followed)."""
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = Path(directory, name)
            if stat.S_ISREG(full.lstat().st_mode):
                found.append(check_relative_path(full.relative_to(root).as_posix()))
    return sorted(found, key=_sort_key)


@dataclass(frozen=True)
class PathDigest:
    digest: str  # sha256:<hex>
    files: tuple[FileDigest, ...]
    is_directory: bool

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def manifest(self) -> str:
        return manifest(self.files) if self.is_directory else ""


def digest_path(path: Path) -> PathDigest:
    """The digest of a file or a directory; ValueError for a directory with no file or an unsafe name."""
    if path.is_dir():
        files = tuple(FileDigest(rel, *file_digest(path / rel)) for rel in regular_files(path))
        if not files:
            raise ValueError(f"{path} has no regular files")
        return PathDigest(manifest_digest(files), files, is_directory=True)
    hexdigest, size = file_digest(path)
    return PathDigest(PREFIX + hexdigest, (FileDigest(path.name, hexdigest, size),), is_directory=False)
