"""Turn bench/bench.sh's raw runs into the Markdown report and results.csv.

Usage: report.py RAW.csv WORKLOADS.tsv SERVERS.tsv RESULTS.csv CLK_TCK

RAW.csv       one row per run: round, workload, server, value, unit, ops,
              cpu_ticks, status, p50_us, p99_us, p999_us, max_us (fio
              completion latency), flushes, secs, wbytes (client bytes
              written), host_wbytes (/proc/PID/io write_bytes over the job),
              then cowbd's counter differences over the job: syncs, batches,
              batch_blocks, checkpoints, compactions, compacted_blocks,
              srv_flushes (FLUSHes the server received: `flushes`),
              fua_requests, bytes_written (everything written to the pool,
              superblocks too), compact_ns, ckpt_log_ns (the log thread's
              time compacting and on checkpoints), ckpt_sync_ns (the
              committer's checkpoint syncs) (empty for other servers),
              disk_wbytes (bytes written to the block device under the
              bench's work directory during the job, by every process)
WORKLOADS.tsv section, id, unit, label, target (in report order)
SERVERS.tsv   id, skip reason ("" when it ran)

For each (workload, server): the median over rounds of the result, of the
server CPU per operation (cpu_ticks / CLK_TCK / ops, in microseconds) and of
each latency percentile, the min..max spread, and the median's ratio to
nbdkit file's on the same kind of storage (a file for file servers, a loop
device for the -blk ones) and to qemu-nbd's.  Then the flush-heavy job's
flush and sync figures, the checkpoint and compaction jobs, and the other
cowbd-only measurements.  Markdown goes to stdout; RESULTS.csv gets one row
per (workload, server) and one per derived figure.
"""
import csv
import statistics
import sys

NAMES = {
    "cowbd": "cowbd",
    "nbdkit-file": "nbdkit file",
    "nbdkit-memory": "nbdkit memory",
    "nbd-server": "nbd-server",
    "qemu-nbd": "qemu-nbd qcow2",
    "nbdkit-null": "nbdkit null (ceiling)",
    "cowbd-blk": "cowbd, loop device",
    "nbdkit-file-blk": "nbdkit file, loop device",
}
COWBD_SERVERS = ("cowbd", "cowbd-blk")
BLOCK = 4096
LAT = ("p50_us", "p99_us", "p999_us", "max_us")
STATS = ("syncs", "batches", "batch_blocks", "checkpoints", "compactions", "compacted_blocks",
         "srv_flushes", "fua_requests", "bytes_written", "compact_ns", "ckpt_log_ns", "ckpt_sync_ns")


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_value(v, unit):
    if v is None:
        return "–"
    if unit == "IOPS":
        return "%.1fk IOPS" % (v / 1000.0) if v >= 1000 else "%.0f IOPS" % v
    if unit == "MB/s":
        return "%.0f MB/s" % v
    if unit == "ms":
        return "%.2f ms" % v if v < 100 else "%.0f ms" % v
    if unit == "KiB":
        return "%.1f MiB" % (v / 1024.0)
    if unit == "x":
        return "%.2f×" % v
    return "%.1f %s" % (v, unit)


def fmt_ms(us):
    """Latency given in µs, shown in ms with 2-3 significant digits."""
    if us is None:
        return "–"
    ms = us / 1000.0
    if ms >= 100:
        return "%.0f" % ms
    if ms >= 10:
        return "%.1f" % ms
    if ms >= 1:
        return "%.2f" % ms
    return "%.3f" % ms


def fmt_ratio(a, b):
    if a is None or not b:
        return "–"
    return "%.2f×" % (a / b)


def fmt_num(v, digits=1):
    return "–" if v is None else "%.*f" % (digits, v)


def ref_for(sid):
    """The nbdkit file column on the same kind of storage."""
    return "nbdkit-file-blk" if sid.endswith("-blk") else "nbdkit-file"


