#!/usr/bin/env bash
# Thread scaling of ringcache side by side with memcached, measured with memtier_benchmark.
# Meant for a machine with 16+ cores (32 CPUs for N=16): for each N, the server runs N worker
# threads pinned to CPUs 0..N-1 and memtier runs N threads pinned to CPUs N..2N-1, so any N
# with 2*N > nproc is skipped (on a 2-CPU machine only N=1 runs), unless OVERLAP=1: then an N
# with N <= nproc < 2*N runs with the server on CPUs 0..N-1 and memtier on every CPU, sharing
# them (labelled "shared CPUs"; on a 2-CPU machine that is how 1 vs 2 shards can be compared
# at all, with the load generator taking CPU from the server).
#
# For each N in SHARDS, each repeat and each server (fresh server per run, servers alternated,
# order swapped every repeat): prefill 100k keys of 32 B (memtier --ratio 1:0 --key-pattern P:P
# --requests allkeys), then memtier -t N -c 32 (32 connections per thread), set:get 1:10,
# random keys, at --pipeline 1 and at --pipeline 16, for DURATION seconds. Prints a table of the
# median ops/s (memtier Totals) per server and the ratio ringcache/memcached.
#
# Run from the repository root after `cargo build --release`:
#     bench/scaling.sh                              # SHARDS="1 2 4 8 16", DURATION=10, REPEATS=3
#     SHARDS="1 2" DURATION=3 REPEATS=1 bench/scaling.sh
#     SHARDS="1 2" OVERLAP=1 bench/scaling.sh       # a 2-CPU machine: N=2 shares its CPUs with memtier
# Environment: MEMTIER (memtier_benchmark 2.x; default: in PATH, else
# /tmp/memtier/memtier_benchmark), RINGCACHE, SHARDS, DURATION, REPEATS, OVERLAP, OUT (optional
# Markdown file).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARDS=${SHARDS:-1 2 4 8 16}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
OVERLAP=${OVERLAP:-0}
OUT=${OUT:-}
MEMTIER=${MEMTIER:-$(command -v memtier_benchmark || echo /tmp/memtier/memtier_benchmark)}
RINGCACHE=${RINGCACHE:-./target/release/ringcache}
CPUS=$(nproc)

for tool in memcached "$MEMTIER" "$RINGCACHE" python3 taskset timeout; do
  command -v "$tool" >/dev/null || { echo "scaling.sh: missing $tool" >&2; exit 1; }
done

. bench/lib/servers.sh
bench_init scaling

run() { # N pipeline kind
  local n=$1 pl=$2 kind=$3
  local server_cpus="0-$((n - 1))" load_cpus="$n-$((2 * n - 1))" label="$n threads"
  if [ $((2 * n)) -gt "$CPUS" ]; then load_cpus="0-$((CPUS - 1))" label="$n threads (shared CPUs)"; fi
  start_server "$kind" "$n" "$server_cpus"
  local mt=(-P memcache_text -s 127.0.0.1 -p "$PORT" -t "$n" -c 32 --hide-histogram -d 32 --key-maximum 100000)
  timeout 300 taskset -c "$load_cpus" "$MEMTIER" "${mt[@]}" --ratio 1:0 --key-pattern P:P --requests allkeys \
    >"$TMP/prefill.out" 2>&1 || { echo "memtier prefill failed:" >&2; tail -5 "$TMP/prefill.out" >&2; exit 1; }
  timeout $((DURATION + 60)) taskset -c "$load_cpus" "$MEMTIER" "${mt[@]}" --ratio 1:10 --key-pattern R:R \
    --pipeline "$pl" --test-time "$DURATION" >"$TMP/memtier.out" 2>&1 \
    || { echo "memtier failed:" >&2; tail -5 "$TMP/memtier.out" >&2; exit 1; }
  stop_server
  local ops; ops=$(awk '/^Totals/ { print $2 }' "$TMP/memtier.out")
  [ -n "$ops" ] || { echo "no Totals line from memtier" >&2; exit 1; }
  record "$label, pipeline $pl" "ops/s" "$kind" "$ops"
  echo "  N=$n pipeline $pl $kind (server CPUs $server_cpus, load CPUs $load_cpus): $ops ops/s" >&2
}

ran=0
for n in $SHARDS; do
  if [ "$n" -gt "$CPUS" ] || { [ $((2 * n)) -gt "$CPUS" ] && [ "$OVERLAP" != 1 ]; }; then
    echo "skipping N=$n: needs $((2 * n)) CPUs, have $CPUS (OVERLAP=1 runs N up to $CPUS on shared CPUs)" >&2
    continue
  fi
  ran=1
  for rep in $(seq "$REPEATS"); do
    if [ $((rep % 2)) = 1 ]; then order="memcached ringcache"; else order="ringcache memcached"; fi
    for pl in 1 16; do
      for kind in $order; do run "$n" "$pl" "$kind"; done
    done
  done
done
[ "$ran" = 1 ] || { echo "no N in SHARDS fits $CPUS CPUs" >&2; exit 1; }

if [ -n "$OUT" ]; then
  python3 bench/lib/table.py "$RESULTS" "$OUT" "Thread scaling: ringcache vs memcached (memtier, set:get 1:10)" \
    "Medians of $REPEATS runs of $DURATION s, server on CPUs 0..N-1, memtier -t N -c 32 on CPUs N..2N-1 (\"shared CPUs\": on every CPU). Produced by \`bench/scaling.sh\`."
else
  python3 bench/lib/table.py "$RESULTS"
fi
