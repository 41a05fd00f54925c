#!/bin/bash
# nbd_bigreq.sh — the largest requests: 32 MiB WRITE/READ round trips,
# many of them in flight at once (beyond the per-connection byte cap, so
# backpressure kicks in and lifts), a TRIM and a WRITE_ZEROES larger than
# one store request (split by conn.c), and a deep queue of small reads
# (beyond the per-connection request cap).
. "$(dirname "$0")/lib.sh"
requires nbdsh
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }

POOL_SIZE=2G cowbd_start
cowctl volume create vol0 512M >/dev/null || fail "volume create"

/usr/bin/python3 - "$(uri vol0)" <<'PY' || fail "big requests"
import errno, os, sys, nbd
M = 1 << 20
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * M
big = os.urandom(32 * M)
h.pwrite(big, 0)
assert h.pread(32 * M, 0) == big
h.pwrite(big, 1, nbd.CMD_FLAG_FUA)          # unaligned too
assert h.pread(32 * M, 1) == big
# 12 x 32 MiB writes in flight, then 12 reads: 384 MiB > the 64 MiB cap
blobs = [bytes([i + 1]) * (32 * M) for i in range(12)]
cookies = [h.aio_pwrite(blobs[i], 64 * M + i * 32 * M) for i in range(12)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
bufs = [nbd.Buffer(32 * M) for _ in range(12)]
cookies = [h.aio_pread(bufs[i], 64 * M + i * 32 * M) for i in range(12)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for i in range(12):
    assert bufs[i].to_bytearray() == blobs[i], "blob %d" % i
# trim and zero larger than one store request (32 MiB)
h.trim(100 * M, 64 * M + 3)
assert h.pread(4096, 64 * M + 3) == bytes(4096)
assert h.pread(4096, 164 * M - 4093) == bytes(4096)
assert h.pread(1, 164 * M + 3) == bytes([4])   # first byte after the trim
h.zero(70 * M, 0, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(32 * M, 0) == bytes(32 * M)
# 2000 small reads queued at once (> 256 requests in flight per connection)
h.pwrite(b"q" * 4096, 400 * M)
bufs = [nbd.Buffer(4096) for _ in range(2000)]
for b in bufs:
    h.aio_pread(b, 400 * M)
while h.aio_in_flight() > 0:
    h.poll(-1)
assert all(b.to_bytearray() == b"q" * 4096 for b in bufs)
# A WRITE over the 32 MiB maximum: EINVAL, answered only after its payload
# is read, so the client (still sending) keeps its connection (bug: the
# early reply made libnbd drop it with "no matching cookie").
h2 = nbd.NBD()
h2.set_strict_mode(0)
h2.connect_uri(sys.argv[1])
try:
    h2.pwrite(bytes(33 * M), 0)
    raise SystemExit("a 33 MiB write succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
h2.pwrite(b"after" * 100, 0)
assert h2.pread(500, 0) == b"after" * 100
h2.shutdown()
h.shutdown()
print("big requests ok")
PY
cowbd_stop
