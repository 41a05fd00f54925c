#!/bin/bash
# ab.sh — an A/B of cowbd builds or options beside nbdkit, by hand (not
# part of `make bench`): each variant serves a fresh pool with a 1 GiB
# volume, nbdkit serves a preallocated 1 GiB file (NB=file) or nothing
# (NB=null); every export is filled with 1 MiB writes, then fio runs JOB
# for T seconds against each in turn, ROUNDS times, the order rotated
# every round.  Prints per variant the median IOPS, the median of the
# per-round ratios to nbdkit, every round's IOPS and the server CPU per
# operation (ns, from /proc/PID/stat) and fio's completion p99.9 (ms).
#
# Usage: bench/ab.sh BUILD NAME:[@OTHER_BUILD] [ARGS...] ...
#   e.g. bench/ab.sh build base:@/tmp/old/build new: "two:--loop-threads 2"
# Env: JOB (fio options; default 1 MiB sequential reads, qd8), ROUNDS (6),
#      T (4), NB (file|null), POOLG (pool size in GiB, 4), PORT (10900),
#      FLOOR ("epoll", "uring" or both: bench/floor/floor.c, the least an NBD
#      server can do per request, on a preallocated 1 GiB file, as more
#      columns; needs liburing-dev, which `make deps` installs).
set -u
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
B=$1
shift
ROUNDS=${ROUNDS:-6} T=${T:-4} NB=${NB:-file}
JOB=${JOB:-"--rw=read --bs=1M --iodepth=8"}
d=$(mktemp -d /tmp/cowbd-ab.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait; rm -rf "$d"' EXIT
port=${PORT:-10900} names=() uris=()
for v in "$@"; do
	n=${v%%:*} a=${v#*:} bb=$B
	[ "$a" = "$v" ] && a=""
	case "$a" in @*)
		bb=${a%% *} bb=${bb#@}
		a=${a#* }
		[ "$a" = "@$bb" ] && a=""
		;;
	esac
	mkdir "$d/$n"
	# shellcheck disable=SC2086 # ARGS split on purpose
	"$bb/cowbd" --pool "$d/$n/pool" --create "${POOLG:-4}G" --listen "127.0.0.1:$port" \
		--control "$d/$n/ctl" $a >"$d/$n/log" 2>&1 &
	pids+=($!)
	for _ in $(seq 50); do [ -S "$d/$n/ctl" ] && break; sleep 0.1; done
	"$B/cowctl" --control "$d/$n/ctl" volume create v 1G >/dev/null || exit 1
	names+=("$n") uris+=("nbd://127.0.0.1:$port/v")
	port=$((port + 1))
done
if [ "$NB" = null ]; then
	nbdkit -f -p "$port" --pidfile "$d/nb.pid" null 1G >/dev/null 2>&1 &
else
	fallocate -l 1G "$d/nb.img"
	nbdkit -f -p "$port" --pidfile "$d/nb.pid" file "$d/nb.img" >/dev/null 2>&1 &
fi
for _ in $(seq 50); do [ -s "$d/nb.pid" ] && break; sleep 0.1; done
pids+=("$(cat "$d/nb.pid")") names+=(nbdkit) uris+=("nbd://127.0.0.1:$port/")
if [ -n "${FLOOR:-}" ]; then
	cc -O2 -o "$d/floor" "$(dirname "$0")/floor/floor.c" -luring || exit 1
	for m in $FLOOR; do
		port=$((port + 1))
		fallocate -l 1G "$d/floor-$m.img"
		"$d/floor" "$m" "$port" "$d/floor-$m.img" >"$d/floor-$m.log" 2>&1 &
		pids+=($!) names+=("floor-$m") uris+=("nbd://127.0.0.1:$port/")
		for _ in $(seq 50); do nbdinfo --size "${uris[-1]}" >/dev/null 2>&1 && break; sleep 0.1; done
	done
fi
for u in "${uris[@]}"; do
	fio --name=fill --ioengine=nbd --uri="$u" --rw=write --bs=1M --iodepth=8 --size=1G >/dev/null
done
sync
k=${#names[@]}
declare -A res cpu p999
for r in $(seq "$ROUNDS"); do
	for j in $(seq 0 $((k - 1))); do
		i=$(((j + r) % k)) n=${names[$i]} p=${pids[$i]}
		c0=$(awk '{print $14+$15}' "/proc/$p/stat")
		# shellcheck disable=SC2086 # JOB split on purpose
		out=$(fio --name=j --ioengine=nbd --uri="${uris[$i]}" $JOB --size=1G --time_based \
			--runtime="$T" --thread --group_reporting --output-format=terse --terse-version=3 2>/dev/null)
		c1=$(awk '{print $14+$15}' "/proc/$p/stat")
		io=$(echo "$out" | awk -F';' 'NF>40{print $8+$49}')
		# the job's completion p99.9 (reads' or writes', whichever ran), ms
		lat=$(echo "$out" | tr ';' '\n' | awk -F= '$1 == "99.900000%" && $2 > m {m = $2}
			END {printf "%.1f", m / 1000}')
		res[$n]+=" $io"
		p999[$n]+=" $lat"
		cpu[$n]+=" $((io > 0 ? (c1 - c0) * 10000000 / (io * T) : 0))"
	done
done
med() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
for n in "${names[@]}"; do
	rat=$(paste <(echo "${res[$n]}" | tr ' ' '\n' | grep .) \
		<(echo "${res[nbdkit]}" | tr ' ' '\n' | grep .) | awk '$2 > 0 {printf "%.3f\n", $1/$2}' | med)
	echo "$n IOPS med $(echo "${res[$n]}" | med), median ratio to nbdkit $NB $rat :${res[$n]} |" \
		"server CPU ns/op${cpu[$n]} | p99.9 ms${p999[$n]}"
done
