"""Fetching in-process from a pvc:// directory and from a source in memory: limits, progress,
verification, what the destination holds afterwards, and the node cache."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelfleet.fetch.digest import digest_path
from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.main import Fetcher, Options
from modelfleet.fetch.report import Reason, Report, Result
from modelfleet.fetch.sources import Entry, Listing
from modelfleet.fetch.transfer import Downloaded, Limits, Progress, download, human_bytes
from modelfleet.fetch.uri import ArtifactUri, parse_uri

MiB = 1 << 20


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class MemoryStream:
    data: bytes
    size: int | None
    clock: Clock
    step: float
    chunk: int = 64 * 1024

    def chunks(self) -> Iterator[bytes]:
        for at in range(0, len(self.data), self.chunk):
            self.clock.now += self.step
            yield self.data[at : at + self.chunk]

    def close(self) -> None:
        pass


@dataclass
class MemorySource:
    """Files in memory; each chunk takes `step` seconds of the fake clock. `tell_size`: whether the
    listing and the response say how big a file is (a chunked HTTP response does not)."""

    files: dict[str, bytes]
    clock: Clock
    step: float = 0.0
    tell_size: bool = True
    directory: bool = True
    opened: list[str] = field(default_factory=list)
    uri: ArtifactUri = field(default_factory=lambda: parse_uri("s3://models/iris/4/"))

    def listing(self) -> Listing:
        size = len if self.tell_size else (lambda _: None)
        return Listing(tuple(Entry(p, size(d), p) for p, d in self.files.items()), self.directory)

    def open(self, entry: Entry) -> MemoryStream:
        self.opened.append(entry.path)
        data = self.files[entry.ref]
        return MemoryStream(data, len(data) if self.tell_size else None, self.clock, self.step)

    def close(self) -> None:
        pass


def run_download(
    source: MemorySource, into: Path, max_bytes: int = 100 * MiB, timeout: float = 60.0
) -> Downloaded:
    progress = Progress(lambda _: None, source.clock)
    return download(source, source.listing(), into, Limits(max_bytes, timeout), progress)


def test_a_directory_is_written_with_its_relative_paths_and_hashed_on_the_way(tmp_path: Path) -> None:
    files = {"model.bin": os.urandom(300_000), "conf/settings.json": b"{}"}
    got = run_download(MemorySource(files, Clock()), tmp_path)
    assert (tmp_path / "model.bin").read_bytes() == files["model.bin"]
    assert (tmp_path / "conf" / "settings.json").read_bytes() == b"{}"
    assert got.digest == digest_path(tmp_path).digest
    assert got.size == 300_002


def test_an_artifact_listed_over_the_limit_is_refused_before_any_download(tmp_path: Path) -> None:
    source = MemorySource({"a": b"x" * MiB, "b": b"y" * MiB}, Clock())
    with pytest.raises(FetchError) as caught:
        run_download(source, tmp_path, max_bytes=MiB + 10)
    assert caught.value.reason is Reason.ARTIFACT_TOO_LARGE
    assert str(caught.value) == (
        "s3://models/iris/4/: 2 MiB in 2 files is over the limit of 1 MiB (--max-bytes); "
        "nothing was downloaded"
    )
    assert source.opened == []


def test_a_stream_of_unknown_size_stops_as_soon_as_it_passes_the_limit(tmp_path: Path) -> None:
    source = MemorySource({"a": b"x" * (700 * 1024), "b": b"y" * (10 * MiB)}, Clock(), tell_size=False)
    with pytest.raises(FetchError) as caught:
        run_download(source, tmp_path, max_bytes=MiB)
    assert caught.value.reason is Reason.ARTIFACT_TOO_LARGE
    # the limit counts the whole directory: 700 KiB of a, then b stops before the chunk that passes 1 MiB
    assert str(caught.value) == (
        "s3://models/iris/4/: over the limit of 1 MiB (--max-bytes); 1020 KiB done, at b"
    )
    assert (tmp_path / "b").stat().st_size == 320 * 1024


def test_a_slow_transfer_stops_at_the_timeout_saying_how_far_it_got(tmp_path: Path) -> None:
    source = MemorySource({"model.bin": b"x" * (2 * MiB)}, Clock(), step=1.0)  # 64 KiB a second
    with pytest.raises(FetchError) as caught:
        run_download(source, tmp_path, timeout=10.0)
    assert caught.value.reason is Reason.FETCH_TIMEOUT
    assert str(caught.value) == (
        "s3://models/iris/4/: not fetched within 10s (--timeout); 640 KiB of 2 MiB done, at model.bin"
    )


def test_progress_says_bytes_total_rate_and_file_at_most_every_few_seconds() -> None:
    clock, lines = Clock(), []
    progress = Progress(lines.append, clock, every=5.0, total=100 * MiB)
    progress.current = "iris/model.bin"
    for _ in range(20):  # 1 MiB per second for 20 seconds
        clock.now += 1.0
        progress.advance(MiB)
    assert lines == [
        "5 MiB / 100 MiB (5%) at 1 MiB/s, iris/model.bin",
        "10 MiB / 100 MiB (10%) at 1 MiB/s, iris/model.bin",
        "15 MiB / 100 MiB (15%) at 1 MiB/s, iris/model.bin",
        "20 MiB / 100 MiB (20%) at 1 MiB/s, iris/model.bin",
    ]


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (20 << 30, "20 GiB"), (3 << 40, "3 TiB")],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


# --- whole fetches from a claim, in-process ---------------------------------------------------------


@pytest.fixture
def claim(tmp_path: Path) -> Path:
    """A pvc root with claim `models` holding iris/4/ (two files) and iris/single.joblib."""
    root = tmp_path / "pvc"
    (root / "models" / "iris" / "4" / "sub").mkdir(parents=True)
    (root / "models" / "iris" / "4" / "model.joblib").write_bytes(b"weights" * 1000)
    (root / "models" / "iris" / "4" / "sub" / "settings.json").write_bytes(b'{"name": "iris"}')
    (root / "models" / "iris" / "single.joblib").write_bytes(b"one file")
    return root


def fetch(claim: Path, uri: str, dest: Path | None, **options: Any) -> tuple[Report, list[str]]:
    lines: list[str] = []
    fetcher = Fetcher(Options(uri=uri, dest=dest, pvc_root=claim, **options), {}, lines.append)
    return fetcher.run(), lines


def test_a_directory_lands_under_dest_and_a_file_as_its_base_name(claim: Path, tmp_path: Path) -> None:
    expected = digest_path(claim / "models" / "iris" / "4").digest
    report, lines = fetch(claim, "pvc://models/iris/4", tmp_path / "d1", digest=expected)
    assert (report.result, report.reason, report.files, report.digest) == (
        Result.FETCHED,
        Reason.NONE,
        2,
        expected,
    )
    assert sorted(p.relative_to(tmp_path / "d1").as_posix() for p in (tmp_path / "d1").rglob("*")) == [
        "model.joblib",
        "sub",
        "sub/settings.json",
    ]
    assert lines[-1].startswith("pvc://models/iris/4: fetched 2 files, 6.9 KiB in ")
    report, _ = fetch(claim, "pvc://models/iris/single.joblib", tmp_path / "d2")
    assert [p.name for p in (tmp_path / "d2").iterdir()] == ["single.joblib"]
    assert report.digest == "sha256:" + hashlib.sha256(b"one file").hexdigest()


def test_a_digest_mismatch_leaves_nothing_in_dest(claim: Path, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    report, _ = fetch(claim, "pvc://models/iris/4", tmp_path / "dest", digest=wrong)
    assert (report.result, report.reason, report.exit_code) == (Result.FAILED, Reason.DIGEST_MISMATCH, 11)
    assert f"does not match the expected {wrong}" in report.message
    assert list((tmp_path / "dest").iterdir()) == []


def test_a_dest_that_holds_something_is_replaced_only_when_asked(claim: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old.bin").write_bytes(b"old")
    report, _ = fetch(claim, "pvc://models/iris/single.joblib", dest)
    assert (report.reason, report.message) == (
        Reason.FETCH_FAILED,
        f"{dest} is not empty (--replace replaces what it holds); nothing was fetched",
    )
    assert [p.name for p in dest.iterdir()] == ["old.bin"]
    report, _ = fetch(claim, "pvc://models/iris/single.joblib", dest, replace=True)
    assert report.ok
    assert [p.name for p in dest.iterdir()] == ["single.joblib"]


def test_check_verifies_and_keeps_nothing(claim: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    expected = digest_path(claim / "models" / "iris" / "4").digest
    report, _ = fetch(claim, "pvc://models/iris/4", scratch, digest=expected, check=True)
    assert (report.result, report.exit_code, report.size) == (Result.VERIFIED, 0, 7016)
    assert list(scratch.iterdir()) == []
    report, _ = fetch(claim, "pvc://models/iris/4", scratch, digest="sha256:" + "1" * 64, check=True)
    assert report.reason is Reason.DIGEST_MISMATCH
    assert list(scratch.iterdir()) == []


def test_pvc_paths_missing_or_leading_out_of_the_claim_are_refused(claim: Path, tmp_path: Path) -> None:
    os.symlink("/etc", claim / "models" / "escape")
    cases = {
        "pvc://models/iris/5": (Reason.ARTIFACT_UNREACHABLE, "pvc://models/iris/5: not found"),
        "pvc://other/x": (Reason.ARTIFACT_UNREACHABLE, "claim 'other' is not mounted at"),
        "pvc://models/escape": (Reason.INVALID_ARTIFACT, "the path leads out of the claim"),
    }
    for uri, (reason, says) in cases.items():
        report, _ = fetch(claim, uri, tmp_path / "dest")
        assert report.reason is reason, uri
        assert says in report.message


def test_the_node_cache_serves_the_second_fetch_and_heals_a_damaged_entry(
    claim: Path, tmp_path: Path
) -> None:
    source = claim / "models" / "iris" / "4"
    expected = digest_path(source).digest
    cache = tmp_path / "cache"
    first, _ = fetch(claim, "pvc://models/iris/4", tmp_path / "d1", digest=expected, cache_dir=cache)
    assert first.result is Result.FETCHED
    entry = cache / f"sha256-{expected.removeprefix('sha256:')}"
    assert (entry / "complete").exists()
    (source / "model.joblib").write_bytes(b"changed at the source")  # a hit must not read the source
    second, lines = fetch(claim, "pvc://models/iris/4", tmp_path / "d2", digest=expected, cache_dir=cache)
    assert (second.result, second.digest, second.download_seconds) == (Result.CACHED, expected, 0.0)
    assert "node cache hit, linked, nothing downloaded" in lines[-1]
    assert (tmp_path / "d2" / "model.joblib").read_bytes() == b"weights" * 1000
    # a damaged entry is found out by its digest, thrown away and fetched again (here: from a source
    # that changed meanwhile, so the fetch fails on the digest and leaves no entry behind)
    os.chmod(entry / "content" / "sub" / "settings.json", 0o644)
    (entry / "content" / "sub" / "settings.json").write_bytes(b"tampered")
    third, lines = fetch(claim, "pvc://models/iris/4", tmp_path / "d3", digest=expected, cache_dir=cache)
    assert any(
        "is damaged (sub/settings.json no longer matches its digest): downloading again" in line
        for line in lines
    )
    assert third.reason is Reason.DIGEST_MISMATCH
    assert not entry.exists()
    assert list((tmp_path / "d3").iterdir()) == []


def test_without_a_digest_the_node_cache_is_not_used(claim: Path, tmp_path: Path) -> None:
    report, lines = fetch(claim, "pvc://models/iris/4", tmp_path / "d", cache_dir=tmp_path / "cache")
    assert report.result is Result.FETCHED
    assert "no digest given: the node cache is not used" in lines
    assert not (tmp_path / "cache").exists()


def test_a_restarted_pod_replaces_what_its_own_volume_holds(
    claim: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/mnt/models is an emptyDir mount: a pod whose init container runs again finds the last fetch."""
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "model.joblib").write_bytes(b"what the first run fetched")
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == dest)
    report, _ = fetch(claim, "pvc://models/iris/single.joblib", dest)
    assert report.ok, report.message
    assert [p.name for p in dest.iterdir()] == ["single.joblib"]