class Runs:
    def __init__(self, raw_path, clk):
        self.rows = {}  # (workload, server) -> list of parsed rows
        for row in csv.DictReader(open(raw_path)):
            ok = row["status"] == "ok" and num(row["value"]) is not None
            r = {"round": row["round"], "status": row["status"], "ok": ok,
                 "value": num(row["value"]) if ok else None, "unit": row["unit"]}
            ops, ticks = int(row["ops"] or 0), int(row["cpu_ticks"] or 0)
            r["cpu"] = ticks * 1e6 / clk / ops \
                if ok and ops > 0 and row["unit"] in ("IOPS", "MB/s") else None
            for k in LAT + ("flushes", "secs", "wbytes", "host_wbytes", "disk_wbytes") + STATS:
                r[k] = num(row.get(k))
            self.rows.setdefault((row["workload"], row["server"]), []).append(r)

    def get(self, wid, sid):
        return self.rows.get((wid, sid), [])

    def ok(self, wid, sid):
        return [r for r in self.get(wid, sid) if r["ok"]]

    def summary(self, wid, sid):
        rs = self.get(wid, sid)
        good = [r for r in rs if r["ok"]]
        if not good:
            return None
        vals = [r["value"] for r in good]
        s = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
             "runs": len(vals), "failed": len(rs) - len(good),
             "bad": sorted({r["status"] for r in rs if not r["ok"]}),
             "cpu": median(r["cpu"] for r in good)}
        for k in LAT:
            s[k] = median(r[k] for r in good)
        return s

    def med(self, wid, sid, fn):
        """Median over the good runs of fn(row) (None where fn gives None)."""
        return median(fn(r) for r in self.ok(wid, sid))


def per(a, b):
    return a / b if a is not None and b else None


def mul(a, k):
    return a * k if a is not None else None


def add(a, b):
    return a + b if a is not None and b is not None else None


def share(r, key):
    """r[key] nanoseconds as a percentage of the job's run time."""
    return per(mul(r[key], 100.0), mul(r["secs"], 1e9))


def fmt_pct(v):
    return "–" if v is None else "%.1f%%" % v


def main_table(runs, workloads, servers, skipped, out):
    print("| workload | server | result (median) | spread | server CPU µs/op | p50 ms | p99 ms "
          "| p99.9 ms | × nbdkit file (same storage) | × qemu-nbd qcow2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for section, wid, unit, label, target in workloads:
        if section != "main":
            continue
        sums = {sid: runs.summary(wid, sid) for sid in servers}
        medians = {sid: (s or {}).get("median") for sid, s in sums.items()}
        first = True
        for sid in servers:
            s = sums[sid]
            name = NAMES.get(sid, sid)
            wl = label if first else ""
            first = False
            if sid in skipped and s is None:
                print("| %s | %s | skipped: %s | | | | | | | |" % (wl, name, skipped[sid]))
                out.writerow(["main", wid, label, sid, unit] + [""] * 3 + [0, 0] + [""] * 6 +
                             ["skipped: " + skipped[sid]])
                continue
            if s is None:
                bad = sorted({r["status"] for r in runs.get(wid, sid)})
                print("| %s | %s | failed (%s) | | | | | | | |" % (wl, name, ", ".join(bad) or "no run"))
                out.writerow(["main", wid, label, sid, unit] + [""] * 3 +
                             [0, len(runs.get(wid, sid))] + [""] * 6 + ["failed"])
                continue
            m = s["median"]
            ref, qemu = medians.get(ref_for(sid)), medians.get("qemu-nbd")
            spread = "%s..%s" % (fmt_value(s["min"], unit).split()[0],
                                 fmt_value(s["max"], unit).split()[0]) if s["runs"] > 1 else "1 run"
            if s["failed"]:
                spread += " (%d failed: %s)" % (s["failed"], ", ".join(s["bad"]))
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                wl, "**%s**" % name if sid in COWBD_SERVERS else name, fmt_value(m, unit), spread,
                fmt_num(s["cpu"]), fmt_ms(s["p50_us"]), fmt_ms(s["p99_us"]), fmt_ms(s["p999_us"]),
                fmt_ratio(m, ref), fmt_ratio(m, qemu)))
            out.writerow(["main", wid, label, sid, unit, "%.3f" % m, "%.3f" % s["min"],
                          "%.3f" % s["max"], s["runs"], s["failed"],
                          "%.2f" % s["cpu"] if s["cpu"] is not None else "",
                          "%.3f" % (m / ref) if ref else "", "%.3f" % (m / qemu) if qemu else "",
                          ] + ["%.1f" % s[k] if s[k] is not None else "" for k in LAT[:3]] +
                         ["ok" if not s["failed"] else "some runs failed"])
    print()
    print("Latency: fio's completion latency (submission to completion) of the job's writes, or "
          "reads for read jobs; each percentile is the median over rounds. The -blk columns "
          "are compared with nbdkit file on a loop device.")


