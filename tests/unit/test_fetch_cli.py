"""`modelfleet fetch` and `modelfleet digest` arguments, URIs and sizes: bad input is refused clearly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelfleet.cli import main as modelfleet
from modelfleet.fetch.errors import FetchError, Redactor
from modelfleet.fetch.main import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, build_parser, parse_size
from modelfleet.fetch.report import Reason
from modelfleet.fetch.uri import display_uri, parse_uri, uri_secrets


@pytest.mark.parametrize(
    ("uri", "location", "path", "prefix", "basename"),
    [
        ("s3://models/iris/4/model.joblib", "models", "iris/4/model.joblib", False, "model.joblib"),
        ("s3://models/iris/4/", "models", "iris/4/", True, "4"),
        ("s3://models/", "models", "", True, ""),
        ("pvc://shared-models/iris/4", "shared-models", "iris/4", False, "4"),
        ("pvc://shared-models", "shared-models", "", False, ""),
        (
            "https://example.test/m/model%20v2.onnx?x=1",
            "example.test",
            "m/model%20v2.onnx",
            False,
            "model v2.onnx",
        ),
    ],
)
def test_uris_name_a_location_and_a_path(
    uri: str, location: str, path: str, prefix: bool, basename: str
) -> None:
    parsed = parse_uri(uri)
    assert (parsed.location, parsed.path, parsed.is_prefix, parsed.basename) == (
        location,
        path,
        prefix,
        basename,
    )


@pytest.mark.parametrize(
    ("uri", "reason", "says"),
    [
        (
            "ftp://host/model.bin",
            Reason.UNSUPPORTED_SCHEME,
            "unsupported scheme 'ftp': expected s3://BUCKET/KEY",
        ),
        ("/models/iris.joblib", Reason.UNSUPPORTED_SCHEME, "unsupported scheme '/models/iris.joblib'"),
        ("models:/iris/4", Reason.UNSUPPORTED_SCHEME, "models:/ (the MLflow registry) is not fetched yet"),
        ("s3://models", Reason.INVALID_ARTIFACT, "names no object"),
        ("s3:///key", Reason.INVALID_ARTIFACT, "no bucket"),
        ("pvc:///x", Reason.INVALID_ARTIFACT, "no claim"),
        ("pvc://claim/../other/x", Reason.INVALID_ARTIFACT, "must stay inside the claim"),
        ("https://host/dir/", Reason.INVALID_ARTIFACT, "an http(s) artifact is a single file"),
        ("s3://key:secret@models/x", Reason.INVALID_ARTIFACT, "expected s3://"),
    ],
)
def test_bad_uris_are_refused_with_the_reason(uri: str, reason: Reason, says: str) -> None:
    with pytest.raises(FetchError) as caught:
        parse_uri(uri)
    assert caught.value.reason is reason
    assert says in caught.value.message
    assert "secret" not in caught.value.message


def test_a_uri_is_shown_without_its_password_or_query() -> None:
    uri = (
        "https://reader:hunter22@store.test/m/model.onnx?X-Amz-Signature=deadbeefcafe&X-Amz-Credential=AKIAX"
    )
    assert display_uri(uri) == "https://store.test/m/model.onnx"
    assert parse_uri(uri).display == "https://store.test/m/model.onnx"
    redact = Redactor(uri_secrets(uri))
    assert redact(f"GET {uri} failed") == "GET https://reader:***@store.test/m/model.onnx?*** failed"


def test_secrets_from_the_environment_are_masked_also_in_basic_auth_form() -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7",
        "MODELFLEET_HTTP_USERNAME": "reader",
        "MODELFLEET_HTTP_PASSWORD": "hunter22",
        "AWS_REGION": "eu-west-1",  # not a secret
    }
    redact = Redactor.from_env(env)
    text = "key AKIAIOSFODNN7 secret wJalrXUtnFEMI/K7MDENG auth Basic cmVhZGVyOmh1bnRlcjIy in eu-west-1"
    assert redact(text) == "key *** secret *** auth Basic *** in eu-west-1"


@pytest.mark.parametrize(
    ("text", "size"), [("1048576", 1 << 20), ("500M", 500_000_000), ("20Gi", 20 << 30), ("1.5MiB", 3 << 19)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_defaults_are_the_documented_ones() -> None:
    args = build_parser().parse_args(["--uri", "s3://b/k", "--dest", "/mnt/models"])
    assert (args.max_bytes, args.timeout) == (DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT) == (20 << 30, 1800.0)
    assert str(args.pvc_root) == "/mnt/pvc"
    assert (args.cache_dir, args.report, args.digest, args.check) == (None, None, None, False)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--dest", "d"], "the following arguments are required: --uri"),
        (["--uri", "s3://b/k"], "--dest is required (or --check"),
        (["--uri", "s3://b/k", "--dest", "d", "--digest", "sha256:abc"], "expected sha256:<64 lowercase hex"),
        (["--uri", "s3://b/k", "--dest", "d", "--max-bytes", "lots"], "invalid size 'lots'"),
        (["--uri", "s3://b/k", "--dest", "d", "--timeout", "soon"], "invalid duration 'soon'"),
        (["--uri", "s3://b/k", "--dest", "d", "--timeout", "0"], "must be positive"),
    ],
)
def test_argument_errors_exit_2_saying_what_is_wrong(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        modelfleet(["fetch", *argv])
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_digest_prints_the_digest_and_on_request_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.bin").write_bytes(b"m")
    line = f"{hashlib.sha256(b'm').hexdigest()}  model.bin\n"
    assert modelfleet(["digest", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"sha256:{hashlib.sha256(line.encode()).hexdigest()}\n"
    assert modelfleet(["digest", "--manifest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(line)
    assert out.endswith(f"sha256:{hashlib.sha256(line.encode()).hexdigest()}\n")
    assert modelfleet(["digest", str(tmp_path / "model.bin")]) == 0
    assert capsys.readouterr().out == f"sha256:{hashlib.sha256(b'm').hexdigest()}\n"


def test_digest_of_nothing_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        modelfleet(["digest", str(tmp_path / "missing")])
    assert exited.value.code == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert modelfleet(["digest", str(tmp_path)]) == 1
    assert "has no regular files" in capsys.readouterr().err
