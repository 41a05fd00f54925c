"""Pick fields out of `cowctl --json stats` for bench/bench.sh.

Usage: cowctl --json stats | cow_stats.py FIELD...
Prints the named integer fields of the reply's "stats" object on one line,
in the order given.  One derived field: "used_over_live", the pool's
allocated space over its live data as bench/wa.c computes it — segments in
use (all but the free ones and the one never handed out) times the blocks
of a segment, over blocks_live (0.000 for an empty pool).
Prints nothing and exits 1 when the reply is not a successful stats reply.
"""
import json
import sys


def main():
    try:
        stats = json.load(sys.stdin)["stats"]
    except (ValueError, KeyError, TypeError):
        return 1
    out = []
    for name in sys.argv[1:]:
        if name == "used_over_live":
            used = (stats["segments"] - 1 - stats["segments_free"]) * (
                stats["segment_bytes"] // stats["block_size"])
            live = stats["blocks_live"]
            out.append("%.3f" % (used / live if live else 0.0))
        else:
            out.append(str(int(stats[name])))
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
