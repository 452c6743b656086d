"""`kubectl explain` on the real modelfleet.io CRDs describes the fields a user writes and reads."""

from __future__ import annotations

import re

import pytest

from support.cluster import Cluster

# (field path as kubectl explain takes it, type shown, words the description must hold)
FIELDS: list[tuple[str, str, list[str]]] = [
    ("models", "Object", ["A registered model."]),
    (
        "models.spec.governance.allowedImages",
        "[]string",
        ["Image prefixes a version's image (or its runtime's image) must start with", "Empty allows any"],
    ),
    (
        "models.spec.governance.requireApproval",
        "boolean",
        ["approval.approved: true", "before any Deployment"],
    ),
    ("models.status.servingVersions", "[]string", ["versions taking traffic"]),
    ("modelversions.spec.image", "string", ["Container image", "Immutable"]),
    ("modelversions.spec.protocol", "string", ["v2 (Open Inference Protocol)", "Immutable"]),
    (
        "modelversions.spec.approval.approved",
        "boolean",
        ["may take traffic when its Model requires approval"],
    ),
    ("modelversions.status.phase", "string", ["Pending, Ready, Rejected, Serving or Retired"]),
    ("modelversions.status.servedBy", "[]string", ["Deployments serving this version"]),
    ("modelversions.status.conditions", "[]Object", ["Ready", "Approved"]),
    ("deployments.spec.strategy.canary.steps", "[]Object", ["exactly one of setWeight or pause"]),
    ("deployments.spec.fallback.retryOnStable", "boolean", ["answered by the stable version"]),
    ("monitors.spec.minRequests", "integer", ["Inconclusive, not Fail"]),
]


def explain(cluster: Cluster, path: str) -> str:
    result = cluster.kubectl("explain", path, "--api-version=modelfleet.io/v1alpha1", check=False)
    return result.stdout if result.returncode == 0 else ""


@pytest.mark.parametrize(("path", "type_", "words"), FIELDS, ids=[f[0] for f in FIELDS])
def test_explain_describes_the_field(
    cluster: Cluster, crds: None, path: str, type_: str, words: list[str]
) -> None:
    # A CRD's schema reaches the API server's OpenAPI document a moment after it is established.
    text = cluster.wait_for(f"kubectl explain {path}", lambda: explain(cluster, path), timeout=30)
    assert "GROUP:      modelfleet.io" in text
    field = path.rsplit(".", 1)[-1]
    if "." in path:
        assert f"FIELD: {field} <{type_}>" in text
    description = " ".join(text.split("DESCRIPTION:", 1)[1].split())  # joined across wrapped lines
    for word in words:
        assert word in description, f"{path}: {word!r} not in {description!r}"


def test_explain_lists_every_spec_field_of_a_version_with_a_description(cluster: Cluster, crds: None) -> None:
    text = cluster.wait_for("kubectl explain", lambda: explain(cluster, "modelversions.spec"), timeout=30)
    fields = re.findall(r"^  (\w+)\t<[^>]+>( -required-)?\n(.*)$", text, flags=re.MULTILINE)
    names = {name for name, _, _ in fields}
    assert {"model", "version", "image", "artifact", "runtime", "reference", "port", "protocol"} <= names
    assert {"readinessPath", "lineage", "approval"} <= names
    # image or artifact: exactly one, which a rule on spec says (neither is required on its own)
    assert {name for name, required, _ in fields if required} == {"model", "version"}
    assert all(description.strip() for _, _, description in fields), fields
