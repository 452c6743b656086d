"""The operator's MLflow client against a real tracking server (`mlflow server` 3.17.2 on loopback, SQLite,
basic auth): a scikit-learn model logged and registered with MLflow's own client, then every call the
sync makes, its errors, 500+ versions page by page, and real webhook deliveries verified as the operator
verifies them. The last test stops the server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.request import Request, urlopen

import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow is in the dev extras: make venv")

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
from mlflowkit import ADMIN, MlflowServer, WebhookReceiver, free_port, mlflow_delivery_headers  # noqa: E402

from modelfleet.providers.mlflow import (  # noqa: E402
    BadResponse,
    Credentials,
    MlflowClient,
    MlflowError,
    NotFound,
    Unauthorized,
    Unreachable,
)
from modelfleet.registry.webhooks import Refusal  # noqa: E402
from support.mlflow import WEBHOOK_EVENTS  # noqa: E402

T = TypeVar("T")
SECRET = "webhook-secret-7f3e"
EVENTS = WEBHOOK_EVENTS  # what the operator's receiver acts on


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    print(f"mlflow server ready after {started.ready_after:.1f} s")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def as_admin(server: MlflowServer) -> Iterator[Any]:
    """MLflow's own client, as the admin."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.client_env().items():
            patch.setenv(name, value)
        mlflow.set_tracking_uri(server.url)
        yield mlflow.MlflowClient()


@dataclass(frozen=True)
class Iris:
    run_id: str
    model_id: str
    signature: dict[str, Any]


@pytest.fixture(scope="module")
def iris(as_admin: Any) -> Iris:
    """Version 1 of `iris`: a LogisticRegression logged by a run with params, a metric, its git commit and
    its training data; alias champion; tag modelfleet.io/approved."""
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    features = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 4)
    labels = np.array([0, 2, 1] * 4)
    model = LogisticRegression(max_iter=200).fit(features, labels)
    signature = infer_signature(features, model.predict(features))
    mlflow.set_experiment("iris")
    with mlflow.start_run() as run:
        mlflow.log_params({"C": 1.0, "max_iter": 200})
        mlflow.log_metric("accuracy", 0.97)
        mlflow.set_tags(
            {
                "mlflow.source.git.commit": "0a1b2c3d4e5f",
                "mlflow.source.git.repoURL": "https://git.example/ml/iris.git",
            }
        )
        data = mlflow.data.from_numpy(
            features, targets=labels, name="iris-train", source="s3://data/iris.csv"
        )
        mlflow.log_input(data, context="training")
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            pip_requirements=["scikit-learn"],  # no requirement inference: a few seconds less
            registered_model_name="iris",
        )
    as_admin.set_registered_model_alias("iris", "champion", "1")
    as_admin.set_model_version_tag("iris", "1", "modelfleet.io/approved", "true")
    return Iris(run_id=run.info.run_id, model_id=logged.model_id, signature=signature.to_dict())


def admin(server: MlflowServer, **options: Any) -> MlflowClient:
    return MlflowClient(server.url, Credentials(username=ADMIN, password=server.admin_password), **options)


def using(client: MlflowClient, call: Callable[[MlflowClient], Awaitable[T]]) -> T:
    async def scenario() -> T:
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(scenario())


def failure(client: MlflowClient, call: Callable[[MlflowClient], Awaitable[object]]) -> MlflowError:
    async def attempt(c: MlflowClient) -> MlflowError:
        try:
            await call(c)
        except MlflowError as error:
            return error
        raise AssertionError("no error")

    return using(client, attempt)


def raw(server: MlflowServer, path: str) -> str:
    """An answer as MLflow sends it, read as the admin."""
    token = base64.b64encode(f"{ADMIN}:{server.admin_password}".encode()).decode()
    request = Request(f"{server.url}{path}", headers={"Authorization": f"Basic {token}"})
    with urlopen(request, timeout=10) as response:
        return str(response.read().decode())


# --- reading the registry -----------------------------------------------------------------------------


