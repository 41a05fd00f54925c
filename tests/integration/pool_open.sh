#!/bin/bash
# Pool creation and refusal: --create on a missing, empty or all-zero file
# makes a pool; on a file holding other data, a too-small file, a pool of a
# newer format or one with both superblocks damaged, cowbd refuses with one
# line naming the problem and leaves the file byte-for-byte unchanged.
# cowbd-check exits 0 clean, 1 damaged, 2 cannot read.
. "$(dirname "$0")/lib.sh"
requires python3 sha256sum truncate

# A sparse all-zero file is blank: the pool is made there.
truncate -s 256M "$T/blank.img"
cowbd_try 0 "$T/blank.img" --create 256M
grep -q "created pool" "$T/out" || fail "no pool created on a blank file"
"$BUILD/cowbd-check" "$T/blank.img" >/dev/null || fail "fresh pool does not check clean"
# Opening it again with --create keeps it.
cowbd_try 0 "$T/blank.img" --create 256M
grep -q "exists" "$T/out" || fail "existing pool not recognised"

# A file with data: refused, unchanged.
head -c 128M /dev/urandom > "$T/data.img"
sum=$(sha256sum < "$T/data.img")
cowbd_try 1 "$T/data.img" --create 128M
grep -q "holds data that is not a cowbd pool" "$T/out" || fail "wrong refusal: $(cat "$T/out")"
[ "$(wc -l < "$T/out")" -eq 1 ] || fail "refusal is not one line"
[ "$sum" = "$(sha256sum < "$T/data.img")" ] || fail "refused file was changed"
cowbd_try 1 "$T/data.img"
grep -q "not a cowbd pool" "$T/out" || fail "wrong message for a non-pool"
"$BUILD/cowbd-check" "$T/data.img" >/dev/null 2>&1; [ $? = 2 ] || fail "cowbd-check on junk: want 2"

# One byte of data far into a zero file is still data.
truncate -s 128M "$T/late.img"
printf 'x' | dd of="$T/late.img" bs=1 seek=$((100 << 20)) conv=notrunc status=none
cowbd_try 1 "$T/late.img" --create 128M

# Too small.
truncate -s 16M "$T/small.img"
cowbd_try 1 "$T/small.img" --create 16M
grep -q "too small" "$T/out" || fail "wrong message for a small file: $(cat "$T/out")"

# Newer format version: refused, unchanged.
cp --sparse=always "$T/blank.img" "$T/newer.img"
/usr/bin/python3 - "$T/newer.img" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    for slot in (0, 1):
        f.seek(slot * 4096); b = bytearray(f.read(4096))
        b[12:16] = struct.pack("<I", 99)
        f.seek(slot * 4096); f.write(b)
PY
sum=$(sha256sum < "$T/newer.img")
cowbd_try 1 "$T/newer.img"
grep -q "newer" "$T/out" || fail "wrong message for a newer pool: $(cat "$T/out")"
[ "$sum" = "$(sha256sum < "$T/newer.img")" ] || fail "newer pool was changed"

# Both superblocks damaged: refused; one damaged: the other is used.
cp --sparse=always "$T/blank.img" "$T/bad.img"
/usr/bin/python3 - "$T/bad.img" 0 <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]) * 4096 + 200); f.write(b"\xff")
PY
cowbd_try 0 "$T/bad.img"
"$BUILD/cowbd-check" "$T/bad.img" >/dev/null || fail "one bad superblock: check should pass"
/usr/bin/python3 - "$T/bad.img" 1 <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    for slot in (0, 1):
        f.seek(slot * 4096 + 200); f.write(b"\xff")
PY
sum=$(sha256sum < "$T/bad.img")
cowbd_try 1 "$T/bad.img"
grep -q "damaged" "$T/out" || fail "wrong message for damaged superblocks: $(cat "$T/out")"
[ "$sum" = "$(sha256sum < "$T/bad.img")" ] || fail "damaged pool was changed"
"$BUILD/cowbd-check" "$T/bad.img" >/dev/null 2>&1; [ $? = 1 ] || fail "cowbd-check on damage: want 1"

# Missing file without --create.
cowbd_try 1 "$T/none.img"
grep -q "No such file" "$T/out" || fail "wrong message for a missing pool"
echo "pool open/refusal cases all behaved"
