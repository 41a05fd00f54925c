#!/bin/bash
# data_hostfull.sh — invariants 5 and 9 when the host filesystem under a
# pool file fills: a full host filesystem is a full pool, not a failure.
# A 1 GiB sparse pool file lives on a 96 MiB tmpfs made by the test.
#   - open warns (one line) that the sparse pool is larger than the free
#     space under it;
#   - writing until the filesystem is full gives the client ENOSPC (not EIO,
#     which qemu's werror=enospc policy cannot pause on); then reads of
#     everything written and flushed are right, a FLUSH works, and
#     `cowctl stats` does not say failed;
#   - deleting a volume (the compactor and checkpoints run on their own)
#     brings writes back without a restart;
#   - when something else fills the filesystem, writes get ENOSPC again, and
#     come back when that space is freed;
#   - kill -9 on the full filesystem, then a restart on it still full: the
#     pool opens (read-only with a warning if it must) and every flushed
#     block reads back; cowbd-check passes; the same after a clean stop.
# Every wait polls with a bound: no timing guesses.
. "$(dirname "$0")/lib.sh"
requires nbdsh /usr/bin/python3 mount umount
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] && [ -x "$BUILD/cowbd-check" ] ||
	fail "build/cowbd, cowctl or cowbd-check missing"

FS="$T/fs"
small_fs "$FS" 96M
POOL="$FS/pool.img"

known_py
cat >"$T/h.py" <<'PY'
# h.py PORT STATEDIR COMMAND ARGS; STATEDIR/known.json: {vol: [[off, len, seed]]},
# only ranges whose write and a later FLUSH both succeeded.
#   write VOL A B        write [A,B) MiB, flush; all must succeed
#   tofull VOL A         1 MiB writes from A MiB until ENOSPC; then reads,
#                        FLUSH, and ENOSPC for more writes
#   until VOL A SECS     try a 1 MiB write at A MiB until it succeeds (ENOSPC
#                        meanwhile is fine), at most SECS seconds; flush
#   verify               every known range reads back
import sys, time, nbd
from known import M, known, save, conn, data, verify, write_mib
cmd, args = sys.argv[3], sys.argv[4:]

def is_enospc(what, e):
    if e.errno != "ENOSPC":
        sys.exit("%s on a full host filesystem: %s (errno %s), want ENOSPC" % (what, e, e.errno))

vol = args[0] if args else None
if cmd == "write":
    write_mib(conn(vol), vol, int(args[1]), int(args[2]))
elif cmd == "tofull":
    h = conn(vol)
    off = int(args[1]) * M
    done = []
    while True:
        if off + M > h.get_size():
            sys.exit("wrote up to the end of %s without ENOSPC" % vol)
        try:
            h.pwrite(data(off + 7, M), off)
        except nbd.Error as e:
            is_enospc("1 MiB write at %d MiB" % (off // M), e)
            break
        done.append([off, M, off + 7])
        off += M
    # the connection lives on: FLUSH works (so what was acknowledged is
    # flushed), reads work, and more writes get ENOSPC
    h.flush()
    known.setdefault(vol, []).extend(done)
    save()
    print("%s: ENOSPC after %d MiB" % (vol, len(done)))
    verify(h, vol)
    for what, f in [("4 KiB write", lambda: h.pwrite(b"w" * 4096, off + M)),
                    ("FUA write", lambda: h.pwrite(b"f" * 4096, off + 2 * M, nbd.CMD_FLAG_FUA))]:
        try:
            f()
        except nbd.Error as e:
            is_enospc(what, e)
            continue
        sys.exit("%s on a full host filesystem succeeded" % what)
    h.flush()
    h.shutdown()
elif cmd == "until":
    h = conn(vol)
    off, secs = int(args[1]) * M, float(args[2])
    end, tries = time.monotonic() + secs, 0
    while True:
        tries += 1
        try:
            h.pwrite(data(off, M), off)
            break
        except nbd.Error as e:
            is_enospc("write while space comes back", e)
        if time.monotonic() > end:
            sys.exit("writes did not come back within %g s (%d tries)" % (secs, tries))
        time.sleep(0.25)
    h.flush()
    known.setdefault(vol, []).append([off, M, off])
    save()
    print("%s: a write succeeded again after %d tries" % (vol, tries))
elif cmd == "verify":
    n = 0
    for v in known:
        verify(conn(v), v)
        n += len(known[v])
    print("ok: all %d flushed ranges of %s read back" % (n, ", ".join(sorted(known))))
elif cmd == "forget":
    known.pop(vol, None)
    save()
PY
h() { /usr/bin/python3 "$T/h.py" "$PORT" "$T" "$@" || fail "h.py $*"; }

# --- a sparse pool larger than its filesystem: one warning at open --------
POOL_SIZE=1G cowbd_start
grep -q "is sparse" "$LOG" || fail "no warning that the 1 GiB sparse pool exceeds the 96 MiB filesystem"
echo "ok: open warned: $(grep -m1 "is sparse" "$LOG")"

ok volume create other 64M
h write other 0 24
ok volume create vol0 1G
h write vol0 0 8

# --- fill the filesystem: ENOSPC, reads and flush go on, not failed -------
h tofull vol0 16
not_failed "after the host filesystem filled"
h verify
df -m "$FS" | tail -n 1

# --- a delete gives space back: writes come back without a restart --------
ok volume delete other
h forget other
h until vol0 400 60
h verify
not_failed "after writes came back"
echo "ok: deleting a volume brought writes back"

# --- something else fills the filesystem: ENOSPC, and back when it goes ---
dd if=/dev/zero of="$FS/filler" bs=1M 2>/dev/null # until the filesystem is full
h tofull vol0 404
not_failed "after another file filled the filesystem"
rm -f "$FS/filler"
h until vol0 600 60
h verify
echo "ok: space freed by someone else brought writes back"

# --- kill -9 on a full filesystem, restart on it still full ----------------
h tofull vol0 604
dd if=/dev/zero of="$FS/filler" bs=1M 2>/dev/null # nothing left at all
cowbd_kill9
cowbd_restart
h verify
not_failed "after a restart on a full filesystem"
echo "ok: restarted on the full filesystem, flushed data reads back"
grep -iE "read-only|full" "$LOG" | tail -n 3

# --- a clean stop on the full filesystem, restart, check -------------------
cowbd_stop
check_pool "after a clean stop on a full filesystem"
cowbd_restart
h verify
rm -f "$FS/filler"
cowbd_stop
check_pool "at the end"
echo "data_hostfull: all checks passed"