def test_a_snapshot_is_the_model_its_aliases_and_its_versions_in_two_requests(
    server: MlflowServer, iris: Iris
) -> None:
    client = admin(server)

    snapshot = using(client, lambda c: c.snapshot("iris"))

    assert snapshot.model.name == "iris"
    assert snapshot.model.aliases == {"champion": 1}
    [version] = snapshot.versions
    assert (version.version, version.aliases, version.ready) == (1, ("champion",), True)
    assert version.run_id == iris.run_id
    assert version.source == f"models:/{iris.model_id}"
    assert version.model_id == iris.model_id
    assert version.tags == {"modelfleet.io/approved": "true"}
    assert client.requests == {"registered-models/get": 1, "model-versions/search": 1}


def test_a_version_and_where_its_files_are(server: MlflowServer, iris: Iris, as_admin: Any) -> None:
    async def read(c: MlflowClient) -> tuple[Any, str]:
        return await c.get_version("iris", 1), await c.get_download_uri("iris", 1)

    version, uri = using(admin(server), read)

    assert version.aliases == ("champion",)
    assert uri == as_admin.get_model_version_download_uri("iris", "1")
    assert uri == f"mlflow-artifacts:/1/models/{iris.model_id}/artifacts"  # proxied by the server


def test_the_run_gives_params_metrics_commit_and_datasets(server: MlflowServer, iris: Iris) -> None:
    run = using(admin(server), lambda c: c.get_run(iris.run_id))

    assert run.params == {"C": "1.0", "max_iter": "200"}
    assert run.metrics == {"accuracy": 0.97}
    assert run.git_commit == "0a1b2c3d4e5f"
    assert run.git_repository == "https://git.example/ml/iris.git"
    assert run.status == "FINISHED"
    [dataset] = run.datasets
    assert (dataset.name, dataset.source_type, dataset.source, dataset.context) == (
        "iris-train",
        "s3",
        "s3://data/iris.csv",
        "training",
    )
    assert dataset.digest


def test_the_signature_is_only_in_the_mlmodel_file_which_the_server_reads_for_us(
    server: MlflowServer, iris: Iris
) -> None:
    for path in (
        "/api/2.0/mlflow/registered-models/get?name=iris",
        "/api/2.0/mlflow/model-versions/get?name=iris&version=1",
        f"/api/2.0/mlflow/runs/get?run_id={iris.run_id}",
        f"/api/2.0/mlflow/logged-models/{iris.model_id}",
    ):
        assert "signature" not in raw(server, path), path

    mlmodel = using(admin(server), lambda c: c.get_mlmodel("iris", 1))

    assert mlmodel.signature is not None
    assert mlmodel.signature.inputs == iris.signature["inputs"]
    assert mlmodel.signature.outputs == iris.signature["outputs"]
    assert {"python_function", "sklearn"} <= set(mlmodel.flavors)
    assert (mlmodel.model_id, mlmodel.run_id, mlmodel.mlflow_version) == (
        iris.model_id,
        iris.run_id,
        "3.17.2",
    )


def test_a_version_whose_files_the_server_cannot_read_has_no_mlmodel(
    server: MlflowServer, iris: Iris, as_admin: Any
) -> None:
    # registered from a path of the run (MLflow 2's way) that holds nothing
    as_admin.create_registered_model("iris-broken")
    broken = int(
        as_admin.create_model_version(
            "iris-broken", f"runs:/{iris.run_id}/nothing", run_id=iris.run_id
        ).version
    )

    uri = using(admin(server), lambda c: c.get_download_uri("iris-broken", broken))
    error = failure(admin(server), lambda c: c.get_mlmodel("iris-broken", broken))

    assert uri == f"runs:/{iris.run_id}/nothing"  # the server does not resolve it
    assert isinstance(error, BadResponse)
    assert error.status == 500
    assert str(error).startswith(f"MLflow {server.url}: model-versions/get-artifact: HTTP 500: ")


# --- writing back -------------------------------------------------------------------------------------


