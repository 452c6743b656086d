"""The generated CRDs: current on disk, structural, bounded, and carrying the API's rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from modelfleet.api import crdgen
from modelfleet.api.common import ApiModel, Duration

REPO = Path(__file__).resolve().parents[2]
CRDS = {kind.kind: crdgen.crd(kind) for kind in crdgen.KINDS}


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def at(node: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a dotted path; `[]` steps into list items."""
    for part in path.split("."):
        node = node["properties"][part[:-2]]["items"] if part.endswith("[]") else node["properties"][part]
    return node


def rules(node: dict[str, Any]) -> dict[str, str]:
    return {r["message"]: r["rule"] for r in node.get("x-kubernetes-validations", [])}


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


# --- the files on disk are what the models generate ----------------------------------------------


@pytest.mark.parametrize("folder", ["crds", "charts/modelfleet/crds"])
def test_crd_files_match_the_models(folder: str) -> None:
    for name, text in crdgen.render_crds().items():
        path = REPO / folder / name
        assert path.exists(), f"{folder}/{name} missing: run `make crds`"
        assert path.read_text() == text, f"{folder}/{name} is out of date: run `make crds`"
    extra = {p.name for p in (REPO / folder).glob("*.yaml")} - set(crdgen.render_crds())
    assert not extra, f"{folder} has files the generator does not write: {sorted(extra)}"


def test_api_reference_matches_the_models() -> None:
    path = REPO / "docs" / "api-reference.md"
    assert path.read_text() == crdgen.render_docs(), "docs/api-reference.md is out of date: run `make crds`"


def test_check_mode_reports_drift_and_writes_nothing(tmp_path: Path) -> None:
    printed: list[str] = []
    out, docs = tmp_path / "crds", tmp_path / "api.md"
    assert crdgen.main(["--out", str(out), "--docs", str(docs)], echo=printed.append) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(crdgen.render_crds())
    assert crdgen.main(["--out", str(out), "--docs", str(docs), "--check"], echo=printed.append) == 0
    assert printed[-1] == "7 generated files up to date"

    target = out / "modelfleet.io_deployments.yaml"
    target.write_text(target.read_text().replace("default: 20", "default: 25"))
    (out / "modelfleet.io_monitors.yaml").unlink()
    printed.clear()
    assert crdgen.main(["--out", str(out), "--docs", str(docs), "--check"], echo=printed.append) == 1
    report = "\n".join(printed)
    assert "-                        default: 25\n+                        default: 20" in report
    assert "modelfleet.io_monitors.yaml (generated)" in report
    assert printed[-1] == "2 generated file(s) out of date: run `make crds`"
    assert not (out / "modelfleet.io_monitors.yaml").exists()


