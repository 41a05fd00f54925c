#!/bin/bash
# passes.sh — by hand (not part of `make bench`): 1 MiB sequential writes
# with and without FLUSHes on one cowbd, after random writes or not, to see
# what the order of jobs costs (docs/PERFORMANCE.md, "1 MiB writes with
# FLUSHes ran faster than without").  One daemon on a fresh pool with a
# 1 GiB volume filled once; each round runs, in ORDER, 1 MiB writes qd8
# without FLUSHes (nf) and with a FLUSH every 256 writes (f), T seconds
# each, PRE seconds of 4k random writes qd32 before the first (0: none).
# Prints per job MB/s, server CPU µs per MiB (from /proc/PID/stat) and the
# highest Dirty/Writeback of /proc/meminfo during it.  PERF=PREFIX records
# a `perf record -g` profile of each job to PREFIX.ROUND.JOB.
#
# Usage: bench/passes.sh [BUILD]   (default build)
# Env: R (rounds, 3), T (4), PRE (9), ORDER ("nf f"), POOL (40G),
#      PORT (10950), ARGS (extra cowbd options).
set -u
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
B=${1:-build} R=${R:-3} T=${T:-4} PRE=${PRE:-9} ORDER=${ORDER:-"nf f"}
PORT=${PORT:-10950}
d=$(mktemp -d /tmp/cowbd-passes.XXXXXX)
# shellcheck disable=SC2086 # ARGS split on purpose
"$B/cowbd" --pool "$d/pool" --create "${POOL:-40G}" --listen "127.0.0.1:$PORT" \
	--control "$d/ctl" ${ARGS:-} >"$d/log" 2>&1 &
P=$!
trap 'kill $P; wait $P; rm -rf "$d"' EXIT
for _ in $(seq 50); do [ -S "$d/ctl" ] && break; sleep 0.1; done
"$B/cowctl" --control "$d/ctl" volume create v 1G >/dev/null || exit 1
U=nbd://127.0.0.1:$PORT/v
fio --name=fill --ioengine=nbd --uri="$U" --rw=write --bs=1M --iodepth=8 --size=1G >/dev/null
sync
cpu() { awk '{print $14 + $15}' "/proc/$P/stat"; }
first=${ORDER%% *}
for r in $(seq "$R"); do
	for j in $ORDER; do
		a="--rw=write --bs=1M --iodepth=8"
		[ "$j" = f ] && a="$a --fsync=256"
		if [ "$PRE" != 0 ] && [ "$j" = "$first" ]; then
			fio --name=pre --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --iodepth=32 \
				--time_based --runtime="$PRE" >/dev/null 2>&1
		fi
		c0=$(cpu)
		touch "$d/run"
		(
			m=0 w=0
			while [ -e "$d/run" ]; do
				read -r dd ww < <(awk '/^Dirty:/{d=$2} /^Writeback:/{w=$2} END{print d, w}' /proc/meminfo)
				[ "$dd" -gt "$m" ] && m=$dd
				[ "$ww" -gt "$w" ] && w=$ww
				sleep 0.1
			done
			echo "$((m / 1024)) $((w / 1024))" >"$d/dw"
		) &
		sp=$!
		if [ -n "${PERF:-}" ]; then
			perf record -F 1999 -g -o "$PERF.$r.$j" -p "$P" -- sleep $((T - 1)) >/dev/null 2>&1 &
		fi
		# shellcheck disable=SC2086 # a split on purpose
		fio --name=j --ioengine=nbd --uri="$U" $a --time_based --runtime="$T" \
			--output-format=json --output="$d/f.json" >/dev/null
		rm "$d/run"
		wait "$sp"
		c1=$(cpu)
		bw=$(/usr/bin/python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"]/1e6))' "$d/f.json")
		awk -v r="$r" -v j="$j" -v c=$((c1 - c0)) -v b="$bw" -v t="$T" -v dw="$(cat "$d/dw")" \
			'BEGIN{printf "round %s %-2s %6d MB/s %5.0f us/MiB  dirty/writeback max MiB %s\n", r, j, b, c * 10000 / (b * t * 1e6 / 1048576), dw}'
	done
done
