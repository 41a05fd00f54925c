"""Summarise one fio --output-format=json file for bench/bench.sh.

Usage: fio_json.py FILE
Prints one line "OPS IOPS BYTES_PER_S ERROR P50 P99 P999 MAX FLUSHES SECS WBYTES":
 - OPS, IOPS, BYTES_PER_S: sums over all jobs of read+write operations
   (flushes are not counted), IOPS and bandwidth;
 - ERROR: "ok" or the first non-zero job error;
 - P50 P99 P999 MAX: completion latency (fio's clat: submission to
   completion) in microseconds, of the writes if the job wrote, else of the
   reads; percentiles as fio computed them (its --percentile_list must hold
   50, 99 and 99.9; fio_run passes it); with --group_reporting fio merges the
   jobs' histograms, otherwise the worst job's figure is taken;
 - FLUSHES: NBD FLUSH requests completed (fio's "sync" count; it matches
   what the server receives);
 - SECS: the run time in seconds (the group's, not summed over its jobs);
 - WBYTES: bytes the clients wrote.
Latency fields the file lacks are printed as "-".
fio's nbd engine prints "fio: connected to NBD server" lines, so the JSON
is taken from the first '{'.
"""
import json
import sys

PCTS = ("50.000000", "99.000000", "99.900000")


def latency(jobs):
    """p50, p99, p99.9, max in µs of the direction that did the work."""
    ddir = "write" if any(j.get("write", {}).get("total_ios", 0) for j in jobs) else "read"
    best = None
    for job in jobs:
        clat = job.get(ddir, {}).get("clat_ns", {})
        pct = clat.get("percentile", {})
        if not clat.get("N") or not all(p in pct for p in PCTS):
            continue
        vals = [pct[p] / 1000.0 for p in PCTS] + [clat.get("max", 0) / 1000.0]
        if best is None or vals[2] > best[2]:
            best = vals
    return best


def main():
    text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    start = text.find("{")
    if start < 0:
        print("0 0 0 no-json - - - - 0 0 0")
        return
    doc = json.loads(text[start:])
    jobs = doc.get("jobs", [])
    ops = iops = bw = flushes = wbytes = 0
    secs = 0.0
    err = "ok"
    for job in jobs:
        for ddir in ("read", "write"):
            d = job.get(ddir, {})
            ops += d.get("total_ios", 0)
            iops += d.get("iops", 0.0)
            bw += d.get("bw_bytes", 0)
            secs = max(secs, d.get("runtime", 0) / 1000.0)
        wbytes += job.get("write", {}).get("io_bytes", 0)
        flushes += job.get("sync", {}).get("total_ios", 0)
        if job.get("error", 0) and err == "ok":
            err = "fio-error-%d" % job["error"]
    lat = latency(jobs)
    lat_s = " ".join("%.1f" % v for v in lat) if lat else "- - - -"
    print("%d %.1f %d %s %s %d %.3f %d" % (ops, iops, bw, err, lat_s, flushes, secs, wbytes))


if __name__ == "__main__":
    main()
