"""`modelfleet fetch` as the init container runs it, against a real S3 server (versitygw) and a real
HTTP server on loopback: what lands in the destination, what the report and exit code say, limits, the
node cache counted on the store, and secrets that never show."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetchkit import FileServer, S3Store, run_fetch

from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import Entry, Timeouts
from modelfleet.fetch.sources.s3 import S3Source
from modelfleet.fetch.uri import parse_uri

MODEL = os.urandom(3 * 1024 * 1024 + 17)
ARTIFACT = {
    "iris/4/model.joblib": MODEL,
    "iris/4/MLmodel": b"flavors:\n  sklearn: {}\n",
    "iris/4/env/requirements.txt": b"scikit-learn\n",
    "iris/40/other.bin": b"not under iris/4/",
}
LEAKY = "LeakCheck-3f9a1c7e-secret"  # shows up in any output it leaks into


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_digest(files: dict[str, bytes]) -> str:
    text = "".join(f"{sha(data)}  {path}\n" for path, data in sorted(files.items()))
    return "sha256:" + sha(text.encode())


DIR_FILES = {
    "model.joblib": MODEL,
    "MLmodel": ARTIFACT["iris/4/MLmodel"],
    "env/requirements.txt": b"scikit-learn\n",
}
DIR_DIGEST = manifest_digest(DIR_FILES)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    server = S3Store(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bucket(store: S3Store) -> str:
    return store.bucket(ARTIFACT)


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- S3 -----------------------------------------------------------------------------------------------


def test_a_single_object_lands_as_its_base_name_verified(store: S3Store, bucket: str, tmp_path: Path) -> None:
    digest = "sha256:" + sha(MODEL)
    run = run_fetch(
        [
            "--uri",
            f"s3://{bucket}/iris/4/model.joblib",
            "--digest",
            digest,
            "--dest",
            str(tmp_path / "models"),
        ],
        store.env(),
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert files_under(tmp_path / "models") == {"model.joblib": MODEL}
    assert run.report["result"] == "Fetched"
    assert (run.report["reason"], run.report["size"], run.report["files"], run.report["digest"]) == (
        "",
        len(MODEL),
        1,
        digest,
    )
    assert run.report["downloadSeconds"] > 0
    assert "digest verified" in run.report["message"]


def test_a_prefix_lands_as_a_directory_keeping_relative_paths(
    store: S3Store, bucket: str, tmp_path: Path
) -> None:
    run = run_fetch(
        ["--uri", f"s3://{bucket}/iris/4/", "--digest", DIR_DIGEST, "--dest", str(tmp_path / "models")],
        store.env(),
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert files_under(tmp_path / "models") == DIR_FILES  # iris/40/ is not under the prefix iris/4/
    assert (run.report["files"], run.report["digest"]) == (3, DIR_DIGEST)
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".")] == []


def test_the_digest_is_what_modelfleet_digest_and_sha256sum_compute(tmp_path: Path) -> None:
    root = tmp_path / "model"
    for path, data in DIR_FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    ours = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli", "digest", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    coreutils = subprocess.run(
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
        shell=True,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ours.stdout == f"{DIR_DIGEST}\n"
    assert coreutils.stdout.split()[0] == DIR_DIGEST.removeprefix("sha256:")


def test_a_digest_mismatch_fails_and_leaves_nothing_in_dest(
    store: S3Store, bucket: str, tmp_path: Path
) -> None:
    wrong = "sha256:" + sha(b"some other model")
    dest = tmp_path / "models"
    run = run_fetch(
        ["--uri", f"s3://{bucket}/iris/4/", "--digest", wrong, "--dest", str(dest)], store.env(), tmp_path
    )
    assert run.returncode == 11
    assert run.report["reason"] == "DigestMismatch"
    assert run.report["message"] == (
        f"s3://{bucket}/iris/4/: digest {DIR_DIGEST} does not match the expected {wrong}; "
        "what was downloaded is deleted"
    )
    assert list(dest.iterdir()) == []


def test_wrong_keys_are_access_denied_and_no_secret_shows(
    store: S3Store, bucket: str, tmp_path: Path
) -> None:
    for env in (
        store.env(
            AWS_SECRET_ACCESS_KEY=LEAKY
        ),  # a known key with the wrong secret: 403 SignatureDoesNotMatch
        store.env(
            AWS_ACCESS_KEY_ID=LEAKY, AWS_SECRET_ACCESS_KEY=LEAKY + "-2"
        ),  # a key the store does not know
        store.env(AWS_SECRET_ACCESS_KEY=LEAKY, AWS_SESSION_TOKEN=LEAKY + "-token"),
    ):
        run = run_fetch(["--uri", f"s3://{bucket}/iris/4/", "--dest", str(tmp_path / "d")], env, tmp_path)
        assert run.returncode == 10, run.stderr
        assert run.report["reason"] == "ArtifactUnreachable"
        assert run.report["message"].startswith(f"s3://{bucket}/iris/4/: access denied (")
        assert LEAKY not in run.output
        assert store.secret_key not in run.output
        run = run_fetch(
            ["--uri", f"s3://{bucket}/iris/4/model.joblib", "--dest", str(tmp_path / "d")], env, tmp_path
        )
        assert "access denied (" in run.report["message"]
        assert LEAKY not in run.output


def test_the_s3_clients_own_error_texts_never_reach_a_message(store: S3Store, bucket: str) -> None:
    """The exception botocore raises may quote what it sent; the fetcher's message is its own words."""
    env = store.env(AWS_ACCESS_KEY_ID=LEAKY, AWS_SECRET_ACCESS_KEY=LEAKY + "-2")
    source = S3Source(parse_uri(f"s3://{bucket}/iris/4/model.joblib"), env, Timeouts())
    with pytest.raises(FetchError) as caught:
        source.open(Entry("model.joblib", None, "iris/4/model.joblib"))
    assert caught.value.reason is Reason.ARTIFACT_UNREACHABLE
    assert LEAKY not in caught.value.message
    assert LEAKY not in repr(caught.value.__cause__) + repr(caught.value.__context__)  # raised `from None`
    assert caught.value.__suppress_context__


