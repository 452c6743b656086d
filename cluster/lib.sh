# Shared settings of the local cluster; sourced by up.sh, down.sh, status.sh, restart.sh and env.sh.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are used by the scripts that source this file
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
# containerd's registry hosts (hosts.toml per registry): every public registry points at a closed
# loopback port, so that a pull attempt fails at once instead of going out to the internet.
REGISTRY_HOSTS_DIR=$STATE/certs.d

NODE_NAME=modelfleet-node
BRIDGE=mfbr0                       # the cluster's own bridge; pods attach to it
BRIDGE_MAC=02:6d:66:00:00:01       # fixed (locally administered), so pods coming and going never change it
POD_CIDR=10.210.0.0/24
NODE_IP=10.210.0.1                 # the bridge's address: node, gateway and API server advertise address
SERVICE_CIDR=10.211.0.0/24
API_SERVICE_IP=10.211.0.1
DNS_SERVICE_IP=10.211.0.10
API_PORT=6443
ETCD_CLIENT=http://127.0.0.1:12379
ETCD_PEER=http://127.0.0.1:12380

# The cluster's own images, built by images/build.sh (PAUSE_NAMES, COREDNS_NAMES) from this repo.
PAUSE_IMAGE=localhost/pause:3.10
COREDNS_IMAGE=localhost/coredns:$COREDNS_VERSION
CLUSTER_IMAGES=("$PAUSE_IMAGE" "$COREDNS_IMAGE")

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

# containerd_has IMAGE...: every IMAGE is in the cluster's containerd (names as a pod spec writes
# them: busybox:1 is docker.io/library/busybox:1).
containerd_has() {
  local have image ref
  have=$(timeout -k 1 20 ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null) || return 1
  for image in "$@"; do
    ref=$image
    case ${ref%%/*} in
      "$ref") ref=docker.io/library/$ref ;;          # no registry, no repository path
      *.*|*:*|localhost) ;;                           # a registry host
      *) ref=docker.io/$ref ;;
    esac
    case $ref in *:*|*@*) ;; *) ref=$ref:latest ;; esac
    grep -qxF "$ref" <<< "$have" || return 1
  done
}

# image_problems NAMESPACE [SELECTOR]: prints, and succeeds, when a pod there cannot start because an
# image is missing from containerd: a container waiting on ErrImageNeverPull/ErrImagePull/
# ImagePullBackOff, or a pending pod whose sandbox cannot be made (the pause image). An image that
# is in containerd by now does not count: the kubelet tries again by itself. Fails when all is well.
image_problems() {
  local ns=$1 selector=${2:-} found=1 pod reason image pending
  # shellcheck disable=SC2016  # go-template variables, not shell ones
  local containers='{{range .items}}{{$pod := .metadata.name}}{{range .status.containerStatuses}}{{if .state.waiting}}{{$pod}} {{.state.waiting.reason}} {{.image}}{{"\n"}}{{end}}{{end}}{{end}}'
  local sandboxes='{{range .items}}{{if eq .reason "FailedCreatePodSandBox"}}{{.involvedObject.name}} {{.message}}{{"\n"}}{{end}}{{end}}'
  while read -r pod reason image; do
    case $reason in
      ErrImageNeverPull|ErrImagePull|ImagePullBackOff|InvalidImageName)
        containerd_has "$image" && continue
        log "error: pod $ns/$pod: image $image is not in the cluster's containerd ($reason): run make images"
        found=0 ;;
    esac
  done < <(kubectl_admin --request-timeout=5s -n "$ns" get pods ${selector:+-l "$selector"} \
             -o go-template="$containers" 2>/dev/null)
  containerd_has "$PAUSE_IMAGE" && return $found
  pending=$(kubectl_admin --request-timeout=5s -n "$ns" get pods ${selector:+-l "$selector"} \
              --field-selector status.phase=Pending -o name 2>/dev/null | sed 's|^pod/||')
  while read -r pod reason; do
    grep -qxF "$pod" <<< "$pending" || continue
    log "error: pod $ns/$pod: its sandbox cannot be made, the pause image $PAUSE_IMAGE is missing: run make images"
    found=0
  done < <(kubectl_admin --request-timeout=5s -n "$ns" get events -o go-template="$sandboxes" 2>/dev/null |
             grep -F "sandbox image" | sort -u -k1,1)
  return $found
}
