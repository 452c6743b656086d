"""Types shared by every kind: the base models, durations, timestamps, names and conditions.

Everything here is pure: no Kubernetes client, no HTTP. The models mirror the CRD schemas that
`modelfleet.api.crdgen` generates from them, so a value that passes `kubectl apply` also parses here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "modelfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --- durations -------------------------------------------------------------------------------------

#: A duration is one or more <number><unit> parts: `500ms`, `30s`, `2m`, `1h`, `1m30s`, `1.5h`.
#: The same pattern goes into the CRD schema, so the API server rejects what `parse_duration` would.
#: It is also a valid Go duration, so CEL's `duration()` accepts it.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
#: A duration whose every number is zero (`0s`, `0ms0s`); used by rules that need a positive duration.
ZERO_DURATION_PATTERN = r"^([0.]+(ms|s|m|h))+$"
DURATION_MAX_LENGTH = 32

_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | int | float) -> float:
    """Parse a duration like `500ms`, `30s`, `2m`, `1h` or `1m30s` into seconds.

    Plain numbers are taken as seconds. Raises ValueError with the accepted forms on bad input.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: expected a string like 500ms, 30s, 2m or 1h")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return float(text)
    if not isinstance(text, str) or len(text) > DURATION_MAX_LENGTH or not _DURATION_RE.match(text):
        raise ValueError(f"invalid duration {text!r}: expected a string like 500ms, 30s, 2m or 1h")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART_RE.findall(text))


def format_duration(seconds: float) -> str:
    """Render seconds as the shortest duration string that parses back to them (to the millisecond).

    `format_duration(90) == "1m30s"`, `format_duration(0.5) == "500ms"`, `format_duration(0) == "0s"`.
    """
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _validate_duration(value: Any) -> float:
    if isinstance(value, str | int | float):
        return parse_duration(value)
    raise ValueError(f"invalid duration {value!r}: expected a string like 500ms, 30s, 2m or 1h")


#: Seconds as a float in Python; a string like `30s` in YAML and JSON.
Duration = Annotated[
    float,
    BeforeValidator(_validate_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH}),
]

# --- timestamps ------------------------------------------------------------------------------------


