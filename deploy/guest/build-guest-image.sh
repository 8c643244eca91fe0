#!/usr/bin/env bash
# Builds the shadowvm demo guest: a Debian kernel, a busybox initramfs running the
# production-like workload in rootfs/ (beside this script), and an ext4 data disk template.
#
# Usage: deploy/guest/build-guest-image.sh [OUT_DIR]
#   OUT_DIR defaults to ${SHADOWVM_CACHE:-$HOME/.cache/shadowvm}/guest
#
# Output (OUT_DIR): vmlinuz, initrd.img, data.qcow2, guest.json, stamp.
# The last line printed on stdout is OUT_DIR (progress goes to stderr).
#
# Cached: OUT_DIR/stamp holds a hash of this script, every file under rootfs/ and the Debian
# package versions used; when it matches, the script prints OUT_DIR and exits at once.
# Atomic: the build happens in a temporary directory beside OUT_DIR that is renamed into place;
# concurrent invocations are serialized with flock on OUT_DIR.lock.
# Packages are fetched with `apt-get download` and unpacked with `dpkg -x` (no maintainer scripts
# run, nothing is installed into the host from them). Host tools missing on a fresh Debian machine
# are installed with apt-get (needs root).
#
# Env: SHADOWVM_GUEST_DISK_MB   size of the data disk (default 64)
#      SHADOWVM_GUEST_FORCE=1   rebuild even when the stamp matches
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT_PATH="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
ROOTFS_SRC="$SCRIPT_DIR/rootfs"
OUT_DIR="${1:-${SHADOWVM_CACHE:-$HOME/.cache/shadowvm}/guest}"
DISK_MB="${SHADOWVM_GUEST_DISK_MB:-64}"
PORT_NAME="org.shadowvm.guest.0"
READY_LINE="shadowvm-guest: ready"
# Fixed identity of the data file system: together with E2FSPROGS_FAKE_TIME this makes the
# template bit-for-bit reproducible, so qcow2 overlays made on an older build stay valid.
DATA_FS_UUID="5d0c6a1e-57a0-4b5e-9d5e-0f1a2b3c4d5e"
DATA_FS_LABEL="shadowvm-data"
FAKE_TIME=1700000000
# Kernel modules the guest needs (plus their dependencies, resolved with modinfo). The crc32c
# implementation is listed explicitly: ext4/jbd2 only name it as a soft dependency (an alias).
WANTED_MODULES=(virtio_pci virtio_blk virtio_net virtio_console virtio_balloon crc32c_generic ext4
  pvpanic_mmio pvpanic_pci)
# Default kernel command line for the guest (the launcher may append to it).
CMDLINE="console=ttyS0 panic=-1 loglevel=5 8250.nr_uarts=1 i8042.noaux i8042.nokbd"

log() { printf '[build-guest-image] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

[ -d "$ROOTFS_SRC" ] || die "missing $ROOTFS_SRC"
[ -f "$ROOTFS_SRC/init" ] || die "missing $ROOTFS_SRC/init"
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$PWD/$OUT_DIR" ;; esac
OUT_DIR="${OUT_DIR%/}"

export LC_ALL=C DEBIAN_FRONTEND=noninteractive

# --- host tools -------------------------------------------------------------------------------
# command -> Debian package that provides it
declare -A TOOL_PKG=(
  [apt-get]=apt [dpkg-deb]=dpkg [qemu-img]=qemu-utils [mkfs.ext4]=e2fsprogs [cpio]=cpio
  [gzip]=gzip [modinfo]=kmod [flock]=util-linux [sha256sum]=coreutils [xz]=xz-utils
)
apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    apt_updated=1
  fi
}
ensure_host_tools() {
  local missing=() tool pkg
  for tool in "${!TOOL_PKG[@]}"; do
    pkg="${TOOL_PKG[$tool]}"
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ] ||
      ! command -v "$tool" >/dev/null 2>&1; then
      missing+=("$pkg")
    fi
  done
  [ "${#missing[@]}" = 0 ] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "$(id -u)" = 0 ] || die "missing host packages (${missing[*]}); install them as root"
  apt_update
  log "installing host packages: ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 </dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# --- input versions ---------------------------------------------------------------------------
