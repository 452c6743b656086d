"""MLflow, the registry of record: the operator's client of a tracking server's REST API.

Not a Monitor provider: the Model controller's sync uses it to mirror a registered model's versions into
ModelVersions and to write the operator's tags back. It speaks HTTP with aiohttp and never imports the
mlflow package (the operator image has none).

    client = MlflowClient(spec.tracking_uri, Credentials.from_secret(secret_values))
    snapshot = await client.snapshot("iris")          # the model, its aliases, every version
    run = await client.get_run(snapshot.versions[-1].run_id)
    mlmodel = await client.get_mlmodel("iris", 7)     # flavors and signature
    await client.set_version_tag("iris", 7, "modelfleet.io/phase", "Serving")
    await client.close()

Every failure is an `MlflowError` whose `reason` (Unreachable, Unauthorized, NotFound, BadResponse) is the
reason of the Model's `Synced` condition and whose text is fit for it (no credentials). Webhook
deliveries are verified by the pure `modelfleet.registry.webhooks`.
"""

from modelfleet.providers.mlflow.client import (
    PASSWORD_KEY,
    TOKEN_KEY,
    USERNAME_KEY,
    Credentials,
    MlflowClient,
)
from modelfleet.providers.mlflow.entities import (
    DatasetInput,
    MlModel,
    ModelVersion,
    RegisteredModel,
    Run,
    Signature,
    Snapshot,
)
from modelfleet.providers.mlflow.errors import (
    BadResponse,
    MlflowError,
    NotFound,
    Reason,
    Unauthorized,
    Unreachable,
)

__all__ = [
    "PASSWORD_KEY",
    "TOKEN_KEY",
    "USERNAME_KEY",
    "BadResponse",
    "Credentials",
    "DatasetInput",
    "MlModel",
    "MlflowClient",
    "MlflowError",
    "ModelVersion",
    "NotFound",
    "Reason",
    "RegisteredModel",
    "Run",
    "Signature",
    "Snapshot",
    "Unauthorized",
    "Unreachable",
]
