#!/bin/bash
# pool_too_big.sh — a version 4 pool larger than format version 5 allows
# (45 TiB, a sparse file on tmpfs: its metadata is 185 MB) cannot be
# upgraded: cowbd serves it read-only and says why in one line (not "no
# space left") and leaves it at version 4.  (cowbd-check is not run: it
# recounts with 4 bytes per pool block, 48 GB here.)
. "$(dirname "$0")/lib.sh"
SHM=/dev/shm
[ -d "$SHM" ] && [ -w "$SHM" ] || { echo "skipped: no writable $SHM"; exit 77; }
avail=$(df -Pk "$SHM" | awk 'NR == 2 { print $4 }')
[ "${avail:-0}" -gt 600000 ] || { echo "skipped: $SHM has under 600 MB free"; exit 77; }
POOL="$SHM/cowbd-too-big.$$.img"
trap 'rm -f "$POOL"; cleanup' EXIT
"$BUILD/cowbd-genpool" "$POOL" --size 45T --blocks 1000 --format-version 4 >"$T/gen.out" 2>&1 ||
	fail "cowbd-genpool: $(tail -n 3 "$T/gen.out")"
[ "$(pool_version)" = 4 ] || fail "the generated pool is not at version 4"

PORT=$(random_port)
cowbd_restart
grep -q "pool opened READ-ONLY: format version 5 cannot hold a pool of" "$LOG" ||
	fail "no line saying why the pool is read-only: $(grep -i read-only "$LOG")"
if grep -q "No space left" "$LOG"; then fail "the pool was said to be full"; fi
ok --json pool status
/usr/bin/python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["pool"]
assert p["read_only"] is True and p["read_only_fallback"] is True, p
assert p["format_version"] == 4, p' "$T/out" 2>"$T/py.err" || fail "pool status: $(cat "$T/py.err")"
echo "ok: served read-only at version 4, and says why"
cowbd_stop
[ "$(pool_version)" = 4 ] || fail "the pool left version 4"
echo "ok: still version 4 after the read-write open"
