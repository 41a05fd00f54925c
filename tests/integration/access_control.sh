#!/bin/bash
# access_control.sh — per-export access rules ([export NAME] in the
# configuration file, docs/OPERATIONS.md), seen from two loopback source
# addresses (the client's socket bound to 127.0.0.1 or 127.0.0.2):
#  - vol0 has "allow = 127.0.0.2/32": from 127.0.0.1, NBD_OPT_INFO and
#    NBD_OPT_GO get byte for byte the reply an unknown name gets,
#    NBD_OPT_EXPORT_NAME is hung up on exactly like an unknown name, and
#    NBD_OPT_LIST leaves vol0 (and its snapshot vol0@s1, which falls under
#    vol0's section) out; from 127.0.0.2 all of it works;
#  - ro has "read-only = yes": served with NBD_FLAG_READ_ONLY, and a WRITE
#    gets NBD_EPERM (vol1, without a section, stays writable);
#  - each refusal is logged once at info with its reason;
#  - SIGHUP with the rule changed to 127.0.0.1/32: new connections follow
#    it at once, while a write/read/verify load that was connected from
#    127.0.0.2 before the reload goes on without an error;
#  - tls-identity (restarted with --tls allow and a PSK file): alice is
#    served, bob and a plaintext client are refused, each with its reason.
. "$(dirname "$0")/lib.sh"
requires /usr/bin/python3 nbdinfo
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "requires python3-libnbd"; exit 77; }

cat >"$T/cowbd.conf" <<'EOF'
[cowbd]
max-connections = 100

[export vol0]
allow = 127.0.0.2/32

[export ro]
read-only = yes
EOF
cowbd_start --config "$T/cowbd.conf"
ok volume create vol0 64M
ok volume create vol1 64M
ok volume create ro 64M
ok snapshot create vol0@s1

# access.py PORT ALLOWED DENIED: the checks above, vol0 allowed from source
# address ALLOWED and denied from DENIED.
cat >"$T/access.py" <<'PY'
import socket, struct, sys

NBD_MAGIC, OPT_MAGIC, REP_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQ_MAGIC, SIMPLE_MAGIC = 0x25609513, 0x67446698
OPT_EXPORT_NAME, OPT_LIST, OPT_INFO, OPT_GO = 1, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO, REP_ERR_UNKNOWN = 1, 2, 3, 0x80000006
FLAG_READ_ONLY, CMD_READ, CMD_WRITE, EPERM = 2, 0, 1, 1
port, allowed, denied = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)

