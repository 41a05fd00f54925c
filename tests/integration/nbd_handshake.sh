#!/bin/bash
# nbd_handshake.sh — fixed newstyle handshake as real clients see it:
# nbdinfo (NBD_OPT_GO + NBD_INFO_*), nbdinfo --list (NBD_OPT_LIST + INFO),
# export size and transmission flags for a volume and a read-only snapshot,
# an unknown export refused, option haggling through libnbd's opt mode
# (unsupported option, INFO, ABORT), IPv6 and unix listeners, and a clean
# SIGTERM exit.
. "$(dirname "$0")/lib.sh"
requires nbdsh nbdinfo
[ -x "$BUILD/cowctl" ] || { echo "requires $BUILD/cowctl (not built yet)"; exit 77; }

cowbd_start --unix "$T/nbd.sock"
cowctl volume create vol0 64M >/dev/null || fail "volume create"
cowctl snapshot create vol0@snap >/dev/null || fail "snapshot create"

[ "$(nbdinfo --size "$(uri vol0)")" = 67108864 ] || fail "size of vol0"
out=$(nbdinfo "$(uri vol0)") || fail "nbdinfo vol0"
for want in "can_flush: true" "can_fua: true" "can_trim: true" "can_zero: true" \
	"can_multi_conn: true" "is_read_only: false" "block_size_minimum: 1" \
	"block_size_maximum: 67108864"; do
	grep -q "$want" <<<"$out" || fail "nbdinfo vol0 lacks '$want': $out"
done
out=$(nbdinfo "$(uri vol0@snap)") || fail "nbdinfo vol0@snap"
grep -q "is_read_only: true" <<<"$out" || fail "snapshot not read-only: $out"
out=$(nbdinfo --list "nbd://127.0.0.1:$PORT/") || fail "nbdinfo --list"
grep -q 'export="vol0":' <<<"$out" || fail "list lacks vol0: $out"
grep -q 'export="vol0@snap":' <<<"$out" || fail "list lacks vol0@snap: $out"
if nbdinfo "$(uri nosuch)" >/dev/null 2>&1; then fail "unknown export accepted"; fi
[ "$(nbdinfo --size "nbd+unix:///vol0?socket=$T/nbd.sock")" = 67108864 ] || fail "unix socket"

/usr/bin/python3 - "$(uri vol0)" <<'PY' || fail "option haggling"
import sys, nbd
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(sys.argv[1])
# (unknown options answered ERR_UNSUP are covered by nbd_raw.py option_unknown)
h.set_export_name("vol0@snap")
h.opt_info()
assert h.get_size() == 64 << 20 and h.is_read_only()
h.set_export_name("nosuch")
try:
    h.opt_info()
    sys.exit("INFO on an unknown export succeeded")
except nbd.Error:
    pass
names = []
h.opt_list(lambda name, desc: names.append(name))
assert "vol0" in names and "vol0@snap" in names, names
h.set_export_name("vol0")
h.opt_go()
assert h.get_size() == 64 << 20 and not h.is_read_only()
h.pwrite(b"hello", 0)
assert h.pread(5, 0) == b"hello"
h.shutdown()
a = nbd.NBD()
a.set_opt_mode(True)
a.connect_uri(sys.argv[1])
a.opt_abort()
print("option haggling ok")
PY

# IPv6 loopback, when the host has it
if [ -e /proc/net/if_inet6 ] && python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' 2>/dev/null; then
	cowbd_stop
	# a random port for the second listener, retried like cowbd_start's
	# (PORT + 1 may belong to anyone)
	for try in 1 2 3 4 5; do
		P6=$(random_port)
		rm -f "$CTL"
		_cowbd_launch --listen "[::1]:$P6" && break
		tail -n 3 "$LOG" | grep -q "in use" || fail "cowbd with an IPv6 listener did not start"
		[ $try = 5 ] && fail "no free port for the IPv6 listener"
	done
	[ "$(nbdinfo --size "nbd://[::1]:$P6/vol0")" = 67108864 ] || fail "IPv6 listener"
	[ "$(nbdinfo --size "$(uri vol0)")" = 67108864 ] || fail "second listener"
else
	echo "no IPv6 loopback: skipping the IPv6 listener check"
fi

# A second daemon on the same port fails with a clear message.
if "$BUILD/cowbd" --pool "$T/other.img" --create 64M --listen "127.0.0.1:$PORT" \
	--control "$T/other.sock" >"$T/other.log" 2>&1; then
	fail "second cowbd on a busy port started"
fi
grep -q "Address already in use" "$T/other.log" || fail "no EADDRINUSE message: $(cat "$T/other.log")"
[ ! -e "$T/other.sock" ] || fail "control socket created although listen failed"

# A port out of range is refused, not wrapped (99999 once listened on 34463).
for bad in 127.0.0.1:99999 127.0.0.1:65536 127.0.0.1:12ab; do
	if "$BUILD/cowbd" --pool "$T/other.img" --create 64M --listen "$bad" \
		--control "$T/other.sock" >"$T/other.log" 2>&1; then
		fail "cowbd started with --listen $bad"
	fi
	grep -q "bad listen port" "$T/other.log" || fail "no port message for $bad: $(cat "$T/other.log")"
done

cowbd_stop
echo "handshake ok"
