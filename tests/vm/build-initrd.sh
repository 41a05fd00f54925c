#!/bin/bash
# tests/vm/build-initrd.sh — assemble the VM test guest's initramfs.
#
# Usage: build-initrd.sh OUT.cpio.gz KMOD-DIR BIN...
#   OUT.cpio.gz  initramfs written here (newc cpio, gzip -1)
#   KMOD-DIR     the extracted kernel's lib/modules/VERSION directory
#   BIN...       host executables (or shared objects) to copy in, each with every library `ldd`
#                lists for it (paths kept, so the guest's loader finds
#                them); HOST=GUEST copies HOST to GUEST instead
# The guest userland is busybox-static; host binaries land at their host
# paths (/usr/sbin/...) so they take precedence over busybox applets of the
# same name.  tests/vm/guest-init.sh becomes /init and tests/vm/guest-*.sh go
# to /vmtest/.  Fails with a one-line reason when something is missing.
# For the systemd guest's stage one (tests/vm/systemd-host.sh):
#   INITRD_INIT   the script to be /init instead of guest-init.sh
#   INITRD_FILES  space-separated HOST=GUEST files or directories copied
#                 as they are (no libraries)
set -eu
OUT=$1 KMOD=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(mktemp -d "${TMPDIR:-/tmp}/cowbd-vmroot.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT

die() { echo "build-initrd: $*" >&2; exit 1; }

copy_file() { # host path [guest path] -> under $ROOT (follows symlinks)
	local src=$1 dst=${2:-$1}
	[ -e "$ROOT$dst" ] && return 0
	mkdir -p "$ROOT$(dirname "$dst")"
	cp -L "$src" "$ROOT$dst"
}

copy_bin() { # HOSTPATH or HOSTPATH=GUESTPATH
	local bin=${1%%=*} dst=${1#*=} lib
	[ -e "$bin" ] || die "missing $bin"
	copy_file "$bin" "$dst"
	# ldd prints "name => /path (addr)" or "/path (addr)" for the loader.
	for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[ -e "$lib" ] && copy_file "$lib"
	done
}

mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,mnt,pool,etc,vmtest,lib/modules}
BUSYBOX=$(command -v busybox) || die "busybox not found"
cp "$BUSYBOX" "$ROOT/bin/busybox"
ldd "$BUSYBOX" >/dev/null 2>&1 &&
	die "busybox is dynamically linked; install busybox-static"
ln -s busybox "$ROOT/bin/sh"

for b in "$@"; do copy_bin "$b"; done
for f in ${INITRD_FILES:-}; do
	mkdir -p "$ROOT$(dirname "${f#*=}")"
	cp -a "${f%%=*}" "$ROOT${f#*=}" || die "cannot copy ${f%%=*}"
done

[ -f "$KMOD/kernel/drivers/block/nbd.ko" ] || die "no nbd.ko in $KMOD"
cp "$KMOD/kernel/drivers/block/nbd.ko" "$ROOT/lib/modules/nbd.ko"

cp "${INITRD_INIT:-$HERE/guest-init.sh}" "$ROOT/init"
chmod 755 "$ROOT/init"
cp "$HERE"/guest-lib.sh "$HERE"/guest-scenarios.sh "$ROOT/vmtest/"
ln -s /proc/mounts "$ROOT/etc/mtab"
echo "root:x:0:0:root:/:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"
# mke2fs reads its defaults from here; without it, ext4 gets odd features.
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$ROOT/etc/"

(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