# DESIGN.md's figures for the main table, cowbd on a pool file: (label,
# workload, what is compared, the reference server, target, True when the
# figure must be at least the target (else at most)).
TARGETS = [
    ("4k randwrite qd32, 1 conn: IOPS ÷ nbdkit null", "rw4k1", "value", "nbdkit-null", 0.9, True),
    ("4k randwrite qd32, 2 conns: IOPS ÷ nbdkit null", "rw4k2", "value", "nbdkit-null", 0.9, True),
    ("4k randread qd32: IOPS ÷ nbdkit null", "rr4k", "value", "nbdkit-null", 0.9, True),
    ("4k randwrite qd32, 1 conn: server CPU per op ÷ nbdkit file's", "rw4k1", "cpu", "nbdkit-file",
     0.5, False),
    ("4k randwrite qd32, 2 conns: server CPU per op ÷ nbdkit file's", "rw4k2", "cpu", "nbdkit-file",
     0.5, False),
    ("4k randread qd32: server CPU per op ÷ nbdkit file's", "rr4k", "cpu", "nbdkit-file", 0.5, False),
    ("4k randwrite, FLUSH every 16: IOPS ÷ nbdkit file", "rw4kf", "value", "nbdkit-file", 1.0, True),
    ("1 MiB seq write qd8: MB/s ÷ nbdkit file", "sw1m", "value", "nbdkit-file", 1.0, True),
    ("1 MiB seq write qd8: server CPU per MiB ÷ nbdkit file's", "sw1m", "cpu", "nbdkit-file", 1.0,
     False),
    ("1 MiB seq read qd8: MB/s ÷ nbdkit file", "sr1m", "value", "nbdkit-file", 1.0, True),
    ("1 MiB seq read qd8: server CPU per MiB ÷ nbdkit file's", "sr1m", "cpu", "nbdkit-file", 1.0,
     False),
]


def judge(ratio, target, at_least):
    """A ratio as the report prints it, and its verdict against target:
    two decimals, or more when two would round it onto the target's
    other side (0.896 against ≥ 0.9 reads 0.896×, not 0.90×, beside
    "missed")."""
    def ok(x):
        return x >= target if at_least else x <= target

    met = ok(ratio)
    for digits in range(2, 7):
        res = "%.*f" % (digits, ratio)
        if ok(float(res)) == met:
            break
    return res + "×", "met" if met else "**missed**"


def bound(target, at_least):
    """A target as the report's target column prints it: "≥ 0.95×", "≤ 1.0×"."""
    t = "%.2f" % target
    return "%s %s×" % ("≥" if at_least else "≤", t[:-1] if t.endswith("0") else t)


