"""`Model`: a registered model, the registry entry that ModelVersions belong to."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from modelfleet.api.common import (
    ApiModel,
    Condition,
    Duration,
    Generation,
    Name,
    Resource,
    ShortText,
    StatusModel,
    Text,
    Time,
    condition_list,
    parse_duration,
)

ImagePrefix = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^\S+$")]


class Governance(ApiModel):
    """Rules every version of the model must meet before it may take traffic."""

    require_approval: bool = False
    """Versions must carry `approval.approved: true` before any Deployment rolls them out."""
    allowed_images: tuple[ImagePrefix, ...] = Field(default=(), max_length=64)
    """Image prefixes a version's image (or its runtime's image) must start with, e.g.
    `registry.example.com/ml/`. Empty allows any."""
    require_digest: bool = False
    """Artifact versions must give artifact.digest, so what is served is exactly what was registered."""

    def image_allowed(self, image: str) -> bool:
        """Whether `image` starts with one of the allowed prefixes (always, when there are none)."""
        return not self.allowed_images or any(image.startswith(p) for p in self.allowed_images)


TrackingUri = Annotated[
    str, StringConstraints(min_length=8, max_length=1024, pattern=r"^https?://[^/\s]+(/\S*)?$")
]
#: An MLflow registered model name: MLflow allows most characters; slashes and control characters are refused.
RegisteredModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^/\x00-\x1f]+$")
]
#: An MLflow alias: letters, digits, `_` and `-`, as MLflow itself allows.
AliasName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_-]+$")]

#: Shortest pollInterval accepted: a tracking server is a shared service.
MIN_POLL_SECONDS = 5.0


class SecretRef(ApiModel):
    """A Secret in the Model's namespace."""

    secret_name: Name
    """The Secret's name."""


class WebhookSecretRef(ApiModel):
    """The Secret holding the shared secret MLflow signs its webhook calls with."""

    secret_name: Name
    """The Secret's name, in the Model's namespace."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = (
        "secret"
    )
    """The key of the Secret that holds the shared secret."""


class MlflowSource(ApiModel):
    """An MLflow registered model whose versions the operator mirrors into ModelVersions."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # our durations are a subset of Go's, which CEL's duration() parses
                    "rule": "!has(self.pollInterval) || duration(self.pollInterval) >= duration('5s')",
                    "message": "pollInterval must be at least 5s",
                }
            ]
        }
    )

    tracking_uri: TrackingUri
    """The tracking server, e.g. http://mlflow.mlflow.svc:5000."""
    registered_model: RegisteredModelName
    """The registered model in MLflow whose versions become ModelVersions `<model>-v<N>`."""
    credentials: SecretRef | None = None
    """A Secret with MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; the
    operator reads it to call the tracking server. None: the server needs no authentication."""
    poll_interval: Duration = parse_duration("30s")
    """How often the operator asks the tracking server for changes (at least 5s); webhooks, when set,
    make changes arrive within seconds."""
    runtime: Name | None = None
    """The Runtime or ClusterRuntime that serves the imported versions (format mlflow); default: one
    that lists the format."""
    artifact_credentials: SecretRef | None = None
    """The Secret giving the fetcher access to MLflow's artifact store (AWS_ACCESS_KEY_ID ... as for
    artifact.credentials), set on every imported version. None: a public store."""
    webhook: WebhookSecretRef | None = None
    """Where the shared secret of MLflow's webhooks is: calls signed with it wake the sync; calls
    without a valid, fresh signature are refused. None: polling only."""

    @model_validator(mode="after")
    def _check(self) -> MlflowSource:
        if self.poll_interval < MIN_POLL_SECONDS:
            raise ValueError(f"pollInterval must be at least {MIN_POLL_SECONDS:g}s")
        return self


class ModelSource(ApiModel):
    """Where the Model's versions come from, when another registry is the registry of record."""

    mlflow: MlflowSource | None = None
    """Mirror an MLflow registered model."""


class ModelSpec(ApiModel):
    """The registry entry: what the model is, who owns it, and the rules its versions follow."""

    description: Text = ""
    """What the model does, for people."""
    owner: ShortText = ""
    """The team or person responsible for the model."""
    task: ShortText = ""
    """The ML task, free text (classification, regression, ranking...)."""
    governance: Governance = Field(default_factory=Governance)
    """Approval and image rules for the model's versions."""
    source: ModelSource | None = None
    """The registry of record the versions are mirrored from (MLflow); none: versions are applied
    as ModelVersions directly."""


class SourceStatus(StatusModel):
    """What the last sync with the registry of record found."""

    last_sync_time: Time | None = None
    """When the registry of record was last read completely (a sync that finds nothing new updates it at
    most every 5 minutes, so that it does not rewrite the status every poll)."""
    versions_seen: Annotated[int, Field(ge=0)] = 0
    """Versions of the registered model at the last sync."""
    aliases: dict[Annotated[str, StringConstraints(max_length=255)], Name] = Field(
        default_factory=dict, max_length=64
    )
    """The registered model's aliases at the last sync, each with the ModelVersion it points at."""
    conditions: tuple[Condition, ...] = condition_list()
    """Synced: the last attempt read the registry of record and mirrored it (False with the reason:
    Unreachable, Unauthorized, NotFound ...)."""


class ModelStatus(StatusModel):
    """What the operator observed about the model and its versions."""

    observed_generation: Generation | None = None
    """The metadata.generation this status was computed from."""
    versions: tuple[Name, ...] = Field(default=(), max_length=1000)
    """Names of the ModelVersions that reference this model, sorted."""
    serving_versions: tuple[Name, ...] = Field(default=(), max_length=1000)
    """Names of the versions taking traffic in some Deployment, sorted."""
    source: SourceStatus | None = None
    """The sync with the registry of record, when spec.source is set."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready: the model is registered and its status is current."""


class Model(Resource[ModelSpec, ModelStatus]):
    """A registered model."""

    KIND: ClassVar[str] = "Model"
    kind: str = "Model"
    """Model."""
