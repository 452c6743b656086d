"""The inference router's configuration: what the operator writes into the router's ConfigMap.

The JSON is camelCase like the CRDs, under the ConfigMap key `config.json`:

    {"deployment": "iris",
     "versions": [{"name": "iris-v2", "url": "http://iris-v2.ml.svc:8080", "weight": 90, "role": "stable"},
                  {"name": "iris-v3", "url": "http://iris-v3.ml.svc:8080", "weight": 10, "role": "canary"},
                  {"name": "iris-v1", "url": "http://iris-v1.ml.svc:8080", "weight": 0, "role": "previous"},
                  {"name": "iris-h", "url": "http://iris-h.ml.svc:8080", "weight": 0, "role": "fallback"}],
     "mirrorPercent": 0,
     "fallback": {"timeout": "2s", "retryOnStable": true,
                  "circuitBreaker": {"errorRate": 0.5, "minRequests": 20, "window": "10s", "openFor": "30s"},
                  "response": {"statusCode": 200, "contentType": "application/json", "body": "{...}"},
                  "active": false},
     "feedback": {"tokenFile": "/etc/modelfleet/feedback/token", "maxPredictions": 10000, "maxPairs": 1000},
     "capture": {"percent": 5, "uri": "s3://captures/iris/", "redact": ["email"], "compression": "gzip",
                 "batchRecords": 1000, "batchBytes": 8388608, "flushInterval": "10s",
                 "bufferRecords": 10000, "bufferBytes": 33554432, "maxRecordBytes": 1048576}}

Exactly one version is `stable`. At most one is `previous`: the stable version before the last promotion,
kept while it is still warm; it takes no live traffic (its weight is 0) and covers stable in the fallback
chain. At most one is `fallback`: the Deployment's `spec.fallback.version`, kept warm; its weight is 0 too,
and it is the chain's last version, after stable and previous, before `fallback.response`. `fallback` has
the fields of a Deployment's `spec.fallback` except `version` (that is the `fallback` version), and
`active`: while the stable version fails its Monitor with `onDegraded: Fallback` the operator sets it, and
every request that would go to stable goes to the fallback version instead (or, without one, is answered
by `fallback.response`), stable still next in the chain. `feedback`, present when the Deployment has
`spec.feedback`, turns on the ground-truth endpoint; it names the file that holds the token (the Secret
mounted into the router pod), never the token: this document is a ConfigMap, and the router's admin port
shows it at /config. `capture`, present when the Deployment has `spec.capture`, writes that share of the
answers versions gave clients, with their requests, to `uri` in batches (`modelfleet.router.capture`): an
S3 prefix, whose credentials reach the router pod as environment, never this document, or a directory
(`file:///mnt/capture/PATH`: the claim of a `pvc://CLAIM/PATH` destination, mounted). This module depends
on pydantic and the shared types of `modelfleet.api.common`, so that the router, the operator and tests
can all read and write the same document.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from modelfleet.api.common import ApiModel, Duration, format_duration, parse_duration

__all__ = [
    "CONFIG_KEY",
    "Capture",
    "CircuitBreaker",
    "Fallback",
    "Feedback",
    "Role",
    "RouterConfig",
    "StaticResponse",
    "Version",
    "format_duration",
    "host_port",
    "parse_duration",
]

CONFIG_KEY = "config.json"
"""The ConfigMap data key that holds the router configuration."""


class CircuitBreaker(ApiModel):
    """Stop sending to a version whose recent error rate is too high, for `openFor`."""

    error_rate: float = Field(default=0.5, gt=0, le=1, description="share of failed requests that opens it")
    min_requests: int = Field(default=20, ge=1, description="requests in the window before it can open")
    window: Duration = Field(default=10.0, gt=0, description="sliding window the error rate is measured over")
    open_for: Duration = Field(default=30.0, gt=0, description="how long it stays open before a probe")


class StaticResponse(ApiModel):
    """The heuristic answer of last resort, when no version can answer."""

    status_code: int = Field(default=200, ge=200, le=599)
    content_type: str = Field(default="application/json", min_length=1)
    body: str = ""

    @field_validator("content_type")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("contentType must be a single line")
        return value


class Fallback(ApiModel):
    """What the router does when the chosen version fails (a Deployment's `spec.fallback`)."""

    timeout: Duration = Field(default=2.0, gt=0, description="per-attempt upstream timeout")
    retry_on_stable: bool = True
    circuit_breaker: CircuitBreaker | None = Field(default_factory=CircuitBreaker)
    response: StaticResponse | None = None
    active: bool = Field(
        default=False,
        description="the stable version fails its Monitor (onDegraded: Fallback): what would go to stable "
        "goes to the fallback version, or is answered by the response without one",
    )


class Feedback(ApiModel):
    """Ground truth: labels that clients send for the predictions the router served (`spec.feedback`)."""

    token_file: str = Field(
        min_length=2,
        description="absolute path of the file holding the bearer token labels must carry: the key of the "
        "Deployment's spec.feedback.tokenSecret, mounted into the router pod",
    )
    max_predictions: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="served predictions each router remembers for labels to join; the oldest go first",
    )
    max_pairs: int = Field(
        default=1000, ge=1, le=100_000, description="joined (prediction, label) pairs kept per version"
    )

    @field_validator("token_file")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/") or "\0" in value:
            raise ValueError(f"tokenFile must be an absolute path, got {value!r}")
        return value