def targets_table(runs, out):
    """DESIGN.md's figures for the main table: cowbd's medians over the
    reference server's, met or missed."""
    rows = []
    for label, wid, what, ref, target, at_least in TARGETS:
        a, b = runs.summary(wid, "cowbd"), runs.summary(wid, ref)
        key = "median" if what == "value" else "cpu"
        ratio = per(a.get(key), b.get(key)) if a and b else None
        if ratio is None:
            res, verdict = "–", "not measured"
        else:
            res, verdict = judge(ratio, target, at_least)
        rows.append((label, res, bound(target, at_least), verdict))
        out.writerow(["targets", wid, label, "cowbd", "x", "%.3f" % ratio if ratio is not None else "",
                      "", "", "", "", "", "", "", "", "", "", verdict.strip("*")])
    print()
    print("DESIGN.md's figures for the main table (cowbd on a pool file; ratios of the medians "
          "above, in this run):")
    print()
    print("| figure | result | target | |")
    print("|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %s |" % r)


def flush_table(runs, servers, out):
    wid = "rw4kf"
    have = [sid for sid in servers if runs.ok(wid, sid)]
    if not have:
        return
    print()
    print("FLUSH-heavy (4k randwrite qd32, FLUSH every 16; medians over rounds; "
          "syncs from cowbd's counters over the job):")
    print()
    print("| server | IOPS | × nbdkit file (same storage) | FLUSHes/s | FLUSHes per write | syncs/s "
          "| writes per sync | FLUSHes per sync | FLUSH + FUA requests per sync | log appends per sync "
          "| FLUSHes received ÷ sent |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sid in have:
        s = runs.summary(wid, sid)
        ref = (runs.summary(wid, ref_for(sid)) or {}).get("median")
        fps = runs.med(wid, sid, lambda r: per(r["flushes"], r["secs"]))
        fpw = runs.med(wid, sid, lambda r: per(r["flushes"], mul(r["wbytes"], 1.0 / BLOCK)))
        sps = runs.med(wid, sid, lambda r: per(r["syncs"], r["secs"]))
        wps = runs.med(wid, sid, lambda r: per(mul(r["wbytes"], 1.0 / BLOCK), r["syncs"]))
        fpsync = runs.med(wid, sid, lambda r: per(r["srv_flushes"], r["syncs"]))
        rpsync = runs.med(wid, sid, lambda r: per(add(r["srv_flushes"], r["fua_requests"]),
                                                  r["syncs"]))
        bps = runs.med(wid, sid, lambda r: per(r["batches"], r["syncs"]))
        seen = runs.med(wid, sid, lambda r: per(r["srv_flushes"], r["flushes"]))
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            "**%s**" % NAMES.get(sid, sid) if sid in COWBD_SERVERS else NAMES.get(sid, sid),
            fmt_value(s["median"], "IOPS"), fmt_ratio(s["median"], ref), fmt_num(fps, 0),
            fmt_num(fpw, 2), fmt_num(sps, 0), fmt_num(wps), fmt_num(fpsync, 2), fmt_num(rpsync, 2),
            fmt_num(bps, 2), fmt_num(seen, 3)))
        out.writerow(["flush", wid, "FLUSH every 16", sid, "IOPS", "%.3f" % s["median"], "", "",
                      s["runs"], s["failed"], "", "%.3f" % (s["median"] / ref) if ref else "", "",
                      "", "", "", "flushes/s=%s flushes/write=%s syncs/s=%s writes/sync=%s flushes/sync=%s "
                      "requests/sync=%s appends/sync=%s received/sent=%s" % tuple(
                          fmt_num(x, 2) for x in (fps, fpw, sps, wps, fpsync, rpsync, bps, seen))])
    print()
    print("FLUSHes/s: fio's completed FLUSH requests over the job's run time; FLUSHes per write: "
          "fio (3.33) makes every request slot it fills a FLUSH while its count of issued "
          "writes is a multiple of 16, so how many FLUSHes come per write depends on how the "
          "server completes requests (same client, same rule for all). From cowbd's counters "
          "over the job: writes per sync: 4 KiB writes completed ÷ `syncs` (fdatasyncs of the "
          "pool by the log thread); FLUSHes per sync: `flushes` (FLUSH requests the server "
          "received) ÷ `syncs`, above 1 when group commit merged flushes; FLUSH + FUA requests "
          "per sync: (`flushes` + `fua_requests`) ÷ `syncs`, every request that asked for a "
          "sync; log appends per sync: `batches` ÷ `syncs`; FLUSHes received ÷ sent: `flushes` "
          "÷ fio's count (1.000: the server saw every FLUSH fio completed).")


