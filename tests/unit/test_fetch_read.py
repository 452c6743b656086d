"""Reading one small file into memory as the fetcher reads artifacts, against a store on loopback that
answers as S3 does (path-style, AccessDenied for a key it does not know) and as a plain HTTP server:
the credentials given are used, the digest is checked, and no error says a secret."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.read import read_file
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import Timeouts

PROFILE = b'{"format": "modelfleet.profile/v1", "sampleSize": 1, "features": {}}\n'
DIGEST = "sha256:" + hashlib.sha256(PROFILE).hexdigest()
KEY_ID, SECRET = "AKIDTESTKEY01", "wJalrXUtnFEMI-very-secret"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}
TIMEOUTS = Timeouts(connect=1.0, read=2.0)


class Store(BaseHTTPRequestHandler):
    """s3://models/iris/4/profile.json for the key KEY_ID (AccessDenied for any other, as S3 answers);
    http://HOST/profile.json for anyone."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        path = self.path.split("?", 1)[0]
        if path == "/models/iris/4/profile.json":
            if f"Credential={KEY_ID}/" not in self.headers.get("Authorization", ""):
                body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                self.answer(403, body, "application/xml")
                return
            self.answer(200, PROFILE)
        elif path == "/profile.json":
            self.answer(200, PROFILE)
        elif path == "/large.json":
            self.answer(200, b" " * 5000)
        else:
            self.answer(404, b"not found")

    def answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def store() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Store)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Store.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def read(uri: str, env: dict[str, str], digest: str | None = DIGEST, max_bytes: int = 1 << 20) -> bytes:
    return read_file(uri, env, digest=digest, max_bytes=max_bytes, timeouts=TIMEOUTS, seconds=5.0)


def failure(uri: str, env: dict[str, str], **options: object) -> FetchError:
    with pytest.raises(FetchError) as caught:
        read(uri, env, **options)  # type: ignore[arg-type]
    return caught.value


def test_an_s3_object_is_read_with_the_credentials_given_and_its_digest_checked(store: str) -> None:
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": store}

    assert read("s3://models/iris/4/profile.json", env) == PROFILE
    assert any(f"Credential={KEY_ID}/" in sent for sent in Store.seen)


def test_a_digest_that_does_not_match_is_refused_naming_both(store: str) -> None:
    wrong = "sha256:" + "0" * 64
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": store}

    error = failure("s3://models/iris/4/profile.json", env, digest=wrong)

    assert error.reason is Reason.DIGEST_MISMATCH
    assert error.message == (
        f"s3://models/iris/4/profile.json: digest {DIGEST} does not match the expected {wrong}"
    )


def test_refused_credentials_are_said_without_the_credentials(store: str) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIDOTHERKEY9", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": store}

    error = failure("s3://models/iris/4/profile.json", env)

    assert error.reason is Reason.ARTIFACT_UNREACHABLE
    assert error.message == "s3://models/iris/4/profile.json: access denied (403)"
    assert "AKIDOTHERKEY9" not in error.message
    assert SECRET not in error.message


def test_a_file_over_the_limit_is_not_read_whole(store: str) -> None:
    error = failure(f"{store}/large.json", {}, digest=None, max_bytes=4096)

    assert error.reason is Reason.ARTIFACT_TOO_LARGE
    assert "is over the limit of 4 KiB" in error.message


def test_an_http_file_is_shown_without_its_query_and_a_missing_one_says_so(store: str) -> None:
    assert read(f"{store}/profile.json?X-Signature=s3cr3tsignature", {}) == PROFILE

    error = failure(f"{store}/gone.json?X-Signature=s3cr3tsignature", {})

    assert error.message == f"{store}/gone.json: not found (404)"


def test_a_store_that_cannot_be_reached_is_named() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error = failure(f"http://127.0.0.1:{port}/profile.json", {})

    assert error.reason is Reason.ARTIFACT_UNREACHABLE
    assert error.message == f"http://127.0.0.1:{port}/profile.json: cannot connect to 127.0.0.1"


@pytest.mark.parametrize(
    ("uri", "reason", "says"),
    [
        ("pvc://data/profile.json", Reason.UNSUPPORTED_SCHEME, "read only by a pod that mounts the claim"),
        ("s3://models/iris/4/", Reason.INVALID_ARTIFACT, "names a directory, not one file"),
        ("models:/iris/4", Reason.UNSUPPORTED_SCHEME, "models:/"),
    ],
)
def test_what_cannot_be_one_file_read_here_is_refused(uri: str, reason: Reason, says: str) -> None:
    error = failure(uri, {})

    assert error.reason is reason
    assert says in error.message
