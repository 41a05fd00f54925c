"""The report of bench/scale.sh: its CSV as a Markdown table, then the
per-block slopes of open time and RSS (least squares over the sizes) with
the line extrapolated to 10^10 mapped blocks.

Usage: scale_report.py CSV RECOVERY-MIB READ-SECS CACHE-OPTION(0|1) RUNS [GEN-ARGS]
(also by hand, e.g. on the CSVs of several runs joined under one header).
A size measured with several metadata cache sizes has one row per cache
size; the slopes take each size's last row.
"""
import csv
import sys


def secs(ms):
    return "%.2f s" % (int(ms) / 1000) if ms else "—"


def mib(kib):
    return "%.1f MiB" % (int(kib) / 1024) if kib else "—"


def text(v, unit=""):
    return v + unit if v else "—"


def fit(pts, key, scale):
    """Least squares y = a + b n over the sizes that have KEY; None below 2."""
    xs = [n for n in sorted(pts) if pts[n][key]]
    ys = [float(pts[n][key]) * scale for n in xs]
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    rec, read_secs, cache_opt, runs = sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
    gen_args = sys.argv[6] if len(sys.argv) > 6 else ""
    print("\n## Metadata at scale (bench/scale.sh)\n")
    if not rows:
        print("(no size completed: see build/bench/scale/logs)")
        return 0
    print("One dense volume per pool (`cowbd-genpool POOL --blocks N%s`). Open: from exec to the "
          "control socket / to `nbdinfo` answering; cold: the pool file's pages dropped from the "
          "page cache first; warm: median of %d. After kill -9: %s MiB of 4k random writes past "
          "the checkpoint. Reads: 4k random qd32 over the whole volume for %s s.%s\n"
          % (" " + gen_args if gen_args else "", max(runs - 1, 1), rec, read_secs,
             "" if cache_opt else " cowbd has no `--metadata-cache` yet: RSS is uncapped."))
    print("| mapped blocks | generate | disk | open cold (ctl / nbd) | open warm (ctl / nbd) "
          "| RSS after open | open after kill -9 (ctl / nbd) | batches replayed | metadata cache "
          "| 4k rand read IOPS | p99 | RSS end of reads | peak RSS | nodes held |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    pts = {}
    for r in rows:
        n = int(r["blocks"])
        pts[n] = r
        print("| 10^%d | %s s | %s MB | %s / %s | %s / %s | %s | %s / %s | %s | %s | %s | %s µs "
              "| %s | %s | %s |" % (
                  len(str(n)) - 1, r["gen_s"], r["disk_mb"], secs(r["open_cold_ctl_ms"]),
                  secs(r["open_cold_nbd_ms"]), secs(r["open_ctl_ms"]), secs(r["open_nbd_ms"]),
                  mib(r["rss_open_kib"]), secs(r["rec_ctl_ms"]), secs(r["rec_nbd_ms"]),
                  text(r["rec_batches"]), r["cache"], text(r["read_iops"]),
                  text(r["read_p99_us"]), mib(r["rss_read_kib"]), mib(r["hwm_read_kib"]),
                  mib(r.get("cache_read_kib"))))
    print()
    # bench/scale.sh reads with the cache at 100% of the metadata first, then 1%.
    for n in sorted(pts):
        runs_n = [r for r in rows if int(r["blocks"]) == n and r["cache"] != "uncapped"]
        if len(runs_n) >= 2 and runs_n[0]["read_iops"] and runs_n[1]["read_iops"]:
            full, one = runs_n[0], runs_n[1]
            print("- 10^%d: 4k random read IOPS with the cache at 1%% of the metadata (%s) over "
                  "100%% (%s): %.2f×" % (len(str(n)) - 1, one["cache"], full["cache"],
                                         float(one["read_iops"]) / float(full["read_iops"])))
    if len(pts) < 2:
        print("(one size only: no slope; give SCALE two or more exponents)")
        return 0
    for key, what, scale, unit, big in (
            ("open_nbd_ms", "open, warm, to nbdinfo", 1e6, "ns", lambda v: "%.2f s" % (v / 1e9)),
            ("open_cold_nbd_ms", "open, cold, to nbdinfo", 1e6, "ns",
             lambda v: "%.2f s" % (v / 1e9)),
            ("rec_nbd_ms", "open after kill -9, to nbdinfo", 1e6, "ns",
             lambda v: "%.2f s" % (v / 1e9)),
            ("rss_open_kib", "RSS after open", 1024, "bytes",
             lambda v: "%.0f MiB" % (v / 2 ** 20)),
            ("hwm_read_kib", "peak RSS with reads", 1024, "bytes",
             lambda v: "%.1f GiB" % (v / 2 ** 30))):
        ab = fit(pts, key, scale)
        if not ab:
            continue
        a, b = ab
        if b <= 0:  # flat within the noise: no per-block cost to extrapolate
            last = float(pts[max(pts)][key]) * scale
            print("- %s: no growth with mapped blocks measured (fitted slope %.3g %s per block: "
                  "noise); %s at the largest size" % (what, b, unit, big(last)))
        else:
            print("- %s: %.3g %s per mapped block + %.3g %s; at 10^10 mapped blocks: %s"
                  % (what, b, unit, a, unit, big(a + b * 1e10)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
