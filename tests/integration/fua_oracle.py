#!/usr/bin/python3
"""fua_oracle.py — what a block may hold after a crash, judged from a log of
the writes issued to it and of those acknowledged.  Used by data_kill9.sh.

The NBD rule: a FUA write is durable once its reply arrives.  A write still
in flight at the crash may or may not have reached the disk, and if it did,
it hides the older acknowledged write to the same block.  So, per block:
  - with an acknowledged version: the last acknowledged version, or any
    version issued after it;
  - with none: the block's baseline (what it held before the writer began,
    flushed), or any version issued;
and nothing else: not a version older than the last acknowledged one, not
the baseline once a version was acknowledged, not a mix, not garbage.
(Judging only "the last acknowledged write is there" calls a block lost
whenever the in-flight write landed: that was data_kill9's flake.)

The log, one line per event, in the order the writer did them:
    issue OFF SEED    written before the request for version SEED of the
                      4 KiB block at OFF is sent
    ack OFF SEED      written after its successful reply
The writer opens it line-buffered, so each line is in the kernel before the
next request goes out; a last line without its newline is ignored (a
request whose issue line is incomplete was never sent).

Run as a script: the self-test, proving the rule accepts what it must and
refuses what it must, so a test using it can fail.
"""
import random
import sys

BS = 4096


def version_data(seed):
    """The 4 KiB the writer sends as version SEED."""
    return random.Random(seed).randbytes(BS)


def rules(lines):
    """{off: (last acknowledged seed or None, seeds issued after it, older
    seeds)} from the log's lines.  Raises ValueError on a malformed log (an
    ack of a version never issued, an unknown event)."""
    issued = {}                        # off -> seeds in issue order
    last_ack = {}                      # off -> index in issued[off]
    for line in lines:
        if not line.endswith("\n"):
            break                      # the writer died writing it
        kind, off, seed = line.split()
        off, seed = int(off), int(seed)
        if kind == "issue":
            issued.setdefault(off, []).append(seed)
        elif kind == "ack":
            seeds = issued.get(off, [])
            if seed not in seeds:
                raise ValueError("ack of version %d at %d that was never issued" % (seed, off))
            last_ack[off] = seeds.index(seed)
        else:
            raise ValueError("unknown event %r" % line)
    out = {}
    for off, seeds in issued.items():
        k = last_ack.get(off)
        if k is None:
            out[off] = (None, seeds, [])
        else:
            out[off] = (seeds[k], seeds[k + 1:], seeds[:k])
    return out


def judge(lines, blocks, read, baseline):
    """Check every block offset in BLOCKS: read(off) and baseline(off) give
    4 KiB.  Returns (problems, counts): one line per block that holds what
    it may not; counts of blocks holding their last acknowledged version, a
    version issued after it, the baseline, a version never acknowledged."""
    r = rules(lines)
    problems = []
    counts = {"acked": 0, "later": 0, "baseline": 0, "unacked": 0}
    for off in blocks:
        acked, later, older = r.get(off, (None, [], []))
        got = read(off)
        if acked is not None and got == version_data(acked):
            counts["acked"] += 1
        elif any(got == version_data(s) for s in later):
            counts["later" if acked is not None else "unacked"] += 1
        elif acked is None and got == baseline(off):
            counts["baseline"] += 1
        else:
            if acked is None:
                what = "neither its baseline nor a version issued to it"
            else:
                what = "acknowledged version %d lost: " % acked
                old = [s for s in older if got == version_data(s)]
                if old:
                    what += "reads the older version %d" % old[-1]
                elif got == baseline(off):
                    what += "reads the baseline (before any write)"
                else:
                    what += "reads data no write put there"
            problems.append("block at %d: %s" % (off, what))
    return problems, counts


def selftest():
    base = {o: bytes([o // BS + 1]) * BS for o in range(0, 4 * BS, BS)}
    v = version_data

    def run(log, disk):
        return judge(log, sorted(base), lambda o: disk.get(o, base[o]), base.__getitem__)[0]

    def expect(name, log, disk, ok):
        got = run(log, disk)
        if bool(got) == ok:
            sys.exit("fua_oracle self-test: %s: %s" % (name, got or "accepted, must fail"))

    # block 0: 1 acknowledged, 2 acknowledged, 3 in flight at the crash;
    # block 4096: 4 issued, never acknowledged; 8192 and 12288 never written
    log = ["issue 0 1\n", "ack 0 1\n", "issue 0 2\n", "ack 0 2\n",
           "issue 4096 4\n", "issue 0 3\n"]
    expect("last acknowledged version", log, {0: v(2)}, True)
    expect("version issued after the last ack survived", log, {0: v(3)}, True)
    expect("older acknowledged version", log, {0: v(1)}, False)
    expect("baseline after an ack", log, {0: base[0]}, False)
    expect("garbage", log, {0: bytes(BS)}, False)
    expect("mix of two versions", log, {0: v(2)[:2048] + v(3)[2048:]}, False)
    expect("unacknowledged write landed", log, {0: v(2), 4096: v(4)}, True)
    expect("unacknowledged write did not land", log, {0: v(2), 4096: base[4096]}, True)
    expect("another block's version", log, {0: v(2), 4096: v(2)}, False)
    expect("never-written block changed", log, {0: v(2), 8192: v(1)}, False)
    # an issue line cut short was never sent: its version is garbage
    expect("version of a torn issue line", log + ["issue 0 9"], {0: v(9)}, False)
    try:
        rules(["ack 0 5\n"])
        sys.exit("fua_oracle self-test: an ack of a version never issued was accepted")
    except ValueError:
        pass
    # the diagnosis names the older version
    msg = run(log, {0: v(1)})
    if msg != ["block at 0: acknowledged version 2 lost: reads the older version 1"]:
        sys.exit("fua_oracle self-test: diagnosis %r" % msg)
    print("fua_oracle self-test: ok")


if __name__ == "__main__":
    selftest()