def test_tags_written_back_are_what_mlflow_reads(server: MlflowServer, iris: Iris, as_admin: Any) -> None:
    using(admin(server), lambda c: c.set_version_tag("iris", 1, "modelfleet.io/phase", "Serving"))
    assert as_admin.get_model_version("iris", "1").tags["modelfleet.io/phase"] == "Serving"

    async def delete_twice(c: MlflowClient) -> None:
        await c.delete_version_tag("iris", 1, "modelfleet.io/phase")
        await c.delete_version_tag("iris", 1, "modelfleet.io/phase")  # already gone: no error

    using(admin(server), delete_twice)
    assert "modelfleet.io/phase" not in as_admin.get_model_version("iris", "1").tags


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.get_registered_model("no-such-model"),
            "Registered Model with name=no-such-model not found",
        ),
        (lambda c: c.snapshot("no-such-model"), "Registered Model with name=no-such-model not found"),
        (lambda c: c.get_version("iris", 99), "Model Version (name=iris, version=99) not found"),
        (lambda c: c.get_download_uri("iris", 99), "Model Version (name=iris, version=99) not found"),
        (
            lambda c: c.set_version_tag("iris", 99, "k", "v"),
            "Model Version (name=iris, version=99) not found",
        ),
        (lambda c: c.get_run("0" * 32), f"Run with id={'0' * 32} not found"),
    ],
)
def test_what_does_not_exist_is_not_found(
    server: MlflowServer, iris: Iris, call: Callable[[MlflowClient], Awaitable[object]], message: str
) -> None:
    error = failure(admin(server), call)

    assert isinstance(error, NotFound)
    assert error.status == 404
    assert str(error) == f"MLflow {server.url}: {message}"


def test_an_unknown_model_has_no_versions_as_mlflow_searches(server: MlflowServer) -> None:
    assert using(admin(server), lambda c: c.list_versions("no-such-model")) == []


def test_credentials_that_are_refused_or_may_not_write_are_unauthorized(
    server: MlflowServer, iris: Iris
) -> None:
    from mlflow.server import get_app_client

    reader_password = "reader-password-LeakCheck-1a2b"
    get_app_client("basic-auth", tracking_uri=server.url).create_user("reader", reader_password)
    wrong = "wrong-password-LeakCheck-9f8e"

    refused = failure(
        MlflowClient(server.url, Credentials(username=ADMIN, password=wrong)), lambda c: c.snapshot("iris")
    )
    anonymous = failure(MlflowClient(server.url), lambda c: c.snapshot("iris"))
    token = failure(MlflowClient(server.url, Credentials(token=wrong)), lambda c: c.snapshot("iris"))
    reader = MlflowClient(server.url, Credentials(username="reader", password=reader_password))
    read = using(reader, lambda c: c.snapshot("iris"))
    write = failure(
        MlflowClient(server.url, Credentials(username="reader", password=reader_password)),
        lambda c: c.set_version_tag("iris", 1, "modelfleet.io/phase", "Serving"),
    )

    assert [type(e) for e in (refused, anonymous, write)] == [Unauthorized] * 3
    assert str(refused) == f"MLflow {server.url}: credentials refused (HTTP 401)"
    assert str(anonymous) == f"MLflow {server.url}: credentials required, none given (HTTP 401)"
    assert str(write) == f"MLflow {server.url}: model-versions/set-tag: permission denied (HTTP 403)"
    # MLflow's basic-auth app fails on a bearer token (AttributeError on the missing username): HTTP 500
    assert isinstance(token, BadResponse)
    assert str(token) == f"MLflow {server.url}: registered-models/get: HTTP 500"
    assert read.model.aliases == {"champion": 1}  # a reader may read: default_permission READ
    for error in (refused, token, write):
        text = f"{error} {error!r}"
        assert wrong not in text
        assert reader_password not in text


# --- many versions, odd names -------------------------------------------------------------------------


def test_five_hundred_versions_are_read_page_by_page(server: MlflowServer, as_admin: Any) -> None:
    as_admin.create_registered_model("many")
    started = time.monotonic()
    for n in range(520):
        as_admin.create_model_version("many", f"s3://models/many/{n + 1}", run_id=None)
    print(f"520 versions registered in {time.monotonic() - started:.1f} s")

    paged = admin(server, page_size=100)
    versions = using(paged, lambda c: c.list_versions("many"))
    whole = admin(server)
    snapshot = using(whole, lambda c: c.snapshot("many"))

    assert [v.version for v in versions] == list(range(1, 521))
    assert versions[-1].source == "s3://models/many/520"
    assert paged.requests == {"model-versions/search": 6}
    assert len(snapshot.versions) == 520
    assert whole.request_count == 2  # the default page holds 1,000


