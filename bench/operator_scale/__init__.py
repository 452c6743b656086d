"""Operator scale benchmark: memory, idle CPU and reconcile throughput with many Deployments.

    python -m bench.operator_scale                  # (make bench-operator) 1000 Deployments, about 8 minutes
    python -m bench.operator_scale --count 100      # a smaller run
    python -m bench.operator_scale --idle 660       # an idle window that holds every Deployment's resync

Against the real cluster (KUBECONFIG, else the local cluster), in its own namespace `modelfleet-bench`,
deleted at the end (also on failure or Ctrl-C):

1. The operator runs on this host (`modelfleet operator --namespace modelfleet-bench`) as the chart's
   ServiceAccount with the chart's RBAC, with nothing to do: baseline memory (VmRSS, Pss) and CPU over
   an idle window.
2. N Deployments are created, each of its own Model (`governance.requireApproval: true`) and one
   ModelVersion that is valid but not approved. They are reconciled to their final status (phase
   Failed, reason VersionNotServable) without model pods. The operator still applies every router
   object (ServiceAccount, Role, RoleBinding, Service, Deployment); a mutating webhook served on
   127.0.0.1 makes their Services headless and pauses their router Deployments (no ReplicaSet, no
   pods), because the shared node holds about 110 pods and the local cluster's Service range 254
   addresses. A
   ResourceQuota on pods backs it up. `--serving K` makes K of the N Deployments serve for real
   (approved version, one model pod and one router pod each; the quota allows exactly those).
3. The benchmark waits until every Deployment has `status.observedGeneration == metadata.generation`:
   reconcile time and throughput (Deployments per second).
4. Steady state: memory and CPU over the same idle window as the baseline, and the API requests the
   operator made in each window, counted by the API server itself: a FlowSchema matches only the
   operator's ServiceAccount and `apiserver_flowcontrol_dispatched_requests_total` counts its requests.
5. Results: bench/results/operator-<timestamp>.json and bench/results/operator-latest.md, with the
   ratios loaded / baseline and the verdicts against the targets (< 150 MB, idle CPU < 2% of a core).

Needs kubectl and helm (`make components`), and the CRDs (applied from crds/ here).

Its parts, each doing one thing:

- `objects`: the manifests it creates (Models, ModelVersions, Deployments, quota, FlowSchema, the chart's
  RBAC, the operator's kubeconfig);
- `webhook`: the podless mutating webhook, served on 127.0.0.1;
- `cluster`: what the benchmark asks of the cluster beyond tests/support/cluster.py (the API server's
  count of the operator's requests, free Service addresses, creating objects in bulk);
- `watch`: watches of the benchmark's objects (reconciled or not, phases, changes);
- `measure`: the operator's costs over idle windows and waits (its /proc samples come from
  tests/support/operator.py), its reconcile counter, where its memory is (tracemalloc);
- `report`: the summary against the targets and the Markdown of operator-latest.md;
- `phases`: setting up and tearing down, and each step of the run;
- `run`: the command line and the run in order.

Like bench.artifacts and bench.mlflow, it takes one run at a time, SIGTERM and its namespace (refusing one
it did not make, clearing an earlier run's, deleting it at the end) from bench/runs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # tests/support: the cluster, the operator process
