#!/bin/bash
# Control changes are durable when cowctl reports success: create,
# snapshot, clone and delete, then kill -9 the daemon (no clean shutdown,
# no checkpoint), restart it on the same pool, and every change is there.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3
[ -x "$BUILD/cowbd" ] && [ -x "$BUILD/cowctl" ] || fail "build/cowbd or build/cowctl missing"

# names of everything (volumes and snapshots), sorted, one line
names() {
	{ cowctl --json volume list; cowctl --json snapshot list; } | /usr/bin/python3 -c '
import json, sys
dec = json.JSONDecoder(); s = sys.stdin.read().strip(); out = []
while s:
    o, i = dec.raw_decode(s); s = s[i:].strip()
    out += [(v["name"], v["size"], v["origin"]) for v in o.get("volumes", o.get("snapshots", []))]
print(" ".join("%s:%d:%s" % v for v in sorted(out)))'
}

cowbd_start

ok volume create gold 256M
ok snapshot create gold@v1
ok clone gold@v1 vm1
ok clone gold@v1 vm2
ok volume create scratch 1G
ok snapshot create vm1@before
want="gold:268435456:None gold@v1:268435456:None scratch:1073741824:None vm1:268435456:gold@v1 vm1@before:268435456:None vm2:268435456:gold@v1"
got=$(names)
[ "$got" = "$want" ] || fail "before crash: got '$got'"

# a second daemon must not take over a live daemon's control socket
timeout 20 "$BUILD/cowbd" --pool "$T/other.img" --create 64M --listen 127.0.0.1:0 \
	--control "$CTL" --foreground >"$T/second.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "second daemon on the same control socket: exit $rc"
grep -q "in use" "$T/second.log" || fail "second daemon: $(cat "$T/second.log")"
cowctl volume info gold >/dev/null || fail "first daemon's control socket broken by the second"
echo "ok: second daemon refused: $(grep 'in use' "$T/second.log")"

cowbd_kill9
# restart with the dead daemon's socket file still in place: it is stale
# (nobody answers) and gets replaced
[ -S "$CTL" ] || fail "no stale socket after kill -9"
_cowbd_launch || fail "restart over a stale control socket"
for _ in $(seq 1 100); do
	cowctl volume list >/dev/null 2>&1 && break
	sleep 0.1
done
got=$(names)
[ "$got" = "$want" ] || fail "after kill -9: got '$got', want '$want'"
echo "ok: all six survive kill -9"

# deletes are durable too, and so is work done after a recovery
ok volume delete scratch
ok snapshot delete vm1@before
ok volume delete vm2
ok volume create late 64M
cowbd_kill9
cowbd_restart
want="gold:268435456:None gold@v1:268435456:None late:67108864:None vm1:268435456:gold@v1"
got=$(names)
[ "$got" = "$want" ] || fail "after 2nd kill -9: got '$got', want '$want'"

# and through a clean stop/start
cowbd_stop
cowbd_restart
got=$(names)
[ "$got" = "$want" ] || fail "after clean restart: got '$got', want '$want'"
echo "cowctl_durable: all checks passed"
