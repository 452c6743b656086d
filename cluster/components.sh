# The cluster's components one by one: how each starts, how it stops, when it is healthy.
# Sourced (after lib.sh) by up.sh, for a full start or a repair, and by restart.sh, for one.
# shellcheck shell=bash
#
# For each component NAME (see COMPONENTS in lib.sh, and coredns):
#   start_component NAME      write its configuration, start it detached (logs: $LOGS/NAME.log)
#   stop_component NAME       stop that one process (never its process group: containerd's shims,
#                             and so the containers, outlive a containerd restart)
#   healthy_NAME [SINCE]      one quick probe (NAME with - as _); wait_component NAME waits for it
#   HEALTH_LIMIT[NAME]        how long a start may take to be healthy, in seconds
# Probes run under `bounded` (lib.sh), in a new bash that has lib.sh's settings and the caller's
# functions but not the caller's variables: what they need beyond lib.sh comes as arguments.

declare -A HEALTH_LIMIT=(
  [containerd]=30 [etcd]=30 [kube-apiserver]=90 [kube-controller-manager]=60 [kube-scheduler]=60
  [kubelet]=120 [kube-proxy]=60 [coredns]=90
)
# The node's Ready condition counts only when reported after this second (seconds since the epoch):
# set when the kubelet or containerd (re)starts, so that a Ready from before does not count.
NODE_READY_SINCE=0

# run_detached NAME CMD...: run a component in the background, in its own session, logging to
# $LOGS/NAME.log; its pid goes to $RUN/NAME.pid.
run_detached() {
  local name=$1; shift
  mkdir -p "$RUN" "$LOGS"
  log "starting $name"
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"
}

# How long a component may take to stop on SIGTERM. The API server has drained its requests within
# milliseconds here, and then waits up to 60 s for its clients' watch connections to close.
declare -A STOP_GRACE=([kube-apiserver]=5)

# stop_component NAME [SECONDS]: SIGTERM to the component's own process (not its process group);
# if it is still there after SECONDS (default STOP_GRACE[NAME], else 10), a second SIGTERM (on which
# a Kubernetes component exits at once), and SIGKILL 3 s later.
stop_component() {
  local name=$1 limit=${2:-${STOP_GRACE[$1]:-10}} pid deadline
  if is_running "$name"; then
    pid=$(pid_of "$name")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + limit))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$pid"; then
      log "$name still runs after ${limit}s: SIGTERM again"
      kill -TERM "$pid" 2>/dev/null
      deadline=$((SECONDS + 3))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    fi
    if alive "$pid"; then
      log "$name still runs: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      deadline=$((SECONDS + 5))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    fi
  fi
  rm -f "$RUN/$name.pid"
}

component_fn() { printf '%s' "${1//-/_}"; }
start_component() { "start_$(component_fn "$1")"; }
# wait_component NAME: wait, at most HEALTH_LIMIT[NAME] seconds, until NAME is healthy.
wait_component() {
  local name=$1 probe
  probe=healthy_$(component_fn "$name")
  if [ "$name" = coredns ]; then
    wait_for --give-up coredns_image_problems coredns "${HEALTH_LIMIT[coredns]}" "$probe"
  else
    wait_for "$name" "${HEALTH_LIMIT[$name]}" "$probe" "$NODE_READY_SINCE"
  fi
}

# --- host networking: our own bridge, and the service range routed onto it --------------------
# Idempotent: on a running cluster it changes nothing.
prepare_host() {
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: bridge netfilter unavailable"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  # A bridge without an address of its own takes the lowest MAC of its ports, so every pod that starts
  # or stops with a lower one changes it: the node's neighbour entries on the bridge are flushed and
  # the pods' ARP entries for their gateway point at a MAC that is gone, which clients see as
  # `No route to host` or stalls. A fixed, locally administered MAC keeps the gateway where it is.
  ip link set "$BRIDGE" address "$BRIDGE_MAC"
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
}

# --- containerd -------------------------------------------------------------------------------
# The registries a pull could name; each gets a hosts.toml sending it to a closed loopback port
# (_default: every other registry, where containerd supports it).
BLOCKED_REGISTRIES=(docker.io registry.k8s.io quay.io ghcr.io gcr.io _default)
CLOSED_REGISTRY=http://127.0.0.1:9

