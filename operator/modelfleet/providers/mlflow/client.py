"""The async client of one MLflow tracking server's REST API (aiohttp; no mlflow package needed)."""

from __future__ import annotations

import base64
import errno
import json
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from modelfleet.providers.mlflow.entities import (
    MlModel,
    ModelVersion,
    RegisteredModel,
    Run,
    Snapshot,
    parse_download_uri,
    parse_mlmodel,
    parse_model_version,
    parse_registered_model,
    parse_run,
    parse_version_page,
    with_aliases,
)
from modelfleet.providers.mlflow.errors import BadResponse, MlflowError, NotFound, Unauthorized, Unreachable

#: The keys of the credentials Secret, as MLflow's own clients read them from the environment.
TOKEN_KEY = "MLFLOW_TRACKING_TOKEN"
USERNAME_KEY = "MLFLOW_TRACKING_USERNAME"
PASSWORD_KEY = "MLFLOW_TRACKING_PASSWORD"

#: Largest JSON answer read (a search page of 1,000 versions with tags is about 1 MiB).
MAX_JSON_BYTES = 32 * 1024 * 1024
#: Largest MLmodel file read.
MAX_MLMODEL_BYTES = 1024 * 1024
#: Longest MLflow error message quoted in an error's text.
MAX_QUOTED = 300

T = TypeVar("T")


@dataclass(frozen=True, repr=False)
class Credentials:
    """How to authenticate to the tracking server: a bearer token, or a username and password (basic
    auth, which wins when both are given, as in MLflow's own client). Never shown by repr or str."""

    token: str = ""
    username: str = ""
    password: str = ""

    @classmethod
    def from_secret(cls, data: Mapping[str, str | bytes]) -> Credentials:
        """The credentials in a Secret's decoded values (MLFLOW_TRACKING_TOKEN, or
        MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD). A trailing newline (a Secret made from a
        file) is dropped. Unauthorized, naming the keys and never a value, when neither is complete or
        a value cannot be sent in a header."""

        def value(key: str) -> str:
            raw = data.get(key, "")
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            text = text.rstrip("\r\n")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
                raise Unauthorized(f"credentials: {key} holds control characters")
            return text

        found = cls(token=value(TOKEN_KEY), username=value(USERNAME_KEY), password=value(PASSWORD_KEY))
        if not found.token and not (found.username and found.password):
            raise Unauthorized(
                f"credentials: the Secret has neither {TOKEN_KEY} nor {USERNAME_KEY} and {PASSWORD_KEY}"
            )
        if found.username and ":" in found.username:
            raise Unauthorized(f"credentials: {USERNAME_KEY} holds ':'")
        return found

    def authorization(self) -> str | None:
        """The Authorization header value, None when there is nothing to send."""
        if self.username and self.password:
            pair = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if self.token:
            return f"Bearer {self.token}"
        return None

    def secrets(self) -> tuple[str, ...]:
        """Every text that must never be shown: the values and the header made of them."""
        header = self.authorization()
        texts = (self.token, self.password, header or "", header.split(" ", 1)[1] if header else "")
        return tuple(t for t in texts if t)

    def __repr__(self) -> str:
        if self.username and self.password:
            return "Credentials(basic)"
        return "Credentials(token)" if self.token else "Credentials(none)"

    __str__ = __repr__


