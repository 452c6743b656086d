"""The MLflow client without an MLflow server: reading MLflow's answers (recorded from MLflow 3.17.2),
credentials, and what a server that is not quite MLflow (a gateway, a proxy, a careless one) turns into.
The real server is in tests/process/test_mlflow_process.py."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from aiohttp import web

from modelfleet.providers.mlflow import (
    BadResponse,
    Credentials,
    MlflowClient,
    MlflowError,
    NotFound,
    Reason,
    Unauthorized,
    Unreachable,
)
from modelfleet.providers.mlflow.client import version_filter
from modelfleet.providers.mlflow.entities import (
    RegisteredModel,
    parse_download_uri,
    parse_mlmodel,
    parse_model_version,
    parse_registered_model,
    parse_run,
    parse_version_page,
    with_aliases,
)

T = TypeVar("T")
TOKEN = "tok-LeakCheck-8c1f"
PASSWORD = "pw-LeakCheck-51d2"

REGISTERED_MODEL = {
    "registered_model": {
        "name": "iris",
        "creation_timestamp": 1796232383185,
        "last_updated_timestamp": 1796232383237,
        "latest_versions": [
            {"name": "iris", "version": "1", "source": "models:/m-bc90df02577944d09f61eac9af2661d4"}
        ],
        "aliases": [{"alias": "champion", "version": "1"}, {"alias": "challenger", "version": "2"}],
    }
}
MODEL_VERSION = {
    "name": "iris",
    "version": "1",
    "creation_timestamp": 1796232383237,
    "last_updated_timestamp": 1796232383237,
    "current_stage": "None",
    "description": "",
    "source": "models:/m-bc90df02577944d09f61eac9af2661d4",
    "run_id": "64aeefd10d1749bfbdb175e9dd02aa19",
    "status": "READY",
    "tags": [{"key": "modelfleet.io/approved", "value": "true"}],
    "run_link": "",
    "aliases": ["champion"],
}
RUN = {
    "run": {
        "info": {
            "run_uuid": "64aeefd10d1749bfbdb175e9dd02aa19",
            "experiment_id": "1",
            "run_name": "vaunted-shrimp-581",
            "user_id": "root",
            "status": "FINISHED",
            "start_time": 1796232378127,
            "end_time": 1796232383308,
            "artifact_uri": "mlflow-artifacts:/1/64aeefd10d1749bfbdb175e9dd02aa19/artifacts",
            "lifecycle_stage": "active",
            "run_id": "64aeefd10d1749bfbdb175e9dd02aa19",
        },
        "data": {
            "metrics": [{"key": "accuracy", "value": 0.97, "timestamp": 1796232378161, "step": 0}],
            "params": [{"key": "C", "value": "1.0"}, {"key": "max_iter", "value": "200"}],
            "tags": [
                {"key": "mlflow.source.name", "value": "log.py"},
                {"key": "mlflow.source.git.commit", "value": "abc123"},
            ],
        },
        "inputs": {
            "dataset_inputs": [
                {
                    "tags": [{"key": "mlflow.data.context", "value": "training"}],
                    "dataset": {
                        "name": "iris-train",
                        "digest": "53be0b6c",
                        "source_type": "s3",
                        "source": '{"uri": "s3://data/iris.csv"}',
                        "schema": "{}",
                        "profile": "{}",
                    },
                }
            ]
        },
        "outputs": {"model_outputs": [{"model_id": "m-bc90df02577944d09f61eac9af2661d4", "step": 0}]},
    }
}
MLMODEL = """\
artifact_path: mlflow-artifacts:/1/models/m-bc90df02577944d09f61eac9af2661d4/artifacts
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.skops
  sklearn:
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.9.1
mlflow_version: 3.17.2
model_id: m-bc90df02577944d09f61eac9af2661d4
model_size_bytes: 9353
run_id: 64aeefd10d1749bfbdb175e9dd02aa19
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
  params: null
