#!/bin/bash
# pool_create.sh — --create SIZE never makes a pool of another size without
# a word:
#  - a blank (all-zero) regular file smaller than SIZE is grown to SIZE, and
#    the pool has SIZE (sparse and written-zero files alike);
#  - a blank file larger than SIZE, or a blank block device of another size,
#    is refused with one line giving both sizes, and left unchanged;
#  - an existing pool of another size is opened as it is, with a warning
#    giving both sizes (never reformatted);
#  - a missing file is created, and the directory holding it is fsynced
#    (checked with strace when installed) before the pool is served.
. "$(dirname "$0")/lib.sh"
requires truncate sha256sum

segments() { # POOL: the segment count cowbd-check reports
	"$BUILD/cowbd-check" "$1" 2>/dev/null | sed -n 's/^pool: \([0-9]*\) segments.*/\1/p'
}

# A sparse blank file of 100 MiB, --create 1G: grown to 1 GiB, a 1 GiB pool.
truncate -s 100M "$T/small.img"
cowbd_try 0 "$T/small.img" --create 1G
grep -q "grew blank file $T/small.img from 104857600 to 1073741824 bytes" "$T/out" ||
	fail "no growth reported: $(cat "$T/out")"
[ "$(stat -c %s "$T/small.img")" = 1073741824 ] || fail "file not grown to 1 GiB"
[ "$(segments "$T/small.img")" = 256 ] || fail "pool is not 1 GiB: $(segments "$T/small.img") segments"
echo "ok: a blank 100 MiB file with --create 1G became a 1 GiB pool"

# The same with zeroes written (not a hole).
head -c 100M /dev/zero >"$T/zeros.img"
cowbd_try 0 "$T/zeros.img" --create 512M
[ "$(segments "$T/zeros.img")" = 128 ] || fail "written-zero file: pool is not 512 MiB"
echo "ok: a written-zero 100 MiB file with --create 512M became a 512 MiB pool"

# A blank file larger than SIZE: refused with both sizes, unchanged.
truncate -s 256M "$T/big.img"
cowbd_try 1 "$T/big.img" --create 128M
[ "$(wc -l <"$T/out")" = 1 ] || fail "refusal is not one line: $(cat "$T/out")"
grep -q "134217728 bytes.*268435456 bytes" "$T/out" || fail "refusal lacks both sizes: $(cat "$T/out")"
[ "$(stat -c %s "$T/big.img")" = 268435456 ] || fail "refused file changed size"
[ "$(du -k "$T/big.img" | cut -f1)" = 0 ] || fail "refused file was written"
echo "ok: $(cat "$T/out")"

# An existing pool with another --create size: opened as it is, warned.
cowbd_try 0 "$T/small.img" --create 2G
grep -q "warning: pool $T/small.img exists with 1073741824 bytes (--create asked for 2147483648)" \
	"$T/out" || fail "no warning for a pool of another size: $(cat "$T/out")"
[ "$(stat -c %s "$T/small.img")" = 1073741824 ] || fail "existing pool resized"
echo "ok: an existing 1 GiB pool with --create 2G is opened as it is, with a warning"

# A missing file: made, and its directory fsynced.
if command -v strace >/dev/null; then
	mkdir "$T/d"
	# A control socket that cannot be made ends cowbd right after the pool is
	# made (no signal to pass through strace).
	strace -f -qq -e trace=openat,fsync -o "$T/strace.out" \
		"$BUILD/cowbd" --pool "$T/d/new.img" --create 64M --listen 127.0.0.1:0 \
		--control "$T/d/new.img/c.sock" >"$T/out" 2>&1
	grep -q "created pool $T/d/new.img" "$T/out" || fail "no pool made under strace: $(cat "$T/out")"
	fd=$(sed -n "s|.*openat(AT_FDCWD, \"$T/d\", [^)]*O_DIRECTORY[^)]*) = \([0-9]*\)$|\1|p" "$T/strace.out" | head -n 1)
	[ -n "$fd" ] || fail "the pool's directory was never opened: $(grep -F "$T/d" "$T/strace.out")"
	grep -qE "fsync\\($fd\\) += 0" "$T/strace.out" || fail "the pool's directory was not fsynced"
	echo "ok: creating $T/d/new.img fsynced $T/d"
else
	echo "SKIP: directory fsync (no strace)"
fi

# A blank block device of another size: refused both ways, unchanged.
if command -v losetup >/dev/null && truncate -s 128M "$T/dev.img" &&
	LOOPDEV=$(losetup -f --show "$T/dev.img" 2>/dev/null); then
	trap 'losetup -d "$LOOPDEV"; cleanup' EXIT
	for size in 64M 256M; do
		cowbd_try 1 "$LOOPDEV" --create $size
		grep -q "it is a blank device of 134217728 bytes (pass --create 134217728" "$T/out" ||
			fail "device refusal lacks both sizes: $(cat "$T/out")"
		[ "$(du -k "$T/dev.img" | cut -f1)" = 0 ] || fail "refused device was written"
	done
	echo "ok: $(cat "$T/out")"
	cowbd_try 0 "$LOOPDEV" --create 128M
	grep -q "created pool $LOOPDEV" "$T/out" || fail "no pool on a device of the right size"
else
	echo "SKIP: block device (no loop device)"
fi
echo "pool_create: all checks passed"