def recvn(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError
        buf += d
    return buf

def hello(src):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.settimeout(10)
    magic, opt, hflags = struct.unpack(">QQH", recvn(s, 18))
    check(magic == NBD_MAGIC and opt == OPT_MAGIC, "greeting")
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s

def send_opt(s, opt, data=b""):
    s.sendall(struct.pack(">QII", OPT_MAGIC, opt, len(data)) + data)

def read_rep(s):
    magic, opt, rtype, n = struct.unpack(">QIII", recvn(s, 20))
    check(magic == REP_MAGIC, "reply magic")
    return opt, rtype, recvn(s, n)

def replies(src, opt, name):
    """Every reply to INFO/GO of name, raw, up to the final one."""
    s = hello(src)
    n = name.encode()
    send_opt(s, opt, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    out = []
    while True:
        r = read_rep(s)
        out.append(r)
        if r[1] != REP_INFO:
            s.close()
            return out

def export_name(src, name):
    """NBD_OPT_EXPORT_NAME: the bytes the server sends before it hangs up
    (None: it did not hang up; it entered transmission)."""
    s = hello(src)
    send_opt(s, OPT_EXPORT_NAME, name.encode())
    got = b""
    try:
        while len(got) < 10:
            d = s.recv(64)
            if not d:
                return got
            got += d
    except ConnectionResetError:
        return got
    s.close()
    return None  # 8 bytes of size + 2 of flags: served

def listing(src):
    s = hello(src)
    send_opt(s, OPT_LIST)
    names = set()
    while True:
        opt, rtype, data = read_rep(s)
        if rtype == REP_ACK:
            break
        check(rtype == REP_SERVER, "LIST reply type %#x" % rtype)
        (n,) = struct.unpack(">I", data[:4])
        names.add(data[4:4 + n].decode())
    s.close()
    return names

def go(src, name):
    s = hello(src)
    n = name.encode()
    send_opt(s, OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    flags = None
    while True:
        opt, rtype, data = read_rep(s)
        if rtype == REP_ACK:
            return s, flags
        check(rtype == REP_INFO, "GO %s failed: %#x %r" % (name, rtype, data))
        if struct.unpack(">H", data[:2])[0] == 0:
            flags = struct.unpack(">H", data[10:12])[0]

def request(s, cmd, off, length, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, 7, off, length) + payload)
    magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
    check(magic == SIMPLE_MAGIC and handle == 7, "simple reply")
    return err, recvn(s, length) if cmd == CMD_READ and err == 0 else b""

for opt, what in ((OPT_INFO, "INFO"), (OPT_GO, "GO")):
    for name in ("vol0", "vol0@s1"):
        unknown = "x" * len(name)  # same length: the messages differ only by name
        got = replies(denied, opt, name)
        want = replies(denied, opt, unknown)
        check(want[-1][1] == REP_ERR_UNKNOWN, "%s of an unknown name: %r" % (what, want))
        same = [(o, t, d.replace(name.encode(), unknown.encode())) for o, t, d in got]
        check(same == want, "%s %s from %s: %r, an unknown name gets %r" %
              (what, name, denied, got, want))
        got = replies(allowed, opt, name)
        check(got[-1][1] == REP_ACK, "%s %s from %s refused: %r" % (what, name, allowed, got))
    print("ok %s: vol0 and vol0@s1 refused from %s like unknown names, served to %s"
          % (what, denied, allowed))

got, want = export_name(denied, "vol0"), export_name(denied, "zzzz")
check(want == b"", "EXPORT_NAME of an unknown name: %r" % want)
check(got == want, "EXPORT_NAME vol0 from %s: %r, an unknown name gets %r" % (denied, got, want))
check(export_name(allowed, "vol0") is None, "EXPORT_NAME vol0 from %s refused" % allowed)
print("ok EXPORT_NAME: refused from %s like an unknown name, served to %s" % (denied, allowed))

seen = listing(denied)
check(seen == {"vol1", "ro"}, "LIST from %s: %s" % (denied, sorted(seen)))
seen = listing(allowed)
check(seen == {"vol0", "vol0@s1", "vol1", "ro"}, "LIST from %s: %s" % (allowed, sorted(seen)))
print("ok LIST: vol0 and vol0@s1 hidden from %s, listed for %s" % (denied, allowed))

for src in (allowed, denied):
    s, flags = go(src, "ro")
    check(flags & FLAG_READ_ONLY, "ro served without NBD_FLAG_READ_ONLY")
    err, _ = request(s, CMD_WRITE, 0, 4096, b"x" * 4096)
    check(err == EPERM, "WRITE to ro: error %d, want NBD_EPERM" % err)
    err, data = request(s, CMD_READ, 0, 4096)
    check(err == 0 and len(data) == 4096, "READ of ro failed")
    s.close()
    s, flags = go(src, "vol1")
    check(not flags & FLAG_READ_ONLY, "vol1 served read-only")
    err, _ = request(s, CMD_WRITE, 0, 4096, b"x" * 4096)
    check(err == 0, "WRITE to vol1: error %d" % err)
    s.close()
print("ok read-only: ro refuses writes with NBD_EPERM, vol1 takes them")
PY

logged() { # WHAT PATTERN: the log has a line matching PATTERN (fixed string)
	for _ in $(seq 1 100); do
		grep -qF -- "$2" "$LOG" && return 0
		sleep 0.05
	done
	fail "$1: no log line '$2'"
}

/usr/bin/python3 "$T/access.py" "$PORT" 127.0.0.2 127.0.0.1 || fail "access rules"
logged "denied" "127.0.0.1:"
grep -E "^cowbd: info: 127\.0\.0\.1:[0-9]+: export vol0 refused: access denied \(address not allowed\)$" \
	"$LOG" >/dev/null || fail "no info line for the refusal of vol0"
grep -q "export vol0@s1 refused: access denied (address not allowed)" "$LOG" ||
	fail "no info line for the refusal of vol0@s1"
grep -q "export xxxx refused: unknown export" "$LOG" || fail "no info line for an unknown export"
grep -q "127\.0\.0\.2:.*refused" "$LOG" && fail "a client from 127.0.0.2 was refused"
# One line per refusal: the EXPORT_NAME hang-up adds no second info line.
grep -E "^cowbd: info: .*handshake failed: unknown export" "$LOG" &&
	fail "a refused EXPORT_NAME was logged twice"
echo "ok: each refusal logged at info with its reason, once"

# ---- SIGHUP: the rule changes live ------------------------------------------
# The load: connected from 127.0.0.2 before the reload; write, read back,
# compare, flush now and then, until $T/stop appears.
/usr/bin/python3 - "$PORT" "$T/stop" "$T/connected" >"$T/load.out" 2>&1 <<'PY' &
import os, random, socket, sys, nbd
port, stop, connected = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket()
s.bind(("127.0.0.2", 0))
s.connect(("127.0.0.1", port))
h = nbd.NBD()
h.set_export_name("vol0")
h.connect_socket(s.detach())
open(connected, "w").close()  # in transmission: the reload may come
rnd = random.Random(1)
n = 0
while not os.path.exists(stop):
    off = rnd.randrange(0, (64 << 20) // 4096) * 4096
    data = os.urandom(4096)
    h.pwrite(data, off)
    if h.pread(4096, off) != data:
        sys.exit("mismatch at %d" % off)
    if n % 64 == 0:
        h.flush()
    n += 1
h.shutdown()
print("load: %d write/read pairs from 127.0.0.2, no error" % n)
PY
LOAD=$!
for _ in $(seq 1 600); do
	[ -e "$T/connected" ] && break
	kill -0 "$LOAD" 2>/dev/null || fail "the load ended at once: $(cat "$T/load.out")"
	sleep 0.05
done
[ -e "$T/connected" ] || fail "the load did not connect within 30 s"
sleep 0.5

sed -i 's|^allow = 127.0.0.2/32$|allow = 127.0.0.1/32|' "$T/cowbd.conf"
kill -HUP "$COWBD_PID"
logged "SIGHUP" "SIGHUP: access rules for 2 export(s) from $T/cowbd.conf"
/usr/bin/python3 "$T/access.py" "$PORT" 127.0.0.1 127.0.0.2 || fail "access rules after SIGHUP"
echo "ok: after SIGHUP new connections follow the new rule"
sleep 0.5
touch "$T/stop"
wait "$LOAD" || fail "the load saw an error: $(cat "$T/load.out")"
echo "ok: $(cat "$T/load.out") across the reload"

# ---- tls-identity -----------------------------------------------------------------
. "$(dirname "$0")/tls_lib.bash"
tls_make_psk
cowbd_stop
printf '[export vol1]\ntls-identity = alice\n' >>"$T/cowbd.conf"
cowbd_restart --config "$T/cowbd.conf" --tls allow --tls-psk "$PSK/keys.psk"
pu() { echo "nbds://$1@127.0.0.1:$PORT/vol1?tls-psk-file=$PSK/keys.psk"; }
[ "$(nbdinfo --size "$(pu alice)")" = 67108864 ] || fail "alice refused vol1"
if nbdinfo --size "$(pu bob)" >/dev/null 2>&1; then fail "bob served vol1"; fi
grep -q "export vol1 refused: access denied (TLS identity not allowed)" "$LOG" || fail "no line for bob"
if nbdinfo --size "$(uri vol1)" >/dev/null 2>&1; then fail "vol1 served in plaintext"; fi
grep -q "export vol1 refused: access denied (a TLS identity is required)" "$LOG" ||
	fail "no line for the plaintext client"
[ "$(nbdinfo --size "$(pu bob | sed s/vol1/ro/)")" = 67108864 ] || fail "bob refused ro (no identity rule)"
echo "ok: tls-identity: alice served, bob and plaintext refused"

cowbd_stop
check_pool "after the access tests"
echo "access_control: all checks passed"