KERNEL_PKG="" KERNEL_VER="" BUSYBOX_VER="" E2FSCK_VER="" E2FSPROGS_VER=""
resolve_versions() {
  # One apt-cache call (each costs ~0.5-2 s): candidate versions and the metapackage's dependency.
  local info
  info="$(apt-cache show --no-all-versions linux-image-amd64 busybox-static e2fsck-static 2>/dev/null)" ||
    return 1
  eval "$(printf '%s\n' "$info" | awk '
    /^Package:/ { pkg = $2 }
    /^Version:/ && pkg == "busybox-static" { printf "BUSYBOX_VER=%s\n", $2 }
    /^Version:/ && pkg == "e2fsck-static" { printf "E2FSCK_VER=%s\n", $2 }
    /^Depends:/ && pkg == "linux-image-amd64" {
      sub(/^Depends: */, "")
      n = split($0, deps, /, */)
      for (i = 1; i <= n; i++) if (deps[i] ~ /^linux-image-[0-9][^ ]*-amd64/) {
        split(deps[i], w, /[ ()=]+/)
        printf "KERNEL_PKG=%s\nKERNEL_VER=%s\n", w[1], w[2]
        break
      }
    }')"
  [ -n "$KERNEL_PKG" ] || return 1
  if [ -z "$KERNEL_VER" ]; then # unversioned dependency: ask for the candidate
    KERNEL_VER="$(apt-cache policy "$KERNEL_PKG" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')"
  fi
  E2FSPROGS_VER="$(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null || true)"
  for v in "$KERNEL_VER" "$BUSYBOX_VER" "$E2FSCK_VER"; do
    case "$v" in "" | "(none)") return 1 ;; esac
  done
}

