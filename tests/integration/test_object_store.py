"""The object store the artifact tests, the demo and the benchmarks use: versitygw running as a pod in
the cluster, spoken to with boto3. Real objects go in and come out, from the host and from a pod (through
the Service's DNS name), wrong credentials are refused, and the store counts the GETs of an object."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from support.cluster import Cluster
from support.objectstore import ObjectStore, start_object_store

# An image with Python that every test run builds (images/build.sh app), to download from inside a pod.
CLIENT_IMAGE = "localhost/modelfleet:dev"


@pytest.fixture(scope="module")
def store_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.new_namespace(prefix="mf-store")
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def store(cluster: Cluster, store_namespace: str) -> ObjectStore:
    return start_object_store(cluster, store_namespace)


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    name = f"b-{uuid.uuid4().hex[:10]}"
    store.create_bucket(name)
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_objects_put_from_the_host_come_back_whole_and_are_listed(
    store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(os.urandom(3 * 1024 * 1024))
    artifact = tmp_path / "mlflow-model"
    (artifact / "data").mkdir(parents=True)
    (artifact / "MLmodel").write_text("flavors: {}\n")
    (artifact / "data" / "model.pkl").write_bytes(os.urandom(2048))

    store.upload_file(bucket, "iris/1/model.joblib", model)
    keys = store.upload_directory(bucket, "iris/2/", artifact)

    assert keys == ["iris/2/MLmodel", "iris/2/data/model.pkl"]
    client = store.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="iris/")
    assert sorted(o["Key"] for o in listed["Contents"]) == ["iris/1/model.joblib", *keys]
    assert {o["Key"]: o["Size"] for o in listed["Contents"]}["iris/1/model.joblib"] == 3 * 1024 * 1024
    body = client.get_object(Bucket=bucket, Key="iris/1/model.joblib")["Body"].read()
    assert sha256(body) == sha256(model.read_bytes())
    downloaded = tmp_path / "back.pkl"
    client.download_file(bucket, "iris/2/data/model.pkl", str(downloaded))
    assert downloaded.read_bytes() == (artifact / "data" / "model.pkl").read_bytes()
    with pytest.raises(ClientError) as missing:
        client.get_object(Bucket=bucket, Key="iris/3/model.joblib")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(
    store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))  # over boto3's 8 MB multipart threshold
    store.upload_file(bucket, "big.bin", big)
    back = tmp_path / "back.bin"
    store.client().download_file(bucket, "big.bin", str(back))
    assert sha256(back.read_bytes()) == sha256(big.read_bytes())


@pytest.mark.parametrize("wrong", ["secret", "access-key"])
def test_wrong_credentials_are_refused_with_403(store: ObjectStore, bucket: str, wrong: str) -> None:
    store.upload_bytes(bucket, "private.txt", b"only for the owner")
    if wrong == "secret":
        client, code = store.client(secret_key="not-the-secret"), "SignatureDoesNotMatch"
    else:
        client, code = store.client(access_key="AKNOBODY", secret_key="whatever"), "InvalidAccessKeyId"
    for call in (
        lambda: client.get_object(Bucket=bucket, Key="private.txt"),
        lambda: client.put_object(Bucket=bucket, Key="private.txt", Body=b"overwritten"),
        lambda: client.list_objects_v2(Bucket=bucket),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert refused.value.response["Error"]["Code"] == code
    assert store.client().get_object(Bucket=bucket, Key="private.txt")["Body"].read() == b"only for the owner"


def test_the_store_counts_the_gets_of_an_object(store: ObjectStore, bucket: str) -> None:
    store.upload_bytes(bucket, "counted/model.joblib", b"m" * 4096)
    store.upload_bytes(bucket, "counted/other.joblib", b"o")
    assert store.get_requests(bucket, "counted/model.joblib") == 0

    client = store.client()
    for _ in range(3):
        client.get_object(Bucket=bucket, Key="counted/model.joblib")["Body"].read()
    client.get_object(Bucket=bucket, Key="counted/other.joblib")["Body"].read()
    client.head_object(Bucket=bucket, Key="counted/model.joblib")
    with pytest.raises(ClientError):
        store.client(secret_key="wrong").get_object(Bucket=bucket, Key="counted/model.joblib")

    assert store.get_requests(bucket, "counted/model.joblib") == 3
    assert store.get_requests(bucket, "counted/model.joblib", successful=False) == 4
    assert store.get_requests(bucket, "counted/other.joblib") == 1


def test_a_pod_downloads_through_the_service_name_with_the_secret_the_helper_makes(
    cluster: Cluster, store: ObjectStore, bucket: str, store_namespace: str
) -> None:
    data = os.urandom(100_000)
    store.upload_bytes(bucket, "in-cluster/model.bin", data)
    secret = store.make_secret(store_namespace, "s3-creds")
    stored = cluster.get("secret", secret, store_namespace)["data"]
    env = {k: base64.b64decode(v).decode() for k, v in stored.items()}
    assert env == {
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
        "AWS_ENDPOINT_URL": f"http://objectstore.{store_namespace}.svc.cluster.local:7070",
        "AWS_REGION": "us-east-1",
    }
    # A URL signed (SigV4) for the in-cluster endpoint; the pod fetches it with the standard library.
    url = store.client(endpoint_url=env["AWS_ENDPOINT_URL"]).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "in-cluster/model.bin"}, ExpiresIn=300
    )
    script = (
        "import hashlib, sys, urllib.request; "
        "print(hashlib.sha256(urllib.request.urlopen(sys.argv[1], timeout=30).read()).hexdigest())"
    )
    before = store.get_requests(bucket, "in-cluster/model.bin")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "s3-client", "namespace": store_namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": CLIENT_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script, url],
                }
            ],
        },
    }
    cluster.apply(pod)

    def finished() -> str | None:
        phase: str | None = cluster.get("pod", "s3-client", store_namespace)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = cluster.wait_for("the client pod to finish", finished, timeout=120)
    logs = cluster.kubectl("logs", "s3-client", "-n", store_namespace).stdout
    assert phase == "Succeeded", logs
    assert logs.strip().splitlines()[-1] == sha256(data)
    assert store.get_requests(bucket, "in-cluster/model.bin") == before + 1
