"""`modelfleet fetch`: put a model artifact into a directory, verified; and `modelfleet digest`.

    modelfleet fetch --uri s3://models/iris/4/ --digest sha256:... --dest /mnt/models \
        --report /dev/termination-log
    modelfleet fetch --uri s3://models/iris/4/ --digest sha256:... --check   # verify only, keep nothing
    modelfleet digest ./iris-model/          # the digest to put in a ModelVersion's artifact.digest
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from modelfleet.api.common import format_duration, parse_duration
from modelfleet.clihelp import DefaultsHelpFormatter
from modelfleet.fetch.cache import CacheEntry, CacheEntryCorrupt, NodeCache
from modelfleet.fetch.digest import digest_path, parse_digest
from modelfleet.fetch.errors import FetchError, Redactor
from modelfleet.fetch.report import EXIT_CODES, USAGE_EXIT_CODE, Reason, Report, Result, render_report
from modelfleet.fetch.sources import Listing, Source, Timeouts, open_source
from modelfleet.fetch.transfer import Downloaded, Limits, Progress, download, human_bytes
from modelfleet.fetch.uri import ArtifactUri, parse_uri, uri_secrets

DEFAULT_MAX_BYTES = 20 * 1024**3
DEFAULT_TIMEOUT = 30 * 60.0
DEFAULT_PVC_ROOT = Path("/mnt/pvc")
STAGING_PREFIX = ".modelfleet-fetch-"
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)$")
_SIZE_UNITS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    _SIZE_UNITS |= {_letter: 1000**_power, f"{_letter}B": 1000**_power}
    _SIZE_UNITS |= {f"{_letter}i": 1024**_power, f"{_letter}iB": 1024**_power}
_SIZE_UNITS |= {"k": 1000, "kB": 1000}


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `500M`, `20Gi` or `20GiB` (Ki, Mi, Gi, Ti are powers of 1024)."""
    match = _SIZE_RE.match(text.strip())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r}: expected bytes, or a number and k, M, G, T, Ki, Mi, Gi, Ti")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_seconds(text: str) -> float:
    """Seconds from `600`, `2.5`, `30m` or `1h30m`."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


@dataclass(frozen=True)
class Options:
    uri: str
    dest: Path | None
    digest: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT
    cache_dir: Path | None = None
    cache_max_bytes: int | None = None
    pvc_root: Path = DEFAULT_PVC_ROOT
    check: bool = False
    replace: bool = False


class _Deadline(BaseException):
    """Raised by the alarm when the whole fetch is over --timeout (a BaseException, so that no client
    library's `except Exception` swallows it mid-read)."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # the transfer loop checks the deadline between chunks
        return

    def ring(signum: int, frame: FrameType | None) -> None:
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Fetcher:
    """One fetch: `run()` returns the report and leaves the destination with the artifact, or untouched."""

    def __init__(
        self,
        options: Options,
        env: Mapping[str, str],
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.env = env
        self.redact = Redactor.from_env(env)
        for secret in uri_secrets(options.uri):
            self.redact.add(secret)
        self._say = say
        self.clock = clock
        self.limits = Limits(options.max_bytes, options.timeout)
        self.progress = Progress(self.say, clock)
        self.shown = options.uri
        self.verify_seconds = 0.0

    def say(self, text: str) -> None:
        self._say(self.redact(text))

    def run(self) -> Report:
        started = self.clock()
        try:
            with _alarm(self.options.timeout):
                try:
                    report = self._run()
                except _Deadline:
                    raise FetchError(
                        Reason.FETCH_TIMEOUT, self.limits.timed_out(self.shown, self.progress).message
                    ) from None
        except FetchError as error:
            report = self._failed(error.reason, error.message, started)
        except _Deadline:  # rang between the inner handler and leaving the alarm
            report = self._failed(
                Reason.FETCH_TIMEOUT, self.limits.timed_out(self.shown, self.progress).message, started
            )
        except OSError as error:
            where = f" {error.filename}" if error.filename else ""
            report = self._failed(
                Reason.FETCH_FAILED, f"{self.shown}: cannot write{where}: {error.strerror}", started
            )
        report = Report(
            report.result,
            report.reason,
            self.redact(report.message),
            report.size,
            report.files,
            report.digest,
            report.download_seconds,
            report.verify_seconds,
        )
        self.say(report.message)
        return report

    def _failed(self, reason: Reason, message: str, started: float) -> Report:
        return Report(
            Result.FAILED,
            reason,
            message,
            self.progress.done,
            self.progress.files_done,
            "",
            self.clock() - started,
            self.verify_seconds,
        )

    def _run(self) -> Report:
        uri = parse_uri(self.options.uri)
        self.shown = uri.display
        expected = self._expected_digest()
        if self.options.check:
            return self._check(uri, expected)
        dest = self.options.dest
        assert dest is not None
        self._prepare(dest)
        staging = dest / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            report = self._fetch_into(uri, expected, staging)
            self._commit(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return report

    def _expected_digest(self) -> str | None:
        if self.options.digest is None:
            return None
        try:
            parse_digest(self.options.digest)
        except ValueError as error:
            raise FetchError(Reason.INVALID_ARTIFACT, str(error)) from None
        return self.options.digest

    def _prepare(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for leftover in dest.glob(f"{STAGING_PREFIX}*"):  # an earlier fetch that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        # A volume of its own (as /mnt/models in a pod, where a restarted pod finds what it fetched
        # before) is replaced; another directory only with --replace.
        if any(dest.iterdir()) and not (self.options.replace or os.path.ismount(dest)):
            raise FetchError(
                Reason.FETCH_FAILED,
                f"{dest} is not empty (--replace replaces what it holds); nothing was fetched",
            )

    def _commit(self, staging: Path, dest: Path) -> None:
        """Move the verified artifact into place (renames within the destination's filesystem, which
        is usually a volume of its own: a directory next to it would be on another filesystem)."""
        for old in dest.iterdir():
            if old != staging:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        for item in staging.iterdir():
            item.rename(dest / item.name)

    def _source(self, uri: ArtifactUri) -> Source:
        read = min(60.0, max(self.options.timeout, 1.0))
        return open_source(uri, self.env, self.options.pvc_root, Timeouts(connect=min(10.0, read), read=read))

    def _download(self, uri: ArtifactUri, expected: str | None, into: Path) -> Downloaded:
        source = self._source(uri)
        try:
            listing: Listing = source.listing()
            self._announce(listing)
            downloaded = download(source, listing, into, self.limits, self.progress)
        finally:
            source.close()
        checked = self.clock()
        if expected is not None and downloaded.digest != expected:
            raise FetchError(
                Reason.DIGEST_MISMATCH,
                f"{self.shown}: digest {downloaded.digest} does not match the expected {expected}; "
                "what was downloaded is deleted",
            )
        self.verify_seconds += self.clock() - checked
        return downloaded

    def _announce(self, listing: Listing) -> None:
        size = listing.known_size
        what = f"{len(listing.entries)} files" if listing.is_directory else "1 file"
        self.say(f"{self.shown}: {what}" + (f", {human_bytes(size)}" if size is not None else ""))

    def _fetch_into(self, uri: ArtifactUri, expected: str | None, staging: Path) -> Report:
        cache_dir = self.options.cache_dir
        if cache_dir is None or expected is None:
            if cache_dir is not None:
                self.say("no digest given: the node cache is not used")
            return self._done(Result.FETCHED, self._download(uri, expected, staging), expected)
        with ExitStack() as held_lock:
            try:
                entry = held_lock.enter_context(
                    NodeCache(cache_dir).locked(
                        expected, lambda: self.say(f"waiting for another fetch of {expected} on this node")
                    )
                )
                held = entry.complete()
                if held is not None:
                    hit = self._from_cache(entry, held, staging, expected)
                    if hit is not None:
                        self._used(cache_dir, entry)
                        return hit
                content = entry.reset()
            except OSError as error:  # a cache this fetch may not write is no reason to fail it
                self.say(f"node cache {cache_dir} is not usable ({error.strerror}): fetching without it")
                return self._done(Result.FETCHED, self._download(uri, expected, staging), expected)
            try:
                downloaded = self._download(uri, expected, content)
                entry.seal(downloaded)
            except BaseException:
                entry.discard()
                raise
            entry.materialize(downloaded, staging, Progress(lambda _: None, self.clock), verify=False)
            self._used(cache_dir, entry)
            return self._done(Result.FETCHED, downloaded, expected, "kept in the node cache")
        raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions

    def _used(self, cache_dir: Path, entry: CacheEntry) -> None:
        """The entry was just used: mark it so, then keep the cache within its limit (never failing the
        fetch over it: the artifact is in place)."""
        try:
            entry.touch()
            limit = self.options.cache_max_bytes
            if limit is None:
                return
            for gone in NodeCache(cache_dir).evict(limit, keep=entry.digest):
                self.say(
                    f"node cache over {human_bytes(limit)}: removed {gone.name} ({human_bytes(gone.size)})"
                )
        except OSError as error:
            self.say(f"node cache {cache_dir}: not kept within its limit ({error.strerror})")

    def _from_cache(self, entry: CacheEntry, held: Downloaded, staging: Path, expected: str) -> Report | None:
        """The artifact from a complete cache entry, verified; None (and the entry gone) when damaged."""
        started = self.clock()
        try:
            linked = entry.materialize(held, staging, self.progress, verify=True)
        except CacheEntryCorrupt as error:
            self.say(f"node cache entry {entry.dir.name} is damaged ({error}): downloading again")
            for item in staging.iterdir():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
            self.progress = Progress(self.say, self.clock, self.progress.every)
            return None
        self.verify_seconds = self.clock() - started
        how = "linked" if linked else "copied"
        return self._done(Result.CACHED, held, expected, f"node cache hit, {how}, nothing downloaded")

    def _check(self, uri: ArtifactUri, expected: str | None) -> Report:
        dest = self.options.dest
        made = dest is not None and not dest.exists()
        if dest is not None:
            dest.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="modelfleet-check-", dir=dest))
        try:
            downloaded = self._download(uri, expected, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if made and dest is not None:
                shutil.rmtree(dest, ignore_errors=True)
        return self._done(Result.VERIFIED, downloaded, expected, "nothing kept")

    def _done(self, result: Result, got: Downloaded, expected: str | None, note: str = "") -> Report:
        files = len(got.files)
        seconds = self.progress.elapsed()
        rate = (
            f" in {format_duration(seconds)} ({human_bytes(got.size / max(seconds, 1e-3))}/s)"
            if result is not Result.CACHED
            else ""
        )
        checked = "digest verified" if expected else f"no digest given, computed {got.digest}"
        plural = "s" if files != 1 else ""
        size = human_bytes(got.size)
        text = f"{self.shown}: {result.value.lower()} {files} file{plural}, {size}{rate}; {checked}"
        return Report(
            result,
            Reason.NONE,
            text + (f"; {note}" if note else ""),
            got.size,
            files,
            got.digest,
            0.0 if result is Result.CACHED else got.seconds,
            self.verify_seconds,
        )


# --- command line -------------------------------------------------------------------------------------


def _type(parse: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return convert


def _digest_arg(text: str) -> str:
    parse_digest(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelfleet fetch",
        formatter_class=DefaultsHelpFormatter,
        description="Download a model artifact into a directory and verify its sha256 digest. Credentials "
        "come from the environment only: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, "
        "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION (s3://); MODELFLEET_HTTP_AUTHORIZATION, or "
        "MODELFLEET_HTTP_USERNAME and MODELFLEET_HTTP_PASSWORD (http(s)://).",
        epilog="exit codes: "
        + ", ".join(f"{code} {reason.value or 'fetched'}" for reason, code in EXIT_CODES.items())
        + f", {USAGE_EXIT_CODE} bad arguments",
    )
    parser.add_argument(
        "--uri", required=True, help="s3://BUCKET/KEY, s3://BUCKET/PREFIX/, http(s)://..., pvc://CLAIM/PATH"
    )
    parser.add_argument(
        "--digest",
        type=_type(_digest_arg),
        help="sha256:<hex> the artifact must have (see `modelfleet digest`)",
    )
    parser.add_argument(
        "--dest", type=Path, help="directory that ends holding the artifact (required unless --check)"
    )
    parser.add_argument(
        "--replace", action="store_true", help="replace what --dest holds (otherwise it must be empty)"
    )
    parser.add_argument(
        "--max-bytes",
        type=_type(parse_size),
        default=DEFAULT_MAX_BYTES,
        help="size limit of the whole artifact, e.g. 500Mi, 20Gi",
    )
    parser.add_argument(
        "--timeout",
        type=_type(parse_seconds),
        default=DEFAULT_TIMEOUT,
        help="time limit of the whole fetch, seconds or e.g. 30m",
    )
    parser.add_argument("--cache-dir", type=Path, help="node cache directory (used only with --digest)")
    parser.add_argument(
        "--cache-max-bytes",
        type=_type(parse_size),
        help="size limit of the node cache, e.g. 50Gi: the least recently used entries go (default: none)",
    )
    parser.add_argument(
        "--pvc-root",
        type=Path,
        default=DEFAULT_PVC_ROOT,
        help="where pvc://CLAIM is mounted, as <root>/CLAIM",
    )
    parser.add_argument(
        "--report", type=Path, help="write the JSON report here (in a pod: /dev/termination-log)"
    )
    parser.add_argument(
        "--check", action="store_true", help="verify only: download into a scratch directory, report, delete"
    )
    parser.add_argument("--progress-every", type=_type(parse_seconds), default=5.0, help=argparse.SUPPRESS)
    return parser


def say_on_stderr(text: str) -> None:
    print(f"fetch: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.dest is None and not args.check:
        parser.error("--dest is required (or --check to verify without keeping anything)")
    if args.max_bytes <= 0 or not 0 < args.timeout < math.inf:
        parser.error("--max-bytes and --timeout must be positive")
    if args.cache_max_bytes is not None and (args.cache_max_bytes <= 0 or args.cache_dir is None):
        parser.error("--cache-max-bytes must be positive, and needs --cache-dir")
    options = Options(
        uri=args.uri,
        dest=args.dest,
        digest=args.digest,
        max_bytes=args.max_bytes,
        timeout=args.timeout,
        cache_dir=args.cache_dir,
        cache_max_bytes=args.cache_max_bytes,
        pvc_root=args.pvc_root,
        check=args.check,
        replace=args.replace,
    )
    # SIGTERM (the pod is deleted mid-fetch) unwinds like an error, so nothing half-written is left
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    fetcher = Fetcher(options, os.environ, say_on_stderr)
    fetcher.progress.every = args.progress_every
    report = fetcher.run()
    if args.report is not None:
        try:
            args.report.write_text(render_report(report))
        except OSError as error:
            say_on_stderr(f"cannot write the report to {args.report}: {error.strerror}")
    return report.exit_code


def digest_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="modelfleet digest",
        description="Print the sha256 digest of a model file or directory (for artifact.digest). "
        "A directory's digest is the sha256 of its manifest: one `<sha256>  <relative path>` line per "
        "regular file, sorted by path (sha256sum's format).",
    )
    parser.add_argument("path", type=Path, help="a file or a directory")
    parser.add_argument(
        "--manifest", action="store_true", help="print a directory's manifest before its digest"
    )
    args = parser.parse_args(list(argv))
    if not args.path.exists():
        parser.error(f"{args.path}: no such file or directory")
    try:
        found = digest_path(args.path)
    except ValueError as error:
        print(f"modelfleet digest: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"modelfleet digest: {args.path}: {error.strerror}", file=sys.stderr)
        return 1
    if args.manifest:
        sys.stdout.write(
            found.manifest if found.is_directory else f"{found.files[0].sha256}  {found.files[0].path}\n"
        )
    print(found.digest)
    return 0