# write_registry_hosts DIR: DIR/REGISTRY/hosts.toml for each of BLOCKED_REGISTRIES.
write_registry_hosts() {
  local dir=$1 r
  for r in "${BLOCKED_REGISTRIES[@]}"; do
    mkdir -p "$dir/$r"
    cat > "$dir/$r/hosts.toml" <<TOML
# Written by cluster/components.sh. The local cluster never pulls from the internet: its images
# are built here and imported (make images); a pull of $r goes to a closed loopback port and
# fails at once (no DNS lookup, nothing leaves the machine).
server = "$CLOSED_REGISTRY"
# containerd 1.6 refuses a hosts.toml without a host table ("invalid \`host\` tree") and then
# falls back to the registry's public address: the same closed port again.
[host."$CLOSED_REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
  done
}

# write_containerd_config FILE RUNC: containerd's configuration, with RUNC as the runc binary.
write_containerd_config() {
  local file=$1 runc=$2
  cat > "$file" <<TOML
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$REGISTRY_HOSTS_DIR"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$runc"
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
}

start_containerd() {
  mkdir -p "$RUN/containerd" "$STATE/containerd" "$STATE/bin"
  # Some machines (sandboxed VMs among them) refuse a negative oom_score_adj even to root, while
  # the kubelet asks for -998 on every pod sandbox. There, runc goes through a wrapper that raises
  # negative values to 0 in the container's spec; elsewhere runc is used as it is.
  local runc_bin
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
  write_registry_hosts "$REGISTRY_HOSTS_DIR"
  write_containerd_config "$STATE/containerd.toml" "$runc_bin"
  run_detached containerd containerd --config "$STATE/containerd.toml"
  NODE_READY_SINCE=$(date +%s)
}
healthy_containerd() { ctr --address "$CONTAINERD_SOCK" version; }

# ensure_cluster_images: the cluster's own images (pause, CoreDNS) in containerd before the kubelet
# starts. images/build.sh builds their archives when missing or out of date (cheap: a static gcc
# binary and the CoreDNS binary of make components) and imports every cached archive.
ensure_cluster_images() {
  local have missing=() image
  log "cluster images: images/build.sh pause coredns (builds what the cache lacks, imports the cache)"
  "$REPO_DIR/images/build.sh" pause coredns ||
    die "could not build or import the cluster's own images ($PAUSE_IMAGE, $COREDNS_IMAGE); see above, then run make images"
  have=$(bounded 30 ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q) ||
    die "could not list containerd's images at $CONTAINERD_SOCK"
  for image in "${CLUSTER_IMAGES[@]}"; do
    grep -qxF "$image" <<< "$have" || missing+=("$image")
  done
  [ ${#missing[@]} = 0 ] ||
    die "containerd lacks the cluster's own images: ${missing[*]}; run make images, then make cluster-up"
}

# --- etcd and the control plane ---------------------------------------------------------------
start_etcd() {
  run_detached etcd "$ETCD_BIN/etcd" --name default --data-dir "$STATE/etcd" \
    --listen-client-urls "$ETCD_CLIENT" --advertise-client-urls "$ETCD_CLIENT" \
    --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
    --initial-cluster "default=$ETCD_PEER" --unsafe-no-fsync --log-level warn
}
healthy_etcd() { curl -fsS --max-time 3 "$ETCD_CLIENT/health"; }

start_kube_apiserver() {
  run_detached kube-apiserver "$K8S_BIN/kube-apiserver" \
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
}
healthy_kube_apiserver() { api_healthy; }

start_kube_controller_manager() {
  run_detached kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR" \
    --kube-api-qps 100 --kube-api-burst 200 \
    --controllers '*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' --v=1
}
# --kube-api-qps/--kube-api-burst: 5 and 10 times the defaults (20, 30 per controller). At the defaults
# the Deployment controller of this cluster took over 15 minutes to write the status of the 10,000
# apps/v1 Deployments the operator benchmark makes; clusters of that size raise them too.
# /healthz of the secure port is open without credentials (--authorization-always-allow-paths).
healthy_kube_controller_manager() { curl -fsSk --max-time 3 https://127.0.0.1:10257/healthz; }

start_kube_scheduler() {
  run_detached kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --v=1
}
healthy_kube_scheduler() { curl -fsSk --max-time 3 https://127.0.0.1:10259/healthz; }

# --- the node: kubelet and kube-proxy ---------------------------------------------------------
start_kubelet() {
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
  run_detached kubelet "$K8S_BIN/kubelet" --config "$STATE/kubelet.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
  NODE_READY_SINCE=$(date +%s)
}
# node_ready [SINCE]: the node's Ready condition is True, reported after the second SINCE (seconds
# since the epoch; default 0: any report).
node_ready() {
  local since=${1:-0} status beat
  read -r status beat < <(kubectl_admin --request-timeout=3s get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null)
  [ "$status" = True ] && [ -n "$beat" ] && (($(date -d "$beat" +%s) > since))
}
healthy_kubelet() { curl -fsS --max-time 3 http://127.0.0.1:10248/healthz && node_ready "${1:-0}"; }

start_kube_proxy() {
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
  run_detached kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v=1
}
healthy_kube_proxy() { curl -fsS --max-time 3 http://127.0.0.1:10256/healthz; }

# --- cluster add-ons: CoreDNS (a Deployment; "starting" it is applying its manifest) -----------
start_coredns() {
  sed -e "s/@DNS_SERVICE_IP@/$DNS_SERVICE_IP/" -e "s/@COREDNS_VERSION@/$COREDNS_VERSION/" \
    "$CLUSTER_DIR/coredns.yaml" | bounded 30 "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" apply -f - >/dev/null
}
healthy_coredns() { kubectl_admin -n kube-system rollout status deploy/coredns --timeout=2s; }
coredns_image_problems() { image_problems kube-system k8s-app=kube-dns; }
