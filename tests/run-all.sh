#!/usr/bin/env bash
# Run every test tier in one pytest session: unit, process, integration and e2e.
# Uses the cluster KUBECONFIG points at when it answers; otherwise brings up the local cluster.
# Extra arguments go to pytest. Exits with pytest's code; "no tests collected" (5) is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. cluster/lib.sh
PY=${VENV:-.venv}/bin/python

started_here=0
select=()
if [ -n "${KUBECONFIG:-}" ] && "$K8S_BIN/kubectl" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1; then
  log "testing against the cluster in KUBECONFIG=$KUBECONFIG"
  if [ "$(realpath "$KUBECONFIG")" != "$(realpath -m "$KUBECONFIG_ADMIN")" ]; then
    # restarting kube-apiserver, etcd or the kubelet is done with the local cluster's own scripts
    log "not the local cluster: tests that restart its components (mark local_cluster) are left out"
    select=(-m "not local_cluster")
  fi
else
  if ! api_healthy; then started_here=1; fi
  cluster/up.sh
  export KUBECONFIG=$KUBECONFIG_ADMIN
fi

set +e
# Every tool the tests use is installed by now: a skipped test is a failure here.
MODELFLEET_NO_SKIP=1 "$PY" -m pytest tests "${select[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
if [ "$started_here" = 1 ] && [ "${CI:-}" = true ]; then
  cluster/down.sh || true
fi
exit "$rc"
