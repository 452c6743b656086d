"""`ModelVersion`: one immutable, deployable build of a Model."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, StringConstraints

from modelfleet.api.common import (
    ApiModel,
    Condition,
    Generation,
    LongText,
    Name,
    Resource,
    ShortText,
    StatusModel,
    Text,
    Time,
    condition_list,
)


class Protocol(StrEnum):
    """How the model server speaks HTTP."""

    V2 = "v2"
    """Open Inference Protocol (KServe v2): POST /v2/models/<name>/infer."""
    V1 = "v1"
    """KServe v1 / TensorFlow Serving style: POST /v1/models/<name>:predict."""
    HTTP = "http"
    """Any HTTP API; the router forwards requests as they are."""


#: Where each protocol's server says it is ready, when `readinessPath` is not given.
DEFAULT_READINESS_PATHS: dict[Protocol, str] = {
    Protocol.V2: "/v2/health/ready",
    Protocol.V1: "/",
    Protocol.HTTP: "/",
}


def immutable(field: str) -> dict[str, Any]:
    """CEL rule that refuses any change of a field once the object exists."""
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": f"{field} is immutable"}]}


Image = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^\S+$")]
Path = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^/\S*$")]
#: A resource quantity such as `500m`, `1Gi` or `2` (the pattern of core/v1 Quantity).
_DECIMAL = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY_PATTERN = rf"^(\+|-)?{_DECIMAL}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_DECIMAL}))?$"
Quantity = Annotated[
    Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY_PATTERN)] | int,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


class EnvVar(ApiModel):
    """An environment variable, as in core/v1 EnvVar."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Name of the variable."""
    value: LongText | None = None
    """Literal value."""
    value_from: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """A core/v1 EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef...), passed to the pod as is."""


class ResourceRequirements(ApiModel):
    """CPU and memory for the model server container, as in core/v1 ResourceRequirements."""

    limits: dict[str, Quantity] | None = Field(default=None, max_length=16)
    """Maximum resources, e.g. {cpu: "1", memory: 1Gi}."""
    requests: dict[str, Quantity] | None = Field(default=None, max_length=16)
    """Guaranteed resources, e.g. {cpu: 100m, memory: 256Mi}."""


class SourceLineage(ApiModel):
    """The code the version was built from."""

    repository: Text = ""
    """Repository URL."""
    commit: ShortText = ""
    """Commit id."""
    path: Text = ""
    """Path in the repository, when the model lives in a subfolder."""


class DataLineage(ApiModel):
    """The data the version was trained on."""

    uri: Text = ""
    """Where the training data lives."""
    digest: ShortText = ""
    """Content digest of the data, e.g. sha256:..."""


class RunLineage(ApiModel):
    """The training run that produced the version."""

    id: ShortText = ""
    """Run id in the experiment tracker."""
    uri: Text = ""
    """Link to the run."""


class Lineage(ApiModel):
    """Provenance of a version: code, data, training run and offline metrics. Immutable."""

    source: SourceLineage | None = None
    """The code the version was built from."""
    data: DataLineage | None = None
    """The data the version was trained on."""
    run: RunLineage | None = None
    """The training run that produced the version."""
    metrics: dict[Annotated[str, StringConstraints(max_length=63)], float] = Field(
        default_factory=dict, max_length=64
    )
    """Offline evaluation metrics by name, e.g. {accuracy: 0.973, f1: 0.968}."""


class Approval(ApiModel):
    """The governance record of the version."""

    approved: bool = False
    """Whether the version may take traffic when its Model requires approval."""
    by: ShortText = ""
    """Who approved (or refused) the version."""
    reason: Text = ""
    """Why."""
    time: Time | None = None
    """When the decision was made."""


class ModelVersionSpec(ApiModel):
    """One immutable, deployable build of a Model: a container that serves it over HTTP."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # lineage is optional, so a rule on the field itself would not stop adding or
                    # removing it after creation; the rule on spec sees both.
                    "rule": "has(self.lineage) == has(oldSelf.lineage)"
                    " && (!has(self.lineage) || self.lineage == oldSelf.lineage)",
                    "message": "lineage is immutable",
                }
            ]
        }
    )

    model: Annotated[Name, Field(json_schema_extra=immutable("model"))]
    """The Model (in the same namespace) this is a version of. Immutable."""
    version: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.+]*[A-Za-z0-9])?$"
        ),
        Field(json_schema_extra=immutable("version")),
    ]
    """The version label, e.g. "2" or "2024.05.1". Immutable."""
    image: Annotated[Image, Field(json_schema_extra=immutable("image"))]
    """Container image that serves the model over HTTP. Immutable."""
    port: Annotated[int, Field(ge=1, le=65535, json_schema_extra=immutable("port"))] = 8080
    """Port the model server listens on. Immutable."""
    protocol: Annotated[Protocol, Field(json_schema_extra=immutable("protocol"))] = Protocol.V2
    """v2 (Open Inference Protocol), v1, or http (forwarded as is). Immutable."""
    readiness_path: Path = Field(
        default_factory=lambda data: DEFAULT_READINESS_PATHS.get(data.get("protocol", Protocol.V2), "/")
    )
    """HTTP path of the readiness probe. Default follows protocol: /v2/health/ready for v2, / otherwise."""
    args: tuple[Annotated[str, StringConstraints(max_length=4096)], ...] = Field(default=(), max_length=64)
    """Arguments passed to the container."""
    env: tuple[EnvVar, ...] = Field(default=(), max_length=64)
    """Environment variables of the container (core/v1 EnvVar)."""
    resources: ResourceRequirements | None = None
    """CPU and memory of the container (core/v1 ResourceRequirements)."""
    lineage: Lineage | None = None
    """Provenance: code, data, run and offline metrics. Immutable once created."""
    approval: Approval | None = None
    """Governance record: approved, by whom, why."""


class ModelVersionPhase(StrEnum):
    PENDING = "Pending"
    """Not checked yet, or its Model does not exist."""
    READY = "Ready"
    """Meets its Model's rules and may be rolled out."""
    REJECTED = "Rejected"
    """Breaks its Model's rules (image not allowed, approval missing); not served."""
    SERVING = "Serving"
    """Taking traffic in at least one Deployment."""
    RETIRED = "Retired"
    """Served before, not any more."""


class ModelVersionStatus(StatusModel):
    """What the operator observed about the version."""

    observed_generation: Generation | None = None
    """The metadata.generation this status was computed from."""
    phase: ModelVersionPhase | None = None
    """Pending, Ready, Rejected, Serving or Retired."""
    served_by: tuple[Name, ...] = Field(default=(), max_length=1000)
    """Deployments serving this version, sorted."""
    message: Text = ""
    """Why the version is in its phase, e.g. which rule it breaks."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready: may be rolled out (or is serving). Approved: governance allows it to take traffic."""


class ModelVersion(Resource[ModelVersionSpec, ModelVersionStatus]):
    """One immutable, deployable build of a Model."""

    KIND: ClassVar[str] = "ModelVersion"
    kind: str = "ModelVersion"
    """ModelVersion."""
