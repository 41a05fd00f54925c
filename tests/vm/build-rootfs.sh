#!/bin/bash
# tests/vm/build-rootfs.sh — the systemd guest's root filesystem image.
#
# Usage: build-rootfs.sh OUT.img SUITE MIRROR PKG...
#   OUT.img  ext4 image written here (sparse, 2 GiB; only on success)
#   SUITE    Debian suite (bookworm)
#   MIRROR   Debian archive URL (http://deb.debian.org/debian/)
#   PKG...   packages to install beside debootstrap's minbase variant
# A minimal Debian root with systemd as /sbin/init, made with debootstrap
# (root needed: it chroots) and copied into the image with mke2fs -d, so
# nothing is ever mounted on the host.  The image is the guest's /dev/vda,
# opened with qemu's snapshot=on: it is never written after this.  Units
# that only cost boot time in an emulated guest with no network are masked.
# Fails with a one-line reason (and debootstrap's log tail) when something
# is missing.  tests/vm/systemd-host.sh caches the image under
# $BUILD/vm-cache/; docs/TESTING.md describes the guest.
set -eu
OUT=$1 SUITE=$2 MIRROR=$3
shift 3
WORK=$(mktemp -d "$(dirname "$OUT")/rootfs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root

die() { echo "build-rootfs: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root"
include=$(echo "$*" | tr ' ' ',')
if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$R" "$MIRROR" \
	>"$WORK/debootstrap.log" 2>&1; then
	tail -n 5 "$WORK/debootstrap.log" >&2
	grep -h '' "$R/debootstrap/debootstrap.log" 2>/dev/null | tail -n 5 >&2
	die "debootstrap $SUITE from $MIRROR failed"
fi
[ -x "$R/lib/systemd/systemd" ] || die "no systemd in the root (is systemd-sysv in PKG?)"

echo vmtest >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvmtest\n::1\tlocalhost ip6-localhost\n' >"$R/etc/hosts"
printf '/dev/vda / ext4 rw,noatime 0 0\n' >"$R/etc/fstab"
# A machine id of its own: no "first boot" (systemd-firstboot, presets).
tr -d '-' </proc/sys/kernel/random/uuid >"$R/etc/machine-id"
for u in getty.target apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
	e2scrub_reap.service fstrim.timer systemd-timesyncd.service dpkg-db-backup.timer \
	systemd-networkd-wait-online.service; do
	ln -sf /dev/null "$R/etc/systemd/system/$u"
done
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/debootstrap

mkfs.ext4 -q -F -L vmroot -d "$R" "$OUT.tmp" 2G >"$WORK/mkfs.log" 2>&1 ||
	{ tail -n 3 "$WORK/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
mv "$OUT.tmp" "$OUT"
