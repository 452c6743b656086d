"""Test support: talking to a real cluster (kubectl, namespaces, applying YAML, the operator)."""
