#!/bin/bash
# data_idle_discard.sh — an idle daemon gives a pool file's free space back
# to the filesystem (hole punch), all but a bounded reserve of warm segments:
# segments the log released, whose pages are likely still cached, which the
# next burst of writes takes first (docs/PERFORMANCE.md, "Large sequential
# I/O").  The reserve is two checkpoint intervals of log but at most an
# eighth of the pool: with --checkpoint-interval 1T on a 1 GiB pool, 128 MiB.
#   - three passes of 1 MiB writes over a 256 MiB volume, then checkpoints:
#     about 512 MiB of the pool file hold dead data, their segments free;
#   - left idle, the daemon punches them: the file's allocated size falls to
#     live data + the reserve + a few segments (polled, 60 s at most);
#   - every block reads back the last pass's data.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

cat >"$T/w.py" <<'PY'
# w.py PORT CMD: "write" three passes of 1 MiB writes (pass p writes bytes
# p*16+i over MiB i) and flush; "verify" that the last pass reads back.
import sys, nbd
M = 1 << 20
h = nbd.NBD()
h.connect_uri("nbd://127.0.0.1:%s/v" % sys.argv[1])
n = h.get_size() // M
if sys.argv[2] == "write":
    for p in range(3):
        for i in range(n):
            h.pwrite(bytes([(p * 16 + i) % 256]) * M, i * M)
    h.flush()
else:
    for i in range(n):
        if h.pread(M, i * M) != bytes([(2 * 16 + i) % 256]) * M:
            sys.exit("MiB %d reads wrong data" % i)
h.shutdown()
PY

allocated_mib() { echo $(($(stat -c '%b * %B' "$POOL") >> 20)); }

cowbd_start --checkpoint-interval 1T
ok volume create v 256M
/usr/bin/python3 "$T/w.py" "$PORT" write || fail "writing the volume failed"
ok checkpoint
ok checkpoint
before=$(allocated_mib)
[ "$before" -ge 700 ] || fail "pool file holds only $before MiB after 768 MiB written"
# live 256 + reserve 128 + the log's head and next segment, segment 0, room
limit=416
for _ in $(seq 1 120); do
	[ "$(allocated_mib)" -le "$limit" ] && break
	sleep 0.5
done
after=$(allocated_mib)
[ "$after" -le "$limit" ] || fail "idle daemon kept $after MiB of the pool file (limit $limit)"
[ "$after" -ge 256 ] || fail "pool file holds $after MiB, less than the live data"
echo "ok: pool file $before MiB after the writes, $after MiB once idle"
/usr/bin/python3 "$T/w.py" "$PORT" verify || fail "data lost"
cowbd_stop
check_pool "after idle discards"
