#!/bin/bash
# nbd_multiconn.sh — CAN_MULTI_CONN holds: connections to one volume share
# one view and one flush.  A write acknowledged on connection A is read by
# B; a flush on B covers it (it survives kill -9 and a restart); FUA on
# one connection is visible on the other at once.
. "$(dirname "$0")/lib.sh"
requires nbdsh
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }

cowbd_start
cowctl volume create vol0 64M >/dev/null || fail "volume create"

/usr/bin/python3 - "$(uri vol0)" <<'PY' || fail "multi-conn"
import sys, nbd
hs = []
for _ in range(4):
    h = nbd.NBD()
    h.connect_uri(sys.argv[1])
    assert h.can_multi_conn() and h.can_flush() and h.can_fua()
    hs.append(h)
a, b, c, d = hs
for i in range(64):
    a.pwrite(bytes([i + 1]) * 4096, i * 65536)
b.flush()                        # covers A's acknowledged writes
for i in range(64):
    assert b.pread(4096, i * 65536) == bytes([i + 1]) * 4096
c.pwrite(b"fua!" * 1024, 8 << 20, nbd.CMD_FLAG_FUA)
assert d.pread(4096, 8 << 20) == b"fua!" * 1024
for h in hs:
    h.shutdown()
PY
cowbd_kill9
cowbd_restart
/usr/bin/python3 - "$(uri vol0)" <<'PY' || fail "flushed writes lost after kill -9"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(64):
    assert h.pread(4096, i * 65536) == bytes([i + 1]) * 4096, "block %d" % i
assert h.pread(4096, 8 << 20) == b"fua!" * 1024
h.shutdown()
PY
cowbd_stop
