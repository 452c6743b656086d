"""`ModelVersion`: one immutable, deployable build of a Model."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, JsonValue, StringConstraints, field_validator, model_validator

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


DEFAULT_PORT = 8080

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
#: Where an artifact may come from: S3 (any S3-compatible store), HTTP(S), a PersistentVolumeClaim, or
#: the MLflow model registry.
ARTIFACT_SCHEMES = ("s3://", "http://", "https://", "pvc://", "models:/")
ARTIFACT_URI_RULE = (
    "self.matches('^(s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/\\\\S*)?"
    "|https?://[^/\\\\s]+(/\\\\S*)?"
    "|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/\\\\S*)?"
    "|models:/\\\\S+)$')"
)
ArtifactUri = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": ARTIFACT_URI_RULE,
                    "message": "uri must be s3://BUCKET/KEY, http(s)://HOST/PATH, pvc://CLAIM/PATH"
                    " or models:/NAME/VERSION",
                }
            ]
        }
    ),
]
#: `sha256:` and 64 lower-case hex digits.
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
Digest = Annotated[str, StringConstraints(max_length=71, pattern=DIGEST_PATTERN)]
#: A model format word that Runtimes list: sklearn, xgboost, lightgbm, mlflow, onnx, ...
FORMAT_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
Format = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=FORMAT_PATTERN)]
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


class DatasetLineage(ApiModel):
    """A dataset the training run read, as the experiment tracker logged it."""

    name: ShortText = ""
    """The dataset's name."""
    digest: ShortText = ""
    """The tracker's digest of the dataset."""
    source: Text = ""
    """Where the dataset was read from (URI or table name)."""
    context: ShortText = ""
    """How the run used it: training, evaluation ..."""


class SignatureLineage(ApiModel):
    """The model's input and output schema, as the tracker recorded it (MLflow's signature, JSON)."""

    inputs: LongText = ""
    """The input schema."""
    outputs: LongText = ""
    """The output schema."""


class Lineage(ApiModel):
    """Provenance of a version: code, data, training run, parameters and offline metrics. Immutable."""

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
    params: dict[Annotated[str, StringConstraints(max_length=250)], ShortText] = Field(
        default_factory=dict, max_length=100
    )
    """Training parameters by name, e.g. {max_depth: "3"}."""
    datasets: tuple[DatasetLineage, ...] = Field(default=(), max_length=16)
    """The datasets the training run read."""
    signature: SignatureLineage | None = None
    """The model's input and output schema."""


class ArtifactCredentials(ApiModel):
    """Where the fetcher finds the credentials of the artifact's store."""

    secret_name: Name
    """A Secret in the version's namespace, given to the fetcher as environment: AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION for s3://;
    MODELFLEET_HTTP_AUTHORIZATION for http(s)://. The operator never reads an artifact's (its pods and
    check pods get it); a reference profile's it reads itself (the chart's referenceProfiles.readSecrets)."""


class Artifact(ApiModel):
    """A model file or directory in object storage, served by a shared runtime."""

    uri: ArtifactUri
    """s3://BUCKET/KEY (a trailing / takes every object under the prefix), http(s)://HOST/PATH,
    pvc://CLAIM/PATH, or models:/NAME/VERSION (MLflow)."""
    digest: Digest | None = None
    """sha256 of the file, or of the directory's manifest (`modelfleet digest PATH` prints it); checked
    before the version is rolled out and on every download. Required when the Model sets
    governance.requireDigest."""
    format: Format
    """The model format, which picks the runtime: sklearn, xgboost, lightgbm, mlflow, onnx, or any other
    word a Runtime lists."""
    credentials: ArtifactCredentials | None = None
    """The Secret holding the store's credentials; none for a public store."""


