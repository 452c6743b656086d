"""s3://BUCKET/KEY (one object) and s3://BUCKET/PREFIX/ (every object under the prefix), on any
S3-compatible endpoint, with path-style addressing (versitygw, MinIO and Ceph need it; AWS accepts it).

Credentials and the endpoint come from the environment only (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION). With no
access key the requests go unsigned, for public buckets: the client never looks for credentials
anywhere else (no shared files, no instance metadata endpoint).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from modelfleet.fetch.digest import check_relative_path
from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import CHUNK, Entry, Listing, Timeouts
from modelfleet.fetch.uri import ArtifactUri, display_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_REGION = "us-east-1"
_REFUSED = {401: "unauthorized", 403: "access denied"}
# Codes that say the credentials were refused, whatever the status (versitygw answers an unknown access
# key with 404 XAdminUserNotFound).
_CREDENTIALS_REFUSED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "XAdminUserNotFound",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
}


def endpoint_from_env(env: Mapping[str, str]) -> str | None:
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def make_client(
    env: Mapping[str, str], timeouts: Timeouts, *, agent: str = "modelfleet-fetch", attempts: int = 3
) -> S3Client:
    """An S3 client configured from `env` alone (also the router's payload capture: `agent` names the
    client in the store's logs, `attempts` bounds the tries of one request)."""
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    config = Config(
        s3={"addressing_style": "path"},
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        retries={"mode": "standard", "max_attempts": attempts},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        signature_version=None if key else UNSIGNED,
        user_agent_extra=agent,
    )
    session = boto3.session.Session(
        aws_access_key_id=key or None,
        aws_secret_access_key=secret or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
    )
    return session.client("s3", endpoint_url=endpoint_from_env(env), config=config)


class _ObjectStream:
    def __init__(self, source: S3Source, key: str, response: Any) -> None:
        self._source = source
        self._key = key
        self._body = response["Body"]
        self.size: int | None = response.get("ContentLength")

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._body.iter_chunks(CHUNK)
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise self._source.error(error, self._key) from None

    def close(self) -> None:
        self._body.close()


class S3Source:
    def __init__(self, uri: ArtifactUri, env: Mapping[str, str], timeouts: Timeouts) -> None:
        self.uri = uri
        self.bucket = uri.location
        self.endpoint = endpoint_from_env(env) or "the AWS endpoint"
        self.client = make_client(env, timeouts)

    def listing(self) -> Listing:
        if not self.uri.is_prefix:
            return Listing((Entry(self.uri.basename, None, self.uri.path),), is_directory=False)
        prefix = self.uri.path
        entries: list[Entry] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/"):  # a "folder" placeholder, not a file
                        continue
                    path = check_relative_path(key[len(prefix) :])
                    entries.append(Entry(path, item.get("Size"), key))
        except ValueError as error:
            raise FetchError(Reason.INVALID_ARTIFACT, f"{self.uri.display}: {error}") from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise self.error(error, prefix) from None
        if not entries:
            raise FetchError(Reason.ARTIFACT_UNREACHABLE, f"{self.uri.display}: no objects under the prefix")
        return Listing(tuple(entries), is_directory=True)

    def open(self, entry: Entry) -> _ObjectStream:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=entry.ref)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise self.error(error, entry.ref) from None
        return _ObjectStream(self, entry.ref, response)

    def close(self) -> None:
        self.client.close()

    def error(self, error: Exception, key: str) -> FetchError:
        """A FetchError saying what the store answered, in words of our own: a client's exception text
        can quote a request (and a signed one carries the access key id), so none of it is repeated."""
        shown = self.uri.display
        if not self.uri.is_prefix or key != self.uri.path:
            shown = f"s3://{self.bucket}/{key}"
        if isinstance(error, botocore.exceptions.ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            code = code if code.isalnum() else ""
            if status in _REFUSED or code in _CREDENTIALS_REFUSED:
                detail = f"{status}" if code in {"", "AccessDenied", str(status)} else f"{status} {code}"
                said = _REFUSED.get(status, "access denied")
                return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: {said} ({detail})")
            if code == "NoSuchBucket":
                return FetchError(
                    Reason.ARTIFACT_UNREACHABLE, f"{shown}: no such bucket {self.bucket!r} (404)"
                )
            if status == 404:
                hint = "" if self.uri.is_prefix else "; a directory's URI ends with /"
                return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: not found (404){hint}")
            return FetchError(
                Reason.ARTIFACT_UNREACHABLE, f"{shown}: the store answered {code or 'an error'} ({status})"
            )
        if isinstance(error, botocore.exceptions.ParamValidationError):
            return FetchError(Reason.INVALID_ARTIFACT, f"{shown}: not a valid bucket or key")
        if isinstance(
            error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
        ):
            return FetchError(
                Reason.ARTIFACT_UNREACHABLE,
                f"{shown}: incomplete credentials (AWS_ACCESS_KEY_ID needs AWS_SECRET_ACCESS_KEY)",
            )
        if isinstance(error, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
            return FetchError(
                Reason.ARTIFACT_UNREACHABLE, f"{shown}: {self._endpoint()} did not answer in time"
            )
        if isinstance(
            error, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError
        ):
            return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: cannot reach {self._endpoint()}")
        if isinstance(
            error, botocore.exceptions.IncompleteReadError | botocore.exceptions.ResponseStreamingError
        ):
            return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: the connection was cut mid-transfer")
        return FetchError(
            Reason.ARTIFACT_UNREACHABLE, f"{shown}: {type(error).__name__} from {self._endpoint()}"
        )

    def _endpoint(self) -> str:
        return display_uri(self.endpoint) if "://" in self.endpoint else self.endpoint
