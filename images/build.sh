#!/usr/bin/env bash
# Build the project's images and the local cluster's own images with buildah (no Docker engine, no
# registry), export each as an OCI archive into the cache, and import the archives into the local
# cluster's containerd when it is running. Each step is skipped when its inputs are unchanged.
#
#   images/build.sh [STEP...]     steps: base app mlserver pause coredns versitygw (default: all;
#                                 app and mlserver need base)
#   images/build.sh --load-only   import the cached archives only
# cluster/up.sh runs `images/build.sh pause coredns` before the kubelet starts: the cluster's own
# images are built when missing (cheap), and every cached archive is imported.
#
# Images:
#   localhost/modelfleet-base:bookworm    Debian bookworm minbase + Python (debootstrap), the BASE of the Dockerfile
#   localhost/modelfleet:dev              Dockerfile target `operator` (operator and router)
#   localhost/modelfleet-model-server:dev Dockerfile target `model-server`, also tagged
#   localhost/iris-server:{1,2,3}         (one image; the versions differ by configuration)
#   localhost/modelfleet-mlserver:dev     Dockerfile target `mlserver`: the MLServer runtime for model artifacts
#   localhost/pause:3.10                  the pod sandbox (containerd's sandbox_image), from images/pause/pause.c
#   localhost/coredns:<COREDNS_VERSION>   CoreDNS as built by cluster/build.sh coredns
#   localhost/versitygw:<VERSITYGW_VERSION>  the S3 object store, as built by cluster/build.sh versitygw
#
# Environment:
#   MODELFLEET_CACHE           cache folder (default ~/.cache/modelfleet); archives go to $MODELFLEET_CACHE/images
#   IMAGE_LOADER               containerd (default: import when the socket below answers), kind, or none
#   MODELFLEET_CONTAINERD_SOCK containerd socket (default /run/modelfleet/containerd/containerd.sock)
#   KIND_CLUSTER_NAME          with IMAGE_LOADER=kind: the kind cluster (default: kind's own default)
#   MODELFLEET_DEBIAN_MIRROR   Debian mirror for debootstrap (default: debootstrap's own)
#   MODELFLEET_BUILD_CA        CA bundle the build's pip trusts (default: the host's, /etc/ssl/certs/ca-certificates.crt)
#   MODELFLEET_IMAGES_LOCK_WAIT  seconds to wait for another images/build.sh to finish (default 1800)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=cluster/versions.env source-path=SCRIPTDIR/..
. "$ROOT/cluster/versions.env"
CACHE=${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}
OUT=$CACHE/images
LOGS=$OUT/logs
PAUSE_VERSION=3.10
BASE_IMAGE=localhost/modelfleet-base:bookworm
OPERATOR_NAMES=(localhost/modelfleet:dev)
MODEL_SERVER_NAMES=(localhost/modelfleet-model-server:dev localhost/iris-server:1 localhost/iris-server:2
                    localhost/iris-server:3)