def test_a_missing_object_bucket_or_store_is_unreachable(store: S3Store, bucket: str, tmp_path: Path) -> None:
    cases = {
        f"s3://{bucket}/iris/5/model.joblib": f"s3://{bucket}/iris/5/model.joblib: not found (404); "
        "a directory's URI ends with /",
        f"s3://{bucket}/iris/4": f"s3://{bucket}/iris/4: not found (404); a directory's URI ends with /",
        f"s3://{bucket}/iris/5/": f"s3://{bucket}/iris/5/: no objects under the prefix",
        "s3://no-such-bucket/iris/4/": "s3://no-such-bucket/iris/4/: no such bucket 'no-such-bucket' (404)",
    }
    for uri, message in cases.items():
        run = run_fetch(["--uri", uri, "--dest", str(tmp_path / "d")], store.env(), tmp_path)
        assert (run.returncode, run.report["reason"], run.report["message"]) == (
            10,
            "ArtifactUnreachable",
            message,
        )
    closed = f"http://127.0.0.1:{store.port + 1 if store.port < 65535 else 1}"
    run = run_fetch(
        ["--uri", f"s3://{bucket}/iris/4/", "--dest", str(tmp_path / "d")],
        store.env(AWS_ENDPOINT_URL=closed),
        tmp_path,
    )
    assert (run.returncode, run.report["message"]) == (10, f"s3://{bucket}/iris/4/: cannot reach {closed}")


def test_over_the_size_limit_nothing_is_downloaded(store: S3Store, tmp_path: Path) -> None:
    small = store.bucket(ARTIFACT)
    run = run_fetch(
        ["--uri", f"s3://{small}/iris/4/", "--dest", str(tmp_path / "d"), "--max-bytes", "1Mi"],
        store.env(),
        tmp_path,
    )
    assert (run.returncode, run.report["reason"]) == (12, "ArtifactTooLarge")
    assert run.report["message"] == (
        f"s3://{small}/iris/4/: 3 MiB in 3 files is over the limit of 1 MiB (--max-bytes); "
        "nothing was downloaded"
    )
    assert store.requests(small)["s3_GetObject"] == 0  # the listing said so: no object was read
    run = run_fetch(
        ["--uri", f"s3://{small}/iris/4/model.joblib", "--dest", str(tmp_path / "d"), "--max-bytes", "1Mi"],
        store.env(),
        tmp_path,
    )
    assert (run.returncode, run.report["reason"]) == (12, "ArtifactTooLarge")
    assert (
        "model.joblib (3 MiB) takes the artifact over the limit of 1 MiB (--max-bytes); 0 B done"
        in run.report["message"]
    )
    assert list((tmp_path / "d").iterdir()) == []


