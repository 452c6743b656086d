"""What the sync reads from MLflow, as small frozen values, and how each is read from MLflow's JSON.

The `parse_*` functions take the documents of MLflow's REST API 2.0 (as MLflow 3.17 answers them) and
raise `BadResponse` for one they cannot use; fields MLflow leaves out take their empty value, as in
MLflow's own protobuf-to-JSON mapping (an empty description, no tags...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import yaml

from modelfleet.providers.mlflow.errors import BadResponse

#: Run tags MLflow sets from the training code's git checkout.
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_REPOSITORY_TAG = "mlflow.source.git.repoURL"
SOURCE_NAME_TAG = "mlflow.source.name"
#: The input tag MLflow gives a dataset to say how the run used it (training, evaluation...).
DATASET_CONTEXT_TAG = "mlflow.data.context"

#: A version registered from a logged model (MLflow 3) has `source` models:/<model id>.
_LOGGED_MODEL_SOURCE = re.compile(r"^models:/(m-[0-9a-f]+)$")


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model: its aliases are the registry's pointers at versions (champion -> 7)."""

    name: str
    description: str = ""
    aliases: Mapping[str, int] = field(default_factory=dict)
    """Alias -> version number."""
    tags: Mapping[str, str] = field(default_factory=dict)
    created: datetime | None = None
    last_updated: datetime | None = None


@dataclass(frozen=True)
class ModelVersion:
    """One version of a registered model."""

    name: str
    """The registered model's name."""
    version: int
    source: str
    """Where it was registered from: models:/m-<id> (a logged model, MLflow 3), runs:/<run>/<path>,
    s3://..., whatever the registering client gave. Not necessarily where its files are: that is
    `MlflowClient.download_uri`."""
    run_id: str = ""
    """The training run, "" when the version was registered without one."""
    status: str = "READY"
    """READY, PENDING_REGISTRATION or FAILED_REGISTRATION."""
    status_message: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    """Its aliases. MLflow's search answers carry none: `MlflowClient.snapshot` fills them from the
    registered model; `get_version` answers carry them."""
    model_id: str = ""
    """The logged model (MLflow 3) the version was registered from, "" when none."""
    user_id: str = ""
    run_link: str = ""
    created: datetime | None = None
    last_updated: datetime | None = None

    @property
    def ready(self) -> bool:
        """Registration finished: the version's files are in place."""
        return self.status == "READY"


@dataclass(frozen=True)
class DatasetInput:
    """A dataset a run read, as `mlflow.log_input` recorded it."""

    name: str
    digest: str = ""
    """MLflow's own digest of the dataset (a short hash, not a content sha256)."""
    source_type: str = ""
    """s3, http, local, delta, code ..."""
    source: str = ""
    """Where it was read from: the URI, URL, path or table the source names, else MLflow's raw text."""
    context: str = ""
    """How the run used it: training, evaluation ..."""


@dataclass(frozen=True)
class Run:
    """A training run: what a version's lineage is made of."""

    id: str
    experiment_id: str = ""
    name: str = ""
    status: str = ""
    """RUNNING, SCHEDULED, FINISHED, FAILED or KILLED."""
    user_id: str = ""
    artifact_uri: str = ""
    started: datetime | None = None
    ended: datetime | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    """The latest value of each metric."""
    tags: Mapping[str, str] = field(default_factory=dict)
    datasets: tuple[DatasetInput, ...] = ()

    @property
    def git_commit(self) -> str:
        """The commit of the training code (tag mlflow.source.git.commit), "" when not recorded."""
        return self.tags.get(GIT_COMMIT_TAG, "")

    @property
    def git_repository(self) -> str:
        """The training code's repository URL (tag mlflow.source.git.repoURL), "" when not recorded."""
        return self.tags.get(GIT_REPOSITORY_TAG, "")


@dataclass(frozen=True)
class Signature:
    """A model's input and output schema as MLflow writes it: each a JSON text (MLflow's column or
    tensor specs), "" when absent."""

    inputs: str = ""
    outputs: str = ""
    params: str = ""


@dataclass(frozen=True)
class MlModel:
    """A version's MLmodel file: its flavors and its signature."""

    flavors: tuple[str, ...] = ()
    """python_function, sklearn, xgboost ..."""
    signature: Signature | None = None
    model_id: str = ""
    run_id: str = ""
    mlflow_version: str = ""
    size_bytes: int | None = None
    """model_size_bytes, as the logging client measured it."""


