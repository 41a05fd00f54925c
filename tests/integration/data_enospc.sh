#!/bin/bash
# data_enospc.sh — invariant 5: a full pool answers writes with ENOSPC and
# stays consistent.  A 128 MiB pool holds a 1 GiB thin volume vol0 and a
# volume "other" with 24 MiB of data.  Writing vol0 until the pool is full
# gives NBD ENOSPC (not EIO, not a disconnect, no sticky failure); further
# writes of every shape also get ENOSPC; reads and FLUSH still work; every
# acknowledged write reads back.  Deleting "other" + `cowctl checkpoint`
# lets writes succeed again; filling up again, then trimming part of vol0 +
# checkpoint brings writes back once more.  Then, full again: kill -9 leaves
# a pool that passes cowbd-check and opens again with its data (so does a
# clean stop on a full pool).  All data checked to the end.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"
not_failed() {
	ok --json stats
	/usr/bin/python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["stats"]
assert not s["failed"], s' "$T/out" || fail "store is in the failed state $1"
}

known_py
cat >"$T/e.py" <<'PY'
# e.py PORT STATEDIR COMMAND ARGS; STATEDIR/known.json: {vol: [[off, len, seed]]}
#   write VOL A B         write [A,B) MiB in 1 MiB chunks, flush; all must succeed
#   tofull VOL A          write 1 MiB chunks from A MiB until ENOSPC; then more
#                         writes of every shape get ENOSPC, reads/flush work
#   trim VOL A B          trim [A,B) MiB, flush (the known data there goes)
#   verify                every known range reads back
import sys, nbd
from known import M, known, save, conn, data, verify, write_mib
cmd, args = sys.argv[3], sys.argv[4:]

def enospc(what, f):
    try:
        f()
    except nbd.Error as e:
        if e.errno != "ENOSPC":
            sys.exit("%s on a full pool: %s, want ENOSPC" % (what, e))
        return
    sys.exit("%s on a full pool succeeded" % what)

vol = args[0] if args else None
if cmd == "write":
    write_mib(conn(vol), vol, int(args[1]), int(args[2]))
elif cmd == "tofull":
    h = conn(vol)
    off = int(args[1]) * M
    limit = h.get_size()
    n = 0
    while True:
        if off + M > limit:
            sys.exit("wrote %d MiB up to the volume's end without ENOSPC" % n)
        seed = off + 7
        try:
            h.pwrite(data(seed, M), off)
        except nbd.Error as e:
            if e.errno != "ENOSPC":
                sys.exit("write at %d: %s, want ENOSPC" % (off, e))
            break
        known.setdefault(vol, []).append([off, M, seed])
        off += M
        n += 1
    # less than 1 MiB may be left: 4 KiB writes until those fail too
    k = 0
    while True:
        if k > 256:
            sys.exit("1 MiB writes get ENOSPC but more than 1 MiB of 4 KiB writes succeed")
        seed = off + 9
        try:
            h.pwrite(data(seed, 4096), off)
        except nbd.Error as e:
            if e.errno != "ENOSPC":
                sys.exit("4 KiB write at %d: %s, want ENOSPC" % (off, e))
            break
        known.setdefault(vol, []).append([off, 4096, seed])
        off += 4096
        k += 1
    save()
    print("%s: ENOSPC after %d MiB + %d 4 KiB writes" % (vol, n, k))
    # the connection lives on: reads work, acknowledged data reads back,
    # FLUSH works, and every kind of write still gets ENOSPC
    verify(h, vol)
    h.flush()
    enospc("4 KiB write", lambda: h.pwrite(b"w" * 4096, off + M))
    enospc("1-byte unaligned write", lambda: h.pwrite(b"u", off + M + 4097))
    enospc("FUA write", lambda: h.pwrite(b"f" * 4096, off + 2 * M, nbd.CMD_FLAG_FUA))
    enospc("1 MiB write", lambda: h.pwrite(b"m" * M, off + 3 * M))
    verify(h, vol)
    # a second connection sees the same
    h2 = conn(vol)
    enospc("write on a second connection", lambda: h2.pwrite(b"2" * 4096, off + 4 * M))
    verify(h2, vol)
    h2.flush()
    h.shutdown()
    h2.shutdown()
elif cmd == "trim":
    h = conn(vol)
    a, b = int(args[1]) * M, int(args[2]) * M
    h.trim(b - a, a)
    h.flush()
    assert h.pread(M, a) == bytes(M)
    known[vol] = [k for k in known.get(vol, []) if k[0] + k[1] <= a or k[0] >= b]
    save()
    print("%s: trimmed [%d, %d) MiB" % (vol, a // M, b // M))
elif cmd == "verify":
    for v in known:
        verify(conn(v), v)
    print("ok: all acknowledged data of %s reads back" % ", ".join(sorted(known)))
elif cmd == "forget":
    known.pop(vol, None)
    save()
PY
e() { /usr/bin/python3 "$T/e.py" "$PORT" "$T" "$@" || fail "e.py $*"; }

POOL_SIZE=128M cowbd_start
ok volume create other 32M
e write other 0 24
ok volume create vol0 1G
e write vol0 0 8

# fill up (1 MiB writes, then 4 KiB ones); ENOSPC; reads and flush go on
e tofull vol0 16
not_failed "after ENOSPC"
e verify

# deleting another volume frees space: writes work again
ok volume delete other
e forget other
ok checkpoint
e write vol0 300 308
e verify
e tofull vol0 308
echo "ok: deleting a volume brought writes back"

# trimming part of vol0 frees space too
e trim vol0 16 80
ok checkpoint
e write vol0 500 516
e verify
echo "ok: trimming brought writes back"
not_failed "after trimming"

# full again; kill -9 while full: clean check, the pool opens again (the
# recovery checkpoint must fit), data intact, still full, and a trim +
# checkpoint brings writes back after the restart too
e tofull vol0 600
cowbd_kill9
check_pool "after kill -9 on a full pool"
cowbd_restart
e verify
e tofull vol0 800
not_failed "after ENOSPC following a restart"
e trim vol0 500 540
ok checkpoint
e write vol0 900 904

# a clean stop on a full pool (its checkpoint must fit too) and a restart
e tofull vol0 904
cowbd_stop
check_pool "after a clean stop on a full pool"
cowbd_restart
e verify
not_failed "at the end"
cowbd_kill9
check_pool "after the last kill -9"
echo "data_enospc: all checks passed"