"""


# --- reading MLflow's answers -------------------------------------------------------------------------


def test_a_registered_model_has_its_aliases_as_version_numbers() -> None:
    model = parse_registered_model(REGISTERED_MODEL)

    assert model.name == "iris"
    assert model.aliases == {"champion": 1, "challenger": 2}
    assert model.created == datetime(2026, 12, 2, 17, 26, 23, 185000, tzinfo=UTC)


def test_a_version_registered_from_a_logged_model_names_it() -> None:
    version = parse_model_version(MODEL_VERSION)

    assert (version.name, version.version, version.ready) == ("iris", 1, True)
    assert version.model_id == "m-bc90df02577944d09f61eac9af2661d4"  # from the source: the field was empty
    assert version.tags == {"modelfleet.io/approved": "true"}
    assert version.aliases == ("champion",)


def test_a_search_page_gives_its_versions_and_the_next_token() -> None:
    versions, token = parse_version_page(
        {"model_versions": [MODEL_VERSION], "next_page_token": "eyJvZmZzZXQiOiAyfQ=="}
    )
    assert [v.version for v in versions] == [1]
    assert token == "eyJvZmZzZXQiOiAyfQ=="

    assert parse_version_page({}) == ([], "")  # MLflow's answer for a model with no versions


def test_a_snapshot_gives_each_version_the_aliases_that_point_at_it() -> None:
    model = parse_registered_model(REGISTERED_MODEL)
    searched = [parse_model_version({**MODEL_VERSION, "version": n, "aliases": []}) for n in ("3", "1", "2")]

    snapshot = with_aliases(model, searched)

    assert [v.version for v in snapshot.versions] == [1, 2, 3]
    assert [v.aliases for v in snapshot.versions] == [("champion",), ("challenger",), ()]
    assert snapshot.version(2) is not None
    assert snapshot.version(9) is None


def test_a_run_gives_the_lineage() -> None:
    run = parse_run(RUN)

    assert run.id == "64aeefd10d1749bfbdb175e9dd02aa19"
    assert run.params == {"C": "1.0", "max_iter": "200"}
    assert run.metrics == {"accuracy": 0.97}
    assert run.git_commit == "abc123"
    assert run.git_repository == ""
    [dataset] = run.datasets
    assert (dataset.name, dataset.digest, dataset.source, dataset.context) == (
        "iris-train",
        "53be0b6c",
        "s3://data/iris.csv",
        "training",
    )


def test_an_mlmodel_file_gives_flavors_and_signature() -> None:
    mlmodel = parse_mlmodel(MLMODEL)

    assert mlmodel.flavors == ("python_function", "sklearn")
    assert mlmodel.signature is not None
    assert json.loads(mlmodel.signature.inputs)[0]["tensor-spec"]["shape"] == [-1, 4]
    assert mlmodel.signature.params == ""
    assert mlmodel.size_bytes == 9353
    assert parse_mlmodel("flavors: {sklearn: {}}\n").signature is None


@pytest.mark.parametrize(
    ("parse", "document"),
    [
        (parse_registered_model, {}),
        (
            parse_registered_model,
            {"registered_model": {"name": "iris", "aliases": [{"alias": "a", "version": "x"}]}},
        ),
        (parse_model_version, {"name": "iris"}),
        (parse_model_version, {"name": "iris", "version": "1", "tags": [{"value": "no key"}]}),
        (parse_run, {"run": {"info": {}}}),
        (parse_run, {"run": {"info": {"run_id": "r"}, "data": {"metrics": [{"key": "m", "value": "high"}]}}}),
        (parse_download_uri, {}),
        (parse_mlmodel, "- a list\n"),
    ],
)
def test_an_answer_without_what_is_needed_is_a_bad_response(
    parse: Callable[[Any], object], document: Any
) -> None:
    with pytest.raises(BadResponse):
        parse(document)


def test_version_filters_quote_names_that_mlflow_cannot_escape() -> None:
    assert version_filter("iris") == "name = 'iris'"
    assert version_filter("it's") == 'name = "it\'s"'
    assert version_filter('it\'s "q"') == "name LIKE 'it_s _q_'"


# --- credentials --------------------------------------------------------------------------------------


def test_credentials_come_from_the_secret_as_mlflow_names_them() -> None:
    token = Credentials.from_secret({"MLFLOW_TRACKING_TOKEN": TOKEN + "\n"})
    basic = Credentials.from_secret(
        {"MLFLOW_TRACKING_USERNAME": b"ops", "MLFLOW_TRACKING_PASSWORD": PASSWORD.encode()}
    )

    assert token.authorization() == f"Bearer {TOKEN}"
    assert basic.authorization() == "Basic b3BzOnB3LUxlYWtDaGVjay01MWQy"
    for credentials in (token, basic):
        assert TOKEN not in repr(credentials) + str(credentials)
        assert PASSWORD not in repr(credentials) + str(credentials)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"MLFLOW_TRACKING_USERNAME": "ops"},
        {"MLFLOW_TRACKING_TOKEN": f"{TOKEN}\nX-Injected: 1"},
        {"MLFLOW_TRACKING_USERNAME": "o:ps", "MLFLOW_TRACKING_PASSWORD": PASSWORD},
    ],
)
def test_a_secret_without_usable_credentials_is_unauthorized_without_showing_them(
    data: dict[str, str],
) -> None:
    with pytest.raises(Unauthorized) as error:
        Credentials.from_secret(data)

    assert error.value.reason == Reason.UNAUTHORIZED
    assert TOKEN not in str(error.value)
    assert PASSWORD not in str(error.value)


def test_the_client_does_not_show_credentials_in_its_repr() -> None:
    client = MlflowClient(f"http://ops:{PASSWORD}@mlflow.example:5000/", Credentials(token=TOKEN))

    assert repr(client) == "MlflowClient('http://mlflow.example:5000', Credentials(token))"
    assert PASSWORD not in repr(client)


# --- servers that are not quite MLflow ----------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def call(
    handler: Handler,
    use: Callable[[MlflowClient], Awaitable[T]],
    credentials: Credentials | None = None,
    **options: Any,
) -> tuple[T, MlflowClient]:
    async def scenario() -> tuple[T, MlflowClient]:
        async with serving(handler) as url:
            client = MlflowClient(
                url, credentials or Credentials(username="ops", password=PASSWORD), **options
            )
            try:
                return await use(client), client
            finally:
                await client.close()

    return asyncio.run(scenario())


def failure(handler: Handler, **options: Any) -> MlflowError:
    async def use(client: MlflowClient) -> MlflowError:
        try:
            await client.get_registered_model("iris")
        except MlflowError as error:
            return error
        raise AssertionError("no error")

    error, _ = call(handler, use, **options)
    text = str(error) + repr(error)
    assert PASSWORD not in text
    assert "b3BzOnB3LUxlYWtDaGVjay01MWQy" not in text  # the basic auth header's value
    return error


def answer(status: int, body: str | bytes = "", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return handler


def test_a_bearer_token_is_sent_as_mlflow_sends_it() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"artifact_uri": "s3://models/iris/1"})

    uri, client = call(handler, lambda c: c.get_download_uri("iris", 1), Credentials(token=TOKEN))

    assert uri == "s3://models/iris/1"
    assert seen == [f"Bearer {TOKEN}"]
    assert client.requests == {"model-versions/get-download-uri": 1}


def test_pages_are_followed_until_the_last_and_counted() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        start = int(request.query.get("page_token") or 0)
        assert request.query["filter"] == "name = 'iris'"
        size = int(request.query["max_results"])
        numbers = range(start + 1, min(start + size, 25) + 1)
        page: dict[str, Any] = {"model_versions": [{**MODEL_VERSION, "version": str(n)} for n in numbers]}
        if start + size < 25:
            page["next_page_token"] = str(start + size)
        return web.json_response(page)

    versions, client = call(handler, lambda c: c.list_versions("iris"), page_size=10)

    assert [v.version for v in versions] == list(range(1, 26))
    assert client.requests["model-versions/search"] == 3
    assert client.request_count == 3


@pytest.mark.parametrize(
    ("handler", "kind", "text"),
    [
        (answer(401, "You are not authenticated"), Unauthorized, "credentials refused (HTTP 401)"),
        (answer(403, "Permission denied"), Unauthorized, "permission denied (HTTP 403)"),
        (
            answer(
                404,
                json.dumps(
                    {
                        "error_code": "RESOURCE_DOES_NOT_EXIST",
                        "message": "Registered Model with name=iris not found",
                    }
                ),
            ),
            NotFound,
            "Registered Model with name=iris not found",
        ),
        (answer(404, "<html>Not Found</html>"), BadResponse, "HTTP 404 without an MLflow error"),
        (answer(503, "upstream connect error"), Unreachable, "HTTP 503"),
        (answer(302, "", Location="https://login.example/?next=x"), BadResponse, "redirected (HTTP 302)"),
        (answer(200, "<html>a login page</html>"), BadResponse, "not JSON"),
        (
            answer(200, json.dumps({"registered_model": {"aliases": []}})),
            BadResponse,
            "registered-models/get: registered model: name is missing",
        ),
        (
            answer(500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "boom"})),
            BadResponse,
            "HTTP 500: boom",
        ),
    ],
)
def test_each_answer_becomes_the_error_the_condition_shows(
    handler: Handler, kind: type[MlflowError], text: str
) -> None:
    error = failure(handler)

    assert type(error) is kind
    assert text in str(error)
    assert str(error).startswith("MLflow http://127.0.0.1:")


def test_a_server_that_echoes_the_credentials_does_not_get_them_into_the_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        echoed = f"bad request from {request.headers['Authorization']} (password {PASSWORD})"
        return web.json_response({"error_code": "BAD_REQUEST", "message": echoed}, status=400)

    error = failure(handler)

    assert isinstance(error, BadResponse)
    assert "***" in str(error)


@pytest.mark.parametrize("chunked", [False, True])
def test_an_answer_too_large_is_a_bad_response(chunked: bool) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b"{" + b" " * (33 * 1024 * 1024) + b"}", content_type="application/json")
        response = web.StreamResponse()  # no Content-Length: the client has to count
        await response.prepare(request)
        for _ in range(33 * 16):
            await response.write(b" " * 65536)
        return response

    assert "answer over 33554432 bytes" in str(failure(handler))


def test_a_server_that_does_not_answer_in_time_is_unreachable() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response({})

    error = failure(handler, timeout=0.3)

    assert isinstance(error, Unreachable)
    assert "no answer within 0.3s" in str(error)


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> MlflowError:
        client = MlflowClient(f"http://ops:{PASSWORD}@127.0.0.1:{port}")
        try:
            await client.snapshot("iris")
        except MlflowError as error:
            return error
        finally:
            await client.close()
        raise AssertionError("no error")

    error = asyncio.run(scenario())

    assert isinstance(error, Unreachable)
    assert str(error) == f"MLflow http://127.0.0.1:{port}: connection refused"


def test_a_shared_session_is_left_open() -> None:
    import aiohttp

    async def scenario() -> bool:
        async with (
            serving(answer(200, json.dumps(REGISTERED_MODEL))) as url,
            aiohttp.ClientSession() as session,
        ):
            client = MlflowClient(url, session=session)
            model = await client.get_registered_model("iris")
            await client.close()
            assert isinstance(model, RegisteredModel)
            return session.closed

    assert asyncio.run(scenario()) is False