def test_check_verifies_and_keeps_nothing(store: S3Store, bucket: str, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = run_fetch(
        ["--uri", f"s3://{bucket}/iris/4/", "--digest", DIR_DIGEST, "--check"],
        store.env(TMPDIR=str(scratch)),
        tmp_path,
    )
    assert (run.returncode, run.report["result"], run.report["digest"]) == (0, "Verified", DIR_DIGEST)
    assert list(scratch.iterdir()) == []
    wrong = "sha256:" + "0" * 64
    run = run_fetch(
        ["--uri", f"s3://{bucket}/iris/4/", "--digest", wrong, "--check"],
        store.env(TMPDIR=str(scratch)),
        tmp_path,
    )
    assert (run.returncode, run.report["reason"]) == (11, "DigestMismatch")
    assert list(scratch.iterdir()) == []


def test_the_node_cache_downloads_once_per_node(tmp_path: Path) -> None:
    """Three pods at once, then a fourth with the store gone: the store serves each object once."""
    store = S3Store(tmp_path / "s3")
    try:
        bucket = store.bucket(ARTIFACT)
        cache = tmp_path / "cache"
        args = ["--uri", f"s3://{bucket}/iris/4/", "--digest", DIR_DIGEST, "--cache-dir", str(cache)]
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        pods = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelfleet.cli",
                    "fetch",
                    *args,
                    "--dest",
                    str(tmp_path / f"pod{i}"),
                    "--report",
                    str(tmp_path / f"pod{i}.json"),
                ],
                env={**base, **store.env()},
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        outputs = [pod.communicate(timeout=120)[1] for pod in pods]
        assert [pod.returncode for pod in pods] == [0, 0, 0], outputs
        results = sorted(json.loads((tmp_path / f"pod{i}.json").read_text())["result"] for i in range(3))
        assert results == ["Cached", "Cached", "Fetched"]
        assert store.requests(bucket)["s3_GetObject"] == 3  # one per file, for three pods
        for i in range(3):
            assert files_under(tmp_path / f"pod{i}") == DIR_FILES
        assert any("nothing downloaded" in out for out in outputs)
    finally:
        store.stop()
    run = run_fetch([*args, "--dest", str(tmp_path / "pod3")], store.env(), tmp_path)
    assert run.returncode == 0, run.stderr
    assert (run.report["result"], run.report["digest"]) == ("Cached", DIR_DIGEST)
    assert "node cache hit" in run.report["message"]
    assert files_under(tmp_path / "pod3") == DIR_FILES


# --- HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture
def http() -> Iterator[FileServer]:
    server = FileServer({"/models/iris.onnx": MODEL, "/models/small.bin": b"small"})
    yield server
    server.stop()


def test_an_http_file_with_a_bearer_token_from_the_environment(http: FileServer, tmp_path: Path) -> None:
    http.token = f"Bearer {LEAKY}"
    digest = "sha256:" + sha(MODEL)
    args = ["--uri", http.url("/models/iris.onnx"), "--digest", digest, "--dest", str(tmp_path / "d")]
    run = run_fetch(args, {"MODELFLEET_HTTP_AUTHORIZATION": f"Bearer {LEAKY}"}, tmp_path)
    assert run.returncode == 0, run.stderr
    assert files_under(tmp_path / "d") == {"iris.onnx": MODEL}
    run = run_fetch(
        [*args[:-1], str(tmp_path / "e")],
        {"MODELFLEET_HTTP_AUTHORIZATION": f"Bearer {LEAKY}-wrong"},
        tmp_path,
    )
    assert (run.returncode, run.report["message"]) == (
        10,
        f"{http.url('/models/iris.onnx')}: access denied (403)",
    )
    assert LEAKY not in run.output  # the server echoed the header in its body: never repeated


