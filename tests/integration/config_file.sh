#!/bin/bash
# config_file.sh — the configuration file (cowbd.conf(5)) seen from the
# command line:
#  - cowbd --check-config accepts a good file and the shipped sample
#    (dist/cowbd.conf), prints "FILE: OK" and exits 0;
#  - each kind of bad file (unknown key, unknown section, bad value,
#    duplicate single-valued key, bad CIDR, a syntax error, a listen port
#    out of range, ...) exits 2 with one line naming FILE:LINE of the first
#    bad line; an unknown option is one line too;
#  - a daemon started on a file serves what it says, command-line flags
#    override its keys (--listen over listen, --log-level over log-level);
#  - a file that names a missing pool without create is refused at start
#    with one line, and nothing is created;
#  - log-level is applied (warn: no info lines; debug: debug lines);
#  - --version prints "cowbd VERSION" and exits 0.
. "$(dirname "$0")/lib.sh"
requires nbdinfo

SAMPLE="$TOP/dist/cowbd.conf"

# ---- --check-config ----------------------------------------------------------
"$BUILD/cowbd" --check-config "$SAMPLE" >"$T/out" 2>&1 || fail "the sample is refused: $(cat "$T/out")"
[ "$(cat "$T/out")" = "$SAMPLE: OK" ] || fail "check of the sample said: $(cat "$T/out")"
echo "ok: --check-config accepts dist/cowbd.conf"

cat >"$T/good.conf" <<EOF
# a comment
[cowbd]
pool = $T/pool.img
create = 256M
listen = 127.0.0.1:1
max-connections = 10
log-level = warn

[export vol0]
allow = 127.0.0.2/32, ::1, 10.0.0.0/8 ; the storage network
read-only = yes
[export vol1]
allow-unix = no
tls-identity = alice
EOF
"$BUILD/cowbd" --check-config "$T/good.conf" >"$T/out" 2>&1 || fail "good file refused: $(cat "$T/out")"
"$BUILD/cowbd" --config "$T/good.conf" --check-config >"$T/out" 2>&1 ||
	fail "--config FILE --check-config refused: $(cat "$T/out")"
[ "$(cat "$T/out")" = "$T/good.conf: OK" ] || fail "check said: $(cat "$T/out")"
echo "ok: --check-config accepts a good file (either way of naming it)"

# bad LINE WANT TEXT: the file TEXT (after a [cowbd] line with a pool) is
# refused with exit 2 and one line "FILE:LINE: ...WANT...".
bad() {
	local line=$1 want=$2 rc
	printf '[cowbd]\npool = /p\n%b\n' "$3" >"$T/bad.conf"
	"$BUILD/cowbd" --check-config "$T/bad.conf" >"$T/out" 2>&1
	rc=$?
	[ $rc = 2 ] || fail "exit $rc for '$3': $(cat "$T/out")"
	[ "$(wc -l <"$T/out")" = 1 ] || fail "not one line for '$3': $(cat "$T/out")"
	grep -qF "cowbd: error: $T/bad.conf:$line: " "$T/out" || fail "not at line $line: $(cat "$T/out")"
	grep -qF -- "$want" "$T/out" || fail "no '$want' for '$3': $(cat "$T/out")"
}
bad 3 "unknown key 'bogus' in [cowbd]" "bogus = 1"
bad 3 "unknown key 'config' in [cowbd]" "config = /x"
bad 4 "unknown section [exports vm1]" "\n[exports vm1]"
bad 3 "duplicate key 'pool' (first at line 2)" "pool = /q"
bad 3 "duplicate section [cowbd] (first at line 1)" "[cowbd]"
bad 3 "bad max-connections: 0" "max-connections = 0"
bad 3 "bad create" "create = 12X"
bad 3 "bad log-level: loud" "log-level = loud"
bad 3 "bad tls: mode maybe" "tls = maybe"
bad 3 "bad listen: bad listen port in 127.0.0.1:86536" "listen = 127.0.0.1:86536"
bad 3 "bad control-group: no group no-such-group-x" "control-group = no-such-group-x"
bad 4 "bad allow: '10.0.0.1/8' has host bits set (the network is 10.0.0.0/8)" \
	"[export vol0]\nallow = 10.0.0.1/8"
bad 4 "bad allow: '300.1.1.1' is not an IPv4 or IPv6 address" "[export vol0]\nallow = 300.1.1.1"
bad 4 "bad allow: '2001:db8::/129'" "[export vol0]\nallow = 2001:db8::/129"
bad 5 "duplicate key 'read-only'" "[export vol0]\nread-only = yes\nread-only = no"
bad 4 "bad read-only: 'maybe'" "[export vol0]\nread-only = maybe"
bad 4 "unknown key 'alow' in [export vol0]" "[export vol0]\nalow = ::1"
bad 3 "invalid volume name" "[export bad/name]"
bad 3 "syntax error" "this is no key"
bad 3 "bad rados-lease: 2 (want seconds >= 3)" "rados-lease = 2"
bad 3 "bad rados-timeout: 0" "rados-timeout = 0"
bad 3 "bad cache-size" "cache-size = 1M"
# A pool in RADOS: its name's form, and its keys only with such a pool.
printf '[cowbd]\npool = rados:cowbd\n' >"$T/bad.conf"
"$BUILD/cowbd" --check-config "$T/bad.conf" >"$T/out" 2>&1 && fail "rados:cowbd accepted"
grep -qF "$T/bad.conf:2: bad pool: rados:cowbd (want rados:POOL/NAME" "$T/out" ||
	fail "rados:cowbd: $(cat "$T/out")"
