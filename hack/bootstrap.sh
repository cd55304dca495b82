#!/usr/bin/env bash
# Install everything vdc-operator needs on a fresh Debian 12 machine (as root), idempotently:
# Debian packages (libvirt, QEMU, tools), the Python environment (uv, from the lock file),
# the control-plane binaries and the kstatus checker (built once per version, cached) and the tiny guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
log() { printf '[bootstrap] %s\n' "$*" >&2; }

DEB_PACKAGES=(
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu libvirt-dev pkg-config gcc
  qemu-system-x86 qemu-utils dnsmasq-base iproute2 iptables bridge-utils libxml2-utils
  busybox-static cpio util-linux procps psmisc curl ca-certificates ovmf
  prometheus
  dosfstools mtools syslinux syslinux-common
  python3   # /usr/bin/python3 with its standard library: the libvirt hooks (operator/vdc/hooks) run on it
)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "need root to install: ${missing[*]}"; exit 1; fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Do not let the packages' own service units start a system libvirtd: the rig runs its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# Python environment, reproducible from uv.lock.
if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
  log "installing uv"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$HOME/.local/bin/uv")
export UV_PYTHON_DOWNLOADS=never
(cd "$top" && "$UV" sync --frozen --quiet --python "$(command -v python3)")

# Control-plane binaries (kube-apiserver, kubectl, etcd, helm).
"$here/build-controlplane.sh" >/dev/null

# kstatus checker (Flux's health library; the GitOps tests run it). Seconds, cached per version.
"$here/build-kstatus.sh" >/dev/null

# Tiny guest (kernel + busybox initramfs).
"$here/build-guest.sh" >/dev/null
log "ready"
