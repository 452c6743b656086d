"""Artifact URIs: what each scheme names, and how to show a URI without the secrets it may carry."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from modelfleet.fetch.errors import FetchError
from modelfleet.fetch.report import Reason

SCHEMES = ("s3", "http", "https", "pvc")
FORMS = "s3://BUCKET/KEY, s3://BUCKET/PREFIX/, http(s)://HOST/PATH or pvc://CLAIM/PATH"


@dataclass(frozen=True)
class ArtifactUri:
    scheme: str  # s3 | http | https | pvc
    location: str  # bucket (s3), claim (pvc), host[:port] (http)
    path: str  # key or prefix (s3), path inside the claim (pvc), the URL path (http); no leading slash
    url: str  # the URI as given (http: the URL to request)
    display: str  # the URI for messages: no user:password, no query (a presigned URL's signature)

    @property
    def is_prefix(self) -> bool:
        """An s3:// URI ending in `/` names every object under the prefix."""
        return self.scheme == "s3" and (self.path == "" or self.path.endswith("/"))

    @property
    def basename(self) -> str:
        """The file name a single-file artifact lands as in the destination."""
        return unquote(self.path.rstrip("/").rsplit("/", 1)[-1])


def parse_uri(uri: str) -> ArtifactUri:
    """Parse an artifact URI. FetchError UnsupportedScheme or InvalidArtifact, naming the accepted forms."""
    scheme, sep, _ = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "models":
        raise FetchError(
            Reason.UNSUPPORTED_SCHEME,
            "models:/ (the MLflow registry) is not fetched yet: give the artifact's s3://, http(s):// "
            "or pvc:// URI",
        )
    if not sep or scheme not in SCHEMES:
        shown = scheme if sep else uri[:40]
        raise FetchError(Reason.UNSUPPORTED_SCHEME, f"unsupported scheme {shown!r}: expected {FORMS}")
    parts = urlsplit(uri)
    display = display_uri(uri)
    if not parts.netloc:
        raise FetchError(Reason.INVALID_ARTIFACT, f"{display}: no {_location_name(scheme)}; expected {FORMS}")
    if scheme in {"http", "https"}:
        name = unquote(parts.path.rsplit("/", 1)[-1])
        if name in {"", ".", ".."} or parts.fragment:
            raise FetchError(Reason.INVALID_ARTIFACT, f"{display}: an http(s) artifact is a single file")
        return ArtifactUri(scheme, parts.hostname or "", parts.path.lstrip("/"), uri, display)
    if parts.username or parts.password or parts.query or parts.fragment or parts.port:
        raise FetchError(Reason.INVALID_ARTIFACT, f"{display}: expected {FORMS}")
    path = parts.path.lstrip("/")
    if scheme == "s3":
        if not path and not parts.path:
            raise FetchError(
                Reason.INVALID_ARTIFACT,
                f"{display}: names no object: s3://BUCKET/KEY, or s3://BUCKET/PREFIX/ for a directory",
            )
        return ArtifactUri(scheme, parts.netloc, path, uri, display)
    segments = [s for s in path.split("/") if s]
    if any(s in {".", ".."} for s in segments):
        raise FetchError(Reason.INVALID_ARTIFACT, f"{display}: the path must stay inside the claim")
    return ArtifactUri(scheme, parts.netloc, "/".join(segments), uri, display)


def _location_name(scheme: str) -> str:
    return {"s3": "bucket", "pvc": "claim"}.get(scheme, "host")


def display_uri(uri: str) -> str:
    """`uri` without user:password, query and fragment."""
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def uri_secrets(uri: str) -> list[str]:
    """The parts of a URI that are secrets: a user:password and a query (which may carry a signature)."""
    parts = urlsplit(uri)
    found = [p for p in (parts.password, parts.query) if p]
    found += [value for _, _, value in (item.partition("=") for item in parts.query.split("&")) if value]
    return found
