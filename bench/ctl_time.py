"""Time cowbd control operations at the socket, without cowctl's process start.

Usage: ctl_time.py SOCKET REPS
       ctl_time.py SOCKET REPS --diff NAME FROM [TO]
For each rep i (1..REPS), in this order, each on a fresh connection as cowctl
does: ping, snapshot.create empty@t<i>, snapshot.create full@t<i>,
clone empty@t<i> -> tce<i>, clone full@t<i> -> tcf<i>.  Prints one line per
request: "NAME REP MILLISECONDS STATUS" (STATUS "ok" or the reply's errno).
The time runs from connect() to the complete reply line.
With --diff: REPS diff requests FROM -> TO (TO left out: FROM's volume now),
printed as "NAME REP MILLISECONDS STATUS", STATUS "ok:BYTES" (the changed
bytes the reply reports) or the reply's errno.
"""
import json
import socket
import sys
import time


def request(path, obj):
    t0 = time.perf_counter_ns()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall((json.dumps(obj) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    t1 = time.perf_counter_ns()
    s.close()
    try:
        reply = json.loads(buf)
        status = "ok" if reply.get("ok") else str(reply.get("errno", "error"))
        if reply.get("ok") and "changed_bytes" in reply:
            status = "ok:%d" % reply["changed_bytes"]
    except ValueError:
        status = "bad-reply"
    return (t1 - t0) / 1e6, status


def main():
    path, reps = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3 and sys.argv[3] == "--diff":
        name, req = sys.argv[4], {"op": "diff", "from": sys.argv[5]}
        if len(sys.argv) > 6:
            req["to"] = sys.argv[6]
        for i in range(1, reps + 1):
            ms, status = request(path, req)
            print("%s %d %.3f %s" % (name, i, ms, status))
            sys.stdout.flush()
        return
    for i in range(1, reps + 1):
        ops = [
            ("ctl_ping", {"op": "ping"}),
            ("snap_empty", {"op": "snapshot.create", "name": "empty@t%d" % i}),
            ("snap_full", {"op": "snapshot.create", "name": "full@t%d" % i}),
            ("clone_empty", {"op": "clone", "snapshot": "empty@t%d" % i, "name": "tce%d" % i}),
            ("clone_full", {"op": "clone", "snapshot": "full@t%d" % i, "name": "tcf%d" % i}),
        ]
        for name, obj in ops:
            try:
                ms, status = request(path, obj)
            except OSError as e:
                ms, status = 0.0, "socket-error-%s" % (e.errno or "x")
            print("%s %d %.3f %s" % (name, i, ms, status))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
