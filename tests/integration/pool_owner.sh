#!/bin/bash
# pool_owner.sh — one owner per pool (DESIGN.md invariant 10), on a pool
# file and on a loop block device.  While a daemon serves a pool under an
# fio write+verify load:
#  - a second cowbd on the same pool (with and without --create) exits 1
#    with one line naming the holder: "pool P is in use by cowbd pid N on
#    host H since DATE", and leaves no control socket behind;
#  - cowbd-check says first, in one line, that the pool is in use by that
#    daemon and that its result may be stale, and ends with a summary line
#    that says so too;
#  - the first daemon is undisturbed: fio's verify passes, the daemon stops
#    with exit 0 and the pool checks clean.
# On the device, an exclusive opener that is not cowbd (the kernel's
# O_EXCL, as mkfs or a mount takes it) is named as "another program".
# Skips (77) without fio's nbd engine or without a loop device.
. "$(dirname "$0")/lib.sh"
requires fio nbdsh losetup truncate
fio --enghelp=nbd >/dev/null 2>&1 || { echo "requires fio with the nbd engine"; exit 77; }

LOOPDEV=""
FIO=""
own_cleanup() {
	[ -z "$FIO" ] || { kill "$FIO" 2>/dev/null; wait "$FIO" 2>/dev/null; }
	[ -z "${HOLDER:-}" ] || { kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null; }
	if [ -n "$COWBD_PID" ]; then kill -9 "$COWBD_PID" 2>/dev/null; wait "$COWBD_PID" 2>/dev/null; fi
	COWBD_PID=""
	[ -z "$LOOPDEV" ] || losetup -d "$LOOPDEV"
	cleanup
}
trap own_cleanup EXIT

# load_start: fio random 4k writes over vol0 with crc32c verify, long
# enough (several passes) that the attempts below happen while it runs.
load_start() {
	fio --name=load --ioengine=nbd --uri="$(uri vol0)" --rw=randwrite --bs=4k \
		--size=32m --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--loops=6 --randseed=7 --output="$T/fio.out" &
	FIO=$!
	sleep 0.5
	kill -0 "$FIO" 2>/dev/null || fail "fio ended at once: $(tail -n 5 "$T/fio.out")"
}

load_finish() { # WHAT
	kill -0 "$FIO" 2>/dev/null || echo "note: fio had finished before the end of the attempts ($1)"
	wait "$FIO" || fail "$1: fio verify failed beside the refused opener: $(tail -n 20 "$T/fio.out")"
	FIO=""
	echo "ok: $1: fio write+verify passed through the attempts"
}

# second_refused WHAT ARGS...: another cowbd on $POOL exits 1 (cowbd_try:
# no control socket left) with one line that names the running daemon.
second_refused() {
	local what=$1; shift
	cowbd_try 1 "$POOL" "$@"
	mv "$T/out" "$T/second.out"
	[ "$(wc -l <"$T/second.out")" = 1 ] || fail "$what: refusal is not one line: $(cat "$T/second.out")"
	grep -qE "^cowbd: error: pool $POOL is in use by cowbd pid $COWBD_PID on host $(hostname) since [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}\$" \
		"$T/second.out" || fail "$what: refusal does not name the holder: $(cat "$T/second.out")"
	echo "ok: $what: $(cat "$T/second.out")"
}

# check_live WHAT: cowbd-check on the live pool says so first, in one line.
check_live() {
	"$BUILD/cowbd-check" "$POOL" >"$T/check.out" 2>"$T/check.err"
	head -n 1 "$T/check.err" | grep -q "^cowbd-check: pool $POOL is in use by cowbd pid $COWBD_PID on host .*result may be stale" ||
		fail "$1: cowbd-check did not say first that the pool is in use: $(head -n 3 "$T/check.err")"
	tail -n 1 "$T/check.out" | grep -q "(pool in use: may be stale)$" ||
		fail "$1: cowbd-check's summary does not say it may be stale: $(tail -n 1 "$T/check.out")"
	echo "ok: $1: $(head -n 1 "$T/check.err")"
}

# ---- a pool file ----
POOL_SIZE=256M cowbd_start
ok volume create vol0 64M
load_start
second_refused "file"
second_refused "file, --create" --create 256M
check_live "file"
load_finish "file"
kill -0 "$COWBD_PID" 2>/dev/null || fail "file: the first cowbd died"
cowbd_stop
check_pool "file, after the attempts"
# The lock goes with the daemon: the pool opens again at once.
cowbd_restart
cowbd_stop

# ---- a loop block device ----
truncate -s 256M "$T/dev.img"
LOOPDEV=$(losetup -f --show "$T/dev.img" 2>"$T/losetup.err") || {
	LOOPDEV=""
	echo "requires a loop device: $(cat "$T/losetup.err")"
	exit 77
}
POOL=$LOOPDEV
cowbd_restart --create 256M
grep -q "created pool $POOL" "$LOG" || fail "device: no pool created on $POOL"
ok volume create vol0 64M
load_start
second_refused "device"
second_refused "device, --create" --create 256M
check_live "device"
load_finish "device"
cowbd_stop
check_pool "device, after the attempts"

# Another program holds the device exclusively (as a mount or mkfs does):
# cowbd is refused, and says it is not a cowbd.
/usr/bin/python3 -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL)
print("held", flush=True)
time.sleep(60)' "$POOL" >"$T/holder.out" &
HOLDER=$!
for _ in $(seq 1 100); do grep -q held "$T/holder.out" && break; sleep 0.05; done
grep -q held "$T/holder.out" || fail "device: the O_EXCL holder did not start"
cowbd_try 1 "$POOL"
grep -q "pool $POOL is in use by another program" "$T/out" ||
	fail "device held by another program: $(cat "$T/out")"
echo "ok: device held by another program: $(cat "$T/out")"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null; HOLDER=""
echo "pool_owner: all checks passed"
