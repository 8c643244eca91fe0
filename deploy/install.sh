#!/usr/bin/env bash
# Installs shadowvm's built services on this host: the code under PREFIX (default /opt/shadowvm),
# commented example configs in /etc/shadowvm (existing configs are never overwritten), the systemd
# units, and `shadowvm-agent` / `shadowvm-collector` commands in /usr/local/bin. Everything it
# creates is listed in PREFIX/.install-manifest, which deploy/uninstall.sh reads.
#
# Usage: deploy/install.sh [--prefix DIR] [--agent|--collector|--both (default)] [--enable]
#                          [--collector-url wss://host:port] [--enrollment-token-file FILE]
# Run `bash scripts/setup.sh` (or `pnpm run build`) first: this installs the build, it does not build.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$PWD"

PREFIX=/opt/shadowvm
WHAT=both
ENABLE=0
COLLECTOR_URL=""
TOKEN_FILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --agent) WHAT=agent; shift ;;
    --collector) WHAT=collector; shift ;;
    --both) WHAT=both; shift ;;
    --enable) ENABLE=1; shift ;;
    --collector-url) COLLECTOR_URL="$2"; shift 2 ;;
    --enrollment-token-file) TOKEN_FILE="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "install: run as root (it writes to $PREFIX, /etc and /usr/local/bin)" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] || { echo "install: Node.js 20 or newer is required at /usr/bin/node (found: ${node_major})" >&2; exit 1; }
for pkg in shared agent collector; do
  [ -d "$SRC/$pkg/dist" ] || { echo "install: $pkg/dist is missing; build first (bash scripts/setup.sh)" >&2; exit 1; }
done
if [ -e "$PREFIX/.install-manifest" ]; then
  echo "install: shadowvm is already installed in $PREFIX; run deploy/uninstall.sh first (configs and state are kept)" >&2
  exit 1
fi

MANIFEST_TMP=$(mktemp)
record() { printf '%s\n' "$1" >>"$MANIFEST_TMP"; }

# Code: the built workspace with its dependencies (pnpm's node_modules uses relative links, so
# the tree works wherever it is copied as a whole).
mkdir -p "$PREFIX"
record "$PREFIX"
cp -a "$SRC/package.json" "$SRC/pnpm-workspace.yaml" "$SRC/node_modules" "$SRC/README.md" "$SRC/docs" "$PREFIX/"
for pkg in shared agent collector; do
  mkdir -p "$PREFIX/$pkg"
  for part in package.json dist bin generated node_modules; do
    [ -e "$SRC/$pkg/$part" ] && cp -a "$SRC/$pkg/$part" "$PREFIX/$pkg/"
  done
done
# Tests are compiled with the code; they are not part of an installation.
find "$PREFIX" -path "$PREFIX/node_modules" -prune -o -name '*.test.js*' -type f -print0 | xargs -0r rm -f
chmod -R go-w "$PREFIX"

# Configs: examples always, real configs only when absent.
mkdir -p /etc/shadowvm
cp "$SRC/deploy/config/"*.example.yaml /etc/shadowvm/
for f in "$SRC/deploy/config/"*.example.yaml; do record "/etc/shadowvm/$(basename "$f")"; done
install_config() { # name
  local target=/etc/shadowvm/$1.yaml
  if [ ! -e "$target" ]; then
    cp "$SRC/deploy/config/$1.example.yaml" "$target"
    chmod 0640 "$target"
    record "$target"
  fi
}
[ "$WHAT" != collector ] && install_config agent
[ "$WHAT" != agent ] && [ -e "$SRC/deploy/config/collector.example.yaml" ] && install_config collector
if [ -n "$COLLECTOR_URL" ] || [ -n "$TOKEN_FILE" ]; then
  {
    echo ""
    echo "# Added by install.sh: enrollment with the collector (the token is used once, then the"
    echo "# agent keeps its own secret in its data directory)."
    echo "collector:"
    [ -n "$COLLECTOR_URL" ] && echo "  url: $COLLECTOR_URL"
    [ -n "$TOKEN_FILE" ] && echo "  enrollment_token_file: $TOKEN_FILE"
  } >>/etc/shadowvm/agent.yaml
fi

# Commands.
for svc in agent collector; do
  if [ "$WHAT" = both ] || [ "$WHAT" = "$svc" ]; then
    ln -sfn "$PREFIX/$svc/bin/shadowvm-$svc.js" "/usr/local/bin/shadowvm-$svc"
    record "/usr/local/bin/shadowvm-$svc"
    sed "s#/opt/shadowvm#$PREFIX#g" "$SRC/deploy/systemd/shadowvm-$svc.service" >"/etc/systemd/system/shadowvm-$svc.service"
    record "/etc/systemd/system/shadowvm-$svc.service"
  fi
done

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$ENABLE" = 1 ]; then
    [ "$WHAT" != collector ] && systemctl enable --now shadowvm-agent.service
    [ "$WHAT" != agent ] && systemctl enable --now shadowvm-collector.service
  fi
else
  echo "install: systemd is not running here; units are installed but not started"
fi

mv "$MANIFEST_TMP" "$PREFIX/.install-manifest"
chmod 0644 "$PREFIX/.install-manifest"
echo "installed shadowvm ($WHAT) in $PREFIX; configs in /etc/shadowvm; see $PREFIX/docs/operations.md"
