"""The artifact fetcher: `modelfleet fetch`, run as the init container of a model pod, puts a model
artifact (s3://, http(s)://, pvc://) into the pod, verified by its sha256 digest, within size and time
limits, optionally through a node cache keyed by digest; `modelfleet digest` computes that digest.

Data plane: it imports none of the operator and no Kubernetes client (an import-linter contract says
so). The operator reads what it reports through `modelfleet.fetch.report.parse_report`.
"""