def test_basic_auth_and_a_presigned_query_never_show(http: FileServer, tmp_path: Path) -> None:
    http.token = "Basic " + base64.b64encode(f"reader:{LEAKY}".encode()).decode()
    env = {"MODELFLEET_HTTP_USERNAME": "reader", "MODELFLEET_HTTP_PASSWORD": LEAKY}
    run = run_fetch(["--uri", http.url("/models/small.bin"), "--dest", str(tmp_path / "d")], env, tmp_path)
    assert run.returncode == 0, run.stderr
    run = run_fetch(
        ["--uri", http.url(f"/models/missing.bin?X-Amz-Signature={LEAKY}"), "--dest", str(tmp_path / "e")],
        env,
        tmp_path,
    )
    assert (run.returncode, run.report["message"]) == (
        10,
        f"{http.url('/models/missing.bin')}: not found (404)",
    )
    assert LEAKY not in run.output


def test_a_slow_download_stops_at_the_timeout_with_progress_on_the_way(
    http: FileServer, tmp_path: Path
) -> None:
    run = run_fetch(
        [
            "--uri",
            http.url("/slow/models/iris.onnx"),
            "--dest",
            str(tmp_path / "d"),
            "--timeout",
            "2",
            "--progress-every",
            "0.5",
        ],
        {},
        tmp_path,
    )
    assert (run.returncode, run.report["reason"]) == (13, "FetchTimeout")
    assert run.report["message"].startswith(
        f"{http.url('/slow/models/iris.onnx')}: not fetched within 2s (--timeout); "
    )
    assert " of 3 MiB done, at iris.onnx" in run.report["message"]
    progress = [line for line in run.stderr.splitlines() if "/s, iris.onnx" in line]
    assert progress, run.stderr
    assert " / 3 MiB (" in progress[0]
    assert run.seconds < 10
    assert list((tmp_path / "d").iterdir()) == []


def test_a_stalled_download_stops_at_the_timeout_though_no_byte_comes(
    http: FileServer, tmp_path: Path
) -> None:
    run = run_fetch(
        ["--uri", http.url("/stall"), "--dest", str(tmp_path / "d"), "--timeout", "1.5"], {}, tmp_path
    )
    assert (run.returncode, run.report["reason"]) == (13, "FetchTimeout")
    assert run.report["message"] == (
        f"{http.url('/stall')}: not fetched within 1s500ms (--timeout); 1000 B of 10 MiB done, at stall"
    )
    assert run.seconds < 8
    assert list((tmp_path / "d").iterdir()) == []


def test_a_fetch_stopped_by_sigterm_leaves_nothing_in_dest(http: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    pod = subprocess.Popen(
        [sys.executable, "-m", "modelfleet.cli", "fetch", "--uri", http.url("/stall"), "--dest", str(dest)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while http.hits["/stall"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert any(dest.iterdir())  # the staging directory, mid-download
    pod.terminate()
    assert pod.wait(10) == 143
    assert list(dest.iterdir()) == []


def test_an_endless_response_stops_as_soon_as_it_passes_the_limit(http: FileServer, tmp_path: Path) -> None:
    run = run_fetch(
        ["--uri", http.url("/endless"), "--dest", str(tmp_path / "d"), "--max-bytes", "2Mi"], {}, tmp_path
    )
    assert (run.returncode, run.report["reason"]) == (12, "ArtifactTooLarge")
    assert (
        run.report["message"]
        == f"{http.url('/endless')}: over the limit of 2 MiB (--max-bytes); 2 MiB done, at endless"
    )
    assert run.report["size"] == 2 * 1024 * 1024
    assert list((tmp_path / "d").iterdir()) == []


def test_unknown_schemes_and_mlflow_uris_are_refused(tmp_path: Path) -> None:
    run = run_fetch(["--uri", "gs://bucket/model.bin", "--dest", str(tmp_path / "d")], {}, tmp_path)
    assert (run.returncode, run.report["reason"]) == (14, "UnsupportedScheme")
    run = run_fetch(["--uri", "models:/iris/4", "--dest", str(tmp_path / "d")], {}, tmp_path)
    assert (run.returncode, run.report["reason"]) == (14, "UnsupportedScheme")
    assert "MLflow" in run.report["message"]