class ReferenceData(ApiModel):
    """A profile of the training data (`modelfleet profile`), the reference of the dataDrift metric."""

    uri: ArtifactUri
    """Where the profile is, with the schemes of artifact.uri."""
    digest: Digest | None = None
    """sha256 of the profile file (`modelfleet digest PATH` prints it), checked on every download."""
    credentials: ArtifactCredentials | None = None
    """The Secret holding the store's credentials, with the keys of artifact.credentials' Secret; none
    for a public store. The operator reads it to read the profile (get, granted by the chart's
    referenceProfiles.readSecrets)."""


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


def _unchanged(field: str) -> dict[str, JsonValue]:
    """A CEL rule on spec that an optional field is neither added, removed nor changed."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field})"
        f" && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"{field} is immutable",
    }


class ModelVersionSpec(ApiModel):
    """One immutable, deployable build of a Model: a container image that serves it over HTTP, or an
    artifact in object storage that a shared runtime serves."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # Optional fields: a rule on the field itself would not stop adding or removing it
                # after creation; the rule on spec sees both.
                *[_unchanged(f) for f in ("image", "artifact", "runtime", "reference", "lineage")],
                *[_unchanged(f) for f in ("port", "protocol")],
                {
                    "rule": "has(self.image) != has(self.artifact)",
                    "message": "exactly one of image and artifact must be set",
                },
                {
                    "rule": "!has(self.artifact) || (!has(self.port) && !has(self.protocol)"
                    " && !has(self.readinessPath))",
                    "message": "port, protocol and readinessPath of an artifact version"
                    " come from its runtime",
                },
                {
                    "rule": "!has(self.runtime) || has(self.artifact)",
                    "message": "runtime applies to an artifact version only",
                },
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
    image: Image | None = None
    """Container image that serves the model over HTTP, the model inside. Exactly one of image and
    artifact. Immutable."""
    artifact: Artifact | None = None
    """The model as a file or directory in object storage, served by a runtime. Exactly one of image
    and artifact. Immutable."""
    runtime: Name | None = None
    """The Runtime (this namespace) or ClusterRuntime that serves the artifact; default: one that lists
    artifact.format, a Runtime before a ClusterRuntime, by name. Immutable."""
    reference: ReferenceData | None = None
    """The training-data profile that the dataDrift metric compares live inputs with. Immutable."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port the model server listens on; default 8080. An artifact version takes its runtime's. Immutable."""
    protocol: Protocol | None = None
    """v2 (Open Inference Protocol), v1, or http (forwarded as is); default v2. An artifact version
    takes its runtime's. Immutable."""
    readiness_path: Path | None = None
    """HTTP path of the readiness probe. Default follows protocol: /v2/health/ready for v2, / otherwise.
    An artifact version takes its runtime's."""
    args: tuple[Annotated[str, StringConstraints(max_length=4096)], ...] = Field(default=(), max_length=64)
    """Arguments passed to the container (after the runtime's, for an artifact version)."""
    env: tuple[EnvVar, ...] = Field(default=(), max_length=64)
    """Environment variables of the container (core/v1 EnvVar); for an artifact version they are added to
    the runtime's, and win by name."""
    resources: ResourceRequirements | None = None
    """CPU and memory of the container (core/v1 ResourceRequirements); for an artifact version they
    replace the runtime's."""
    lineage: Lineage | None = None
    """Provenance: code, data, run and offline metrics. Immutable once created."""
    approval: Approval | None = None
    """Governance record: approved, by whom, why."""

    @model_validator(mode="after")
    def _image_or_artifact(self) -> ModelVersionSpec:
        if (self.image is None) == (self.artifact is None):
            raise ValueError("exactly one of image and artifact must be set")
        return self

    @property
    def serving_port(self) -> int:
        """The port of an image version's server (8080 unless set)."""
        return self.port or DEFAULT_PORT

    @property
    def serving_protocol(self) -> Protocol:
        """The protocol of an image version's server (v2 unless set)."""
        return self.protocol or Protocol.V2

    @property
    def serving_readiness_path(self) -> str:
        """The readiness path of an image version's server (following its protocol unless set)."""
        return self.readiness_path or DEFAULT_READINESS_PATHS[self.serving_protocol]