def test_check_makes_its_scratch_directory_and_removes_it(claim: Path, tmp_path: Path) -> None:
    """The check pod passes `--dest /tmp/artifact --check`: a directory that does not exist yet."""
    dest = tmp_path / "tmp" / "artifact"
    report, _ = fetch(claim, "pvc://models/iris/4", dest, check=True)
    assert (report.result, report.files) == (Result.VERIFIED, 2)
    assert not dest.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_node_cache_that_cannot_be_written_is_skipped_not_fatal(claim: Path, tmp_path: Path) -> None:
    expected = digest_path(claim / "models" / "iris" / "4").digest
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_bytes(b"")
    report, lines = fetch(
        claim, "pvc://models/iris/4", tmp_path / "d", digest=expected, cache_dir=not_a_directory
    )
    assert (report.result, report.digest) == (Result.FETCHED, expected)
    assert any(line.startswith(f"node cache {not_a_directory} is not usable (") for line in lines), lines
    assert len(list((tmp_path / "d").iterdir())) == 2


def test_a_node_cache_over_its_limit_drops_the_least_recently_used_entries(
    claim: Path, tmp_path: Path
) -> None:
    """Three artifacts of 7,016, 8 and 7,000 bytes with a 7,100-byte limit: each fetch keeps what it just
    used and removes the least recently used others; a pod's copy stays whole when its entry goes."""
    root = claim / "models"
    (root / "third").mkdir()
    (root / "third" / "w.bin").write_bytes(b"x" * 7000)
    uris = {
        "dir": "pvc://models/iris/4",
        "single": "pvc://models/iris/single.joblib",
        "third": "pvc://models/third",
    }
    digests = {
        "dir": digest_path(root / "iris" / "4").digest,
        "single": digest_path(root / "iris" / "single.joblib").digest,
        "third": digest_path(root / "third").digest,
    }
    cache = tmp_path / "cache"

    def entries() -> set[str]:
        return {p.parent.name for p in cache.glob("sha256-*/complete")}

    def name(key: str) -> str:
        return "sha256-" + digests[key].removeprefix("sha256:")

    def get(key: str, dest: str) -> list[str]:
        report, lines = fetch(
            claim, uris[key], tmp_path / dest, digest=digests[key], cache_dir=cache, cache_max_bytes=7100
        )
        assert report.ok, report.message
        return lines

    get("dir", "a")
    get("single", "b")  # 7,024 bytes in all: within the limit
    assert entries() == {name("dir"), name("single")}
    os.utime(cache / name("dir") / "complete", (1000, 1000))  # "dir" was used long ago
    os.utime(cache / name("single") / "complete", (2000, 2000))
    lines = get("third", "c")  # 14,024 bytes: "dir" goes first, and that is enough
    assert entries() == {name("single"), name("third")}
    assert any(f"removed {name('dir')} (6.9 KiB)" in line for line in lines)
    assert (tmp_path / "a" / "model.joblib").read_bytes() == b"weights" * 1000  # the pod's files stay
    # a cache hit counts as a use: "single" is now the most recent, so "third" is the one to go
    os.utime(cache / name("third") / "complete", (3000, 3000))
    get("single", "d")
    assert entries() == {name("single"), name("third")}  # 7,008 bytes: within the limit, nothing goes
    get("dir", "e")
    assert entries() == {name("dir"), name("single")}


def test_an_entry_another_fetch_holds_is_not_evicted(claim: Path, tmp_path: Path) -> None:
    import fcntl

    from modelfleet.fetch.cache import NodeCache

    expected = digest_path(claim / "models" / "iris" / "4").digest
    cache = tmp_path / "cache"
    fetch(claim, "pvc://models/iris/4", tmp_path / "a", digest=expected, cache_dir=cache)
    single = digest_path(claim / "models" / "iris" / "single.joblib").digest
    fetch(claim, "pvc://models/iris/single.joblib", tmp_path / "b", digest=single, cache_dir=cache)
    name = "sha256-" + expected.removeprefix("sha256:")
    with (cache / f"{name}.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert NodeCache(cache).evict(0, keep=single) == []  # the only candidate is in use
    (gone,) = NodeCache(cache).evict(0, keep=single)
    assert (gone.name, gone.size) == (name, 7016)
    assert NodeCache(cache).evict(0, keep=single) == []  # what is kept is never removed
