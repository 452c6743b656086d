#!/usr/bin/env bash
# Start a real single-node Kubernetes on this machine: containerd + runc, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy (iptables) and CoreDNS.
# Idempotent: on a running, healthy cluster it does nothing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$CLUSTER_DIR/pki.sh"
t0=$SECONDS

[ "$(id -u)" = 0 ] || die "the local cluster needs root (it runs containerd, kubelet and kube-proxy)"

all_running() { local c; for c in "${COMPONENTS[@]}"; do is_running "$c" || return 1; done; }
if all_running && api_healthy; then
  log "already running (KUBECONFIG=$KUBECONFIG_ADMIN)"
  exit 0
fi
if [ -d "$RUN" ] && ls "$RUN"/*.pid >/dev/null 2>&1; then
  log "a previous cluster is partly running: cleaning it up first"
  "$CLUSTER_DIR/down.sh"
fi

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [ -x "$K8S_BIN/$b" ] || die "missing $K8S_BIN/$b: run cluster/build.sh (make components)"
done
[ -x "$ETCD_BIN/etcd" ] || die "missing $ETCD_BIN/etcd: run cluster/build.sh etcd"
for b in containerd runc iptables conntrack; do command -v "$b" >/dev/null || die "missing $b: run cluster/deps.sh"; done

mkdir -p "$STATE" "$RUN" "$LOGS"
make_pki

# start NAME CMD...: run a component in the background, detached, logging to $LOGS/NAME.log.
start() {
  local name=$1; shift
  log "starting $name"
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"
}

# --- host networking: our own bridge, and the service range routed onto it --------------------
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: bridge netfilter unavailable"
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
ip link set "$BRIDGE" up
# A packet for a Service must never take the default route out of the machine, even when
# kube-proxy is not running: send the whole service range onto the local bridge.
ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"

mkdir -p "$STATE/cni/net.d"
cat > "$STATE/cni/net.d/10-modelfleet.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "modelfleet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "${POD_CIDR%.*}.10", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

# --- containerd -------------------------------------------------------------------------------
mkdir -p "$RUN/containerd" "$STATE/containerd" "$STATE/bin"
# Some machines (sandboxed VMs among them) refuse a negative oom_score_adj even to root, while
# the kubelet asks for -998 on every pod sandbox. There, runc goes through a wrapper that raises
# negative values to 0 in the container's spec; elsewhere runc is used as it is.
runc_bin=$(command -v runc)
if ! sh -c 'echo -1 > /proc/self/oom_score_adj' 2>/dev/null; then
  log "negative oom_score_adj is refused here: clamping it to 0 for containers"
  cat > "$STATE/bin/runc" <<SH
#!/bin/sh
prev=
for a in "\$@"; do
  if [ "\$prev" = --bundle ] || [ "\$prev" = -b ]; then
    sed -i -E 's/"oomScoreAdj": *-[0-9]+/"oomScoreAdj":0/' "\$a/config.json"
  fi
  prev=\$a
done
exec $runc_bin "\$@"
SH
  chmod +x "$STATE/bin/runc"
  runc_bin=$STATE/bin/runc
fi
cat > "$STATE/containerd.toml" <<TOML
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$runc_bin"
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
start containerd containerd --config "$STATE/containerd.toml"
wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version

# The cluster's own images (pause, CoreDNS) and the project's images, from the cache.
if [ -x "$REPO_DIR/images/build.sh" ]; then
  "$REPO_DIR/images/build.sh" --load-only || log "warning: could not load cached images"
fi

# --- etcd and the control plane ---------------------------------------------------------------
start etcd "$ETCD_BIN/etcd" --name default --data-dir "$STATE/etcd" \
  --listen-client-urls "$ETCD_CLIENT" --advertise-client-urls "$ETCD_CLIENT" \
  --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
  --initial-cluster "default=$ETCD_PEER" --unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -fsS "$ETCD_CLIENT/health"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port "$API_PORT" \
  --etcd-servers "$ETCD_CLIENT" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --client-ca-file "$PKI/ca.crt" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 90 api_healthy

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
  --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR" \
  --controllers '*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' --v=1

start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --v=1

# --- the node: kubelet and kube-proxy ---------------------------------------------------------
mkdir -p "$STATE/kubelet"
cat > "$STATE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
clusterDNS: ["$DNS_SERVICE_IP"]
clusterDomain: cluster.local
resolvConf: ""
podCIDR: "$POD_CIDR"
failSwapOn: false
maxPods: 110
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
YAML
start kubelet "$K8S_BIN/kubelet" --config "$STATE/kubelet.yaml" \
  --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

cat > "$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$STATE/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$NODE_NAME"
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
YAML
start kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v=1

node_ready() {
  [ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
wait_for kubelet 120 node_ready

# --- cluster add-ons: CoreDNS -----------------------------------------------------------------
sed -e "s/@DNS_SERVICE_IP@/$DNS_SERVICE_IP/" -e "s/@COREDNS_VERSION@/$COREDNS_VERSION/" \
  "$CLUSTER_DIR/coredns.yaml" | kubectl_admin apply -f - >/dev/null
dns_ready() { kubectl_admin -n kube-system rollout status deploy/coredns --timeout=2s; }
if ! wait_for coredns 90 dns_ready; then
  kubectl_admin -n kube-system get pods -o wide >&2 || true
  die "CoreDNS did not become ready (is the image loaded? images/build.sh --load-only)"
fi

log "ready in $((SECONDS - t0))s: node $NODE_NAME, Kubernetes $KUBERNETES_VERSION"
log "use it: eval \"\$(cluster/env.sh)\"   (KUBECONFIG=$KUBECONFIG_ADMIN)"