def test_names_with_quotes_find_their_own_versions_only(server: MlflowServer, as_admin: Any) -> None:
    for name, count in (("it's", 2), ('it\'s "odd"', 2), ("it_s _odd_", 1)):
        as_admin.create_registered_model(name)
        for n in range(count):
            as_admin.create_model_version(name, f"s3://models/odd/{n}", run_id=None)

    async def read(c: MlflowClient) -> list[int]:
        return [len(await c.list_versions(name)) for name in ("it's", 'it\'s "odd"', "it_s _odd_")]

    assert using(admin(server), read) == [2, 2, 1]


# --- webhooks -----------------------------------------------------------------------------------------


def test_deliveries_from_mlflow_are_verified_and_a_replay_is_refused(
    server: MlflowServer, iris: Iris, as_admin: Any
) -> None:
    async def scenario() -> tuple[list[Any], WebhookReceiver]:
        receiver = WebhookReceiver(SECRET)
        await receiver.start()
        webhook = await asyncio.to_thread(
            as_admin.create_webhook, name="modelfleet", url=receiver.url, events=EVENTS, secret=SECRET
        )
        client = admin(server)
        # the server caches the webhooks of each event for MLFLOW_WEBHOOK_CACHE_TTL (1 s here, 60 s by
        # default): the tests before filled the cache of model_version.created
        await asyncio.sleep(1.5)
        try:
            created = await asyncio.to_thread(
                as_admin.create_model_version,
                "iris",
                f"models:/{iris.model_id}",
                run_id=iris.run_id,
                model_id=iris.model_id,
            )
            await asyncio.to_thread(
                as_admin.set_registered_model_alias, "iris", "challenger", created.version
            )
            await asyncio.to_thread(as_admin.delete_registered_model_alias, "iris", "challenger")
            await client.set_version_tag("iris", int(created.version), "modelfleet.io/phase", "Serving")
            await client.delete_version_tag("iris", int(created.version), "modelfleet.io/phase")
            deliveries = await receiver.wait_for("iris", 5)

            first = receiver.received[0]
            signed = {k: v for k, v in first.headers.items() if k.lower().startswith("x-mlflow-")}
            async with aiohttp.ClientSession() as session:

                async def post(headers: dict[str, str], body: bytes) -> int:
                    async with session.post(receiver.url, data=body, headers=headers) as response:
                        return response.status

                replayed = await post(signed, first.body)
                tampered = await post(signed, first.body.replace(b'"iris"', b'"iriz"'))
                now = int(datetime.now(UTC).timestamp())
                body = first.body
                stale = await post(mlflow_delivery_headers(SECRET, body, now - 600), body)
                fresh = await post(mlflow_delivery_headers(SECRET, body, now), body)
            assert (replayed, tampered, stale, fresh) == (204, 401, 401, 204)
            return deliveries, receiver
        finally:
            await asyncio.to_thread(as_admin.delete_webhook, webhook.webhook_id)
            await client.close()
            await receiver.stop()

    deliveries, receiver = asyncio.run(scenario())

    by_event = {d.event: d for d in deliveries}
    assert sorted(by_event) == sorted(EVENTS)
    created = by_event["model_version.created"]
    version = created.version
    assert created.data["source"] == f"models:/{iris.model_id}"
    assert created.data["run_id"] == iris.run_id
    assert by_event["model_version_alias.created"].data == {
        "name": "iris",
        "alias": "challenger",
        "version": version,
    }
    assert by_event["model_version_alias.deleted"].data == {"name": "iris", "alias": "challenger"}
    assert by_event["model_version_tag.set"].data == {
        "name": "iris",
        "version": version,
        "key": "modelfleet.io/phase",
        "value": "Serving",
    }
    assert by_event["model_version_tag.deleted"].data == {
        "name": "iris",
        "version": version,
        "key": "modelfleet.io/phase",
    }
    headers = {k.lower() for k in receiver.received[0].headers}
    assert {"x-mlflow-delivery-id", "x-mlflow-timestamp", "x-mlflow-signature"} <= headers
    assert json.loads(receiver.received[0].body).keys() == {"entity", "action", "timestamp", "data"}
    refusals = [c.refused.reason for c in receiver.received if c.refused is not None]
    assert refusals == [Refusal.REPLAYED, Refusal.BAD_SIGNATURE, Refusal.STALE]


