#!/usr/bin/env bash
# Build the local cluster's binaries with `go build` from the Go module proxy, at the versions pinned
# in versions.env, into the cache (default ~/.cache/modelfleet/bin). Each component is built once
# per version; a later run finds it and returns at once.
#
#   cluster/build.sh [kubernetes] [etcd] [coredns] [helm] [versitygw]     (no argument: all five)
#
# versitygw (the S3 object store some tests and the demo start) does not depend on the others and
# nothing at cluster start needs it: with no argument it builds in the background beside the rest,
# and the script waits for it before it returns.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
CACHE=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[build] %s\n' "$*" >&2; }

# compile NAME OUT LDFLAGS TARGET PKG...: go build with a progress line every 100 packages, then
# move the result into place only when it is complete.
compile() {
  local name=$1 out=$2 ldflags=$3 target=$4; shift 4
  local t0=$SECONDS
  log "$name: compiling (first build only; a line every 100 packages)"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  set +e
  go build -v -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/$target" "$@" 2>&1 |
    awk -v n="$name" '/^(#|go: )|: / {print; fflush(); next}
                      {c++; if (c % 100 == 0) {printf "[build] %s: %d packages compiled\n", n, c; fflush()}}' >&2
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ] || [ -z "$(ls -A "$out.tmp")" ]; then
    log "$name: build failed (exit $rc)"; rm -rf "$out.tmp"; return 1
  fi
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "$name: done in $((SECONDS - t0))s -> $out"
}

# new_module NAME: an empty scratch Go module in the cache; prints its path.
new_module() {
  local d="$CACHE/src/$1"
  rm -rf "$d" && mkdir -p "$d"
  (cd "$d" && go mod init "modelfleet.local/build/${1%%-v*}" >/dev/null 2>&1)
  echo "$d"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION out="$CACHE/bin/kubernetes-$KUBERNETES_VERSION"
  [ -x "$out/kubelet" ] && return 0
  local minor=${v#v1.}; minor=${minor%%.*}
  local patch=${v##*.}
  local d; d=$(new_module "kubernetes-$v")
  cd "$d"
  log "kubernetes $v: downloading modules"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # k8s.io/kubernetes points its staging modules at ./staging; for a dependency those replaces do
  # not apply, so pin each one to the matching published v0.MINOR.PATCH.
  {
    echo "require k8s.io/kubernetes $v"
    echo "replace ("
    sed -n "s#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 v0.$minor.$patch#p" "$gomod"
    echo ")"
  } >> go.mod
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local pkgs=("${cmds[@]/#/k8s.io/kubernetes/cmd/}")
  go mod download
  go list "${pkgs[@]}" >/dev/null
  local ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  compile "kubernetes $v" "$out" "$ld" "" "${pkgs[@]}"
}

# build_single NAME VERSION MODULE MAIN_GO: build one binary from a generated main package.
build_single() {
  local name=$1 v=$2 module=$3 main_go=$4
  local out="$CACHE/bin/$name-$v"
  [ -x "$out/$name" ] && return 0
  local d; d=$(new_module "$name-$v")
  cd "$d"
  printf '%s\n' "$main_go" > main.go
  log "$name $v: downloading modules"
  go get "$module@$v" >/dev/null
  go mod tidy >/dev/null
  compile "$name $v" "$out" "" "$name" .
}

build_etcd() {
  build_single etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 'package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }'
}

# CoreDNS with just the plugins a cluster DNS needs; the plugin chain order comes from CoreDNS itself.
build_coredns() {
  local imports="" p
  for p in errors health ready kubernetes forward cache loop reload loadbalance log hosts metrics whoami; do
    imports+=$'\t_ "github.com/coredns/coredns/plugin/'"$p"$'"\n'
  done
  build_single coredns "$COREDNS_VERSION" github.com/coredns/coredns "package main

import (
	\"github.com/coredns/coredns/core/dnsserver\"
	\"github.com/coredns/coredns/coremain\"
$imports)

func init() { dnsserver.Directives = dnsserver.Directives }

func main() { coremain.Run() }"
}

build_helm() {
  local v=$HELM_VERSION out="$CACHE/bin/helm-$HELM_VERSION"
  [ -x "$out/helm" ] && return 0
  local d; d=$(new_module "helm-$v")
  cd "$d"
  log "helm $v: downloading modules"
  go get "helm.sh/helm/v3@$v" >/dev/null
  echo 'package tools

import _ "helm.sh/helm/v3/cmd/helm"' > tools.go
  go mod tidy >/dev/null 2>&1 || true
  compile "helm $v" "$out" "-X helm.sh/helm/v3/internal/version.version=$v" helm helm.sh/helm/v3/cmd/helm
}

# versitygw: the S3 gateway with its posix backend, built from its own cmd/versitygw package.
build_versitygw() {
  local v=$VERSITYGW_VERSION out="$CACHE/bin/versitygw-$VERSITYGW_VERSION"
  [ -x "$out/versitygw" ] && return 0
  local d; d=$(new_module "versitygw-$v")
  cd "$d"
  log "versitygw $v: downloading modules"
  go get "github.com/versity/versitygw@$v" >/dev/null
  echo 'package tools

import _ "github.com/versity/versitygw/cmd/versitygw"' > tools.go
  go mod tidy >/dev/null 2>&1 || true
  compile "versitygw $v" "$out" "-X main.Version=$v" versitygw github.com/versity/versitygw/cmd/versitygw
}

# One build of a component at a time, even from several shells: a second waits, then finds the
# result in the cache.
build_locked() {
  mkdir -p "$CACHE"
  ( exec 9>"$CACHE/.build-$1.lock" && flock 9 && "build_$1" )
}

targets=("$@")
background=""
if [ ${#targets[@]} -eq 0 ]; then
  targets=(kubernetes etcd coredns helm)
  build_locked versitygw & background=$!
fi
for t in "${targets[@]}"; do
  case "$t" in
    kubernetes|etcd|coredns|helm|versitygw) build_locked "$t" ;;
    *) log "unknown component '$t' (kubernetes, etcd, coredns, helm, versitygw)"; exit 2 ;;
  esac
done
if [ -n "$background" ] && ! wait "$background"; then
  log "versitygw: build failed"; exit 1
fi
