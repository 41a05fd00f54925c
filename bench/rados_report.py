"""The report of bench/rados.sh, and the FLUSH latency of one fio run.

Usage: rados_report.py table RAW.csv   the Markdown table on stdout
       rados_report.py sync FIO.json   "P50 P99" of the job's FLUSH (fio
                                       "sync") latency in µs, "- -" if none

RAW.csv: round, job, server, value, unit, p50_us, p99_us (fio completion
latency of the writes, else the reads), sync_p50_us, sync_p99_us, status.
Jobs: seqw (servers rados-bench, cowbd-rados), rr4k and flush (cowbd-rados,
cowbd-local).  Each figure is the median over the rounds that succeeded,
with the min..max spread; ratios are of the medians, with the range of the
per-round ratios (the two jobs of a round ran back to back, so these pair
like loads on a machine whose load drifts).
"""
import csv
import json
import sys

from report import fmt_ms, median, num

PCTS = ("50.000000", "99.000000")


def sync_latency(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    start = text.find("{")
    jobs = json.loads(text[start:]).get("jobs", []) if start >= 0 else []
    pct = jobs[0].get("sync", {}).get("lat_ns", {}).get("percentile", {}) if jobs else {}
    if not all(p in pct for p in PCTS):
        return "- -"
    return " ".join("%.1f" % (pct[p] / 1000.0) for p in PCTS)


class Raw:
    def __init__(self, path):
        self.rows = {}
        for row in csv.DictReader(open(path)):
            self.rows.setdefault((row["job"], row["server"]), []).append(row)

    def figure(self, job, server, field="value"):
        """(median, min, max, runs, failed) of FIELD over the good rounds."""
        rs = self.rows.get((job, server), [])
        vals = [num(r[field]) for r in rs if r["status"] == "ok" and num(r[field]) is not None]
        if not vals:
            return None, None, None, 0, len(rs)
        return median(vals), min(vals), max(vals), len(vals), len(rs) - len(vals)

    def per_round(self, job, a, b, field="value"):
        """FIELD of server A over server B's, per round where both succeeded."""
        def by_round(server):
            return {r["round"]: num(r[field]) for r in self.rows.get((job, server), [])
                    if r["status"] == "ok" and num(r[field])}
        ra, rb = by_round(a), by_round(b)
        return [ra[k] / rb[k] for k in ra if k in rb]


def show(fig, fmt):
    med, lo, hi, runs, failed = fig
    if med is None:
        return "failed (%d runs)" % failed if failed else "–"
    s = "%s (%s..%s)" % (fmt(med), fmt(lo), fmt(hi))
    return s + (", %d failed" % failed if failed else "")


def ratio(a, b, rounds, target=None):
    if a[0] is None or not b[0]:
        return "–"
    x = a[0] / b[0]
    s = "%.2f×" % x if target is None else "**%.2f×** (%s)" % (x, "met" if x >= target else "missed")
    if len(rounds) > 1:
        s += "; rounds %.2f..%.2f" % (min(rounds), max(rounds))
    return s


def main_table(raw):
    mib = lambda v: "%.0f" % v
    iops = lambda v: "%.1fk" % (v / 1000.0) if v >= 1000 else "%.0f" % v
    print("| measurement (median of rounds, min..max) | cowbd, RADOS pool | reference | "
          "RADOS ÷ reference | target |")
    print("|---|---|---|---|---|")
    a, b = raw.figure("seqw", "rados-bench"), raw.figure("seqw", "cowbd-rados")
    print("| 1 MiB seq write qd8, MiB/s (fio sw1m job / `rados bench write -b 1M -t 8`) | %s | "
          "rados bench: %s | %s | ≥ 0.8× |" % (
              show(b, mib), show(a, mib),
              ratio(b, a, raw.per_round("seqw", "cowbd-rados", "rados-bench"), 0.8)))
    rows = (
        ("rr4k", "value", "4k randread qd32 of cached data, IOPS", iops, 0.9, "≥ 0.9×"),
        ("rr4k", "p99_us", "… its read p99, ms", fmt_ms, None, ""),
        ("flush", "value", "4k randwrite qd1, FLUSH after each, writes/s", iops, None, ""),
        ("flush", "p50_us", "… write completion p50, ms", fmt_ms, None, ""),
        ("flush", "p99_us", "… write completion p99, ms", fmt_ms, None, ""),
        ("flush", "sync_p50_us", "… FLUSH p50, ms", fmt_ms, None, "reported"),
        ("flush", "sync_p99_us", "… FLUSH p99, ms", fmt_ms, None, "reported"),
    )
    for job, field, label, fmt, target, tlabel in rows:
        r, loc = raw.figure(job, "cowbd-rados", field), raw.figure(job, "cowbd-local", field)
        print("| %s | %s | local pool: %s | %s | %s |" % (
            label, show(r, fmt), show(loc, fmt),
            ratio(r, loc, raw.per_round(job, "cowbd-rados", "cowbd-local", field), target), tlabel))
    print()
    print("Latency: fio's completion latency (submission to completion); FLUSH: fio's latency of "
          "its fsync requests, each an NBD FLUSH, answered once the writes before it are durable "
          "(in RADOS for the RADOS pool, fdatasync of the pool file for the local pool). The local "
          "pool is cowbd on a sparse pool file in the same build directory.")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "sync":
        print(sync_latency(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        main_table(Raw(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
