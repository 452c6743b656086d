"""pvc://CLAIM/PATH: a file or a directory on a PersistentVolumeClaim the pod mounts at <root>/CLAIM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from modelfleet.fetch.digest import regular_files
from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import CHUNK, Entry, Listing
from modelfleet.fetch.uri import ArtifactUri


class _FileStream:
    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self.size: int | None = size

    def chunks(self) -> Iterator[bytes]:
        while chunk := self._file.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self._file.close()


class PvcSource:
    def __init__(self, uri: ArtifactUri, root: Path) -> None:
        self.uri = uri
        self.claim_root = root / uri.location
        self.target = self.claim_root / uri.path

    def listing(self) -> Listing:
        shown = self.uri.display
        if not self.claim_root.is_dir():
            raise FetchError(
                Reason.ARTIFACT_UNREACHABLE,
                f"{shown}: claim {self.uri.location!r} is not mounted at {self.claim_root}",
            )
        try:
            resolved = self.target.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            raise FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: not found (no {self.target})") from None
        if not resolved.is_relative_to(self.claim_root.resolve()):
            raise FetchError(Reason.INVALID_ARTIFACT, f"{shown}: the path leads out of the claim")
        try:
            if resolved.is_dir():
                paths = regular_files(resolved)
                if not paths:
                    raise FetchError(Reason.INVALID_ARTIFACT, f"{shown}: the directory has no files")
                entries = tuple(Entry(p, (resolved / p).stat().st_size, str(resolved / p)) for p in paths)
                return Listing(entries, is_directory=True)
            if not resolved.is_file():
                raise FetchError(Reason.INVALID_ARTIFACT, f"{shown}: neither a file nor a directory")
            return Listing(
                (Entry(resolved.name, resolved.stat().st_size, str(resolved)),), is_directory=False
            )
        except ValueError as error:
            raise FetchError(Reason.INVALID_ARTIFACT, f"{shown}: {error}") from None
        except PermissionError:
            raise FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: permission denied") from None

    def open(self, entry: Entry) -> _FileStream:
        try:
            file = Path(entry.ref).open("rb")  # noqa: SIM115 (closed by the stream)
        except OSError as error:
            raise FetchError(
                Reason.ARTIFACT_UNREACHABLE, f"{self.uri.display}: cannot read {entry.path}: {error.strerror}"
            ) from None
        return _FileStream(file, Path(entry.ref).stat().st_size)

    def close(self) -> None:
        pass