def disk_table(runs, servers, out):
    """Large writes and what reached the disk during each job."""
    jobs = [w for w in ("sw1m", "sw1mf") if any(runs.ok(w, sid) for sid in servers)]
    if not jobs:
        return
    print()
    print("Large writes and the disk (medians over rounds; disk bytes: what the device under the "
          "work directory wrote during the job, from every process, per byte the client wrote):")
    print()
    print("| job | server | MB/s | × nbdkit file (same storage) | disk bytes per client byte "
          "| FLUSHes |")
    print("|---|---|---|---|---|---|")
    for wid in jobs:
        for sid in servers:
            s = runs.summary(wid, sid)
            if not s:
                continue
            ref = (runs.summary(wid, ref_for(sid)) or {}).get("median")
            dpc = runs.med(wid, sid, lambda r: per(r["disk_wbytes"], r["wbytes"]))
            fl = runs.med(wid, sid, lambda r: r["flushes"])
            name = NAMES.get(sid, sid)
            print("| %s | %s | %s | %s | %s | %s |" % (
                wid, "**%s**" % name if sid in COWBD_SERVERS else name,
                fmt_value(s["median"], "MB/s"), fmt_ratio(s["median"], ref),
                fmt_num(dpc, 2), fmt_num(fl, 0)))
            out.writerow(["disk", wid, "disk bytes per client byte", sid, "x",
                          "%.3f" % dpc if dpc is not None else "", "", "", s["runs"],
                          s["failed"], "", "", "", "", "", "", "ok"])
    print()
    print("Without FLUSHes a server may leave what it wrote in the page cache: a 1 GiB file "
          "rewritten for a few seconds stays there (dirty, below the kernel's background "
          "writeback threshold), so its copies run at memory speed. cowbd's log moves on through "
          "the pool and makes its checkpoints durable, so its data goes to the disk during the "
          "job. With a FLUSH every 256 MiB (sw1mf) every server must write its data out.")


def ckpt_table(runs, out):
    on, off = runs.summary("ck4k", "cowbd-ckpt"), runs.summary("ck4k", "cowbd-nockpt")
    if not on and not off:
        return
    print()
    print("Checkpoints and write latency (4k randwrite qd32; medians over rounds, order rotated):")
    print()
    print("| pool | IOPS | p50 ms | p99 ms | p99.9 ms | worst ms | checkpoints in each job "
          "| log thread on checkpoints / committer syncing (share of the job) |")
    print("|---|---|---|---|---|---|---|---|")
    for sid, s, what in (("cowbd-ckpt", on, "checkpoints running"),
                         ("cowbd-nockpt", off, "no checkpoint")):
        counts = ", ".join("%d" % r["checkpoints"] if r["checkpoints"] is not None else "?"
                           for r in runs.get("ck4k", sid))
        if not s:
            print("| %s | failed | | | | | %s | |" % (what, counts))
            continue
        ck = runs.med("ck4k", sid, lambda r: share(r, "ckpt_log_ns"))
        cs = runs.med("ck4k", sid, lambda r: share(r, "ckpt_sync_ns"))
        print("| %s | %s | %s | %s | %s | %s | %s | %s / %s |" % (
            what, fmt_value(s["median"], "IOPS"), fmt_ms(s["p50_us"]), fmt_ms(s["p99_us"]),
            fmt_ms(s["p999_us"]), fmt_ms(s["max_us"]), counts, fmt_pct(ck), fmt_pct(cs)))
        out.writerow(["ckpt", "ck4k", what, sid, "IOPS", "%.3f" % s["median"], "%.3f" % s["min"],
                      "%.3f" % s["max"], s["runs"], s["failed"], "", "", ""] +
                     ["%.1f" % s[k] if s[k] is not None else "" for k in LAT[:3]] +
                     ["checkpoints per job: " + counts])
    if on and off and on["p999_us"] and off["p999_us"]:
        ratio = on["p999_us"] / off["p999_us"]
        print()
        res, verdict = judge(ratio, 2.0, False)
        print("p99.9 with checkpoints ÷ without: **%s** (target ≤ 2×: %s); p99: %s; IOPS: %s." % (
            res, verdict, fmt_ratio(on["p99_us"], off["p99_us"]),
            fmt_ratio(on["median"], off["median"])))
        out.writerow(["ckpt", "ck4k_p999_ratio", "p99.9 with checkpoints / without", "cowbd", "x",
                      "%.3f" % ratio, "", "", "", "", "", "", "", "", "", "", "target <= 2"])


