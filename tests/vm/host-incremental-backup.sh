#!/bin/bash
# tests/vm/host-incremental-backup.sh — the VM scenario incremental-backup,
# host side: run by tests/vm/check.sh after the guest's part passed.
#
# Usage: host-incremental-backup.sh DIR, where DIR holds pool.img (the pool
# the guest's cowbd kept on its virtio disk, vol0 written by the kernel NBD
# client: ext4 and snapshots b0, b1, b2) and records.img (the guest's tar
# of b0..b2 .sums, its files' checksums, and .md5, the snapshot's md5 as
# the kernel client read it).  Serves that pool with cowbd on loopback and
# backs vol0 up with standard tools only: nbdcopy of vol0@b0, then for b1
# and b2 only the extents `nbdinfo --map=qemu:dirty-bitmap:PREV` reports
# dirty on vol0@NEXT, read with libnbd, or written as zeroes where
# `nbdinfo --map` (base:allocation) says they read as zeroes.  After each
# step the image must equal an nbdcopy of the snapshot (cmp) and the guest's
# md5, `fsck.ext4 -fn` must be clean and its files (debugfs rdump) must be
# those the guest recorded, with their checksums.  Prints what each
# increment copied.  Exit 0 pass, 1 fail ("error: ..."), 77 a tool missing.
. "$(dirname "$0")/../integration/lib.sh"
requires nbdcopy nbdinfo debugfs fsck.ext4 cmp tar md5sum sha256sum /usr/bin/python3
DIR=$1
POOL="$DIR/pool.img"
mkdir "$T/rec" && tar -xf "$DIR/records.img" -C "$T/rec" || fail "cannot read the guest's records"
check_pool "on the pool as the guest left it"
# cowbd_start would make a new pool: open the guest's, on a free port.
for _ in 1 2 3 4 5; do
	PORT=$(random_port)
	rm -f "$CTL"
	_cowbd_launch && break
	grep -q "in use" "$LOG" || fail "cowbd cannot open the guest's pool"
done
kill -0 "$COWBD_PID" 2>/dev/null || fail "no free port"
SIZE=$(nbdinfo --size "$(uri vol0)") || fail "nbdinfo --size vol0"

# IMG is what vol0@SNAP was in the guest: its md5, a clean fsck, its files.
image_is() { # IMG SNAP
	[ "$(md5sum <"$1" | cut -d' ' -f1)" = "$(cat "$T/rec/$2.md5")" ] ||
		fail "$2: the restored image differs from vol0@$2 as the guest read it"
	fsck.ext4 -fn "$1" >"$T/fsck.out" 2>&1 || fail "$2: fsck.ext4 -fn: $(tail -n 5 "$T/fsck.out")"
	rm -rf "$T/files" && mkdir "$T/files"
	debugfs -R "rdump / $T/files" "$1" >"$T/rdump.out" 2>&1 || fail "$2: debugfs rdump failed"
	(cd "$T/files" && find . -type f ! -path './lost+found/*' | LC_ALL=C sort | xargs -r sha256sum) \
		>"$T/files.sums"
	cmp -s "$T/files.sums" "$T/rec/$2.sums" ||
		fail "$2: the restored files differ from the guest's: $(diff "$T/rec/$2.sums" "$T/files.sums" | head -n 5)"
	echo "ok $2: fsck.ext4 -fn clean, $(wc -l <"$T/files.sums") files as in the guest"
}

# apply.py URI DIRTY.json ALLOC.json IMAGE: the extents DIRTY (nbdinfo
# --map=qemu:dirty-bitmap:...) calls dirty, written into IMAGE: zeroes where
# ALLOC (nbdinfo --map, base:allocation) says they read as zeroes, else the
# bytes read from URI.  Prints "EXTENTS BYTES-READ BYTES-ZEROED BYTES-SAME",
# the last what was dirty but the same as before (4 KiB blocks rewritten
# with the bytes they held, which a bitmap of writes may report).
cat >"$T/apply.py" <<'PY'
import json, os, sys, nbd
uri, dirty_json, alloc_json, image = sys.argv[1:5]
def runs(path, bit):
    return [(e["offset"], e["offset"] + e["length"]) for e in json.load(open(path)) if e["type"] & bit]
dirty, zero = runs(dirty_json, 1), runs(alloc_json, 2)
def pieces(lo, hi):  # [lo, hi) cut into (start, end, reads-as-zero)
    pos = lo
    for zs, ze in zero:
        if ze <= pos or zs >= hi:
            continue
        if zs > pos:
            yield pos, zs, False
        start, pos = max(zs, pos), min(ze, hi)
        yield start, pos, True
    if pos < hi:
        yield pos, hi, False
h = nbd.NBD()
h.connect_uri(uri)
fd = os.open(image, os.O_RDWR)
done = {False: 0, True: 0}
same = 0
for lo, hi in dirty:
    for s, e, z in pieces(lo, hi):
        for off in range(s, e, 4 << 20):
            n = min(4 << 20, e - off)
            new, old = bytes(n) if z else h.pread(n, off), os.pread(fd, n, off)
            same += sum(len(new[i:i + 4096]) for i in range(0, n, 4096)
                        if new[i:i + 4096] == old[i:i + 4096])
            os.pwrite(fd, new, off)
        done[z] += e - s
os.close(fd)
h.shutdown()
print(len(dirty), done[False], done[True], same)
PY

nbdcopy "$(uri vol0@b0)" "$T/backup.img" || fail "nbdcopy of vol0@b0"
echo "ok b0: full copy with nbdcopy, $SIZE bytes"
image_is "$T/backup.img" b0
prev=b0 zeroed=0
for snap in b1 b2; do
	nbdinfo --json --map="qemu:dirty-bitmap:$prev" "$(uri "vol0@$snap")" >"$T/dirty.json" ||
		fail "nbdinfo --map=qemu:dirty-bitmap:$prev on vol0@$snap"
	nbdinfo --json --map "$(uri "vol0@$snap")" >"$T/alloc.json" || fail "nbdinfo --map on vol0@$snap"
	nbdcopy "$(uri "vol0@$snap")" "$T/full.img" || fail "nbdcopy of vol0@$snap"
	cmp -s "$T/backup.img" "$T/full.img" && fail "vol0@$prev and vol0@$snap read the same: $snap proves nothing"
	read -r n copied zero same < <(/usr/bin/python3 "$T/apply.py" "$(uri "vol0@$snap")" \
		"$T/dirty.json" "$T/alloc.json" "$T/backup.img") || fail "applying the dirty extents of $snap"
	cmp "$T/backup.img" "$T/full.img" ||
		fail "$snap: the backup of $prev plus the dirty extents differs from vol0@$snap"
	echo "ok $snap: $n dirty extents since $prev: $copied bytes read, $zero written as zeroes," \
		"of $SIZE ($(awk "BEGIN { printf \"%.1f\", 100 * ($copied + $zero) / $SIZE }")%);" \
		"$same of it unchanged; equals vol0@$snap (cmp)"
	image_is "$T/backup.img" "$snap"
	prev=$snap zeroed=$((zeroed + zero))
done
# Deleted files were trimmed (fstrim): the zero path must have run.
[ "$zeroed" -gt 0 ] || fail "no dirty extent read as zeroes: the trims of the guest did not reach the diff"
cowbd_stop
check_pool "after the backups"
