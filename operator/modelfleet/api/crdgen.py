"""Generate the CRDs (apiextensions.k8s.io/v1) and the API reference from the pydantic models.

    modelfleet crds --out crds --chart-out charts/modelfleet/crds --docs docs/api-reference.md [--check]

Pydantic's JSON schema is turned into a *structural* OpenAPI v3 schema, the only kind the API server
accepts for defaulting, pruning and CEL rules:
- `$ref`s are inlined; a field's own description, default and rules win over its type's.
- `anyOf [X, null]` becomes X; in status it is marked `nullable` (enums excepted: the API server
  drops their nulls instead).
  In spec, null means absent (the API server prunes it), so `has()` in CEL rules means what it says.
- JSON Schema 2020-12 `exclusiveMinimum: 0` becomes OpenAPI 3.0 `minimum: 0, exclusiveMinimum: true`.
- Defaults of nested objects become `{}` (the API server then applies their fields' defaults);
  duration defaults are written as duration strings; empty defaults are left out.
- Every property must have a description, and every string and list a maximum length (CEL rule
  cost budgets need them): the generator refuses models that lack one.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from modelfleet.api.common import DURATION_PATTERN, GROUP, VERSION, ApiModel, format_duration
from modelfleet.api.deployment import Deployment, DeploymentSpec, DeploymentStatus
from modelfleet.api.model import Model, ModelSpec, ModelStatus
from modelfleet.api.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus
from modelfleet.api.monitor import Monitor, MonitorSpec, MonitorStatus
from modelfleet.api.runtime import ClusterRuntime, Runtime, RuntimeSpec, RuntimeStatus

CATEGORY = "modelfleet"
HEADER = "# Generated from the models in operator/modelfleet/api by `make crds`. Do not edit.\n"

Json = dict[str, Any]


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_k8s(self) -> Json:
        column: Json = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


def _condition(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and how it looks to kubectl."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    resource: type[BaseModel]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...] = field(default=())
    scope: str = "Namespaced"
    """Namespaced, or Cluster for a cluster-scoped kind."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


