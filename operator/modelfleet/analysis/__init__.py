"""Pure statistics and verdicts: router metrics, windowed rates, latency quantiles, prediction drift.

No Kubernetes, no HTTP: the controller scrapes and queries, this package computes.

- `exposition`: the router's /metrics text -> samples.
- `traffic`: two scrapes of all router pods -> per-version requests, 5xx, fallbacks, latency buckets.
- `histogram`: Prometheus' histogram_quantile.
- `drift`: population stability index of canary vs stable predictions.
- `datadrift`: training data profiles, and psi / ks / jsd of request inputs against one.
- `groundtruth`: what the routers' cumulative label counts add between two reads, and the accuracy and
  mean absolute error of a version's newest labels.
- `assessment`: a Monitor spec and one window -> a Measurement with per-metric verdicts (absolute
  bounds, and ratio bounds against the stable version in the same window), and the Monitor's new
  status.
- `experiment`: which of 2..10 variants is best on one objective (a rate or a mean), decided at every
  interval without inflating false positives; a stopped variant's weight shared out.
"""

from modelfleet.analysis.assessment import (
    ProviderError,
    SampledValue,
    Window,
    assess,
    monitor_status,
    overall_verdict,
    summarize,
)
from modelfleet.analysis.datadrift import DataDrift, Profile, ProfileError, data_drift, load_profile
from modelfleet.analysis.drift import population_stability_index
from modelfleet.analysis.exposition import ExpositionError, Sample, parse_exposition
from modelfleet.analysis.histogram import histogram_quantile
from modelfleet.analysis.traffic import Scrape, VersionTraffic, counter_increase, window_traffic

__all__ = [
    "DataDrift",
    "ExpositionError",
    "Profile",
    "ProfileError",
    "ProviderError",
    "Sample",
    "SampledValue",
    "Scrape",
    "VersionTraffic",
    "Window",
    "assess",
    "counter_increase",
    "data_drift",
    "histogram_quantile",
    "load_profile",
    "monitor_status",
    "overall_verdict",
    "parse_exposition",
    "population_stability_index",
    "summarize",
    "window_traffic",
]
