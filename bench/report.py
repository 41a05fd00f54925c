"""Turn bench/bench.sh's raw runs into the Markdown report and results.csv.

Usage: report.py RAW.csv WORKLOADS.tsv SERVERS.tsv RESULTS.csv CLK_TCK

RAW.csv       round,workload,server,value,unit,ops,cpu_ticks,status (one row per run)
WORKLOADS.tsv section, id, unit, label, target (in report order)
SERVERS.tsv   id, skip reason ("" when it ran)

For each (workload, server): the median over rounds of the result and of the
server CPU per operation (cpu_ticks / CLK_TCK / ops, in microseconds), the
min..max spread, and the median's ratio to nbdkit-file's and qemu-nbd's.
Markdown goes to stdout; RESULTS.csv gets one row per (workload, server).
"""
import csv
import statistics
import sys

REFS = ("nbdkit-file", "qemu-nbd")
NAMES = {
    "cowbd": "cowbd",
    "nbdkit-file": "nbdkit file",
    "nbdkit-memory": "nbdkit memory",
    "nbd-server": "nbd-server",
    "qemu-nbd": "qemu-nbd qcow2",
    "nbdkit-null": "nbdkit null (ceiling)",
}


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
    return "%.1f %s" % (v, unit)


def fmt_ratio(a, b):
    if a is None or not b:
        return "–"
    return "%.2f×" % (a / b)


