"""The object store helper's pure parts: reading versitygw's access log (lines as versitygw v1.8.0
wrote them), the image name it shares with images/build.sh, and the pod it asks for."""

from __future__ import annotations

import re

from support.cluster import REPO
from support.objectstore import IMAGE, parse_access_log, store_manifests

# Lines from a real versitygw v1.8.0 run (`--access-log stdout`, user agents shortened), with its banner.
LOG = "\n".join(
    [
        'initializing internal IAM with "/iam"',
        "initializing S3 access logs with 'stdout' file",
        "log starts 2026-12-01 23:23:17.998929655 +0000 UTC m=+0.027432558",
        (
            "testkey models [01/December/2026:23:23:21 +0000] 127.0.0.1 testkey "
            "OC25B15LE4XKY8PL s3_GetObject iris/1/model.joblib /models/iris/1/model.joblib "
            "200 - 0 0 0 0 - Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux#6.18.44-fc-v1045 "
            "md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/Z,E,N - - SigV4 - "
            "AuthHeader s3.us-east-1.amazonaws.com - arn:aws:s3:::/models/iris/1/model.joblib "
            "Yes"
        ),
        (
            "- models [01/December/2026:23:23:21 +0000] 127.0.0.1 testkey GOF95RUZ6WYTQCV7 "
            "s3_GetObject iris/1/model.joblib /models/iris/1/model.joblib 403 "
            "SignatureDoesNotMatch 0 0 0 0 - Boto3/1.44.8 md/Botocore#1.44.8 - - SigV4 - "
            "AuthHeader - - arn:aws:s3:::/models/iris/1/model.joblib Yes"
        ),
        (
            "testkey models [01/December/2026:23:22:47 +0000] 127.0.0.1 testkey "
            "00ABAUBMRTT2TYMJ s3_HeadObject iris/1/model.joblib /models/iris/1/model.joblib "
            "200 - 0 0 0 0 - Boto3/1.44.8 - - SigV4 - AuthHeader - - "
            "arn:aws:s3:::/models/iris/1/model.joblib Yes"
        ),
        (
            "testkey models [01/December/2026:23:22:47 +0000] 127.0.0.1 testkey "
            "5Y2AZ8GEIB3ZWSCV s3_ListObjectsV2 - /models?list-type=2&encoding-type=url 200 - "
            "503 0 0 0 - Boto3/1.44.8 - - SigV4 - AuthHeader - - arn:aws:s3:::/models Yes"
        ),
    ]
)


def test_each_s3_request_of_the_access_log_is_one_record() -> None:
    records = parse_access_log(LOG)
    assert [(r.operation, r.key, r.status) for r in records] == [
        ("s3_GetObject", "iris/1/model.joblib", 200),
        ("s3_GetObject", "iris/1/model.joblib", 403),
        ("s3_HeadObject", "iris/1/model.joblib", 200),
        ("s3_ListObjectsV2", "-", 200),
    ]
    assert records[1].error == "SignatureDoesNotMatch"
    assert records[0].bucket == "models"
    assert records[0].requester == "testkey"


def test_the_store_image_is_the_one_images_build_makes() -> None:
    build = (REPO / "images" / "build.sh").read_text()
    names = re.search(r'^VERSITYGW_NAMES=\("([^"]+)"\)', build, re.M)
    versions = (REPO / "cluster" / "versions.env").read_text()
    version = re.search(r"^VERSITYGW_VERSION=(\S+)", versions, re.M)
    assert names
    assert version
    assert version[1] == "v1.8.0"
    assert names[1].replace("$VERSITYGW_VERSION", version[1]) == IMAGE == "localhost/versitygw:v1.8.0"


def test_the_store_pod_pulls_nothing_runs_unprivileged_and_counts_requests() -> None:
    secret, pod, service = store_manifests("ns", "store", "AK", "SK")
    assert secret["stringData"] == {"ROOT_ACCESS_KEY_ID": "AK", "ROOT_SECRET_ACCESS_KEY": "SK"}
    (container,) = pod["spec"]["containers"]
    assert container["imagePullPolicy"] == "Never"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--access-log=stdout" in container["args"]
    assert container["args"][-2:] == ["posix", "/buckets"]
    assert "SK" not in str(pod), "credentials reach the pod from the Secret, not its spec"
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