def test_the_cli_dispatches_to_the_generator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelfleet.cli import main

    assert main(["crds", "--out", str(tmp_path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out


# --- structural schemas (apiextensions.k8s.io/v1 refuses others) -----------------------------------


@pytest.mark.parametrize("kind", list(CRDS))
def test_schemas_are_structural_and_bounded(kind: str) -> None:
    schema = schema_of(kind)
    assert schema["type"] == "object"
    assert [schema["properties"][k]["type"] for k in ("apiVersion", "kind", "metadata")] == ["string"] * 2 + [
        "object"
    ]
    nodes = [*walk(at(schema, "spec"), f"{kind}.spec"), *walk(at(schema, "status"), f"{kind}.status")]
    for path, node in nodes:
        assert not {"$ref", "allOf", "oneOf", "title"} & set(node), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, f"{path}: anyOf only for int-or-string"
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "maxLength" in node, f"{path}: unbounded int-or-string"
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path}: no type"
        assert {"type": "null"} not in node.get("anyOf", []), path
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, f"{path}: unbounded string"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: unbounded list"
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties"
            assert set(node.get("required", [])) <= set(node["properties"]), path
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(key, False), bool), f"{path}: {key} must be a boolean in OpenAPI v3.0"
        if "default" in node and node.get("pattern"):
            assert re.match(node["pattern"], node["default"]), f"{path}: default breaks its pattern"


@pytest.mark.parametrize("kind", list(CRDS))
def test_every_field_has_a_description(kind: str) -> None:
    for path, node in walk(schema_of(kind), kind):
        if not path.endswith("{}") and path != kind:
            assert node.get("description") or path.endswith(("[]", ".metadata")), path


def test_only_free_form_core_shapes_preserve_unknown_fields() -> None:
    free = [
        (kind, path)
        for kind in CRDS
        for path, node in walk(schema_of(kind), kind)
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert free == [
        ("ModelVersion", "ModelVersion.spec.env[].valueFrom"),
        ("ClusterRuntime", "ClusterRuntime.spec.env[].valueFrom"),
        ("Runtime", "Runtime.spec.env[].valueFrom"),
    ]


def test_nullable_only_in_status() -> None:
    for kind in CRDS:
        spec_nullable = [p for p, n in walk(at(schema_of(kind), "spec"), "spec") if n.get("nullable")]
        assert spec_nullable == [], kind
    assert at(schema_of("Deployment"), "status.stepStartedAt")["nullable"] is True


def test_the_generator_refuses_unbounded_fields_and_missing_descriptions() -> None:
    class Unbounded(ApiModel):
        name: str
        """A name."""

    class Undescribed(ApiModel):
        count: int = 0

    class Bounded(ApiModel):
        every: Duration = 30.0
        """How often."""

    with pytest.raises(crdgen.SchemaError, match=r"spec\.name: a string needs a maximum length"):
        crdgen.openapi_schema(Unbounded, path="spec", status=False)
    with pytest.raises(crdgen.SchemaError, match=r"spec\.count: no description"):
        crdgen.openapi_schema(Undescribed, path="spec", status=False)
    assert (
        crdgen.openapi_schema(Bounded, path="spec", status=False)["properties"]["every"]["default"] == "30s"
    )


def test_the_generator_refuses_unions() -> None:
    class Union(BaseModel):
        value: int | str
        """Either."""

    with pytest.raises(crdgen.SchemaError, match=r"spec\.value: unions other than"):
        crdgen.openapi_schema(Union, path="spec", status=False)


# --- names, columns, subresources -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "plural", "short", "scope"),
    [
        ("Model", "models", "mdl", "Namespaced"),
        ("ModelVersion", "modelversions", "mv", "Namespaced"),
        ("Deployment", "deployments", "mdeploy", "Namespaced"),
        ("Monitor", "monitors", "mon", "Namespaced"),
        ("ClusterRuntime", "clusterruntimes", "crt", "Cluster"),
        ("Runtime", "runtimes", "rt", "Namespaced"),
    ],
)
def test_names_scope_and_subresources(kind: str, plural: str, short: str, scope: str) -> None:
    crd = CRDS[kind]
    assert crd["metadata"]["name"] == f"{plural}.modelfleet.io"
    assert crd["spec"]["group"] == "modelfleet.io"
    assert crd["spec"]["scope"] == scope
    assert crd["spec"]["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": [short],
        "categories": ["modelfleet"],
    }
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["required"] == ["spec"]
    status = schema["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status"}
    assert (REPO / "crds" / f"modelfleet.io_{plural}.yaml").exists()


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("Deployment", ["Target", "Stable", "Canary", "Weight", "Phase", "Age"]),
        ("ModelVersion", ["Model", "Version", "Image", "Artifact", "Phase", "Approved", "Age", "Message"]),
        ("ClusterRuntime", ["Formats", "Image", "Ready", "Age"]),
        ("Runtime", ["Formats", "Image", "Ready", "Age"]),
        ("Model", ["Versions", "Serving", "Ready", "Age"]),
        ("Monitor", ["Deployment", "Phase", "Last", "Age"]),
    ],
)
def test_printer_columns_by_default(kind: str, columns: list[str]) -> None:
    shown = [
        c for c in CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert [c["name"] for c in shown] == columns
    schema = schema_of(kind)
    for column in shown:
        path = column["jsonPath"]
        if path.startswith(".metadata") or "[?" in path:
            continue
        node = at(schema, path.lstrip("."))
        # a string column shows a list as JSON (Versions, Serving)
        allowed = {"date": {"string"}, "string": {"string", "array"}}.get(column["type"], {column["type"]})
        assert node["type"] in allowed, column


# --- defaults and rules the API promises -------------------------------------------------------------


def test_deployment_defaults_in_the_schema() -> None:
    spec = at(schema_of("Deployment"), "spec")
    assert at(spec, "replicas")["default"] == 1
    assert at(spec, "strategy")["default"] == {}
    assert at(spec, "strategy.type")["default"] == "Canary"
    assert at(spec, "strategy.canary.steps")["default"] == [
        {"setWeight": 20},
        {"pause": {"duration": "30s"}},
        {"setWeight": 50},
        {"pause": {"duration": "30s"}},
    ]
    assert at(spec, "strategy.rollbackWindow")["default"] == "10m"
    assert at(spec, "progressDeadline")["default"] == "10m"
    assert at(spec, "fallback.timeout")["default"] == "2s"
    assert at(spec, "fallback.circuitBreaker.openFor")["default"] == "30s"
    assert (
        at(spec, "fallback.circuitBreaker.errorRate").items()
        >= {
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 1,
        }.items()
    )
    assert at(spec, "strategy.canary.steps[].setWeight").items() >= {"minimum": 0, "maximum": 100}.items()
    assert at(spec, "replicas").items() >= {"minimum": 0, "maximum": 100}.items()
    assert at(spec, "strategy.type")["enum"] == ["Canary", "Immediate"]
    assert "default" not in at(spec, "model")
    assert spec["required"] == ["model"]  # and exactly one of version and versionFrom (a rule)


def test_a_deployment_names_its_version_or_follows_an_alias_never_both() -> None:
    spec = at(schema_of("Deployment"), "spec")
    assert (
        rules(spec)["exactly one of version and versionFrom must be set"]
        == "has(self.version) != has(self.versionFrom)"
    )
    alias = at(spec, "versionFrom.mlflowAlias")
    assert alias.items() >= {"pattern": "^[A-Za-z0-9_-]+$", "maxLength": 255, "minLength": 1}.items()
    assert at(spec, "versionFrom")["required"] == ["mlflowAlias"]
    assert at(schema_of("Deployment"), "status.targetVersion")["type"] == "string"
    wide = {c["name"]: c for c in CRDS["Deployment"]["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert wide["Target"]["jsonPath"] == ".status.targetVersion"
    assert (wide["Alias"]["jsonPath"], wide["Alias"]["priority"]) == (".spec.versionFrom.mlflowAlias", 1)


def test_model_version_defaults_and_immutability() -> None:
    spec = at(schema_of("ModelVersion"), "spec")
    # port, protocol and readinessPath follow the image (8080, v2, by protocol) or the artifact's runtime
    for field in ("port", "protocol", "readinessPath"):
        assert "default" not in at(spec, field)
    for field in ("model", "version"):
        assert rules(at(spec, field)) == {f"{field} is immutable": "self == oldSelf"}
    # optional fields: the rule on spec also refuses adding or removing them
    for field in ("image", "artifact", "runtime", "reference", "lineage", "port", "protocol"):
        assert f"{field} is immutable" in rules(spec)
    assert (
        rules(spec)["exactly one of image and artifact must be set"]
        == "has(self.image) != has(self.artifact)"
    )
    assert at(spec, "artifact.digest")["pattern"] == "^sha256:[0-9a-f]{64}$"
    assert spec["required"] == ["model", "version"]
    assert at(spec, "lineage.metrics")["additionalProperties"] == {"type": "number"}
    # the reference profile is declared like the artifact: uri (same schemes), digest, credentials
    for field in ("uri", "digest", "credentials"):
        assert at(spec, f"reference.{field}") == at(spec, f"artifact.{field}") | {
            "description": at(spec, f"reference.{field}")["description"]
        }


def test_deployment_fallback_version_feedback_and_capture_in_the_schema() -> None:
    spec = at(schema_of("Deployment"), "spec")
    assert at(spec, "fallback.version")["pattern"] == "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    assert "default" not in at(spec, "fallback.version")
    assert rules(spec)["fallback.version must differ from version"] == (
        "!has(self.fallback) || !has(self.fallback.version) || !has(self.version)"
        " || self.fallback.version != self.version"
    )
    assert at(spec, "feedback")["required"] == ["tokenSecret"]
    assert at(spec, "feedback.tokenSecret")["required"] == ["name", "key"]
    assert at(spec, "capture")["required"] == ["percent", "destination"]
    assert (
        at(spec, "capture.percent").items()
        >= {"minimum": 0, "exclusiveMinimum": True, "maximum": 100}.items()
    )
    assert rules(at(spec, "capture.destination.uri")).keys() == {
        "uri must be s3://BUCKET/PREFIX or pvc://CLAIM/PATH",
        "uri must not have a '..' segment",
    }
    # CEL unescapes the literal once: RE2 gets /\.\.(/|$), searched anywhere in the URI
    assert rules(at(spec, "capture.destination.uri"))["uri must not have a '..' segment"] == (
        "!self.matches('/\\\\.\\\\.(/|$)')"
    )
    assert at(spec, "capture.redact")["x-kubernetes-list-type"] == "set"
    assert "default" not in at(spec, "capture")
    assert "default" not in at(spec, "feedback")


def test_cross_field_rules() -> None:
    deployment = at(schema_of("Deployment"), "spec")
    assert rules(at(deployment, "strategy.canary.steps[]")) == {
        "a step has exactly one of setWeight or pause": "has(self.setWeight) != has(self.pause)"
    }
    assert set(rules(at(deployment, "fallback.circuitBreaker"))) == {
        "window must be greater than zero",
        "openFor must be greater than zero",
    }
    assert set(rules(at(deployment, "fallback"))) == {"timeout must be greater than zero"}
    monitor = at(schema_of("Monitor"), "spec")
    assert set(rules(at(monitor, "metrics[]"))) == {
        "a metric needs min, max, minRatioToStable or maxRatioToStable",
        "min must not exceed max",
        "minRatioToStable must not exceed maxRatioToStable",
        "quantile is required for type latency, and only allowed there",
        "prometheus.query is required for type prometheus, and only allowed there",
        "method and features are only allowed for type dataDrift",
        "minSamples is only allowed for types dataDrift, accuracy and meanAbsoluteError",
        "minRatioToStable and maxRatioToStable do not apply to type predictionDrift (it already compares"
        " with stable) nor prometheus (its query names no version)",
        "accuracy is a share: its min and max must lie in 0..1",
    }
    assert set(rules(at(monitor, "metrics"))) == {"metric names must be unique"}
    assert at(monitor, "metrics").items() >= {"minItems": 1, "maxItems": 20}.items()


def test_monitor_metric_types_and_their_fields_in_the_schema() -> None:
    metric = at(schema_of("Monitor"), "spec.metrics[]")
    assert at(metric, "type")["enum"][-3:] == ["dataDrift", "accuracy", "meanAbsoluteError"]
    assert at(metric, "method")["enum"] == ["psi", "ks", "jsd"]
    # defaults depend on the type, so the schema has none (a default would land on every metric)
    for field in ("method", "minSamples", "features"):
        assert "default" not in at(metric, field), field
    features = at(metric, "features")
    assert features.items() >= {"x-kubernetes-list-type": "set", "minItems": 1, "maxItems": 128}.items()
    for field in ("minRatioToStable", "maxRatioToStable"):
        assert at(metric, field).items() >= {"minimum": 0, "exclusiveMinimum": True}.items()
    assert at(schema_of("Monitor"), "spec.onDegraded")["enum"] == ["Rollback", "Alert", "Fallback"]
    result = at(schema_of("Monitor"), "status.lastMeasurement.results[]")
    assert at(result, "stableValue")["nullable"] is True
    assert at(result, "ratioToStable")["nullable"] is True


def test_yaml_files_are_plain_single_documents() -> None:
    for name, text in crdgen.render_crds().items():
        assert text.startswith("# Generated"), name
        assert "&id" not in text, f"{name}: YAML anchors"
        assert "*id" not in text, f"{name}: YAML aliases"
        (doc,) = list(yaml.safe_load_all(text))
        assert doc["kind"] == "CustomResourceDefinition"
