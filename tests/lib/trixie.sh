#!/bin/bash
# trixie.sh — a Debian 13 (trixie) chroot with the NBD clients that speak
# extended headers (libnbd >= 1.18: nbdinfo, nbdcopy, nbdsh with its own
# python3; qemu-utils >= 8.2: qemu-img), for tests that need newer clients
# than the host has.
#
#   tests/lib/trixie.sh DIR     make the chroot in DIR unless it is there
#                               already (DIR/.cowbd-trixie marks a finished
#                               one), print how long that took; exit 0 when
#                               DIR is usable, 77 with one line saying why
#                               not (not root, no debootstrap, mirror
#                               unreachable)
#
# The chroot is built once (debootstrap --variant=minbase, from the Debian
# mirror apt uses here, read from /etc/apt/sources.list*) and cached: tests
# put it under $BUILD/trixie.  Concurrent callers wait for one build (flock).
# Run clients with `chroot DIR CMD`: the chroot shares the host's network
# namespace, so cowbd on 127.0.0.1 is reachable.  Nothing is mounted here;
# a test that needs /proc in the chroot mounts it itself.
set -u
DIR=${1:?usage: trixie.sh DIR}
PKGS=libnbd-bin,python3-libnbd,qemu-utils
STAMP="$DIR/.cowbd-trixie"

skip() { echo "$*"; exit 77; }

[ -f "$STAMP" ] && exit 0
[ "$(id -u)" = 0 ] || skip "a trixie chroot needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null 2>&1 || skip "requires debootstrap (not installed)"
[ -e /usr/share/debootstrap/scripts/trixie ] || skip "this debootstrap does not know trixie"

# The first Debian mirror apt uses (one-line or deb822 sources), not the
# security archive.
mirror() {
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
		2>/dev/null |
		sed -n -e 's/^deb \(\[[^]]*\] \)\{0,1\}\([a-z]*:\/\/[^ ]*\) .*/\2/p' \
			-e 's/^URIs: *\([^ ]*\).*/\1/p' |
		grep -v -e security -e '^$' | head -n 1
}
MIRROR=$(mirror)
: "${MIRROR:=http://deb.debian.org/debian}"

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9
[ -f "$STAMP" ] && exit 0 # built by the caller we waited for

TMP="$DIR.tmp"
rm -rf "$TMP" "$DIR"
start=$(date +%s)
if ! debootstrap --variant=minbase --include="$PKGS" trixie "$TMP" "$MIRROR" \
	>"$DIR.log" 2>&1; then
	rm -rf "$TMP"
	skip "debootstrap of trixie from $MIRROR failed (mirror unreachable?): see $DIR.log"
fi
# Only what the tests run: keep the cache small.
rm -rf "$TMP"/var/cache/apt/archives/*.deb "$TMP"/var/lib/apt/lists/*_Packages
for c in nbdinfo nbdcopy nbdsh qemu-img python3; do
	chroot "$TMP" sh -c "command -v $c" >/dev/null ||
		{ rm -rf "$TMP"; skip "the trixie chroot has no $c"; }
done
secs=$(( $(date +%s) - start ))
echo "trixie chroot built from $MIRROR in ${secs}s" | tee "$TMP/.cowbd-trixie"
mv "$TMP" "$DIR"
