"""Summarise one fio --output-format=json file for bench/bench.sh.

Usage: fio_json.py FILE
Prints one line "OPS IOPS BYTES_PER_S ERROR": the sums over all jobs of
read+write operations (flushes are not counted), IOPS and bandwidth, and
"ok" or the first non-zero job error.  fio's nbd engine prints
"fio: connected to NBD server" lines, so the JSON is taken from the first '{'.
"""
import json
import sys


def main():
    text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    start = text.find("{")
    if start < 0:
        print("0 0 0 no-json")
        return
    doc = json.loads(text[start:])
    ops = iops = bw = 0
    err = "ok"
    for job in doc.get("jobs", []):
        for ddir in ("read", "write"):
            d = job.get(ddir, {})
            ops += d.get("total_ios", 0)
            iops += d.get("iops", 0.0)
            bw += d.get("bw_bytes", 0)
        if job.get("error", 0) and err == "ok":
            err = "fio-error-%d" % job["error"]
    print("%d %.1f %d %s" % (ops, iops, bw, err))


if __name__ == "__main__":
    main()