# A local name (as cluster/lib.sh PAUSE_IMAGE): even a pull attempt of it would go to loopback only.
PAUSE_NAMES=("localhost/pause:$PAUSE_VERSION")
COREDNS_NAMES=("localhost/coredns:$COREDNS_VERSION")
MLSERVER_NAMES=(localhost/modelfleet-mlserver:dev)
VERSITYGW_NAMES=("localhost/versitygw:$VERSITYGW_VERSION")
# $OUT/NAME.tar; the cluster's own images first
ARCHIVES=(pause coredns modelfleet model-server mlserver versitygw)
# What goes into the base rootfs; changing it (or this tag) makes a new rootfs and base image.
BASE_RECIPE="bookworm minbase python3,python3-venv,python3-pip,ca-certificates r1"
IMAGE_LOADER=${IMAGE_LOADER:-containerd}
SOCK=${MODELFLEET_CONTAINERD_SOCK:-/run/modelfleet/containerd/containerd.sock}
BUILD_CA=${MODELFLEET_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
LOCK_WAIT=${MODELFLEET_IMAGES_LOCK_WAIT:-1800}

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
step=""
on_exit() {
  local rc=$?
  [ $rc = 0 ] || log "FAILED${step:+ in step \"$step\"} (exit $rc); see the messages above"
}
trap on_exit EXIT

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# run_logged LOGFILE CMD...: run CMD with its output in LOGFILE; on failure show the end of it.
run_logged() {
  local file=$1; shift
  if ! "$@" > "$file" 2>&1; then
    log "command failed: $*"
    log "last lines of $file:"
    tail -n 40 "$file" | sed 's/^/    /' >&2
    return 1
  fi
}

arch() {
  case $(uname -m) in
    x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;;
  esac
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1"; }

# Stamps: $OUT/NAME.inputs holds the hash of the inputs of the last good build of archive NAME.
stamp_ok() { [ -s "$OUT/$1.tar" ] && [ "$(cat "$OUT/$1.inputs" 2>/dev/null)" = "$2" ]; }
stamp_set() { printf '%s\n' "$2" > "$OUT/$1.inputs"; }

# rm_tree DIR: remove a folder, refusing when anything is still mounted inside it (debootstrap
# mounts /proc and /sys in its target; a failed run may leave them behind).
rm_tree() {
  local dir=$1
  [ -e "$dir" ] || return 0
  if awk -v d="$dir/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
    die "$dir has mounts inside it (a failed debootstrap?); unmount them (umount -R) and run again"
  fi
  rm -rf "$dir"
}

# export_archive NAME IMAGE REF...: write $OUT/NAME.tar, an OCI archive holding IMAGE under each REF.
# The OCI layout folder beside it is kept, so the next push reuses its unchanged (compressed) layers.
export_archive() {
  local name=$1 image=$2; shift 2
  local layout="$OUT/$name.oci" t0=$SECONDS
  rm -f "$OUT/$name.tar.tmp"
  buildah push --quiet "$image" "oci:$layout:$1" >/dev/null
  python3 "$ROOT/images/imagetool.py" name-layout "$layout" "$@"
  tar -C "$layout" -cf "$OUT/$name.tar.tmp" oci-layout index.json blobs
  mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
  log "$name: exported to $OUT/$name.tar in $((SECONDS - t0))s ($(du -h "$OUT/$name.tar" | cut -f1))"
}

# ---- the base image: Debian minbase with Python, made by debootstrap, cached
build_base() {
  step=base
  local key rootfs t0=$SECONDS
  key=$(printf '%s' "$BASE_RECIPE" | sha256sum | cut -c1-12)
  rootfs="$CACHE/rootfs/bookworm-python-$key"
  if image_exists "$BASE_IMAGE" && [ "$(cat "$OUT/base.recipe" 2>/dev/null)" = "$key" ]; then
    log "base: $BASE_IMAGE is cached"
    return 0
  fi
  if [ ! -d "$rootfs" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing: run cluster/deps.sh (make deps)"
    rm_tree "$rootfs.tmp"
    mkdir -p "$(dirname "$rootfs")"
    log "base: debootstrap bookworm into $rootfs (first run only; log: $LOGS/debootstrap.log)"
    # shellcheck disable=SC2086  # the mirror is optional: no argument means debootstrap's default
    run_logged "$LOGS/debootstrap.log" debootstrap --variant=minbase \
      --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs.tmp" \
      ${MODELFLEET_DEBIAN_MIRROR:-}
    slim_rootfs "$rootfs.tmp"
    mv "$rootfs.tmp" "$rootfs"
    log "base: rootfs ready in $((SECONDS - t0))s ($(du -sh "$rootfs" | cut -f1))"
  fi
  local ctr mnt
  ctr=$(buildah from --pull-never scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$rootfs/." "$mnt/"
  buildah umount "$ctr" >/dev/null
  buildah config --os linux --arch "$(arch)" --cmd '["python3"]' \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --created-by "images/build.sh: debootstrap --variant=minbase bookworm + python3" "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  printf '%s\n' "$key" > "$OUT/base.recipe"
  log "base: $BASE_IMAGE built in $((SECONDS - t0))s ($(image_size "$BASE_IMAGE"))"
}

# slim_rootfs DIR: make a debootstrap tree behave like the public python image for our Dockerfile,
# and drop what an image does not need (apt lists, docs but their copyright files, man pages, locales).
slim_rootfs() {
  local r=$1
  ln -sf /usr/bin/python3 "$r/usr/local/bin/python"
  ln -sf /usr/bin/python3 "$r/usr/local/bin/python3"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old \
    "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/* "$r"/debootstrap
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # debootstrap copies the host's resolver and name; a container gets its own at run time.
  : > "$r/etc/resolv.conf"
  echo localhost > "$r/etc/hostname"
}

image_size() {
  buildah images --format '{{.Size}}' --noheading "$1" 2>/dev/null | head -n1
}

# ---- the project's images, from the Dockerfile
build_app() {
  step=app
  local t0=$SECONDS hash
  hash=$(app_inputs)
  if stamp_ok modelfleet "$hash" && stamp_ok model-server "$hash"; then
    log "app: inputs unchanged (${hash:0:12}), images are current"
    return 0
  fi
  mkdir -p "$CACHE/pip"
  # RUN steps see the host's pip cache, and the host's CA bundle, so that pip trusts what the host
  # trusts (a TLS-inspecting proxy, say). Neither ends up in a layer: volumes are not committed.
  local volumes=(--volume "$CACHE/pip:/root/.cache/pip")
  [ ! -s "$BUILD_CA" ] || volumes+=(--volume "$BUILD_CA:/etc/ssl/certs/ca-certificates.crt:ro")
  local target names log_file
  for target in operator model-server; do
    if [ "$target" = operator ]; then names=("${OPERATOR_NAMES[@]}"); else names=("${MODEL_SERVER_NAMES[@]}"); fi
    log_file="$LOGS/build-$target.log"
    log "app: building target $target -> ${names[*]} (log: $log_file)"
    local t1=$SECONDS
    run_logged "$log_file" buildah bud --pull-never --layers --force-rm --network host \
      --build-arg "BASE=$BASE_IMAGE" "${volumes[@]}" \
      --target "$target" "${names[@]/#/--tag=}" --file "$ROOT/Dockerfile" "$ROOT"
    log "app: $target built in $((SECONDS - t1))s ($(image_size "${names[0]}"))"
  done
  export_archive modelfleet "${OPERATOR_NAMES[0]}" "${OPERATOR_NAMES[@]}"
  stamp_set modelfleet "$hash"
  export_archive model-server "${MODEL_SERVER_NAMES[0]}" "${MODEL_SERVER_NAMES[@]}"
  stamp_set model-server "$hash"
  log "app: done in $((SECONDS - t0))s"
}

# app_inputs: the hash of what the Dockerfile's targets are built from.
app_inputs() {
  local base_id
  image_exists "$BASE_IMAGE" || die "$BASE_IMAGE is missing: run images/build.sh base"
  base_id=$(image_id "$BASE_IMAGE")
  python3 "$ROOT/images/imagetool.py" hash "$ROOT" Dockerfile .dockerignore pyproject.toml operator \
    images/requirements.py images/build.sh images/imagetool.py --extra "base=$base_id"
}

# ---- localhost/modelfleet-mlserver: the Dockerfile's `mlserver` target. Its dependency layer (MLServer,
# its runtimes, MLflow: about a gigabyte) is rebuilt only when the `mlserver` extra changes.
build_mlserver() {
  step=mlserver
  local t0=$SECONDS hash log_file="$LOGS/build-mlserver.log"
  hash=$(app_inputs)
  if stamp_ok mlserver "$hash"; then
    log "mlserver: inputs unchanged (${hash:0:12}), ${MLSERVER_NAMES[0]} is current"
    return 0
  fi
  mkdir -p "$CACHE/pip"
  local volumes=(--volume "$CACHE/pip:/root/.cache/pip")
  [ ! -s "$BUILD_CA" ] || volumes+=(--volume "$BUILD_CA:/etc/ssl/certs/ca-certificates.crt:ro")
  log "mlserver: building target mlserver -> ${MLSERVER_NAMES[*]} (first build installs MLServer: minutes; log: $log_file)"
  run_logged "$log_file" buildah bud --pull-never --layers --force-rm --network host \
    --build-arg "BASE=$BASE_IMAGE" "${volumes[@]}" \
    --target mlserver "${MLSERVER_NAMES[@]/#/--tag=}" --file "$ROOT/Dockerfile" "$ROOT"
  log "mlserver: built in $((SECONDS - t0))s ($(image_size "${MLSERVER_NAMES[0]}"))"
  export_archive mlserver "${MLSERVER_NAMES[0]}" "${MLSERVER_NAMES[@]}"
  stamp_set mlserver "$hash"
  log "mlserver: done in $((SECONDS - t0))s"
}

# scratch_image IMAGE USER FILE:DEST[:MODE]... -- ENTRYPOINT_JSON: an image holding only these files.
scratch_image() {
  local image=$1 user=$2; shift 2
  local ctr spec src dest mode
  ctr=$(buildah from --pull-never scratch)
  while [ "$1" != -- ]; do
    spec=$1; shift
    IFS=: read -r src dest mode <<< "$spec"
    buildah copy --quiet --chmod "${mode:-0644}" "$ctr" "$src" "$dest" >/dev/null
  done
  shift
  buildah config --os linux --arch "$(arch)" --entrypoint "$1" --cmd '' --user "$user" \
    --created-by "images/build.sh" "$ctr"
  buildah commit --quiet --rm "$ctr" "$image" >/dev/null
}

# ---- localhost/pause: the pod sandbox, a static binary from images/pause/pause.c
build_pause() {
  step=pause
  local hash t0=$SECONDS work
  hash=$(python3 "$ROOT/images/imagetool.py" hash "$ROOT" images/pause images/build.sh --extra "$PAUSE_VERSION")
  if stamp_ok pause "$hash"; then
    log "pause: inputs unchanged, ${PAUSE_NAMES[0]} is current"
    return 0
  fi
  command -v gcc >/dev/null || die "gcc is missing (apt-get install gcc libc6-dev)"
  work=$(mktemp -d)
  gcc -static -Os -Wall -Wextra -Werror -DVERSION="\"$PAUSE_VERSION\"" -o "$work/pause" "$ROOT/images/pause/pause.c"
  strip "$work/pause"
  scratch_image "${PAUSE_NAMES[0]}" 65535:65535 "$work/pause:/pause:0755" -- '["/pause"]'
  rm -rf "$work"
  export_archive pause "${PAUSE_NAMES[0]}" "${PAUSE_NAMES[@]}"
  stamp_set pause "$hash"
  log "pause: built in $((SECONDS - t0))s"
}

# ---- localhost/coredns: the binary cluster/build.sh makes, alone in an image
build_coredns() {
  step=coredns
  local bin="$CACHE/bin/coredns-$COREDNS_VERSION/coredns" hash t0=$SECONDS
  if [ ! -x "$bin" ]; then
    log "coredns: $bin is missing; building it with cluster/build.sh coredns"
    "$ROOT/cluster/build.sh" coredns
  fi
  hash=$( (sha256sum "$bin" | cut -d' ' -f1; python3 "$ROOT/images/imagetool.py" hash "$ROOT" images/build.sh) |
    sha256sum | cut -d' ' -f1)
  if stamp_ok coredns "$hash"; then
    log "coredns: inputs unchanged, ${COREDNS_NAMES[0]} is current"
    return 0
  fi
  # Runs as 65532 like the upstream image; the cluster's Corefile listens on an unprivileged port.
  scratch_image "${COREDNS_NAMES[0]}" 65532:65532 "$bin:/coredns:0755" \
    "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:0644" -- '["/coredns"]'
  export_archive coredns "${COREDNS_NAMES[0]}" "${COREDNS_NAMES[@]}"
  stamp_set coredns "$hash"
  log "coredns: built in $((SECONDS - t0))s"
}

# ---- localhost/versitygw: the S3 object store cluster/build.sh makes, alone in an image. It runs as
# 65532 with the posix backend on a volume the pod mounts, root credentials from the environment
# (ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY); the pod gives the arguments (tests/support/objectstore.py).
build_versitygw() {
  step=versitygw
  local bin="$CACHE/bin/versitygw-$VERSITYGW_VERSION/versitygw" hash t0=$SECONDS
  if [ ! -x "$bin" ]; then
    log "versitygw: $bin is missing; building it with cluster/build.sh versitygw"
    "$ROOT/cluster/build.sh" versitygw
  fi
  hash=$( (sha256sum "$bin" | cut -d' ' -f1; python3 "$ROOT/images/imagetool.py" hash "$ROOT" images/build.sh) |
    sha256sum | cut -d' ' -f1)
  if stamp_ok versitygw "$hash"; then
    log "versitygw: inputs unchanged, ${VERSITYGW_NAMES[0]} is current"
    return 0
  fi
  scratch_image "${VERSITYGW_NAMES[0]}" 65532:65532 "$bin:/versitygw:0755" -- '["/versitygw"]'
  export_archive versitygw "${VERSITYGW_NAMES[0]}" "${VERSITYGW_NAMES[@]}"
  stamp_set versitygw "$hash"
  log "versitygw: built in $((SECONDS - t0))s"
}

# ---- loading the archives into a cluster
load_archives() {
  step=load
  local files=() missing=() name
  for name in "${ARCHIVES[@]}"; do
    if [ -s "$OUT/$name.tar" ]; then files+=("$OUT/$name.tar"); else missing+=("$name"); fi
  done
  [ ${#missing[@]} = 0 ] || log "load: not built yet: ${missing[*]} (images/build.sh builds them)"
  [ ${#files[@]} -gt 0 ] || return 0
  case $IMAGE_LOADER in
    none) log "load: IMAGE_LOADER=none, archives stay in $OUT" ;;
    kind)
      command -v kind >/dev/null || die "IMAGE_LOADER=kind but kind is not installed"
      local f
      for f in "${files[@]}"; do
        log "load: kind load image-archive $f"
        kind load image-archive "$f" ${KIND_CLUSTER_NAME:+--name "$KIND_CLUSTER_NAME"}
      done ;;
    containerd) load_containerd "${files[@]}" ;;
    *) die "IMAGE_LOADER=$IMAGE_LOADER: expected containerd, kind or none" ;;
  esac
}

# ctr_ SECONDS ARGS...: ctr on the cluster's containerd, cut off after SECONDS.
ctr_() { local secs=$1; shift; timeout -k 2 "$secs" ctr --address "$SOCK" "$@"; }

load_containerd() {
  if [ ! -S "$SOCK" ] || ! ctr_ 10 version >/dev/null 2>&1; then
    log "load: no containerd at $SOCK; the archives stay in $OUT (cluster/up.sh loads them)"
    return 0
  fi
  local f have want t0
  have=$(ctr_ 60 -n k8s.io images ls | awk 'NR > 1 {print $1, $3}') || die "load: could not list containerd's images"
  for f in "$@"; do
    want=$(python3 "$ROOT/images/imagetool.py" refs "$f")
    if [ -n "$want" ] && [ -z "$(comm -23 <(sort <<< "$want") <(sort <<< "$have"))" ]; then
      log "load: $(basename "$f"): already in containerd"
      continue
    fi
    t0=$SECONDS
    run_logged "$LOGS/import-$(basename "$f" .tar).log" \
      ctr_ 600 -n k8s.io images import --all-platforms "$f"
    log "load: $(basename "$f") imported in $((SECONDS - t0))s: $(cut -d' ' -f1 <<< "$want" | paste -sd' ')"
  done
}

main() {
  local load_only=0 steps=() s
  for s in "$@"; do
    case $s in
      --load-only) load_only=1 ;;
      -h|--help) usage; exit 0 ;;
      base|app|mlserver|pause|coredns|versitygw) steps+=("$s") ;;
      *) usage >&2; die "unknown argument '$s'" ;;
    esac
  done
  [ ${#steps[@]} -gt 0 ] || steps=(base app mlserver pause coredns versitygw)
  case $IMAGE_LOADER in
    containerd|kind|none) ;;
    *) die "IMAGE_LOADER=$IMAGE_LOADER: expected containerd, kind or none" ;;
  esac
  if [ "$(id -u)" != 0 ] && { [ $load_only = 0 ] || [ "$IMAGE_LOADER" = containerd ]; }; then
    die "run as root (buildah, debootstrap and ctr need it here)"
  fi
  mkdir -p "$OUT" "$LOGS"
  # One build at a time: a second caller (cluster/up.sh, say) waits for the first, bounded.
  exec 9> "$OUT/.lock"
  if ! flock -n 9; then
    log "another images/build.sh is running; waiting for it (at most ${LOCK_WAIT}s)"
    flock -w "$LOCK_WAIT" 9 || die "the other images/build.sh still runs after ${LOCK_WAIT}s (lock: $OUT/.lock)"
  fi
  local t0=$SECONDS
  if [ $load_only = 0 ]; then
    command -v buildah >/dev/null || die "buildah is missing: run cluster/deps.sh (make deps)"
    for s in "${steps[@]}"; do
      case $s in
        app|mlserver) image_exists "$BASE_IMAGE" || build_base; "build_$s" ;;
        *) "build_$s" ;;
      esac
    done
  fi
  load_archives
  step=""
  log "done in $((SECONDS - t0))s"
}

main "$@"