def print_rows(title, result, rows):
    """A titled measurement | result | target table."""
    print()
    print(title)
    print()
    print("| measurement | %s | target |" % result)
    print("|---|---|---|")
    for label, res, target in rows:
        print("| %s | %s | %s |" % (label, res, target))


def cmp_table(runs, out):
    sid = "cowbd-cmp"
    load, idle = runs.summary("cmp_load", sid), runs.summary("cmp_idle", sid)
    if not load and not idle:
        return
    rows = []

    def row(label, res, target="", wid="", val=None):
        rows.append((label, res, target))
        out.writerow(["cmp", wid, label, sid, "", "%.3f" % val if val is not None else "",
                      "", "", "", "", "", "", "", "", "", "", res])

    churn = {}
    for r in runs.get("cmp_churn", sid):
        churn[r["round"]] = churn.get(r["round"], 0) + 1
    row("overwrite passes (half the volume, a snapshot held) until the compactor ran, per round",
        ", ".join(str(churn[k]) for k in sorted(churn, key=int)) or "–")
    for wid, s, what in (("cmp_load", load, "while the compactor runs"),
                         ("cmp_idle", idle, "after idle cleaning")):
        if not s:
            row("4k randwrite qd32 " + what, "failed", wid=wid)
            continue
        passes = ", ".join("%d passes / %d blocks" % (r["compactions"] or 0, r["compacted_blocks"] or 0)
                           for r in runs.get(wid, sid))
        row("4k randwrite qd32 " + what, "%s; p99.9 %s ms, worst %s ms; compactor in each job: %s" % (
            fmt_value(s["median"], "IOPS"), fmt_ms(s["p999_us"]), fmt_ms(s["max_us"]), passes),
            wid=wid, val=s["median"])
        cp = runs.med(wid, sid, lambda r: share(r, "compact_ns"))
        ck = runs.med(wid, sid, lambda r: share(r, "ckpt_log_ns"))
        cs = runs.med(wid, sid, lambda r: share(r, "ckpt_sync_ns"))
        both = runs.med(wid, sid, lambda r: per(mul(add(r["compact_ns"], r["ckpt_log_ns"]), 100.0),
                                                 mul(r["secs"], 1e9)))
        row("log thread's time " + what + " (share of the job)",
            "compacting %s, on checkpoints %s: %s in all (committer syncing checkpoints %s)" % (
                fmt_pct(cp), fmt_pct(ck), fmt_pct(both), fmt_pct(cs)),
            wid=wid + "_busy", val=both)
    if load and idle:
        ratio = load["median"] / idle["median"]
        row("IOPS while compacting ÷ after cleaning", "**%s** (%s)" % judge(ratio, 0.7, True),
            bound(0.7, True), "cmp_ratio", ratio)
    if load:
        worst = max([r["max_us"] for r in runs.ok("cmp_load", sid) if r["max_us"] is not None],
                    default=None)
        row("worst request latency while compacting (any round)", "%s ms" % fmt_ms(worst),
            wid="cmp_worst", val=mul(worst, 0.001))
        wa = runs.med("cmp_load", sid, lambda r: per(r["bytes_written"], r["wbytes"]))
        cw = runs.med("cmp_load", sid, lambda r: per(mul(r["compacted_blocks"], BLOCK), r["wbytes"]))
        hw = runs.med("cmp_load", sid, lambda r: per(r["host_wbytes"], r["wbytes"]))
        row("write amplification during the loaded job", "%s× (compactor copies %s×; host view %s×)" % (
            fmt_num(wa, 2), fmt_num(cw, 2), fmt_num(hw, 2)), wid="cmp_wa_load", val=wa)
    tot = runs.get("cmp_total", sid)
    if tot and tot[0]["wbytes"]:
        t = tot[0]
        wa = per(t["bytes_written"], t["wbytes"])
        cw = per(mul(t["compacted_blocks"], BLOCK), t["wbytes"])
        hw = per(t["host_wbytes"], t["wbytes"])
        row("write amplification, whole job after the fill (overwrites, loaded jobs, idle cleaning)",
            "%s× (compactor copies %s×; host view %s×; %d passes, %d checkpoints)" % (
                fmt_num(wa, 2), fmt_num(cw, 2), fmt_num(hw, 2), t["compactions"] or 0,
                t["checkpoints"] or 0), wid="cmp_wa_total", val=wa)
    rl = runs.summary("cmp_ratio_load", sid)
    ri = runs.ok("cmp_ratio_idle", sid)
    cl = runs.ok("cmp_clean", sid)
    if rl:
        row("allocated ÷ live right after the loaded job", fmt_value(rl["median"], "x"),
            wid="cmp_ratio_load", val=rl["median"])
    if ri:
        row("allocated ÷ live after each round's idle cleaning",
            "%s (cleaning stopped after %s s)" % (
                ", ".join(fmt_value(r["value"], "x") for r in ri),
                ", ".join("%.1f" % r["value"] for r in cl)), "", "cmp_ratio_idle", ri[-1]["value"])
    rend, ce = runs.ok("cmp_ratio_end", sid), runs.ok("cmp_clean_end", sid)
    if rend:
        res, verdict = judge(rend[0]["value"], 1.2, False)
        row("allocated ÷ live at the end (idle after the last job)", "**%s** (%s; after %s s idle)" % (
            res, verdict, "%.1f" % ce[0]["value"] if ce else "?"), bound(1.2, False),
            "cmp_ratio_end", rend[0]["value"])
    print_rows("Compaction under load (cowbd only; medians over rounds):", "result", rows)
    print()
    print("Log thread's time: Δ`compact_ns` (compactor passes: choosing victims, copying) and "
          "Δ`ckpt_log_ns` (checkpoints: nodes and records written, a synchronous one's sync and "
          "superblock, waiting for and finishing a background one) over fio's run time — the "
          "share of the job in which the log thread served no writes; the committer's "
          "Δ`ckpt_sync_ns` runs beside the writes. Write amplification = Δ`bytes_written` ÷ "
          "bytes the clients wrote (fio): `bytes_written` counts every byte the store wrote to "
          "the pool — client data, summaries, the compactor's copies, checkpoint nodes and "
          "records, superblock copies. \"Compactor copies\" is Δ`compacted_blocks` × 4096 over "
          "the same bytes (a part of the total); \"host view\" is Δ`write_bytes` of /proc/PID/io "
          "(page-cache pages cowbd dirtied) over the same bytes. Allocated ÷ live = segments in "
          "use (all but `segments_free` and one) × blocks per segment ÷ `blocks_live`.")


