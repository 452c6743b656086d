# Shared settings of the local cluster; sourced by up.sh, down.sh, status.sh and env.sh.
# shellcheck shell=bash
CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$CLUSTER_DIR")
# shellcheck source=versions.env
. "$CLUSTER_DIR/versions.env"
CACHE=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
K8S_BIN="$CACHE/bin/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"

# Everything the running cluster owns lives under these two folders, so cleaning up is exact.
STATE=/var/lib/modelfleet          # etcd data, certificates, kubeconfigs, kubelet and containerd roots
RUN=/run/modelfleet                # sockets and pid files
LOGS=$STATE/logs
PKI=$STATE/pki
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
CONTAINERD_SOCK=$RUN/containerd/containerd.sock

NODE_NAME=modelfleet-node
BRIDGE=mfbr0                       # the cluster's own bridge; pods attach to it
POD_CIDR=10.210.0.0/24
NODE_IP=10.210.0.1                 # the bridge's address: node, gateway and API server advertise address
SERVICE_CIDR=10.211.0.0/24
API_SERVICE_IP=10.211.0.1
DNS_SERVICE_IP=10.211.0.10
API_PORT=6443
ETCD_CLIENT=http://127.0.0.1:12379
ETCD_PEER=http://127.0.0.1:12380

# The cluster's processes, in start order.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

pid_of() { local f="$RUN/$1.pid"; [ -f "$f" ] && cat "$f"; }
# alive PID: the process exists and is not a zombie.
alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"
}
# is_running NAME: its pid file names a live process that is NAME (not another one that got the
# pid of a dead component).
is_running() {
  local p exe
  p=$(pid_of "$1") && alive "$p" || return 1
  exe=$(tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | head -n1)
  [ "${exe##*/}" = "$1" ]
}

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

api_healthy() {
  [ -f "$KUBECONFIG_ADMIN" ] && [ -x "$K8S_BIN/kubectl" ] &&
    "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=3s get --raw=/readyz >/dev/null 2>&1
}

# bounded SECONDS CMD...: run CMD, killed (with everything it started) after SECONDS. CMD may be a
# shell function: it then runs in a new bash that has this file's settings and the caller's functions.
bounded() {
  local secs=$1; shift
  if [ "$(type -t "$1")" = function ]; then
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout -k 1 "$secs" bash -c '. "$1" && eval "$2" && shift 2 && "$@"' bounded \
      "$CLUSTER_DIR/lib.sh" "$(declare -f)" "$@"
  else
    timeout -k 1 "$secs" "$@"
  fi
}

# wait_for [--give-up CHECK] WHAT SECONDS CMD...: poll CMD until it succeeds, for at most SECONDS of
# wall-clock time: each try of CMD is cut off at the time left. On time-out show the end of
# $LOGS/WHAT.log and fail. With --give-up, CHECK runs after each failed try; when it succeeds (it
# prints why waiting is pointless, e.g. a missing image) the wait fails at once.
wait_for() {
  local give_up=""
  if [ "$1" = --give-up ]; then give_up=$2; shift 2; fi
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit)) left
  while left=$((deadline - SECONDS)); ((left > 0)); do
    bounded "$left" "$@" >/dev/null 2>&1 && return 0
    if [ -n "$give_up" ] && left=$((deadline - SECONDS)) && ((left > 0)) &&
      bounded "$left" "$give_up" >&2; then
      return 1
    fi
    ((deadline - SECONDS > 0)) && sleep 0.25
  done
  log "timed out after ${limit}s waiting for $what"
  [ -f "$LOGS/$what.log" ] && tail -n 30 "$LOGS/$what.log" >&2
  return 1
}
