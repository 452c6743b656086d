"""http:// and https://: a single file. Optional credentials from the environment:
MODELFLEET_HTTP_AUTHORIZATION (the whole Authorization header value, e.g. `Bearer ...`), or
MODELFLEET_HTTP_USERNAME and MODELFLEET_HTTP_PASSWORD for basic auth. Redirects are followed; the
Authorization header is dropped on a redirect to another host.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason
from modelfleet.fetch.sources import CHUNK, Entry, Listing, Timeouts
from modelfleet.fetch.uri import ArtifactUri

_REFUSED = {401: "unauthorized", 403: "access denied", 404: "not found", 410: "gone"}


def auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    if env.get("MODELFLEET_HTTP_AUTHORIZATION"):
        return {"Authorization": env["MODELFLEET_HTTP_AUTHORIZATION"]}
    user, password = env.get("MODELFLEET_HTTP_USERNAME", ""), env.get("MODELFLEET_HTTP_PASSWORD", "")
    if user or password:
        return urllib3.make_headers(basic_auth=f"{user}:{password}")
    return {}


class _ResponseStream:
    def __init__(self, source: HttpSource, response: urllib3.BaseHTTPResponse) -> None:
        self._source = source
        self._response = response
        length = response.headers.get("Content-Length", "")
        self.size: int | None = int(length) if length.isdigit() else None

    def chunks(self) -> Iterator[bytes]:
        try:
            # read1 (urllib3 2): whatever has arrived, up to CHUNK, so that a slow server still shows
            # progress and meets the deadline between chunks
            read1 = getattr(self._response, "read1", None)
            if read1 is None:
                yield from self._response.stream(64 * 1024, decode_content=True)
                return
            while chunk := read1(CHUNK):
                yield chunk
        except (Urllib3Error, OSError) as error:
            raise self._source.error(error) from None

    def close(self) -> None:
        self._response.release_conn()


class HttpSource:
    def __init__(self, uri: ArtifactUri, env: Mapping[str, str], timeouts: Timeouts) -> None:
        self.uri = uri
        self.headers = {"Accept-Encoding": "identity", "User-Agent": "modelfleet-fetch", **auth_headers(env)}
        self.pool = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
            retries=urllib3.Retry(total=3, connect=2, read=0, status=0, redirect=5, backoff_factor=0.5),
        )

    def listing(self) -> Listing:
        return Listing((Entry(self.uri.basename, None, self.uri.url),), is_directory=False)

    def open(self, entry: Entry) -> _ResponseStream:
        try:
            response = self.pool.request(
                "GET", entry.ref, headers=self.headers, preload_content=False, redirect=True
            )
        except (Urllib3Error, OSError) as error:
            raise self.error(error) from None
        if response.status != 200:
            response.release_conn()
            said = _REFUSED.get(response.status, "answered")
            raise FetchError(Reason.ARTIFACT_UNREACHABLE, f"{self.uri.display}: {said} ({response.status})")
        return _ResponseStream(self, response)

    def close(self) -> None:
        self.pool.clear()

    def error(self, error: Exception) -> FetchError:
        """What went wrong, in words of our own (the exception texts quote the URL, query and all)."""
        shown = self.uri.display
        cause = error.reason if isinstance(error, MaxRetryError) else error
        if isinstance(cause, NewConnectionError):
            return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: cannot connect to {self.uri.location}")
        if isinstance(cause, Urllib3Timeout | TimeoutError):
            return FetchError(
                Reason.ARTIFACT_UNREACHABLE, f"{shown}: {self.uri.location} did not answer in time"
            )
        if isinstance(cause, SSLError):
            return FetchError(
                Reason.ARTIFACT_UNREACHABLE, f"{shown}: TLS handshake with {self.uri.location} failed"
            )
        if isinstance(cause, ProtocolError):
            return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: the connection was cut mid-transfer")
        return FetchError(Reason.ARTIFACT_UNREACHABLE, f"{shown}: {type(cause).__name__}")
