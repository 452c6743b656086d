#!/usr/bin/env bash
# Restart one component of the local cluster, keeping all state: etcd data, pods, and the running
# containers (across a kubelet, containerd or kube-proxy restart they keep running: only that
# one process is stopped, never containerd's shims). Waits, bounded, until the component is healthy
# again and prints how long that took.
#
#   cluster/restart.sh COMPONENT        (make cluster-restart COMPONENT=...)
#
# COMPONENT: kube-apiserver, etcd, kube-controller-manager (or controller-manager),
# kube-scheduler (or scheduler), kubelet, kube-proxy, containerd, coredns (its pods: a rollout restart).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=components.sh
. "$CLUSTER_DIR/components.sh"

NAMES="kube-apiserver etcd kube-controller-manager (controller-manager) kube-scheduler (scheduler) kubelet kube-proxy containerd coredns"
usage() {
  printf 'usage: cluster/restart.sh COMPONENT   (make cluster-restart COMPONENT=...)\n' >&2
  printf 'COMPONENT is one of: %s\n' "$NAMES" >&2
  exit 2
}
[ $# = 1 ] || usage
case $1 in
  kube-apiserver|etcd|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|containerd|coredns) name=$1 ;;
  controller-manager) name=kube-controller-manager ;;
  scheduler) name=kube-scheduler ;;
  *) printf "[cluster] error: unknown component '%s'\n" "$1" >&2; usage ;;
esac
[ "$(id -u)" = 0 ] || die "restarting a component of the local cluster needs root"

# ms: milliseconds since the epoch; took FROM: seconds since FROM, with one decimal.
ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
took() { local d=$(($(ms) - $1)); printf '%d.%ds' $((d / 1000)) $((d % 1000 / 100)); }
t0=$(ms)

if [ "$name" = coredns ]; then
  api_healthy || die "the API server does not answer: make cluster-up (or make cluster-restart COMPONENT=kube-apiserver)"
  log "restarting coredns: kubectl rollout restart deploy/coredns"
  bounded 30 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" -n kube-system rollout restart deploy/coredns >/dev/null ||
    die "kubectl rollout restart deploy/coredns failed (see above)"
  wait_component coredns || die "CoreDNS is not ready again (see above)"
  log "coredns restarted and ready in $(took "$t0")"
  exit 0
fi

[ -f "$PKI/ca.crt" ] || die "the local cluster has never been started here: make cluster-up"
if is_running "$name"; then
  stop_component "$name"
else
  log "$name was not running: starting it"
fi
stopped=$(took "$t0")
t1=$(ms)
start_component "$name"
wait_component "$name" || die "$name did not become healthy again (log: $LOGS/$name.log)"
# Components that depend on the restarted one must be healthy again too.
case $name in
  etcd) wait_component kube-apiserver || die "the API server did not become ready again after etcd" ;;
  containerd) wait_component kubelet || die "the node did not become Ready again after containerd" ;;
esac
log "$name restarted and healthy in $(took "$t0") (stopped in $stopped, healthy $(took "$t1") after its start)"