KINDS: tuple[Kind, ...] = (
    Kind(
        "Model",
        "models",
        ("mdl",),
        Model,
        ModelSpec,
        ModelStatus,
        (
            PrinterColumn("Versions", ".status.versions", description="ModelVersions of this model"),
            PrinterColumn("Serving", ".status.servingVersions", description="Versions taking traffic"),
            PrinterColumn("Ready", _condition("Ready")),
            PrinterColumn("Owner", ".spec.owner", priority=1),
            AGE,
        ),
    ),
    Kind(
        "ModelVersion",
        "modelversions",
        ("mv",),
        ModelVersion,
        ModelVersionSpec,
        ModelVersionStatus,
        (
            PrinterColumn("Model", ".spec.model"),
            PrinterColumn("Version", ".spec.version"),
            PrinterColumn("Image", ".spec.image", description="Image of an image version"),
            PrinterColumn("Artifact", ".spec.artifact.uri", description="Artifact of an artifact version"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Approved", _condition("Approved")),
            PrinterColumn("Served-By", ".status.servedBy", priority=1),
            PrinterColumn("Runtime", ".status.artifact.runtime", priority=1),
            PrinterColumn("Format", ".spec.artifact.format", priority=1),
            AGE,
            PrinterColumn(
                "Message",
                ".status.message",
                description="Why it is in its phase, or its latest outcome: rolled back in iris: ...",
            ),
        ),
    ),
    Kind(
        "Deployment",
        "deployments",
        ("mdeploy",),
        Deployment,
        DeploymentSpec,
        DeploymentStatus,
        (
            PrinterColumn("Model", ".spec.model", priority=1),
            PrinterColumn(
                "Target",
                ".status.targetVersion",
                description="Version the spec asks for: spec.version, or where versionFrom points",
            ),
            PrinterColumn(
                "Alias", ".spec.versionFrom.mlflowAlias", description="MLflow alias followed", priority=1
            ),
            PrinterColumn("Stable", ".status.stableVersion", description="Version serving the rest"),
            PrinterColumn("Canary", ".status.canaryVersion", description="Version being rolled out"),
            PrinterColumn("Weight", ".status.canaryWeight", "integer", "Percent of traffic on the canary"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn(
                "Fallback",
                ".status.fallback.active",
                "boolean",
                "The fallback serves the stable version's traffic",
                priority=1,
            ),
            PrinterColumn("Endpoint", ".status.endpoint", priority=1),
            PrinterColumn("Message", ".status.message", priority=1),
            AGE,
        ),
    ),
    Kind(
        "Monitor",
        "monitors",
        ("mon",),
        Monitor,
        MonitorSpec,
        MonitorStatus,
        (
            PrinterColumn("Deployment", ".spec.deployment"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Last", ".status.lastMeasurement.time", "date", "When it last measured"),
            PrinterColumn("Version", ".status.lastMeasurement.version", priority=1),
            AGE,
        ),
    ),
    *(
        Kind(
            kind,
            plural,
            (short,),
            resource,
            RuntimeSpec,
            RuntimeStatus,
            (
                PrinterColumn("Formats", ".spec.formats", description="Artifact formats it serves"),
                PrinterColumn("Image", ".spec.image"),
                PrinterColumn("Protocol", ".spec.protocol", priority=1),
                PrinterColumn("Ready", _condition("Ready")),
                AGE,
            ),
            scope,
        )
        for kind, plural, short, resource, scope in (
            ("ClusterRuntime", "clusterruntimes", "crt", ClusterRuntime, "Cluster"),
            ("Runtime", "runtimes", "rt", Runtime, "Namespaced"),
        )
    ),
)


# --- pydantic JSON schema -> structural OpenAPI v3 -------------------------------------------------


class SchemaError(ValueError):
    """A model that cannot become a structural CRD schema; the message names the path."""


class _EmptyObject:
    """Marks a default that is a whole nested model: written as `{}`."""


class _Generator(GenerateJsonSchema):
    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" in schema:
            if schema.get("default_factory_takes_data"):
                return NoDefault
            value = schema["default_factory"]()  # type: ignore[call-arg]
        else:
            value = schema.get("default", NoDefault)
        if isinstance(value, BaseModel):
            return _EmptyObject
        if isinstance(value, tuple | list) and value and all(isinstance(v, ApiModel) for v in value):
            return [v.to_k8s() for v in value]
        if value is None or (isinstance(value, str | tuple | list | dict) and not value):
            return NoDefault
        return value

    def encode_default(self, dft: Any) -> Any:
        if dft is _EmptyObject:
            return {}
        return super().encode_default(dft)


# Keys of apiextensions.k8s.io/v1 JSONSchemaProps that the generator may emit.
_ALLOWED_KEYS = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "nullable",
    "anyOf",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}
# Emitted in this order, the rest after them, so the YAML reads top-down.
_KEY_ORDER = ("description", "type", "format", "enum", "default", "nullable")


def _resolve(node: Json, defs: Mapping[str, Json]) -> tuple[Json, bool]:
    """Inline `$ref`, `allOf [one]` and `anyOf [X, null]`. Returns (node, was nullable)."""
    nullable = False
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = _merge(target, {k: v for k, v in node.items() if k != "$ref"})
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = _merge(node["allOf"][0], {k: v for k, v in node.items() if k != "allOf"})
        elif "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            options = [o for o in node["anyOf"] if o != {"type": "null"}]
            if len(options) == len(node["anyOf"]) or len(options) != 1:
                return node, nullable
            nullable = True
            node = _merge(options[0], {k: v for k, v in node.items() if k != "anyOf"})
        else:
            return node, nullable


def _merge(base: Json, override: Json) -> Json:
    """`override`'s keys win, except rules, which add up."""
    merged = {**base, **override}
    rules = [*base.get("x-kubernetes-validations", []), *override.get("x-kubernetes-validations", [])]
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def structural(node: Json, defs: Mapping[str, Json], *, path: str, status: bool) -> Json:
    """The structural OpenAPI v3 form of a pydantic JSON schema node (see the module docstring)."""
    node, nullable = _resolve(node, defs)
    out: Json = {}
    if node.get("x-kubernetes-int-or-string"):
        # The one union a structural schema allows; the string's limits move up to the node.
        out["x-kubernetes-int-or-string"] = True
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        for option in node.get("anyOf", []):
            if option.get("type") == "string":
                out.update({k: v for k, v in option.items() if k in {"maxLength", "pattern"}})
        node = {k: v for k, v in node.items() if k not in {"anyOf", "type"}}
    elif "anyOf" in node:
        raise SchemaError(f"{path}: unions other than `X | None` and int-or-string are not structural")
    for key, value in node.items():
        if key in {"title", "additionalProperties", "propertyNames", "$defs"} and not (
            key == "additionalProperties" and isinstance(value, dict)
        ):
            continue
        if key == "properties":
            out["properties"] = {
                name: structural(child, defs, path=f"{path}.{name}", status=status)
                for name, child in value.items()
            }
        elif key == "items":
            out["items"] = structural(value, defs, path=f"{path}[]", status=status)
        elif key == "additionalProperties":
            out["additionalProperties"] = structural(value, defs, path=f"{path}{{}}", status=status)
        elif key in {"exclusiveMinimum", "exclusiveMaximum"} and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "description":
            out["description"] = " ".join(str(value).split())
        elif key == "default":
            if status:
                continue
            if node.get("pattern") == DURATION_PATTERN and isinstance(value, int | float):
                value = format_duration(value)
            out["default"] = value
        elif key == "anyOf" or key in out:
            continue
        elif key not in _ALLOWED_KEYS:
            raise SchemaError(f"{path}: schema keyword {key!r} has no structural equivalent")
        else:
            out[key] = value
    if "properties" in out:
        out["type"] = "object"
    if nullable and status and "enum" not in out:
        # Not on enums: the API server refuses a null enum value even when nullable and null is listed,
        # but it drops nulls of fields that are not nullable, which reads back the same.
        out["nullable"] = True
    if "type" not in out and not (
        out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaError(f"{path}: no type")
    if (out.get("type") == "string" or "x-kubernetes-int-or-string" in out) and not (
        {"maxLength", "enum"} & set(out)
    ):
        raise SchemaError(f"{path}: a string needs a maximum length (StringConstraints(max_length=...))")
    if out.get("type") == "array" and "maxItems" not in out:
        raise SchemaError(f"{path}: a list needs a maximum length (Field(max_length=...))")
    return {k: out[k] for k in (*_KEY_ORDER, *sorted(set(out) - set(_KEY_ORDER))) if k in out}


def _check_descriptions(schema: Json, path: str) -> None:
    for name, child in schema.get("properties", {}).items():
        if not child.get("description"):
            raise SchemaError(f"{path}.{name}: no description (add a docstring under the field)")
        _check_descriptions(child, f"{path}.{name}")
    if "items" in schema:
        _check_descriptions(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        _check_descriptions(schema["additionalProperties"], f"{path}{{}}")


def openapi_schema(model: type[BaseModel], *, path: str, status: bool) -> Json:
    """The structural schema of a spec or status model."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    defs = raw.pop("$defs", {})
    schema = structural(raw, defs, path=path, status=status)
    _check_descriptions(schema, path)
    return schema


def crd(kind: Kind) -> Json:
    """The CustomResourceDefinition of one kind, as a dict."""
    doc = (kind.resource.__doc__ or kind.kind).strip()
    spec = openapi_schema(kind.spec, path="spec", status=False)
    status = openapi_schema(kind.status, path="status", status=True)
    schema: Json = {
        "description": doc,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion of the object: modelfleet.io/v1alpha1.",
                "type": "string",
            },
            "kind": {"description": f"Kind of the object: {kind.kind}.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "modelfleet", "app.kubernetes.io/part-of": "modelfleet"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": kind.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_k8s() for c in kind.columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def render_crds() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {kind.file_name: HEADER + to_yaml(crd(kind)) for kind in KINDS}


# --- API reference -------------------------------------------------------------------------------


def _type_text(node: Json) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    type_ = str(node.get("type", "any"))
    if type_ == "array":
        return f"[]{_type_text(node.get('items', {}))}"
    if type_ == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type_text(node['additionalProperties'])}"
    if node.get("pattern") == DURATION_PATTERN:
        return "duration"
    if node.get("format") == "date-time":
        return "time"
    return type_


def _limits_text(node: Json) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "minimum" in node:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}")
    if "maximum" in node:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '<='} {node['maximum']}")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} items")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if "maxProperties" in node:
        parts.append(f"at most {node['maxProperties']} entries")
    if node.get("pattern") and node.get("pattern") != DURATION_PATTERN:
        parts.append(f"pattern `{node['pattern']}`")
    if "maxLength" in node and node.get("pattern") != DURATION_PATTERN:
        parts.append(f"at most {node['maxLength']} chars")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rule_text(path: str, rule: Json) -> str:
    return f"- `{path or '.'}`: {rule['message']}: `{' '.join(str(rule['rule']).split())}`"


def _rows(node: Json, path: str, required: bool, rows: list[str], rules: list[str]) -> None:
    for rule in node.get("x-kubernetes-validations", []):
        rules.append(_rule_text(path, rule))
    if path:
        default = node.get("default")
        default_text = (
            "" if default is None else f"`{_cell(yaml.safe_dump(default, default_flow_style=True).strip())}`"
        )
        if default_text.endswith("...`"):
            default_text = default_text[:-5].rstrip() + "`"
        rows.append(
            f"| `{path}` | {_type_text(node)} | {'yes' if required else ''} | {default_text} "
            f"| {_cell(node.get('description', ''))} | {_cell(_limits_text(node))} |"
        )
    _children(node, path, rows, rules)


def _children(node: Json, path: str, rows: list[str], rules: list[str]) -> None:
    for name, child in node.get("properties", {}).items():
        _rows(child, f"{path}.{name}" if path else name, name in node.get("required", []), rows, rules)
    items = node.get("items")
    if isinstance(items, dict):
        for rule in items.get("x-kubernetes-validations", []):
            rules.append(_rule_text(f"{path}[]", rule))
        _children(items, f"{path}[]", rows, rules)


def render_docs() -> str:
    """The API reference in Markdown, generated from the same schemas as the CRDs."""
    out = [
        "# API reference: modelfleet.io/v1alpha1",
        "",
        "Generated from the models in `operator/modelfleet/api` by `make crds`; do not edit by hand.",
        "This page lists every field with its default and its limits, as the API server enforces them.",
        "Durations are strings such as `500ms`, `30s`, `2m`, `1h` or `1m30s`; times are RFC 3339 (UTC).",
        "",
    ]
    for kind in KINDS:
        doc = crd(kind)
        version = doc["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        out += [
            f"## {kind.kind}",
            "",
            schema["description"],
            "",
            f"`kubectl get {kind.plural}.{GROUP}` (short name `{'`, `'.join(kind.short_names)}`, "
            f"category `{CATEGORY}`), namespaced.",
            "",
        ]
        for part in ("spec", "status"):
            rows: list[str] = []
            rules: list[str] = []
            _rows(schema["properties"][part], "", False, rows, rules)
            out += [
                f"### {kind.kind} {part}",
                "",
                _cell(schema["properties"][part].get("description", "")),
                "",
                "| Field | Type | Required | Default | Description | Limits |",
                "| --- | --- | --- | --- | --- | --- |",
                *rows,
                "",
            ]
            if rules:
                rules = [r.replace("- `.`:", f"- `{part}`:", 1) for r in rules]
                out += [f"Rules the API server checks on {part} (CEL):", "", *rules, ""]
        out += ["Printer columns: " + ", ".join(c["name"] for c in version["additionalPrinterColumns"]), ""]
    return "\n".join(out)


# --- command line --------------------------------------------------------------------------------


def _diff(path: Path, want: str) -> str:
    have = path.read_text() if path.exists() else ""
    if have == want:
        return ""
    return (
        "".join(
            difflib.unified_diff(
                have.splitlines(keepends=True),
                want.splitlines(keepends=True),
                f"{path} (on disk)",
                f"{path} (generated)",
            )
        )
        or f"{path}: differs\n"
    )


def outputs(out: Sequence[str], docs: str | None) -> dict[Path, str]:
    """Every file the generator writes: path -> content."""
    files: dict[Path, str] = {}
    for folder in out:
        for name, text in render_crds().items():
            files[Path(folder) / name] = text
    if docs:
        files[Path(docs)] = render_docs()
    return files


def main(argv: list[str] | None = None, *, echo: Callable[[str], object] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="modelfleet crds", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--out", default="crds", help="folder for the CRD files (default: crds)")
    parser.add_argument(
        "--chart-out", action="append", default=[], help="another folder for a copy (repeatable)"
    )
    parser.add_argument("--docs", help="also write the API reference (Markdown) to this file")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 with a diff when files differ"
    )
    args = parser.parse_args(argv)
    files = outputs([args.out, *args.chart_out], args.docs)
    if args.check:
        diffs = [d for path, text in files.items() if (d := _diff(path, text))]
        for d in diffs:
            echo(d.rstrip("\n"))
        if diffs:
            echo(f"{len(diffs)} generated file(s) out of date: run `make crds`")
            return 1
        echo(f"{len(files)} generated files up to date")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            echo(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