inputs_stamp() {
  {
    echo "stamp-format 1"
    echo "script $(sha256sum <"$SCRIPT_PATH" | cut -d' ' -f1)"
    (cd "$ROOTFS_SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    (cd "$ROOTFS_SRC" && find . -print0 | sort -z | xargs -0 stat -c '%n %a %F')
    echo "kernel $KERNEL_PKG $KERNEL_VER"
    echo "busybox-static $BUSYBOX_VER"
    echo "e2fsck-static $E2FSCK_VER"
    echo "e2fsprogs $E2FSPROGS_VER"
    echo "disk-mb $DISK_MB"
  } | sha256sum | cut -d' ' -f1
}

is_complete() {
  local dir="$1" want="$2" f
  [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$want" ] || return 1
  for f in vmlinuz initrd.img data.qcow2 guest.json; do [ -s "$dir/$f" ] || return 1; done
}

ensure_host_tools
if ! resolve_versions; then
  apt_update
  resolve_versions || die "cannot resolve linux-image-amd64 / busybox-static / e2fsck-static in apt"
fi
STAMP="$(inputs_stamp)"

if [ "${SHADOWVM_GUEST_FORCE:-0}" != 1 ] && is_complete "$OUT_DIR" "$STAMP"; then
  log "cached: $OUT_DIR ($KERNEL_PKG $KERNEL_VER)"
  echo "$OUT_DIR"
  exit 0
fi

PARENT="$(dirname "$OUT_DIR")"
mkdir -p "$PARENT"
exec 9>"$OUT_DIR.lock"
log "waiting for the build lock $OUT_DIR.lock"
flock -w 3600 9 || die "could not take $OUT_DIR.lock within an hour"
if [ "${SHADOWVM_GUEST_FORCE:-0}" != 1 ] && is_complete "$OUT_DIR" "$STAMP"; then
  log "built meanwhile by another process: $OUT_DIR"
  echo "$OUT_DIR"
  exit 0
fi

started=$(date +%s)
# leftovers of killed builds of this OUT_DIR (we hold its lock, so none of them still runs)
TMP_PREFIX="$PARENT/.$(basename "$OUT_DIR").build."
rm -rf "$TMP_PREFIX"*
WORK="$(mktemp -d "${TMP_PREFIX}XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
OUT_TMP="$WORK/out"
mkdir -p "$OUT_TMP" "$WORK/debs" "$WORK/x" "$WORK/root"

# --- fetch and unpack packages ------------------------------------------------------------------
download() {
  (cd "$WORK/debs" && apt-get download -o APT::Sandbox::User=root -qq "$@" >&2)
}
PKGS=("$KERNEL_PKG=$KERNEL_VER" "busybox-static=$BUSYBOX_VER" "e2fsck-static=$E2FSCK_VER")
log "downloading ${PKGS[*]}"
if ! download "${PKGS[@]}"; then
  # The lists may name a version the mirror no longer carries (security updates): refresh, retry.
  apt_update
  resolve_versions || die "cannot resolve package versions after apt-get update"
  STAMP="$(inputs_stamp)"
  PKGS=("$KERNEL_PKG=$KERNEL_VER" "busybox-static=$BUSYBOX_VER" "e2fsck-static=$E2FSCK_VER")
  download "${PKGS[@]}" || die "apt-get download ${PKGS[*]} failed"
fi
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/x"; done

KREL="${KERNEL_PKG#linux-image-}"
MODDIR="$WORK/x/lib/modules/$KREL"
[ -f "$WORK/x/boot/vmlinuz-$KREL" ] || die "no vmlinuz-$KREL in $KERNEL_PKG"
[ -d "$MODDIR" ] || die "no modules for $KREL"
BUSYBOX="$WORK/x/bin/busybox"
[ -x "$BUSYBOX" ] || die "busybox-static has no /bin/busybox"
E2FSCK="$WORK/x/sbin/e2fsck.static"
[ -x "$E2FSCK" ] || die "e2fsck-static has no /sbin/e2fsck.static"

# --- kernel modules in dependency order ---------------------------------------------------------
norm() { echo "${1//-/_}"; }
declare -A MOD_PATH=() MOD_DONE=()
while IFS= read -r -d '' f; do
  b="$(basename "$f")"
  b="${b%%.ko*}"
  MOD_PATH[$(norm "$b")]="$f"
done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)
declare -A BUILTIN=()
while IFS= read -r line; do
  b="$(basename "$line")"
  BUILTIN[$(norm "${b%%.ko*}")]=1
done <"$MODDIR/modules.builtin"

ORDER=()
BUILTIN_USED=()
add_module() {
  local name
  name="$(norm "$1")"
  [ -n "${MOD_DONE[$name]:-}" ] && return 0
  MOD_DONE[$name]=1
  if [ -n "${BUILTIN[$name]:-}" ]; then
    BUILTIN_USED+=("$name")
    return 0
  fi
  local path="${MOD_PATH[$name]:-}"
  [ -n "$path" ] || die "kernel module $name is neither built in nor shipped in $KERNEL_PKG"
  local deps dep
  deps="$(modinfo -F depends "$path")"
  for dep in ${deps//,/ }; do add_module "$dep"; done
  ORDER+=("$name")
}
for m in "${WANTED_MODULES[@]}"; do add_module "$m"; done
log "modules (load order): ${ORDER[*]}"
[ "${#BUILTIN_USED[@]}" = 0 ] || log "built in: ${BUILTIN_USED[*]}"

# --- initramfs ----------------------------------------------------------------------------------
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,data,state,etc/shadowvm,root}
mkdir -p "$R/lib/modules/$KREL"
cp -a "$ROOTFS_SRC"/. "$R"/
cp "$BUSYBOX" "$R/bin/busybox"
cp "$E2FSCK" "$R/sbin/e2fsck"
: >"$R/etc/shadowvm/modules.order"
for name in "${ORDER[@]}"; do
  src="${MOD_PATH[$name]}"
  dst="$R/lib/modules/$KREL/$name.ko"
  case "$src" in
  *.ko) cp "$src" "$dst" ;;
  *.ko.xz) xz -dc "$src" >"$dst" ;;
  *.ko.gz) gzip -dc "$src" >"$dst" ;;
  *.ko.zst)
    command -v zstd >/dev/null || die "modules are zstd-compressed: install zstd"
    zstd -qdc "$src" >"$dst"
    ;;
  *) die "unknown module format: $src" ;;
  esac
  echo "/lib/modules/$KREL/$name.ko" >>"$R/etc/shadowvm/modules.order"
