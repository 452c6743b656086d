"""`ClusterRuntime` and `Runtime`: the shared model servers that serve artifact versions by format.

A ClusterRuntime is cluster-scoped and serves every namespace; a Runtime is the same, namespaced, and wins
over a ClusterRuntime of the same name in its namespace.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints

from modelfleet.api.common import ApiModel, Condition, Generation, Resource, StatusModel, condition_list
from modelfleet.api.modelversion import (
    DEFAULT_PORT,
    DEFAULT_READINESS_PATHS,
    EnvVar,
    Format,
    Image,
    Path,
    Protocol,
    ResourceRequirements,
)

#: Where the artifact is in the runtime's container; also in its environment as MODELFLEET_MODEL_DIR.
MODEL_DIR = "/mnt/models"


class RuntimeSpec(ApiModel):
    """A model server image that serves artifacts of the listed formats."""

    formats: tuple[Format, ...] = Field(min_length=1, max_length=32)
    """The artifact formats it serves, e.g. [sklearn]; a ModelVersion's artifact.format picks it."""
    image: Image
    """The server's container image; the Model's allowedImages applies to it."""
    protocol: Protocol = Protocol.V2
    """v2 (Open Inference Protocol), v1, or http."""
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORT
    """Port the server listens on."""
    readiness_path: Path | None = None
    """HTTP path of the readiness probe. Default follows protocol: /v2/health/ready for v2, / otherwise."""
    args: tuple[Annotated[str, StringConstraints(max_length=4096)], ...] = Field(default=(), max_length=64)
    """Arguments of the server container."""
    env: tuple[EnvVar, ...] = Field(default=(), max_length=64)
    """Environment of the server container. The artifact is at /mnt/models (MODELFLEET_MODEL_DIR), and
    MODELFLEET_MODEL_NAME and MODELFLEET_MODEL_FORMAT say what it is, before the server starts."""
    resources: ResourceRequirements | None = None
    """CPU and memory of the server container, unless the ModelVersion gives its own."""

    @property
    def serving_readiness_path(self) -> str:
        return self.readiness_path or DEFAULT_READINESS_PATHS[self.protocol]

    def serves(self, format: str) -> bool:
        return format in self.formats


class RuntimeStatus(StatusModel):
    """What the operator observed about the runtime."""

    observed_generation: Generation | None = None
    """The metadata.generation this status was computed from."""
    conditions: tuple[Condition, ...] = condition_list()
    """Ready: the runtime is accepted and artifact versions of its formats may use it."""


class ClusterRuntime(Resource[RuntimeSpec, RuntimeStatus]):
    """A model server for artifacts, shared by every namespace."""

    KIND: ClassVar[str] = "ClusterRuntime"
    kind: str = "ClusterRuntime"
    """ClusterRuntime."""


class Runtime(Resource[RuntimeSpec, RuntimeStatus]):
    """A model server for artifacts in one namespace; wins over a ClusterRuntime of the same name."""

    KIND: ClassVar[str] = "Runtime"
    kind: str = "Runtime"
    """Runtime."""
