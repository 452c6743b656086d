"""modelfleet: a Kubernetes operator for machine-learning model deployment."""

__version__ = "0.1.0"
