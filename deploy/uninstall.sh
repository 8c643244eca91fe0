#!/usr/bin/env bash
# Removes what deploy/install.sh installed (the files listed in PREFIX/.install-manifest) and
# stops the services. Configs you edited and the state (captures, spool, DuckDB) are kept unless
# --purge is given.
#
# Usage: deploy/uninstall.sh [--prefix DIR] [--purge]
set -euo pipefail
PREFIX=/opt/shadowvm
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "uninstall: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "uninstall: run as root" >&2; exit 1; }
MANIFEST="$PREFIX/.install-manifest"
[ -f "$MANIFEST" ] || { echo "uninstall: no installation found in $PREFIX (no $MANIFEST)" >&2; exit 1; }

if [ -d /run/systemd/system ]; then
  for unit in shadowvm-agent.service shadowvm-collector.service; do
    systemctl disable --now "$unit" 2>/dev/null || true
  done
fi

# Files first, then the prefix; a config the operator changed is kept unless --purge.
tac "$MANIFEST" | while read -r path; do
  [ "$path" = "$PREFIX" ] && continue
  case "$path" in
    /etc/shadowvm/agent.yaml|/etc/shadowvm/collector.yaml)
      [ "$PURGE" = 1 ] && rm -f "$path" ;;
    *) rm -f "$path" ;;
  esac
done
rm -rf "$PREFIX"
[ -d /run/systemd/system ] && systemctl daemon-reload

if [ "$PURGE" = 1 ]; then
  rm -rf /var/lib/shadowvm /var/lib/shadowvm-collector /var/lib/private/shadowvm-collector /run/shadowvm
  rmdir /etc/shadowvm 2>/dev/null || true
fi
echo "uninstalled shadowvm from $PREFIX$([ "$PURGE" = 1 ] && echo ' (configs and state purged)')"
