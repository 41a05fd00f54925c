#!/bin/bash
# rados_osd_loss.sh — one of three OSDs dies under a write load (issue 14): pool cowbd
# has size 3, min_size 2, so Ceph keeps accepting writes and no error may reach an NBD
# client. Host A serves vol0 to two loads: a writer that writes and flushes 1 MiB at a
# time round [0, 32) MiB, remembering each MiB flushed, and fio random writes (iodepth
# 16) over [32, 64) MiB. The OSD that is primary for the pool's lock object is killed
# (SIGKILL) 2 s into the load and started again 4 s later; the load goes on for 12 s in
# all (the OSD's return stalls writes too: its PGs peer again). Both loads must end
# without an error, every MiB flushed must read back through A and, after A stops and
# its cache is deleted, through a new A reading from RADOS alone.
. "$(dirname "$0")/lib.sh"
requires fio nbdsh /usr/bin/python3
fio --enghelp=nbd >/dev/null 2>&1 || { echo "requires fio with the nbd engine"; exit 77; }
ceph_cluster

WRITER="" FIO=""
osd_cleanup() {
	local rc=$?
	touch "$T/stop"
	[ -z "$FIO" ] || { kill "$FIO" 2>/dev/null; wait "$FIO" 2>/dev/null; }
	[ -z "$WRITER" ] || wait "$WRITER" 2>/dev/null
	[ -z "${STARTER:-}" ] || wait "$STARTER" 2>/dev/null
	# a failure between kill and start must not leave the shared cluster one OSD short
	[ -z "${OSD:-}" ] || bash "$TOP/tests/ceph/cluster.sh" osd-start "${CEPH_CONF%/ceph.conf}" \
		"$OSD" >/dev/null 2>&1
	ceph_cleanup "$rc"
}
trap osd_cleanup EXIT

host_start a --create 1G || fail "host a: exit ${HRC[a]}"
hctl a volume create vol0 64M >/dev/null || fail "volume create"
rmodel a write 0 32 base || fail "host a: first write"
# the primary OSD of the lock object's placement group
OSDN=$(timeout 30 ceph -c "$CEPH_CONF" --id "$CEPH_ID" osd map "$CEPH_POOL" "$RNAME.sb.0" \
	-f json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["acting_primary"])') ||
	fail "ceph osd map"
echo "the lock object's primary: osd.$OSDN"

rmodel a load 0 32 "$T/stop" >"$T/writer.out" 2>&1 &
WRITER=$!
fio --name=load --ioengine=nbd --uri="$(huri a vol0)" --rw=randwrite --bsrange=4k-64k \
	--iodepth=16 --offset=32m --size=32m --time_based=1 --runtime=12 --fsync=64 \
	--output="$T/fio.out" &
FIO=$!
sleep 2
OSD=$OSDN
ceph_osd kill "$OSD"
echo "osd.$OSD killed"
sleep 4
t0=$(date +%s)
bash "$TOP/tests/ceph/cluster.sh" osd-start "${CEPH_CONF%/ceph.conf}" "$OSD" &
STARTER=$!
# fio runs 12 s: through the OSD's death and its return; the writer until fio ends
wait "$FIO"
rc=$?
FIO=""
[ $rc = 0 ] || fail "fio load (exit $rc): $(grep -v "^ " "$T/fio.out" | tail -n 20)"
grep -q "err= 0" "$T/fio.out" || fail "fio load: $(grep "err=" "$T/fio.out")"
echo "fio load: $(grep "WRITE: bw=" "$T/fio.out" | sed 's/^ *//');" \
	"longest write (clat max) $(grep -m1 '^ *clat' "$T/fio.out" | sed 's/.*max=\([^,]*\),.*/\1/') usec"
kill -0 "$WRITER" || fail "the writer failed: $(cat "$T/writer.out")"
touch "$T/stop"
wait "$WRITER" || fail "the writer failed: $(cat "$T/writer.out")"
WRITER=""
cat "$T/writer.out"
wait "$STARTER" || fail "osd.$OSD did not come back"
OSD=""
echo "osd.$OSDN back, every PG active+clean, $(($(date +%s) - t0)) s after its start"

rmodel a verify || fail "flushed data differs after the OSD loss"
host_stop a
rm -f "$T/a.cache"
host_start a || fail "host a without its cache: exit ${HRC[a]}"
rmodel a verify || fail "flushed data read from RADOS differs after the OSD loss"
host_stop a
echo "rados_osd_loss: all checks passed"
