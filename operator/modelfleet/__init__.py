"""modelfleet: a Kubernetes operator for machine-learning model deployment."""

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it from here, and the Helm chart's
`version` and `appVersion` must equal it (tests/unit/test_version.py)."""