class ModelVersionPhase(StrEnum):
    PENDING = "Pending"
    """Not checked yet, or its Model does not exist."""
    READY = "Ready"
    """Meets its Model's rules and may be rolled out."""
    REJECTED = "Rejected"
    """Breaks its Model's rules (image not allowed, approval missing) or its artifact failed its check
    (unreachable, digest mismatch, no runtime); not served."""
    SERVING = "Serving"
    """Taking traffic in at least one Deployment."""
    RETIRED = "Retired"
    """Served before, not any more."""


class ArtifactStatus(StatusModel):
    """What the operator's check found of the artifact."""

    size: Annotated[int, Field(ge=0)] | None = None
    """Bytes of the artifact (all files of a directory)."""
    files: Annotated[int, Field(ge=0)] | None = None
    """Files in the artifact (1 for a file)."""
    digest: ShortText = ""
    """The digest that was verified (spec.artifact.digest, or the one computed when none is given)."""
    verified_at: Time | None = None
    """When the check downloaded the artifact and found it as spec.artifact says."""
    runtime: ShortText = ""
    """The runtime that serves it, as Kind/name, e.g. ClusterRuntime/mlserver-sklearn."""
    checks: Annotated[int, Field(ge=0)] = 0
    """Checks run for this version (a check whose store was unreachable is repeated)."""
    last_check_at: Time | None = None
    """When the last check started."""


#: The production record of a version holds at most this many entries (the newest).
VERSION_HISTORY_LIMIT = 20


class ProductionResult(StrEnum):
    """How one stretch of a version's life in a Deployment ended."""

    PROMOTED = "Promoted"
    """It became the Deployment's stable version (also when a rollback made it stable again)."""
    ROLLED_BACK = "RolledBack"
    """Its rollout failed its analysis or deadline, or it was rolled back after its promotion."""
    ABORTED = "Aborted"
    """Its rollout was stopped before it ended: by hand (modelfleet.io/abort), or because spec.version
    or the rollout's spec changed (the Deployment's Superseded); the reason says which."""
    RETIRED = "Retired"
    """It stopped being the Deployment's stable version: another version was promoted, or the
    Deployment was deleted."""


class ProductionEntry(StatusModel):
    """One entry of a version's production record: what happened to it in one Deployment."""

    deployment: Name
    """The Deployment (same namespace)."""
    result: ProductionResult
    """Promoted, RolledBack, Aborted or Retired."""
    reason: Text = ""
    """Why, e.g. `errors 0.31 > 0.05` or `replaced by iris-v3`."""
    started_at: Time | None = None
    """When the rollout started (Promoted, RolledBack, Aborted), or when the version became stable
    (Retired), if known."""
    finished_at: Time | None = None
    """When it ended so."""


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
    artifact: ArtifactStatus | None = None
    """For an artifact version: what the operator's check found, and the runtime that serves it."""
    history: tuple[ProductionEntry, ...] = Field(default=(), max_length=VERSION_HISTORY_LIMIT)
    """The production record, newest first (at most 20): promotions, rollbacks, aborts and
    retirements in every Deployment, kept after the Deployment trims its own history or is deleted."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready: may be rolled out (or is serving). Approved: governance allows it to take traffic."""

    @field_validator("history", mode="before")
    @classmethod
    def _bound_history(cls, value: object) -> object:
        # A status written by an operator with a larger bound still parses: keep the newest entries.
        if isinstance(value, list | tuple) and len(value) > VERSION_HISTORY_LIMIT:
            return value[:VERSION_HISTORY_LIMIT]
        return value


class ModelVersion(Resource[ModelVersionSpec, ModelVersionStatus]):
    """One immutable, deployable build of a Model."""

    KIND: ClassVar[str] = "ModelVersion"
    kind: str = "ModelVersion"
    """ModelVersion."""
