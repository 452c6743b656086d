#!/usr/bin/env bash
# Install the host packages the local cluster and the image build need (Debian), once.
# Safe to run again: it installs only what is missing.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables conntrack ethtool socat ipset iproute2
      buildah debootstrap fuse-overlayfs gcc libc6-dev lua5.4 prometheus curl ca-certificates procps psmisc
      shellcheck)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "[deps] missing Debian packages: ${missing[*]}; run as root or install them" >&2; exit 1
fi
echo "[deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian starts services on install; nothing here wants that (the cluster scripts start what they need).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[deps] done" >&2
