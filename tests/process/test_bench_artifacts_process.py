"""The artifact benchmark's store side, on loopback: a padded artifact uploaded to a real versitygw, the
host's baseline download and `modelfleet fetch` as the init container runs it, counted with the same
reading of the store's access log that the benchmark uses on the cluster."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from fetchkit import S3Store, run_fetch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `bench`

from bench.artifacts import (
    BUCKET,
    PADDING_FILE,
    Bench,
    downloads,
    fetch_report,
    host_download,
    make_artifact,
)

from modelfleet.fetch.report import Result
from modelfleet.runtime.mlserver import find_model
from support.cluster import Cluster
from support.objectstore import AccessRecord, ObjectStore, parse_access_log

MIB = 1024 * 1024
# rows 0, 50 and 100 of the iris data set: one flower of each species
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]


@dataclass
class LoopbackStore(ObjectStore):
    """The benchmark's view of the store, with the access log read from versitygw's file, not its pod."""

    log_path: Path = field(default=Path("/nonexistent"))

    def access_log(self) -> list[AccessRecord]:
        return parse_access_log(self.log_path.read_text() if self.log_path.exists() else "")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Store]:
    server = S3Store(tmp_path / "s3")
    yield server
    server.stop()


def pod_with_report(report: dict[str, Any]) -> dict[str, Any]:
    """A model pod whose `fetch` init container ended with this report as its termination message."""
    message = json.dumps(report)
    terminated = {"exitCode": 0, "message": message}
    return {"status": {"initContainerStatuses": [{"name": "fetch", "state": {"terminated": terminated}}]}}


def test_the_baseline_and_the_fetcher_each_read_the_big_file_once_and_the_model_still_loads(
    s3: S3Store, tmp_path: Path
) -> None:
    store = LoopbackStore(
        cast(Cluster, None), "loopback", "versitygw", s3.access_key, s3.secret_key, "127.0.0.1",
        port=s3.port, log_path=s3.access_log,
    )  # fmt: skip
    store.create_bucket(BUCKET)
    bench = Bench(cast(Cluster, None), store, 60)
    artifact = make_artifact("art-0-off", 12 * MIB, tmp_path / "made")
    keys = store.upload_directory(BUCKET, artifact.name, artifact.folder)
    assert keys == [f"art-0-off/{name}" for name in ("NOTES.txt", "model.joblib", PADDING_FILE)]
    assert bench.big_gets(artifact) == 0  # uploads are not GETs

    assert host_download(store, keys) > 0
    assert bench.gets() == dict.fromkeys(keys, 1)  # one get_object per object, though over 8 MB

    dest = tmp_path / "mnt-models"
    dest.mkdir()
    before = bench.big_gets(artifact)
    run = run_fetch(
        [
            "--uri",
            f"s3://{BUCKET}/{artifact.name}/",
            "--digest",
            artifact.digest,
            "--dest",
            str(dest),
            "--replace",
        ],
        s3.env(),
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    report = fetch_report(pod_with_report(run.report))
    assert report is not None
    assert (report.result, report.size, report.files, report.digest) == (
        Result.FETCHED,
        artifact.size,
        3,
        artifact.digest,
    )
    assert report.download_seconds > 0
    assert downloads(before, bench.big_gets(artifact)) == 1  # what the benchmark counts as one download

    import joblib

    served = find_model(dest, "sklearn")
    assert served.name == "model.joblib"  # the padding beside it does not get in the way
    assert joblib.load(served).predict(FLOWERS).tolist() == [0, 1, 2]
