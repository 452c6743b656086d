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

COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

pid_of() { local f="$RUN/$1.pid"; [ -f "$f" ] && cat "$f"; }
is_running() { local p; p=$(pid_of "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

api_healthy() {
  [ -f "$KUBECONFIG_ADMIN" ] && [ -x "$K8S_BIN/kubectl" ] &&
    "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=3s get --raw=/readyz >/dev/null 2>&1
}
