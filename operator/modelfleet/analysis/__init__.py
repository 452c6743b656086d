"""Pure statistics and verdicts: router metrics, windowed rates, latency quantiles, prediction drift.

No Kubernetes, no HTTP: the controller scrapes and queries, this package computes.
"""