# --- the operator's sync and webhook receiver against the real server -----------------------------------


def _followed_model(server: MlflowServer, **source: Any) -> Any:
    from modelfleet.api import Model

    mlflow_source = {"trackingUri": server.url, "registeredModel": "iris", **source}
    return Model.from_k8s(
        {
            "metadata": {"name": "iris", "namespace": "ml", "generation": 1},
            "spec": {"source": {"mlflow": mlflow_source}},
        }
    )


class _Views:
    """The watch caches' view of one Model, as the sync reads it (no API server in this tier)."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def model(self, namespace: str, name: str) -> Any:
        return self._model if (namespace, name) == ("ml", "iris") else None

    def versions_of(self, namespace: str, model: str) -> list[str]:
        return []


def test_the_sync_reads_lineage_signature_and_aliases_from_the_real_server(
    server: MlflowServer, iris: Iris
) -> None:
    from modelfleet.controllers.mlflow import MlflowSync
    from modelfleet.registry.mlflow import plan_sync

    async def publish(*_: Any) -> None:
        return None

    model = _followed_model(server)
    sync = MlflowSync(publish=publish, model_version=lambda *_: None)
    client = admin(server)
    assert model.spec.source is not None
    assert model.spec.source.mlflow is not None

    snapshot = using(client, lambda c: sync._snapshot(c, model, model.spec.source.mlflow, {}))

    first = next(v for v in snapshot.versions if v.version == "1")
    assert snapshot.aliases["champion"] == "1"
    assert first.flavors is not None
    assert "python_function" in first.flavors
    assert json.loads(first.signature_inputs) == json.loads(iris.signature["inputs"])
    assert first.tags["modelfleet.io/approved"] == "true"
    run = snapshot.runs[iris.run_id]
    assert run.params == {"C": "1.0", "max_iter": "200"}
    assert run.metrics == {"accuracy": 0.97}
    assert run.tags["mlflow.source.git.commit"] == "0a1b2c3d4e5f"
    assert [(d.name, d.context, d.source) for d in run.datasets] == [
        ("iris-train", "training", "s3://data/iris.csv")
    ]
    # this server proxies its artifact store (mlflow-artifacts:/): the fetcher cannot read such a
    # location, so the plan says so instead of mirroring the version
    plan = plan_sync(model, snapshot, {}, datetime.now(UTC))
    assert first.storage_uri.startswith("mlflow-artifacts:/")
    assert "scheme mlflow-artifacts" in plan.skipped["1"]
    assert plan.source.aliases["champion"] == "iris-v1"


def test_a_sync_counts_its_requests_and_its_result_in_the_operators_metrics(
    server: MlflowServer, iris: Iris
) -> None:
    from prometheus_client import REGISTRY

    from modelfleet.controllers.mlflow import MlflowSync

    published: list[Any] = []

    async def publish(views: Any, namespace: str, name: str, source: Any) -> None:
        published.append(source)

    def requests_exported() -> float:
        return sum(
            sample.value
            for metric in REGISTRY.collect()
            if metric.name == "modelfleet_mlflow_requests"
            for sample in metric.samples
            if sample.name == "modelfleet_mlflow_requests_total"
        )

    def syncs(result: str) -> float:
        return REGISTRY.get_sample_value("modelfleet_mlflow_syncs_total", {"result": result}) or 0.0

    sync = MlflowSync(publish=publish, model_version=lambda *_: None, connect=lambda *_: admin(server))
    sync.views = _Views(_followed_model(server))

    def timed() -> float:
        found = REGISTRY.get_sample_value(
            "modelfleet_reconcile_duration_seconds_count", {"controller": "mlflow"}
        )
        return found or 0.0

    requests_before, synced_before, timed_before = requests_exported(), syncs("Synced"), timed()

    again = asyncio.run(sync.sync("ml", "iris"))

    assert again is not None  # polls again after its interval
    assert published[-1].aliases["champion"] == "iris-v1"
    assert syncs("Synced") - synced_before == 1
    assert timed() - timed_before == 1
    assert sync.requests >= 2  # the registered model and its versions, at least
    assert requests_exported() - requests_before == sync.requests


def test_the_operators_receiver_wakes_the_sync_for_signed_deliveries_only(
    server: MlflowServer, iris: Iris, as_admin: Any
) -> None:
    from modelfleet.controllers.mlflow import MlflowSync
    from modelfleet.controllers.mlflow import WebhookReceiver as OperatorReceiver

    woken: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    class Sync(MlflowSync):
        def on_webhook(self, namespace: str, model: str) -> bool:
            woken.append((namespace, model))
            arrived.set()
            return True

    async def publish(*_: Any) -> None:
        return None

    async def read_secret(namespace: str, name: str) -> dict[str, str] | None:
        return {"secret": SECRET} if (namespace, name) == ("ml", "iris-webhook") else None

    async def scenario() -> OperatorReceiver:
        sync = Sync(publish=publish, model_version=lambda *_: None)
        sync.views = _Views(_followed_model(server, webhook={"secretName": "iris-webhook"}))
        receiver = OperatorReceiver(sync, read=read_secret)
        port = free_port()
        await receiver.start(port, host="127.0.0.1")
        url = f"http://127.0.0.1:{port}/mlflow/webhooks/ml/iris"
        webhook = await asyncio.to_thread(
            as_admin.create_webhook, name="operator", url=url, events=EVENTS, secret=SECRET
        )
        await asyncio.sleep(1.5)  # the server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL, 1 s here)
        try:
            await asyncio.to_thread(as_admin.set_registered_model_alias, "iris", "challenger", "1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 10)
            async with aiohttp.ClientSession() as session:
                body = json.dumps(
                    {
                        "entity": "model_version_alias",
                        "action": "created",
                        "timestamp": "",
                        "data": {"name": "iris", "alias": "x", "version": "1"},
                    }
                ).encode()
                now = int(datetime.now(UTC).timestamp())
                forged = mlflow_delivery_headers("not-the-secret", body, now)
                async with session.post(url, data=body, headers=forged) as answer:
                    assert answer.status == 401
                other = f"http://127.0.0.1:{port}/mlflow/webhooks/ml/unknown"
                async with session.post(other, data=body, headers=forged) as answer:
                    assert answer.status == 404
            await asyncio.to_thread(as_admin.delete_registered_model_alias, "iris", "challenger")
            return receiver
        finally:
            await asyncio.to_thread(as_admin.delete_webhook, webhook.webhook_id)
            await receiver.stop()

    from prometheus_client import REGISTRY

    def exported(outcome: str) -> float:
        found = REGISTRY.get_sample_value("modelfleet_mlflow_webhook_deliveries_total", {"outcome": outcome})
        return found or 0.0

    before = {outcome: exported(outcome) for outcome in ("accepted", "BadSignature", "unknown")}
    # counted once the receiver has stopped: a delivery may still arrive while the webhook is deleted
    counts = dict(asyncio.run(scenario()).counts)

    assert woken
    assert woken[0] == ("ml", "iris")
    assert counts["accepted"] >= 1
    assert counts["BadSignature"] == 1
    assert counts["unknown"] == 1
    # the operator's /metrics says the same
    assert {outcome: exported(outcome) - before[outcome] for outcome in before} == {
        outcome: float(counts[outcome]) for outcome in before
    }


# --- last: the server goes away -----------------------------------------------------------------------


def test_a_stopped_server_is_unreachable(server: MlflowServer, iris: Iris, tmp_path: Path) -> None:
    client = admin(server, timeout=2.0)
    assert using(client, lambda c: c.get_registered_model("iris")).name == "iris"

    server.stop()
    error = failure(admin(server, timeout=2.0), lambda c: c.snapshot("iris"))

    assert isinstance(error, Unreachable)
    assert str(error) == f"MLflow {server.url}: connection refused"
    assert server.admin_password not in repr(error)