_MIB = 1024 * 1024
_S3_URI = re.compile(r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/\S*)?$")


class Capture(ApiModel):
    """Payload capture: a share of what versions answered clients, with the requests, written in batches
    (`spec.capture`). The bounds keep a router's memory and objects small whatever the traffic."""

    percent: float = Field(gt=0, le=100, description="share of answers captured, in percent")
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="s3://BUCKET/PREFIX, or file:///DIR: an absolute directory (a mounted claim)",
    )
    redact: list[str] = Field(
        default_factory=list, max_length=64, description="field names whose values are never written"
    )
    compression: Literal["gzip", "none"] = Field(
        default="gzip", description="gzip: objects are .jsonl.gz; none: .jsonl"
    )
    batch_records: int = Field(default=1000, ge=1, le=100_000, description="records in one object at most")
    batch_bytes: int = Field(
        default=8 * _MIB, ge=1024, le=256 * _MIB, description="an object is written once this much waits"
    )
    flush_interval: Duration = Field(
        default=10.0, gt=0, le=3600, description="what is buffered is written at least this often"
    )
    buffer_records: int = Field(
        default=10_000, ge=1, le=1_000_000, description="records waiting to be written; more are dropped"
    )
    buffer_bytes: int = Field(
        default=32 * _MIB, ge=1024, le=1024 * _MIB, description="bytes of bodies waiting; more are dropped"
    )
    max_record_bytes: int = Field(
        default=_MIB, ge=1024, le=256 * _MIB, description="a request and answer larger than this are dropped"
    )

    @field_validator("uri")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not _S3_URI.match(value):
                raise ValueError(f"uri {value!r} is not s3://BUCKET/PREFIX")
            return value
        if value.startswith("file:///"):
            path = value[len("file://") :]
            if "\0" in path or ".." in path.split("/") or any(c.isspace() for c in path):
                raise ValueError(f"uri {value!r} must be an absolute directory without '..'")
            return value
        raise ValueError(f"uri {value!r} must be s3://BUCKET/PREFIX or file:///DIR")

    @field_validator("redact")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not name or len(name) > 256 for name in value):
            raise ValueError("redact names must be 1 to 256 characters long")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Capture:
        if self.batch_records > self.buffer_records:
            raise ValueError(
                f"capture.batchRecords {self.batch_records} is more than bufferRecords {self.buffer_records}"
            )
        if self.max_record_bytes > self.buffer_bytes:
            raise ValueError(
                f"capture.maxRecordBytes {self.max_record_bytes} is more than bufferBytes {self.buffer_bytes}"
            )
        return self