class MlflowClient:
    """One tracking server, as the sync needs it: read a registered model, its versions, their runs and
    MLmodel files; write the operator's tags back on versions.

    Every call raises an `MlflowError` (`.reason`: Unreachable, Unauthorized, NotFound, BadResponse)
    whose text names the server (without user or password) and never a credential. `requests` counts the
    HTTP requests sent, by endpoint. Pass `session` to share one connection pool among clients (it is then
    not closed by `close`); otherwise the client opens its own on first use.
    """

    def __init__(
        self,
        tracking_uri: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        page_size: int = 1000,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        url = URL(tracking_uri)
        if credentials is None and url.user and url.password:
            credentials = Credentials(username=url.user, password=url.password)
        self.credentials = credentials or Credentials()
        self.base = str(url.with_user(None).with_query(None).with_fragment(None)).rstrip("/")
        """The server's address, without user or password: what error texts name."""
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        if not 1 <= page_size <= 200_000:
            raise ValueError("page_size must be between 1 and 200000")
        self.page_size = page_size
        self.requests: Counter[str] = Counter()
        """HTTP requests sent, by endpoint (e.g. "model-versions/search"), failed ones included."""
        self._session = session
        self._owns_session = session is None
        self._url_password = url.password or ""

    def __repr__(self) -> str:
        return f"MlflowClient({self.base!r}, {self.credentials!r})"

    @property
    def request_count(self) -> int:
        """All HTTP requests sent so far."""
        return sum(self.requests.values())

    # --- the registry ---------------------------------------------------------------------------------

    async def get_registered_model(self, name: str) -> RegisteredModel:
        """The registered model with its aliases and tags; NotFound when there is none of that name."""
        document = await self._json("GET", "registered-models/get", {"name": name})
        return self._parsed(parse_registered_model, document, "registered-models/get")

    async def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of the registered model, by number, following MLflow's pages (`page_size` a
        request). An unknown model has no versions: MLflow's search does not say NotFound. The versions
        carry no aliases (MLflow's search leaves them out): `snapshot` fills them."""
        versions: dict[int, ModelVersion] = {}
        token = ""
        for _ in range(10_000):
            params = {
                "filter": version_filter(name),
                "max_results": str(self.page_size),
                "order_by": "version_number ASC",
            }
            if token:
                params["page_token"] = token
            document = await self._json("GET", "model-versions/search", params)
            page, token = self._parsed(parse_version_page, document, "model-versions/search")
            for version in page:
                if version.name == name:  # a LIKE filter (see version_filter) may match others
                    versions[version.version] = version
            if not token:
                return [versions[n] for n in sorted(versions)]
        raise BadResponse(f"MLflow {self.base}: model version search did not end after 10000 pages")

    async def snapshot(self, name: str) -> Snapshot:
        """The registered model and all its versions, each with its aliases: what one sync reads.
        1 + ceil(versions / page_size) requests."""
        model = await self.get_registered_model(name)
        return with_aliases(model, await self.list_versions(name))

    async def get_version(self, name: str, version: int) -> ModelVersion:
        """One version, with its aliases; NotFound when the model or the version does not exist."""
        document = await self._json("GET", "model-versions/get", {"name": name, "version": str(version)})
        version_document = document.get("model_version") if isinstance(document, Mapping) else None
        return self._parsed(parse_model_version, version_document, "model-versions/get")

    async def get_download_uri(self, name: str, version: int) -> str:
        """Where the version's files are, as MLflow resolves the version's source: s3://... for a direct
        store, mlflow-artifacts:/... when the server proxies its store (only the server can then be asked
        for the files), runs:/<run>/<path> left as it is for a version registered from a run's path."""
        document = await self._json(
            "GET", "model-versions/get-download-uri", {"name": name, "version": str(version)}
        )
        return self._parsed(parse_download_uri, document, "model-versions/get-download-uri")

    async def get_mlmodel(self, name: str, version: int) -> MlModel:
        """The version's MLmodel file (flavors and signature), read through the tracking server with the
        tracking credentials alone: the server reads its artifact store itself. MLflow keeps the
        signature nowhere else (no REST field of the version, run or logged model has it). A server that
        cannot read the store (no credentials of its own for it) answers 500: BadResponse."""
        text = await self._request(
            "GET",
            f"{self.base}/model-versions/get-artifact",
            "model-versions/get-artifact",
            {"name": name, "version": str(version), "path": "MLmodel"},
            None,
            MAX_MLMODEL_BYTES,
        )
        return self._parsed(parse_mlmodel, text.decode("utf-8", "replace"), "model-versions/get-artifact")

    async def get_run(self, run_id: str) -> Run:
        """A run's params, latest metrics, tags (git commit and repository) and dataset inputs."""
        return self._parsed(parse_run, await self._json("GET", "runs/get", {"run_id": run_id}), "runs/get")

    async def set_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        """Set (or overwrite) a tag on a version."""
        body = {"name": name, "version": str(version), "key": key, "value": value}
        await self._json("POST", "model-versions/set-tag", body=body)

    async def delete_version_tag(self, name: str, version: int, key: str) -> None:
        """Remove a tag from a version; a tag that is not there is no error (MLflow answers 200)."""
        body = {"name": name, "version": str(version), "key": key}
        await self._json("DELETE", "model-versions/delete-tag", body=body)

    async def close(self) -> None:
        """Release the client's own connections (a shared session is left open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- HTTP -----------------------------------------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4), headers={"User-Agent": "modelfleet-operator"}
            )
            self._owns_session = True
        return self._session

    async def _json(
        self,
        method: str,
        endpoint: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = await self._request(
            method, f"{self.base}/api/2.0/mlflow/{endpoint}", endpoint, params, body, MAX_JSON_BYTES
        )
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            raise BadResponse(f"MLflow {self.base}: {endpoint}: the answer is not JSON") from None

    async def _request(
        self,
        method: str,
        url: str,
        endpoint: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        limit: int,
    ) -> bytes:
        where = f"MLflow {self.base}"
        headers = {"Accept": "application/json"}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        self.requests[endpoint] += 1
        try:
            async with self._open().request(
                method,
                url,
                params=params,
                json=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                data = await _read(response, limit)
        except TimeoutError:
            raise self._error(Unreachable, f"{where}: no answer within {self.timeout.total:g}s") from None
        except aiohttp.ClientConnectorError as error:
            raise self._error(Unreachable, f"{where}: {_connect_failure(error)}") from None
        except aiohttp.ClientError as error:
            raise self._error(Unreachable, f"{where}: {_client_failure(error)}") from None
        if data is None:
            raise self._error(BadResponse, f"{where}: {endpoint}: answer over {limit} bytes", status)
        if 200 <= status < 300:
            return data
        raise self._status_error(where, endpoint, status, data)

    def _status_error(self, where: str, endpoint: str, status: int, data: bytes) -> MlflowError:
        code, message = _mlflow_error(data)
        quoted = f": {message}" if message else ""
        if status == 401:
            given = "refused" if self.credentials.authorization() else "required, none given"
            return self._error(Unauthorized, f"{where}: credentials {given} (HTTP 401)", status)
        if status == 403:
            return self._error(Unauthorized, f"{where}: {endpoint}: permission denied (HTTP 403)", status)
        if status == 404 and code == "RESOURCE_DOES_NOT_EXIST":
            return self._error(NotFound, f"{where}{quoted or ': not found'}", status)
        if status == 404:
            return self._error(
                BadResponse,
                f"{where}: {endpoint}: HTTP 404 without an MLflow error (not an MLflow server?)",
                status,
            )
        if status in (429, 502, 503, 504):
            return self._error(Unreachable, f"{where}: {endpoint}: HTTP {status}{quoted}", status)
        if 300 <= status < 400:
            return self._error(
                BadResponse,
                f"{where}: {endpoint}: redirected (HTTP {status}); give the server's own address",
                status,
            )
        return self._error(BadResponse, f"{where}: {endpoint}: HTTP {status}{quoted}", status)

    def _parsed(self, parse: Callable[[Any], T], document: Any, endpoint: str) -> T:
        try:
            return parse(document)
        except BadResponse as error:
            raise self._error(BadResponse, f"MLflow {self.base}: {endpoint}: {error.message}") from None

    def _error(self, kind: type[MlflowError], text: str, status: int | None = None) -> MlflowError:
        secrets = (*self.credentials.secrets(), self._url_password)
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            text = text.replace(secret, "***")
        return kind(text[:512], status)


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, None when it is over `limit` bytes (then read no further)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def version_filter(name: str) -> str:
    """MLflow's search filter for the versions of `name`. MLflow's filter strings have no escapes: a name
    with a single quote is double-quoted; one with both quotes is matched with LIKE, the quotes as `_`
    wildcards (the caller keeps only the exact name)."""
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    return "name LIKE '{}'".format(name.replace("'", "_").replace('"', "_"))


def _mlflow_error(data: bytes) -> tuple[str, str]:
    """MLflow's error_code and message in an error answer, ("", "") when it is not one."""
    try:
        document = json.loads(data)
    except ValueError:
        return "", ""
    if not isinstance(document, Mapping):
        return "", ""
    code, message = document.get("error_code"), document.get("message")
    code = code if isinstance(code, str) else ""
    message = message if isinstance(message, str) else ""
    if len(message) > MAX_QUOTED:
        message = message[:MAX_QUOTED] + "..."
    return code, message


def _connect_failure(error: aiohttp.ClientConnectorError) -> str:
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(error, aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(error.os_error, socket.gaierror):
        return "host name not resolved"
    code = error.os_error.errno
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to host"
    if code == errno.ETIMEDOUT:
        return "connection timed out"
    return f"cannot connect ({errno.errorcode.get(code or 0, 'error')})"


def _client_failure(error: aiohttp.ClientError) -> str:
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(error, aiohttp.InvalidURL):
        return "invalid URL"
    return f"request failed ({type(error).__name__})"


__all__ = ["PASSWORD_KEY", "TOKEN_KEY", "USERNAME_KEY", "Credentials", "MlflowClient", "version_filter"]