def main():
    raw_path, wl_path, srv_path, out_path, clk = sys.argv[1:6]
    clk = float(clk)
    workloads = [line.rstrip("\n").split("\t") for line in open(wl_path) if line.strip()]
    servers = []
    skipped = {}
    for line in open(srv_path):
        if not line.strip():
            continue
        sid, _, why = line.rstrip("\n").partition("\t")
        servers.append(sid)
        if why:
            skipped[sid] = why

    runs = {}  # (workload, server) -> list of (value, cpu_us_per_op or None, status)
    for row in csv.DictReader(open(raw_path)):
        key = (row["workload"], row["server"])
        ok = row["status"] == "ok" and row["value"] not in ("", None)
        value = float(row["value"]) if ok else None
        ops, ticks = int(row["ops"] or 0), int(row["cpu_ticks"] or 0)
        cpu = ticks * 1e6 / clk / ops if ok and ops > 0 and row["unit"] in ("IOPS", "MB/s") else None
        runs.setdefault(key, []).append((value, cpu, row["status"]))

    def summary(wid, sid):
        rs = runs.get((wid, sid), [])
        vals = [v for v, _, _ in rs if v is not None]
        cpus = [c for v, c, _ in rs if c is not None]
        bad = sorted({s for v, _, s in rs if v is None})
        if not vals:
            return None
        return {
            "median": statistics.median(vals),
            "min": min(vals),
            "max": max(vals),
            "runs": len(vals),
            "failed": len(rs) - len(vals),
            "bad": bad,
            "cpu": statistics.median(cpus) if cpus else None,
        }

    out = csv.writer(open(out_path, "w", newline=""))
    out.writerow(["section", "workload", "label", "server", "unit", "median", "min", "max",
                  "runs", "failed_runs", "cpu_us_per_op", "ratio_nbdkit_file", "ratio_qemu_nbd",
                  "status"])

    print("| workload | server | result (median) | spread | server CPU µs/op | × nbdkit file | × qemu-nbd qcow2 |")
    print("|---|---|---|---|---|---|---|")
    for section, wid, unit, label, target in workloads:
        if section != "main":
            continue
        sums = {sid: summary(wid, sid) for sid in servers}
        refs = {r: (sums.get(r) or {}).get("median") for r in REFS}
        first = True
        for sid in servers:
            s = sums[sid]
            name = NAMES.get(sid, sid)
            wl = label if first else ""
            first = False
            if sid in skipped and s is None:
                print("| %s | %s | skipped: %s | | | | |" % (wl, name, skipped[sid]))
                out.writerow(["main", wid, label, sid, unit, "", "", "", 0, 0, "", "", "",
                              "skipped: " + skipped[sid]])
                continue
            if s is None:
                bad = sorted({st for _, _, st in runs.get((wid, sid), [])})
                print("| %s | %s | failed (%s) | | | | |" % (wl, name, ", ".join(bad) or "no run"))
                out.writerow(["main", wid, label, sid, unit, "", "", "", 0,
                              len(runs.get((wid, sid), [])), "", "", "", "failed"])
                continue
            m = s["median"]
            spread = "%s..%s" % (fmt_value(s["min"], unit).split()[0], fmt_value(s["max"], unit).split()[0]) \
                if s["runs"] > 1 else "1 run"
            if s["failed"]:
                spread += " (%d failed: %s)" % (s["failed"], ", ".join(s["bad"]))
            cpu = "%.1f" % s["cpu"] if s["cpu"] is not None else "–"
            print("| %s | %s | %s | %s | %s | %s | %s |" % (
                wl, "**%s**" % name if sid == "cowbd" else name, fmt_value(m, unit), spread, cpu,
                fmt_ratio(m, refs["nbdkit-file"]), fmt_ratio(m, refs["qemu-nbd"])))
            out.writerow(["main", wid, label, sid, unit, "%.3f" % m, "%.3f" % s["min"],
                          "%.3f" % s["max"], s["runs"], s["failed"],
                          "%.2f" % s["cpu"] if s["cpu"] is not None else "",
                          "%.3f" % (m / refs["nbdkit-file"]) if refs["nbdkit-file"] else "",
                          "%.3f" % (m / refs["qemu-nbd"]) if refs["qemu-nbd"] else "",
                          "ok" if not s["failed"] else "some runs failed"])

    # cowbd-only measurements, with derived ratios against the targets.
    cow = [w for w in workloads if w[0] == "cowbd"]
    rows = []
    for section, wid, unit, label, target in cow:
        s = summary(wid, "cowbd")
        rs = runs.get((wid, "cowbd"), [])
        if s is None and not rs:
            continue
        if s is None:
            res = "failed (%s)" % ", ".join(sorted({st for _, _, st in rs}))
        else:
            res = fmt_value(s["median"], unit)
            if s["runs"] > 1:
                res += " (%s..%s, %d runs)" % (fmt_value(s["min"], unit).split()[0],
                                               fmt_value(s["max"], unit).split()[0], s["runs"])
            if s["cpu"] is not None:
                res += ", %.1f µs CPU/op" % s["cpu"]
        rows.append((label, res, target))
        out.writerow(["cowbd", wid, label, "cowbd", unit,
                      "%.3f" % s["median"] if s else "", "%.3f" % s["min"] if s else "",
                      "%.3f" % s["max"] if s else "", s["runs"] if s else 0,
                      s["failed"] if s else len(rs),
                      "%.2f" % s["cpu"] if s and s["cpu"] is not None else "", "", "",
                      "ok" if s and not s["failed"] else "failed"])
    s0, s1 = summary("snap0", "cowbd"), summary("snap1", "cowbd")
    if s0 and s1:
        rows.insert(2, ("4k randwrite after snapshot ÷ without", "%.2f×" % (s1["median"] / s0["median"]),
                        ">= 0.9×"))
    main_rw, main_f = summary("rw4k1", "cowbd"), summary("rw4kf", "cowbd")
    if main_rw and main_f:
        rows.insert(0, ("4k randwrite with FLUSH every 16 ÷ without (main table)",
                        "%.2f×" % (main_f["median"] / main_rw["median"]), ">= 0.5×"))
    if rows:
        print()
        print("cowbd only:")
        print()
        print("| measurement | result (median) | target |")
        print("|---|---|---|")
        for label, res, target in rows:
            print("| %s | %s | %s |" % (label, res, target))
    elif "cowbd" in skipped:
        print()
        print("cowbd only: skipped (%s)" % skipped["cowbd"])


if __name__ == "__main__":
    main()
