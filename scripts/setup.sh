#!/usr/bin/env bash
# Everything shadowvm needs on a fresh Debian 12 machine with Node 20: Debian packages (QEMU and
# the tools the demo guest image is built with), pnpm, the workspace's npm dependencies, the
# TypeScript build and the demo guest image (cached under ~/.cache/shadowvm). Idempotent: what is
# already there is not fetched again. Needs root (or sudo) only when Debian packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-x86 qemu-utils busybox-static e2fsprogs e2fsck-static cpio zstd kmod iproute2 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients chromium prometheus-alertmanager)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

if ! command -v pnpm >/dev/null 2>&1; then
  echo "setup: installing pnpm"
  as_root npm install -g pnpm </dev/null
fi

# usocket (fd passing to QEMU) is a native module built with node-gyp against the headers Debian's
# Node ships in /usr/include/node; without this node-gyp would try to download them.
if [ -f /usr/include/node/node.h ]; then export npm_config_nodedir=/usr; fi
pnpm install --frozen-lockfile </dev/null
pnpm run build
bash deploy/guest/build-guest-image.sh