printf '[cowbd]\npool = /p\ncache = /c\n' >"$T/bad.conf"
"$BUILD/cowbd" --check-config "$T/bad.conf" >"$T/out" 2>&1 && fail "cache on a file pool accepted"
grep -qF "are for a pool in RADOS" "$T/out" || fail "cache on a file pool: $(cat "$T/out")"
printf '[cowbd]\npool = rados:cowbd/p1\nrados-conf = /etc/ceph/ceph.conf\nrados-id = cowbd\ncache = /c\ncache-size = 64G\nrados-lease = 30\nrados-timeout = 10\n' >"$T/r.conf"
"$BUILD/cowbd" --check-config "$T/r.conf" >"$T/out" 2>&1 || fail "a RADOS pool's file refused: $(cat "$T/out")"
bad 3 "'listen' has no value" "listen ="
echo "ok: each kind of bad line: exit 2, one line naming FILE:LINE"

"$BUILD/cowbd" --check-config "$T/nonexistent.conf" >"$T/out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "cannot read $T/nonexistent.conf: No such file" "$T/out" ||
	fail "missing file: exit $rc: $(cat "$T/out")"
"$BUILD/cowbd" --bogus >"$T/out" 2>&1
rc=$?
[ $rc != 0 ] && [ "$(cat "$T/out")" = "cowbd: error: unknown option --bogus (cowbd --help lists them)" ] ||
	fail "unknown option: exit $rc: $(cat "$T/out")"
echo "ok: a missing file and an unknown option are one line each"

"$BUILD/cowbd" --version >"$T/out" 2>&1 || fail "--version: exit $?"
grep -qx "cowbd [0-9a-zA-Z][-.0-9a-zA-Z+~]*" "$T/out" || fail "--version said: $(cat "$T/out")"
echo "ok: --version: $(cat "$T/out")"

# ---- a daemon on a file; flags override keys ----------------------------------
PORT=$(random_port)
OTHER=$(random_port)
cat >"$T/run.conf" <<EOF
[cowbd]
pool = $T/pool.img
create = 256M
listen = 127.0.0.1:$OTHER
control = $CTL
log-level = warn
EOF
"$BUILD/cowbd" --config "$T/run.conf" --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
COWBD_PID=$!
for _ in $(seq 1 200); do [ -S "$CTL" ] && break; sleep 0.05; done
[ -S "$CTL" ] || fail "cowbd on a config file did not start"
ok volume create vol0 64M
[ "$(nbdinfo --size "$(uri vol0)")" = 67108864 ] || fail "not served on the --listen port"
if nbdinfo --size "nbd://127.0.0.1:$OTHER/vol0" >/dev/null 2>&1; then
	fail "the file's listen was used although --listen overrides it"
fi
grep -q "info:" "$LOG" && fail "log-level = warn, yet info lines: $(grep info: "$LOG" | head -3)"
cowbd_stop
echo "ok: the file's pool and control are used, --listen overrides listen, log-level = warn"

"$BUILD/cowbd" --config "$T/run.conf" --listen "127.0.0.1:$PORT" --log-level debug >"$LOG" 2>&1 &
COWBD_PID=$!
for _ in $(seq 1 200); do [ -S "$CTL" ] && break; sleep 0.05; done
[ -S "$CTL" ] || fail "cowbd did not start again"
nbdinfo --size "$(uri vol0)" >/dev/null || fail "not served after a restart"
# (the file says warn: the connection's info line shows the flag won)
grep -q "cowbd: info: .*: connected" "$LOG" || fail "--log-level debug did not override the file"
cowbd_stop
echo "ok: --log-level debug overrides log-level = warn"

# ---- a missing pool without create --------------------------------------------
sed -e '/^create/d' -e "s|^pool = .*|pool = $T/missing.img|" "$T/run.conf" >"$T/missing.conf"
"$BUILD/cowbd" --config "$T/missing.conf" --listen 127.0.0.1:0 >"$T/out" 2>&1
rc=$?
[ $rc = 1 ] || fail "a missing pool without create: exit $rc: $(cat "$T/out")"
[ "$(grep -c error: "$T/out")" = 1 ] &&
	grep -q "error: cannot open pool $T/missing.img: No such file or directory (to make one, set create = SIZE" "$T/out" ||
	fail "a missing pool without create: $(cat "$T/out")"
[ ! -e "$T/missing.img" ] && [ ! -e "$CTL" ] || fail "something was created for a missing pool"
echo "ok: a missing pool without create is refused with one line"

echo "config_file: all checks passed"
