#!/usr/bin/env bash
# Stop the local cluster and leave nothing of ours behind: no processes, mounts, network
# namespaces, bridge, route or iptables rules. Cached binaries and images stay; cluster data
# (etcd, pods) is removed so the next start is fresh.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root"
t0=$SECONDS

# stop NAME: SIGTERM to the component and its process group, SIGKILL to what is left after 10 s.
stop() {
  local name=$1 pid deadline
  pid=$(pid_of "$name") || return 0
  if is_running "$name"; then
    log "stopping $name"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$RUN/$name.pid"
}

# The node first, so nothing restarts containers while we remove them.
stop kubelet
stop kube-proxy
# Containers: stop every task of ours, then their shims. All of it within 60 s: each ctr call gets
# at most the time left (a containerd that hangs must not hold down.sh).
if [ -S "$CONTAINERD_SOCK" ]; then
  ctr_deadline=$((SECONDS + 60))
  ctr_() {
    local left=$((ctr_deadline - SECONDS))
    ((left > 0)) || return 1
    timeout -k 1 "$((left < 20 ? left : 20))" ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"
  }
  for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1; done
  sleep 0.5
  for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$c" >/dev/null 2>&1; done
  for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1; done
  ((SECONDS < ctr_deadline)) || log "warning: containerd did not remove every container within 60s; killing the shims"
fi
for name in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop "$name"; done
# Shims whose containerd is gone (they belong to our containerd state dir).
pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null
for p in $(pgrep -f "$RUN/containerd" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done

# kube-proxy's rules (it removes exactly its own chains).
if [ -x "$K8S_BIN/kube-proxy" ]; then
  "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi

# The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT): unhook the
# jumps to KUBE-* chains, then flush and delete those chains, in every table, for IPv4 and IPv6.
for ipt in iptables ip6tables; do
  command -v "$ipt" >/dev/null || continue
  for table in filter nat mangle raw; do
    "$ipt-save" -t "$table" 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' |
      while read -r rule; do eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null; done
    for chain in $("$ipt-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[A-Z0-9-]*\) .*/\1/p'); do
      "$ipt" -t "$table" -F "$chain" 2>/dev/null
    done
    for chain in $("$ipt-save" -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[A-Z0-9-]*\) .*/\1/p'); do
      "$ipt" -t "$table" -X "$chain" 2>/dev/null
    done
  done
done

# Mounts under our folders: container rootfs, volumes, network namespaces of our pods.
for _ in 1 2 3; do
  grep -E " ($STATE|$RUN)/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do
    timeout 10 umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
done
for ns in /run/netns/cni-*; do
  [ -e "$ns" ] || continue
  # only namespaces with an interface attached to our bridge's pod range
  if ip netns exec "$(basename "$ns")" ip -4 addr 2>/dev/null | grep -q "inet ${POD_CIDR%.*}\."; then
    timeout 10 umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null; rm -f "$ns"
  fi
done

# The kubelet's cgroups (cgroup v1 hierarchies, or the v2 tree), deepest first.
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
  [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
done

# Network: the route, the bridge (veths of our pods went with their namespaces).
ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null
ip link del "$BRIDGE" 2>/dev/null

# Cluster data: fresh next time. Certificates, binaries and images are kept.
rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/cni/ipam" "$RUN"
left=$(grep -cE " ($STATE|$RUN)/" /proc/mounts)
[ "$left" = 0 ] || log "warning: $left mounts still present under $STATE or $RUN"
log "stopped in $((SECONDS - t0))s"
