"""Helpers for images/build.sh that are easier to get right in Python than in shell.

    imagetool.py hash ROOT [--extra TEXT]... PATH...    hash of the build inputs under ROOT
    imagetool.py name-layout DIR NAME...                give the image in OCI layout DIR these names and
                                                        delete the blobs no name reaches any more
    imagetool.py refs ARCHIVE_OR_DIR                    print "NAME DIGEST" per name in an OCI archive

Standard library only: it runs under the host's python3, before any venv exists.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tarfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

# Names that never reach an image: caches and build leftovers (the same as .dockerignore's).
EXCLUDED_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _excluded(name: str) -> bool:
    return name in EXCLUDED_DIRS or name.endswith(EXCLUDED_SUFFIXES)


def input_files(root: Path, paths: Iterable[str]) -> list[str]:
    """The files under `root` named by `paths` (files or folders), as sorted POSIX paths relative
    to `root`, leaving out caches and build leftovers. A missing path is skipped: an optional input
    (such as a README) changes the hash by appearing, not by failing the build."""
    found: set[str] = set()
    for rel in paths:
        top = root / rel
        if top.is_file():
            found.add(top.relative_to(root).as_posix())
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not _excluded(d)]
            for name in filenames:
                if not _excluded(name):
                    found.add((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def input_hash(root: Path, files: Sequence[str], extra: Sequence[str] = ()) -> str:
    """SHA-256 over each file's path, executable bit and content, then the `extra` strings (for
    example the base image's ID). Independent of timestamps and of the order `files` come in."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        path = root / rel
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"file\0{rel}\0{mode}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for text in extra:
        digest.update(f"extra\0{text}\0".encode())
    return digest.hexdigest()


def named_index(index: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A copy of an OCI image index whose entries are all one image, once per name.

    The image is the entry already named `names[0]` (the one just pushed), or the only entry.
    Each new entry carries its name both as the OCI ref name and as containerd's image name, so
    that `ctr images import` creates exactly these names, e.g. `localhost/iris-server:1`."""
    if not names:
        raise ValueError("at least one image name is needed")
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ValueError("the OCI index has no manifests")
    chosen = [m for m in manifests if m.get("annotations", {}).get(REF_NAME) == names[0]]
    if not chosen and len({m.get("digest") for m in manifests}) == 1:
        chosen = manifests[:1]
    if not chosen:
        raise ValueError(f"the OCI index holds several images and none is named {names[0]}")
    result = copy.deepcopy(index)
    result["manifests"] = []
    for name in dict.fromkeys(names):
        entry = copy.deepcopy(chosen[-1])
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: name, CONTAINERD_NAME: name}
        result["manifests"].append(entry)
    return result


def referenced_blobs(index: dict[str, Any], read_blob: Callable[[str], dict[str, Any]]) -> set[str]:
    """Digests of every blob an OCI index reaches: manifests (and nested indexes), configs, layers.
    `read_blob(digest)` returns the parsed JSON of a manifest or index blob."""
    seen: set[str] = set()
    pending = [entry["digest"] for entry in index.get("manifests", [])]
    while pending:
        digest = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        blob = read_blob(digest)
        pending += [entry["digest"] for entry in blob.get("manifests", [])]
        if "config" in blob:
            seen.add(blob["config"]["digest"])
        seen.update(layer["digest"] for layer in blob.get("layers", []))
    return seen


def prune_layout(layout: Path) -> list[Path]:
    """Delete the blobs of an OCI layout folder that its index.json no longer reaches (images
    replaced by a newer push); returns the deleted files."""

    def blob_path(digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return layout / "blobs" / algorithm / hexdigest

    def read_blob(digest: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(blob_path(digest).read_bytes())
        return data

    index = json.loads((layout / "index.json").read_text())
    keep = {blob_path(digest) for digest in referenced_blobs(index, read_blob)}
    deleted = [path for path in sorted((layout / "blobs").glob("*/*")) if path not in keep]
    for path in deleted:
        path.unlink()
    return deleted


def index_refs(index: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, manifest digest) for every named entry of an OCI index, in index order."""
    refs = []
    for entry in index.get("manifests", []):
        notes = entry.get("annotations", {})
        name = notes.get(CONTAINERD_NAME) or notes.get(REF_NAME)
        if name:
            refs.append((name, entry["digest"]))
    return refs


def read_index(path: Path) -> dict[str, Any]:
    """index.json of an OCI layout folder or an OCI archive (tar)."""
    if path.is_dir():
        data: dict[str, Any] = json.loads((path / "index.json").read_text())
        return data
    with tarfile.open(path) as tar:
        for member in ("index.json", "./index.json"):
            try:
                handle = tar.extractfile(member)
            except KeyError:
                continue
            if handle is not None:
                loaded: dict[str, Any] = json.load(handle)
                return loaded
    raise ValueError(f"{path}: no index.json (not an OCI archive)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagetool.py", description="Helpers for images/build.sh.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_hash = sub.add_parser("hash", help="hash of the build inputs")
    p_hash.add_argument("root", type=Path)
    p_hash.add_argument("paths", nargs="+")
    p_hash.add_argument("--extra", action="append", default=[])
    p_name = sub.add_parser("name-layout", help="name the image of an OCI layout folder")
    p_name.add_argument("layout", type=Path)
    p_name.add_argument("names", nargs="+")
    p_refs = sub.add_parser("refs", help="names and digests in an OCI archive or layout")
    p_refs.add_argument("archive", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "hash":
            files = input_files(args.root, args.paths)
            if not files:
                raise ValueError(f"no input files under {args.root} for {' '.join(args.paths)}")
            print(input_hash(args.root, files, args.extra))
        elif args.command == "name-layout":
            index_file = args.layout / "index.json"
            index = named_index(json.loads(index_file.read_text()), args.names)
            index_file.write_text(json.dumps(index, indent=2) + "\n")
            prune_layout(args.layout)
        else:
            for name, digest in index_refs(read_index(args.archive)):
                print(name, digest)
    except (OSError, ValueError, tarfile.TarError) as exc:
        print(f"imagetool.py {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