def cowbd_only_table(runs, workloads, skipped, out):
    rows = []
    for section, wid, unit, label, target in workloads:
        if section != "cowbd":
            continue
        s = runs.summary(wid, "cowbd")
        rs = runs.get(wid, "cowbd")
        if s is None and not rs:
            continue
        if s is None:
            res = "failed (%s)" % ", ".join(sorted({r["status"] for r in rs}))
        else:
            res = fmt_value(s["median"], unit)
            if s["runs"] > 1:
                res += " (%s..%s, %d runs)" % (fmt_value(s["min"], unit).split()[0],
                                               fmt_value(s["max"], unit).split()[0], s["runs"])
            if s["cpu"] is not None:
                res += ", %.1f µs CPU/op" % s["cpu"]
            if unit == "IOPS" and s["p999_us"] is not None:
                res += ", p99.9 %s ms" % fmt_ms(s["p999_us"])
        rows.append((label, res, target))
        out.writerow(["cowbd", wid, label, "cowbd", unit,
                      "%.3f" % s["median"] if s else "", "%.3f" % s["min"] if s else "",
                      "%.3f" % s["max"] if s else "", s["runs"] if s else 0,
                      s["failed"] if s else len(rs),
                      "%.2f" % s["cpu"] if s and s["cpu"] is not None else "", "", ""] +
                     ["%.1f" % s[k] if s and s[k] is not None else "" for k in LAT[:3]] +
                     ["ok" if s and not s["failed"] else "failed"])
    # After a snapshot ≥ 0.95× without: DESIGN.md's figure and issue 12's.
    # FLUSHes every 16 ≥ 0.5× without: the bench's own bound on what they
    # may cost (DESIGN.md asks only ≥ 1.0× nbdkit file, in the table above).
    s0, s1 = runs.summary("snap0", "cowbd"), runs.summary("snap1", "cowbd")
    if s0 and s1:
        rows.insert(2, ("4k randwrite after snapshot ÷ without",
                        "%s (%s)" % judge(s1["median"] / s0["median"], 0.95, True),
                        bound(0.95, True)))
    main_rw, main_f = runs.summary("rw4k1", "cowbd"), runs.summary("rw4kf", "cowbd")
    if main_rw and main_f:
        rows.insert(0, ("4k randwrite with FLUSH every 16 ÷ without (main table)",
                        "%s (%s)" % judge(main_f["median"] / main_rw["median"], 0.5, True),
                        bound(0.5, True)))
    if rows:
        print_rows("cowbd only:", "result (median)", rows)
    elif "cowbd" in skipped:
        print()
        print("cowbd only: skipped (%s)" % skipped["cowbd"])


def main():
    raw_path, wl_path, srv_path, out_path, clk = sys.argv[1:6]
    workloads = [line.rstrip("\n").split("\t") for line in open(wl_path) if line.strip()]
    servers, skipped = [], {}
    for line in open(srv_path):
        if not line.strip():
            continue
        sid, _, why = line.rstrip("\n").partition("\t")
        servers.append(sid)
        if why:
            skipped[sid] = why
    runs = Runs(raw_path, float(clk))
    out = csv.writer(open(out_path, "w", newline=""))
    out.writerow(["section", "workload", "label", "server", "unit", "median", "min", "max",
                  "runs", "failed_runs", "cpu_us_per_op", "ratio_nbdkit_file", "ratio_qemu_nbd",
                  "p50_us", "p99_us", "p999_us", "status"])
    main_table(runs, workloads, servers, skipped, out)
    targets_table(runs, out)
    flush_table(runs, servers, out)
    disk_table(runs, servers, out)
    ckpt_table(runs, out)
    cmp_table(runs, out)
    cowbd_only_table(runs, workloads, skipped, out)


if __name__ == "__main__":
    main()