done
cat >"$R/etc/shadowvm/build" <<EOF
kernel_release=$KREL
kernel_package=$KERNEL_PKG
kernel_version=$KERNEL_VER
busybox_version=$BUSYBOX_VER
e2fsck_version=$E2FSCK_VER
stamp=$STAMP
EOF
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"
chmod 0755 "$R/init" "$R"/usr/sbin/svm-* "$R"/www/cgi-bin/*
find "$R" -exec touch -h -d "@$FAKE_TIME" {} +
(cd "$R" && find . -mindepth 1 -print0 | sort -z |
  cpio --null -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n >"$OUT_TMP/initrd.img"
cp "$WORK/x/boot/vmlinuz-$KREL" "$OUT_TMP/vmlinuz"

# --- data disk template -------------------------------------------------------------------------
# An empty file system (the guest creates its files): no `-d`, because mke2fs stamps copied files
# with the host's ctime, which would make the template differ between builds.
truncate -s "${DISK_MB}M" "$WORK/data.raw"
E2FSPROGS_FAKE_TIME=$FAKE_TIME mkfs.ext4 -q -F -t ext4 -b 4096 -L "$DATA_FS_LABEL" -U "$DATA_FS_UUID" \
  -E "hash_seed=$DATA_FS_UUID,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0" \
  "$WORK/data.raw" >&2
qemu-img convert -q -f raw -O qcow2 "$WORK/data.raw" "$OUT_TMP/data.qcow2"
rm -f "$WORK/data.raw"

# --- description --------------------------------------------------------------------------------
json_array() {
  local first=1 s
  printf '['
  for s in "$@"; do
    [ "$first" = 1 ] || printf ', '
    first=0
    printf '"%s"' "$s"
  done
  printf ']'
}
size_of() { stat -c %s "$OUT_TMP/$1"; }
cat >"$OUT_TMP/guest.json" <<EOF
{
  "schema": 1,
  "stamp": "$STAMP",
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "kernel": {
    "file": "vmlinuz",
    "release": "$KREL",
    "package": "$KERNEL_PKG",
    "version": "$KERNEL_VER",
    "bytes": $(size_of vmlinuz)
  },
  "initrd": {
    "file": "initrd.img",
    "format": "cpio-newc+gzip",
    "bytes": $(size_of initrd.img),
    "modules": $(json_array "${ORDER[@]}"),
    "builtin": $(json_array "${BUILTIN_USED[@]}")
  },
  "data_disk": {
    "file": "data.qcow2",
    "format": "qcow2",
    "virtual_mb": $DISK_MB,
    "bytes": $(size_of data.qcow2),
    "fs": "ext4",
    "fs_uuid": "$DATA_FS_UUID",
    "label": "$DATA_FS_LABEL",
    "guest_device": "/dev/vda",
    "mountpoint": "/data",
    "records": "/data/records.log"
  },
  "cmdline": "$CMDLINE",
  "memory_mb": 256,
  "min_memory_mb": 128,
  "vcpus": 1,
  "ready_line": "$READY_LINE",
  "network": { "ip": "10.0.2.15/24", "gateway": "10.0.2.2", "http_port": 80, "health_path": "/cgi-bin/health" },
  "channel": { "name": "$PORT_NAME", "protocol": "one command per line, one JSON object per line" },
  "packages": {
    "$KERNEL_PKG": "$KERNEL_VER",
    "busybox-static": "$BUSYBOX_VER",
    "e2fsck-static": "$E2FSCK_VER",
    "e2fsprogs (host, mkfs)": "$E2FSPROGS_VER"
  },
  "knobs": {
    "shadowvm.leak_kb_s": "a process (svm-leak) grows its memory by N KiB per second (default 0: off)",
    "shadowvm.io_mb_s": "a process (svm-io) rewrites N MiB per second on /data with fsync (default 0: off)",
    "shadowvm.cpu_hogs": "N busy-looping processes (svm-cpu) (default 0)",
    "shadowvm.writer_rate": "records the writer appends per second (default 5)",
    "shadowvm.writer_sync_s": "seconds between the writer's fdatasyncs (default 2)",
    "shadowvm.state_mb": "size of the in-memory state blob in /state (default 16)",
    "shadowvm.hung_task_secs": "kernel.hung_task_timeout_secs (default 15)"
  }
}
EOF
echo "$STAMP" >"$OUT_TMP/stamp"

# --- publish atomically -------------------------------------------------------------------------
OLD=""
if [ -e "$OUT_DIR" ]; then
  OLD="$WORK/previous"
  mv "$OUT_DIR" "$OLD"
fi
mv "$OUT_TMP" "$OUT_DIR"
log "built $OUT_DIR in $(($(date +%s) - started)) s: vmlinuz $(stat -c %s "$OUT_DIR/vmlinuz") B," \
  "initrd.img $(stat -c %s "$OUT_DIR/initrd.img") B, data.qcow2 $(stat -c %s "$OUT_DIR/data.qcow2") B"
echo "$OUT_DIR"
