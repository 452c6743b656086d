#!/usr/bin/env bash
# Start a real single-node Kubernetes on this machine: containerd + runc, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy (iptables) and CoreDNS.
#   - all components running and healthy: nothing to do;
#   - some running: repair, starting only the missing ones (etcd data, pods and containers kept);
#   - none running (a reboot, all killed): clean up what is left (down.sh), then start afresh.
# The cluster's own images (pause, CoreDNS) are built if missing and imported before the kubelet starts.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=components.sh
. "$CLUSTER_DIR/components.sh"
# shellcheck source=pki.sh
. "$CLUSTER_DIR/pki.sh"
t0=$SECONDS

[ "$(id -u)" = 0 ] || die "the local cluster needs root (it runs containerd, kubelet and kube-proxy)"

running=() missing=()
for c in "${COMPONENTS[@]}"; do
  if is_running "$c"; then running+=("$c"); else missing+=("$c"); fi
done

# all_healthy: one probe of each component (each bounded), and CoreDNS ready.
all_healthy() {
  local c
  for c in "${COMPONENTS[@]}" coredns; do
    bounded 10 "healthy_$(component_fn "$c")" >/dev/null 2>&1 || return 1
  done
}
if [ ${#missing[@]} = 0 ] && all_healthy; then
  log "already running (KUBECONFIG=$KUBECONFIG_ADMIN)"
  exit 0
fi

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [ -x "$K8S_BIN/$b" ] || die "missing $K8S_BIN/$b: run cluster/build.sh (make components)"
done
[ -x "$ETCD_BIN/etcd" ] || die "missing $ETCD_BIN/etcd: run cluster/build.sh etcd"
for b in containerd runc iptables conntrack timeout; do command -v "$b" >/dev/null || die "missing $b: run cluster/deps.sh"; done

if [ ${#running[@]} -gt 0 ]; then
  path=repair
  if [ ${#missing[@]} = 0 ]; then
    log "path: repair: every component is running but not all are healthy; waiting for them (nothing is wiped)"
  else
    log "path: repair: running: ${running[*]}; starting: ${missing[*]} (etcd data, pods and containers are kept)"
  fi
else
  path=fresh
  if [ -d "$RUN" ] || [ -d "$STATE/etcd" ] || [ -d "$STATE/kubelet" ] || ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "path: fresh: no component is running; cleaning up what the previous cluster left (down.sh), then starting anew"
    "$CLUSTER_DIR/down.sh"
  else
    log "path: fresh: starting a new cluster"
  fi
fi

mkdir -p "$STATE" "$RUN" "$LOGS"
# The node's artifact cache (chart value artifacts.nodeCache): a hostPath the fetcher, which runs as
# the unprivileged user 65532, must be able to write; the kubelet would create it owned by root.
install -d -o 65532 -g 65532 -m 0750 /var/cache/modelfleet/artifacts
make_pki
prepare_host

# start_or_keep NAME: start NAME unless it is running. healthy NAME: wait (bounded) until it is.
start_or_keep() { is_running "$1" || start_component "$1"; }
healthy() {
  wait_component "$1" || die "$1 is not healthy after ${HEALTH_LIMIT[$1]}s (log: $LOGS/$1.log)"
}

start_or_keep containerd
healthy containerd
ensure_cluster_images

start_or_keep etcd
healthy etcd
start_or_keep kube-apiserver
healthy kube-apiserver

for c in kube-controller-manager kube-scheduler kubelet kube-proxy; do start_or_keep "$c"; done
for c in kube-controller-manager kube-scheduler kubelet kube-proxy; do healthy "$c"; done

# CoreDNS: applying its manifest is idempotent; a missing image fails the wait at once, naming make images.
start_coredns
wait_component coredns || {
  kubectl_admin --request-timeout=5s -n kube-system get pods -o wide >&2 || true
  die "CoreDNS did not become ready (see above; make images builds and loads the images it needs)"
}

log "ready in $((SECONDS - t0))s ($path path): node $NODE_NAME, Kubernetes $KUBERNETES_VERSION"
log "use it: eval \"\$(cluster/env.sh)\"   (KUBECONFIG=$KUBECONFIG_ADMIN)"
