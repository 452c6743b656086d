"""`Model`: a registered model, the registry entry that ModelVersions belong to."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from modelfleet.api.common import (
    ApiModel,
    Condition,
    Generation,
    Name,
    Resource,
    ShortText,
    StatusModel,
    Text,
    condition_list,
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


class ModelStatus(StatusModel):
    """What the operator observed about the model and its versions."""

    observed_generation: Generation | None = None
    """The metadata.generation this status was computed from."""
    versions: tuple[Name, ...] = Field(default=(), max_length=1000)
    """Names of the ModelVersions that reference this model, sorted."""
    serving_versions: tuple[Name, ...] = Field(default=(), max_length=1000)
    """Names of the versions taking traffic in some Deployment, sorted."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready: the model is registered and its status is current."""


class Model(Resource[ModelSpec, ModelStatus]):
    """A registered model."""

    KIND: ClassVar[str] = "Model"
    kind: str = "Model"
    """Model."""