Role = Literal["stable", "canary", "previous", "fallback"]
Protocol = Literal["v2", "v1", "http"]


class Version(ApiModel):
    """One model version the router sends traffic to."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    url: str = Field(description="http://host:port of the version's Service")
    weight: int = Field(default=0, ge=0, le=100, description="relative share of live traffic")
    role: Role = "canary"
    protocol: Protocol = "v2"

    @field_validator("url")
    @classmethod
    def _plain_http_origin(cls, value: str) -> str:
        host_port(value)
        return value

    @property
    def host(self) -> str:
        return host_port(self.url)[0]

    @property
    def port(self) -> int:
        return host_port(self.url)[1]


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of an `http://host[:port]` URL; anything else is refused with the reason."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"url {url!r} must start with http:// (the router speaks plain HTTP/1.1 upstream)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"url {url!r} must be only http://host:port, without path, query or credentials")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"url {url!r} has an invalid port") from error
    if not parts.hostname:
        raise ValueError(f"url {url!r} has no host")
    return parts.hostname, 80 if port is None else port


class RouterConfig(ApiModel):
    """Everything one router needs to serve one Deployment."""

    deployment: str = Field(min_length=1, max_length=253)
    versions: list[Version] = Field(min_length=1)
    mirror_percent: float = Field(default=0.0, ge=0, le=100, description="share of stable traffic copied")
    fallback: Fallback = Field(default_factory=Fallback)
    feedback: Feedback | None = Field(default=None, description="ground truth; None: the endpoint is off")
    capture: Capture | None = Field(default=None, description="payload capture; None: nothing is captured")

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        names = [version.name for version in self.versions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"version names must be unique; repeated: {', '.join(duplicates)}")
        stable = [version.name for version in self.versions if version.role == "stable"]
        if len(stable) != 1:
            raise ValueError(f"exactly one version must have role stable, found {len(stable)}")
        previous = [version for version in self.versions if version.role == "previous"]
        if len(previous) > 1:
            raise ValueError(
                f"at most one version may have role previous, found {len(previous)}: "
                + ", ".join(version.name for version in previous)
            )
        if previous and previous[0].weight != 0:
            raise ValueError(
                f"version {previous[0].name} has role previous and weight {previous[0].weight}: "
                "the previous version takes no live traffic, its weight must be 0"
            )
        fallback = [version for version in self.versions if version.role == "fallback"]
        if len(fallback) > 1:
            raise ValueError(
                f"at most one version may have role fallback, found {len(fallback)}: "
                + ", ".join(version.name for version in fallback)
            )
        if fallback and fallback[0].weight != 0:
            raise ValueError(
                f"version {fallback[0].name} has role fallback and weight {fallback[0].weight}: "
                "the fallback version takes traffic only in the chain or while fallback.active, its weight "
                "must be 0"
            )
        if self.fallback.active and not fallback and self.fallback.response is None:
            raise ValueError("fallback.active needs a version with role fallback or a fallback.response")
        if sum(version.weight for version in self.versions) == 0:
            raise ValueError("at least one version needs a weight above 0")
        return self

    @property
    def stable(self) -> Version:
        return next(version for version in self.versions if version.role == "stable")

    @property
    def canaries(self) -> list[Version]:
        return [version for version in self.versions if version.role == "canary"]

    @property
    def previous(self) -> Version | None:
        """The previous stable version, kept warm as the last fallback after stable; None without one."""
        return next((version for version in self.versions if version.role == "previous"), None)

    @property
    def fallback_version(self) -> Version | None:
        """The Deployment's fallback version, kept warm as the chain's last version; None without one."""
        return next((version for version in self.versions if version.role == "fallback"), None)

    def to_json(self) -> str:
        """The camelCase JSON the router reads (the ConfigMap's `config.json`)."""
        return self.model_dump_json(by_alias=True)