@dataclass(frozen=True)
class Snapshot:
    """A registered model and all its versions, read in one sync: versions by number, aliases filled."""

    model: RegisteredModel
    versions: tuple[ModelVersion, ...]

    def version(self, number: int) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == number), None)


# --- parsing ------------------------------------------------------------------------------------------


def _object(document: Any, key: str, what: str) -> Mapping[str, Any]:
    value = document.get(key) if isinstance(document, Mapping) else None
    if not isinstance(value, Mapping):
        raise BadResponse(f"{what}: the answer has no {key!r} object")
    return value


def _text(document: Mapping[str, Any], key: str, what: str) -> str:
    value = document.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadResponse(f"{what}: {key} is not a string")
    return value


def _required(document: Mapping[str, Any], key: str, what: str) -> str:
    value = _text(document, key, what)
    if not value:
        raise BadResponse(f"{what}: {key} is missing")
    return value


def _number(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise BadResponse(f"{what}: {value!r} is not a number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadResponse(f"{what}: {str(value)[:40]!r} is not a number") from None


def _time(document: Mapping[str, Any], key: str, what: str) -> datetime | None:
    value = document.get(key)
    if value in (None, "", 0, "0"):
        return None
    return datetime.fromtimestamp(_number(value, f"{what} {key}") / 1000, tz=UTC)


def _list(document: Mapping[str, Any], key: str, what: str) -> list[Any]:
    value = document.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadResponse(f"{what}: {key} is not a list")
    return value


def _pairs(document: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    """MLflow's [{key, value}] lists (tags, params) as a dict."""
    pairs: dict[str, str] = {}
    for item in _list(document, key, what):
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise BadResponse(f"{what}: malformed {key}")
        value = item.get("value", "")
        pairs[item["key"]] = "" if value is None else str(value)
    return pairs


def model_id_of(source: str) -> str:
    """The logged model id in a version source models:/m-<id>, "" for any other source."""
    match = _LOGGED_MODEL_SOURCE.match(source)
    return match.group(1) if match else ""


def parse_registered_model(document: Any) -> RegisteredModel:
    """A registered-models/get answer."""
    what = "registered model"
    model = _object(document, "registered_model", what)
    aliases: dict[str, int] = {}
    for item in _list(model, "aliases", what):
        if not isinstance(item, Mapping) or not isinstance(item.get("alias"), str):
            raise BadResponse(f"{what}: malformed aliases")
        aliases[item["alias"]] = _number(item.get("version"), f"{what} alias {item['alias']}")
    return RegisteredModel(
        name=_required(model, "name", what),
        description=_text(model, "description", what),
        aliases=aliases,
        tags=_pairs(model, "tags", what),
        created=_time(model, "creation_timestamp", what),
        last_updated=_time(model, "last_updated_timestamp", what),
    )


def parse_model_version(version: Any) -> ModelVersion:
    """One model version object (inside a model-versions/get or search answer)."""
    what = "model version"
    if not isinstance(version, Mapping):
        raise BadResponse(f"{what}: not an object")
    aliases = _list(version, "aliases", what)
    if not all(isinstance(a, str) for a in aliases):
        raise BadResponse(f"{what}: malformed aliases")
    source = _text(version, "source", what)
    return ModelVersion(
        name=_required(version, "name", what),
        version=_number(version.get("version"), f"{what} number"),
        source=source,
        run_id=_text(version, "run_id", what),
        status=_text(version, "status", what) or "READY",
        status_message=_text(version, "status_message", what),
        description=_text(version, "description", what),
        tags=_pairs(version, "tags", what),
        aliases=tuple(sorted(aliases)),
        model_id=_text(version, "model_id", what) or model_id_of(source),
        user_id=_text(version, "user_id", what),
        run_link=_text(version, "run_link", what),
        created=_time(version, "creation_timestamp", what),
        last_updated=_time(version, "last_updated_timestamp", what),
    )


def parse_version_page(document: Any) -> tuple[list[ModelVersion], str]:
    """A model-versions/search answer: its versions and the next page's token ("" on the last page)."""
    if not isinstance(document, Mapping):
        raise BadResponse("model version search: the answer is not a JSON object")
    versions = [parse_model_version(v) for v in _list(document, "model_versions", "model version search")]
    return versions, _text(document, "next_page_token", "model version search")


def _dataset_source(text: str) -> str:
    """The location in a dataset's source JSON ({"uri": ...}, {"url": ...}, {"path": ...}...)."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if isinstance(document, Mapping):
        for key in ("uri", "url", "path", "table_name", "delta_table_name"):
            value = document.get(key)
            if isinstance(value, str) and value:
                return value
    return text


def parse_run(document: Any) -> Run:
    """A runs/get answer."""
    what = "run"
    run = _object(document, "run", what)
    info = _object(run, "info", what)
    data = run.get("data") or {}
    inputs = run.get("inputs") or {}
    if not isinstance(data, Mapping) or not isinstance(inputs, Mapping):
        raise BadResponse(f"{what}: malformed data or inputs")
    metrics: dict[str, float] = {}
    for item in _list(data, "metrics", what):
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise BadResponse(f"{what}: malformed metrics")
        try:
            metrics[item["key"]] = float(item["value"])  # "NaN", "Infinity" included
        except (KeyError, TypeError, ValueError):
            raise BadResponse(f"{what}: metric {item['key'][:63]!r} is not a number") from None
    datasets = []
    for item in _list(inputs, "dataset_inputs", what):
        dataset = item.get("dataset") if isinstance(item, Mapping) else None
        if not isinstance(dataset, Mapping):
            raise BadResponse(f"{what}: malformed dataset_inputs")
        datasets.append(
            DatasetInput(
                name=_text(dataset, "name", what),
                digest=_text(dataset, "digest", what),
                source_type=_text(dataset, "source_type", what),
                source=_dataset_source(_text(dataset, "source", what)),
                context=_pairs(item, "tags", what).get(DATASET_CONTEXT_TAG, ""),
            )
        )
    return Run(
        id=_text(info, "run_id", what) or _required(info, "run_uuid", what),
        experiment_id=_text(info, "experiment_id", what),
        name=_text(info, "run_name", what),
        status=_text(info, "status", what),
        user_id=_text(info, "user_id", what),
        artifact_uri=_text(info, "artifact_uri", what),
        started=_time(info, "start_time", what),
        ended=_time(info, "end_time", what),
        params=_pairs(data, "params", what),
        metrics=metrics,
        tags=_pairs(data, "tags", what),
        datasets=tuple(datasets),
    )


def parse_download_uri(document: Any) -> str:
    """A model-versions/get-download-uri answer."""
    if not isinstance(document, Mapping):
        raise BadResponse("download URI: the answer is not a JSON object")
    return _required(document, "artifact_uri", "download URI")


def parse_mlmodel(text: str) -> MlModel:
    """An MLmodel file (YAML) as MLflow's clients write it."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise BadResponse("MLmodel: not YAML") from None
    if not isinstance(document, Mapping):
        raise BadResponse("MLmodel: not a YAML mapping")
    flavors = document.get("flavors") or {}
    if not isinstance(flavors, Mapping):
        raise BadResponse("MLmodel: flavors is not a mapping")
    signature = None
    raw = document.get("signature")
    if isinstance(raw, Mapping):

        def part(key: str) -> str:
            value = raw.get(key)
            if value is None:
                return ""
            return value if isinstance(value, str) else json.dumps(value)

        signature = Signature(inputs=part("inputs"), outputs=part("outputs"), params=part("params"))
    size = document.get("model_size_bytes")
    return MlModel(
        flavors=tuple(str(f) for f in flavors),
        signature=signature,
        model_id=str(document.get("model_id") or ""),
        run_id=str(document.get("run_id") or ""),
        mlflow_version=str(document.get("mlflow_version") or ""),
        size_bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
    )


def with_aliases(model: RegisteredModel, versions: list[ModelVersion]) -> Snapshot:
    """`model` and its `versions`: sorted by number, each with the aliases that point at it."""
    pointing: dict[int, list[str]] = {}
    for alias, number in model.aliases.items():
        pointing.setdefault(number, []).append(alias)
    by_number = {v.version: v for v in versions}
    return Snapshot(
        model=model,
        versions=tuple(
            replace(by_number[n], aliases=tuple(sorted(pointing.get(n, ())))) for n in sorted(by_number)
        ),
    )


__all__ = [
    "DatasetInput",
    "MlModel",
    "ModelVersion",
    "RegisteredModel",
    "Run",
    "Signature",
    "Snapshot",
    "model_id_of",
    "parse_download_uri",
    "parse_mlmodel",
    "parse_model_version",
    "parse_registered_model",
    "parse_run",
    "parse_version_page",
    "with_aliases",
]