def _validate_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"invalid time {value!r}: expected RFC 3339, e.g. 2024-05-01T10:00:00Z"
            ) from None
    if not isinstance(value, datetime):
        raise ValueError(f"invalid time {value!r}: expected RFC 3339, e.g. 2024-05-01T10:00:00Z")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix, as Kubernetes writes times (microseconds kept when present)."""
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


#: An aware UTC datetime in Python; an RFC 3339 string (`2024-05-01T10:00:00Z`) in YAML and JSON.
Time = Annotated[
    datetime,
    BeforeValidator(_validate_time),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]

# --- names and bounded strings ---------------------------------------------------------------------

#: A Kubernetes object name (DNS-1123 subdomain).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=NAME_PATTERN)]
#: A short identifier usable as a Prometheus label value and a DNS label (metric names).
LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"
Label = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=1024)]
LongText = Annotated[str, StringConstraints(max_length=32768)]
Percent = Annotated[int, Field(ge=0, le=100)]
Generation = Annotated[int, Field(ge=0)]

# --- base models -----------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Base of every spec model: frozen, camelCase in YAML, snake_case in Python, unknown fields refused.

    Field docstrings become the field descriptions (and so `kubectl explain` text).
    """

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def to_k8s(self, *, drop_none: bool = True) -> dict[str, Any]:
        """The JSON-ready camelCase dict the API server expects.

        `drop_none=False` keeps null fields, which a merge patch needs to clear them.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=drop_none)


class StatusModel(ApiModel):
    """Base of every status model: like `ApiModel`, but fields it does not know are ignored.

    A status may have been written by an older or newer operator; parsing it must not fail for that.
    """

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


#: CamelCase reason, as in the Kubernetes convention (`RolloutProgressing`, `AnalysisFailed`).
REASON_PATTERN = r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$"


class Condition(StatusModel):
    """An observation of one aspect of the object's state, in the Kubernetes convention."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    """Type of the condition, e.g. Ready, Progressing, Degraded, Approved."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    reason: Annotated[str, StringConstraints(max_length=1024, pattern=REASON_PATTERN)] = ""
    """A CamelCase word that says why the condition is in this status."""
    message: LongText = ""
    """Human-readable details about the last transition."""
    last_transition_time: Time | None = None
    """When the status last changed (not the reason or message)."""
    observed_generation: Generation | None = None
    """The metadata.generation this condition was computed from."""


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of this type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> tuple[Condition, ...]:
    """Return `conditions` with `type_` set; lastTransitionTime moves only when the status changes.

    The order of the other conditions is kept; a new type goes to the end.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = get_condition(conditions, type_)
    changed = old is None or old.status != status or old.last_transition_time is None
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:32768],
        last_transition_time=now if changed or old is None else old.last_transition_time,
        observed_generation=observed_generation,
    )
    if old is None:
        return (*conditions, new)
    return tuple(new if c.type == type_ else c for c in conditions)


def condition_list() -> Any:
    """Field for `status.conditions`: a list keyed by type, as `kubectl wait --for=condition=X` expects."""
    return Field(
        default=(),
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class ObjectMeta(StatusModel):
    """The parts of metadata the operator reads. Other metadata fields are ignored."""

    name: str = ""
    """Name of the object."""
    namespace: str = ""
    """Namespace of the object."""
    uid: str = ""
    """Unique id the API server gave the object."""
    generation: int = 0
    """Sequence number of the spec, bumped by the API server on every spec change."""
    resource_version: str = ""
    """Opaque version of the whole object, for optimistic concurrency."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the object."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the object (manual control: modelfleet.io/promote, abort, retry)."""
    creation_timestamp: Time | None = None
    """When the object was created."""
    deletion_timestamp: Time | None = None
    """When deletion was asked; set while finalizers run."""


class InvalidResourceError(ValueError):
    """A custom resource whose spec does not validate. The message is short and names the fields."""

    def __init__(self, kind: str, name: str, errors: Sequence[str]) -> None:
        self.kind = kind
        self.name = name
        self.errors = tuple(errors)
        super().__init__(f"{kind} {name}: invalid: " + "; ".join(self.errors))


def describe_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem, with a camelCase path: `spec.strategy.canary.steps[1]: ...`."""
    lines = []
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += ("." if path else "") + to_camel(str(part))
        message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        # Lists are tuples in the frozen models; users wrote lists.
        message = message.replace("Tuple should", "List should").replace(" after validation", "")
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _plain(value: Any) -> Any:
    """Deep-copy mappings and sequences (e.g. kopf's body views) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


SpecT = TypeVar("SpecT", bound=ApiModel)
StatusT = TypeVar("StatusT", bound=StatusModel)


class Resource(StatusModel, Generic[SpecT, StatusT]):
    """A whole custom resource: apiVersion, kind, metadata, spec, status."""

    KIND: ClassVar[str] = ""

    api_version: str = API_VERSION
    """The API group and version, modelfleet.io/v1alpha1."""
    kind: str = ""
    """The kind of the resource."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata (only the parts the operator reads)."""
    spec: SpecT
    """The desired state."""
    status: StatusT
    """The observed state, written by the operator."""

    @model_validator(mode="before")
    @classmethod
    def _empty_status(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("status") is None:
            return {**data, "status": {}}
        return data

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        """Parse an object as read from the API server (a dict, or kopf's body).

        The spec is validated strictly; unknown status fields are ignored and a missing status is empty.
        Raises InvalidResourceError naming every bad field.
        """
        data = _plain(obj)
        data.setdefault("kind", cls.KIND)
        meta = data.get("metadata") or {}
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}".strip("/") or "<unnamed>"
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise InvalidResourceError(cls.KIND, name, describe_validation_error(error)) from None
