"""Artifact digests: a file's sha256, a directory's sorted manifest, and the form a digest must have."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelfleet.fetch.digest import (
    FileDigest,
    check_relative_path,
    digest_path,
    manifest,
    manifest_digest,
    parse_digest,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_digest_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"weights")
    found = digest_path(tmp_path / "model.joblib")
    assert found.digest == "sha256:" + sha(b"weights")
    assert not found.is_directory
    assert found.size == 7


def test_a_directory_digest_is_the_sha256_of_its_manifest_sorted_bytewise(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes(b"b")
    (tmp_path / "Z.txt").write_bytes(b"Z")  # "Z" (0x5a) sorts before "a" (0x61), whatever the locale
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"x")
    (tmp_path / "a-b").write_bytes(b"-")  # "a-b" sorts before "a/x.bin": "-" is 0x2d, "/" 0x2f
    (tmp_path / "empty").mkdir()  # empty directories are not part of an artifact
    expected = f"{sha(b'Z')}  Z.txt\n{sha(b'-')}  a-b\n{sha(b'x')}  a/x.bin\n{sha(b'b')}  b.txt\n"
    found = digest_path(tmp_path)
    assert found.is_directory
    assert found.manifest == expected
    assert found.digest == "sha256:" + sha(expected.encode())
    assert found.size == 4


def test_symlinks_are_not_part_of_a_directory_artifact(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"m")
    before = digest_path(tmp_path).digest
    os.symlink("model.bin", tmp_path / "alias.bin")
    assert digest_path(tmp_path).digest == before


def test_the_manifest_does_not_depend_on_the_order_files_come_in() -> None:
    files = [FileDigest("b", sha(b"1"), 1), FileDigest("a/c", sha(b"2"), 1), FileDigest("a", sha(b"3"), 1)]
    assert manifest(files) == manifest(list(reversed(files)))
    assert manifest(files).splitlines()[0].endswith("  a")
    assert manifest_digest(files) == "sha256:" + sha(manifest(files).encode())


def test_a_directory_with_no_file_has_no_digest(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="has no regular files"):
        digest_path(tmp_path)


def test_a_file_name_with_a_line_break_cannot_be_in_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "two\nlines").write_bytes(b"x")
    with pytest.raises(ValueError, match="line break"):
        digest_path(tmp_path)


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../up", "a/../../b", "a//b", "./a", "a/.", "nul\x00"])
def test_unsafe_relative_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="unsafe path"):
        check_relative_path(path)


def test_a_digest_is_sha256_and_64_lowercase_hex_digits() -> None:
    good = "sha256:" + "ab" * 32
    assert parse_digest(good) == "ab" * 32
    for bad in ("ab" * 32, "sha256:" + "AB" * 32, "sha256:" + "ab" * 31, "md5:" + "ab" * 16, "sha256:xyz"):
        with pytest.raises(ValueError, match=r"expected sha256:<64 lowercase hex digits>"):
            parse_digest(bad)
