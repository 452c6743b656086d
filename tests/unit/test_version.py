"""One version: `modelfleet.__version__`, which pyproject.toml reads and the Helm chart repeats."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

import modelfleet
from modelfleet import cli

REPO = Path(__file__).resolve().parents[2]


def test_pyproject_takes_its_version_from_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"], "the version is written in operator/modelfleet/__init__.py"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "modelfleet.__version__"}


def test_the_chart_version_and_app_version_are_the_package_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "modelfleet" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (modelfleet.__version__, modelfleet.__version__), (
        f"charts/modelfleet/Chart.yaml: set version and appVersion to {modelfleet.__version__}"
    )


def test_the_command_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"{modelfleet.__version__}\n"
