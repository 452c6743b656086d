"""`modelfleet router` command line: sizes, durations, the config source, clear usage errors."""

from __future__ import annotations

import argparse

import pytest

from modelfleet.router.main import build_parser, configmap_ref, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("8MiB", 8 << 20), ("512KiB", 512 << 10), ("1MB", 1_000_000), ("2gib", 2 << 30)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5MiB", "-1", "8 parsecs"])
def test_bad_sizes_say_what_is_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size(text)


def test_configmap_reference() -> None:
    assert configmap_ref("ml/iris-router") == ("ml", "iris-router")
    for bad in ("iris-router", "/x", "ml/", "a/b/c"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAMESPACE/NAME"):
            configmap_ref(bad)


def test_defaults_match_the_documented_ones() -> None:
    args = build_parser().parse_args(["--config", "router.json"])
    assert (args.port, args.admin_port, args.host) == (8080, 9090, "0.0.0.0")
    assert args.max_body_size == 8 << 20
    assert args.header_timeout == 10.0
    assert args.config_poll == 0.2
    assert args.prediction_samples == 1000
    assert args.admin_token_file is None  # the admin port asks no one unless given a token file
    assert (args.input_samples, args.input_reads) == (1000, 20.0)
    assert args.capture_flush_timeout == 3.0  # well inside the pod's grace period, after the drain


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --config --configmap is required"),
        (["--config", "a", "--configmap", "ml/x"], "not allowed with argument"),
        (["--config", "a", "--header-timeout", "soon"], "invalid duration 'soon'"),
        (["--config", "a", "--max-concurrency", "0"], "must be at least 1"),
        (["--configmap", "iris"], "expected NAMESPACE/NAME"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
