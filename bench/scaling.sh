#!/usr/bin/env bash
# Thread scaling of ringcache side by side with memcached, measured with memtier_benchmark.
# Meant for a machine with 16+ cores (32 CPUs for N=16): for each N, the server runs N worker
# threads pinned to CPUs 0..N-1 and memtier runs N threads pinned to CPUs N..2N-1, so any N
# with 2*N > nproc is skipped (on a 2-CPU machine only N=1 runs).
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
# Environment: MEMTIER (memtier_benchmark 2.x; default: in PATH, else
# /tmp/memtier/memtier_benchmark), RINGCACHE, SHARDS, DURATION, REPEATS, OUT (optional Markdown file).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARDS=${SHARDS:-1 2 4 8 16}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
OUT=${OUT:-}
MEMTIER=${MEMTIER:-$(command -v memtier_benchmark || echo /tmp/memtier/memtier_benchmark)}
RINGCACHE=${RINGCACHE:-./target/release/ringcache}
CPUS=$(nproc)

for tool in memcached "$MEMTIER" "$RINGCACHE" python3 taskset timeout; do
  command -v "$tool" >/dev/null || { echo "scaling.sh: missing $tool" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/ringcache-scaling.XXXXXX)
RESULTS=$TMP/results.tsv   # N <tab> pipeline <tab> server <tab> ops/s
: >"$RESULTS"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NEXT_PORT=$((22000 + $$ % 500 * 10))
start_server() { # kind threads cpus
  local kind=$1 threads=$2 cpus=$3
  PORT=$NEXT_PORT
  while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
  NEXT_PORT=$((PORT + 1))
  local cmd
  if [ "$kind" = memcached ]; then
    cmd=(memcached -U 0 -u root -l 127.0.0.1 -p "$PORT" -t "$threads" -m 1024)
  else
    cmd=("$RINGCACHE" -l 127.0.0.1 -p "$PORT" -t "$threads" -m 1024)
  fi
  taskset -c "$cpus" "${cmd[@]}" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "$kind exited before listening:" >&2; cat "$TMP/server.log" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
    sleep 0.05
  done
  echo "$kind did not listen on $PORT within 30 s" >&2; exit 1
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  timeout 30 tail --pid="$SERVER_PID" -f /dev/null || kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

run() { # N pipeline kind
  local n=$1 pl=$2 kind=$3
  local server_cpus="0-$((n - 1))" load_cpus="$n-$((2 * n - 1))"
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
  printf '%s\t%s\t%s\t%s\n' "$n" "$pl" "$kind" "$ops" >>"$RESULTS"
  echo "  N=$n pipeline $pl $kind (server CPUs $server_cpus, load CPUs $load_cpus): $ops ops/s" >&2
}

ran=0
for n in $SHARDS; do
  if [ $((2 * n)) -gt "$CPUS" ]; then echo "skipping N=$n: needs $((2 * n)) CPUs, have $CPUS" >&2; continue; fi
  ran=1
  for rep in $(seq "$REPEATS"); do
    if [ $((rep % 2)) = 1 ]; then order="memcached ringcache"; else order="ringcache memcached"; fi
    for pl in 1 16; do
      for kind in $order; do run "$n" "$pl" "$kind"; done
    done
  done
done
[ "$ran" = 1 ] || { echo "no N in SHARDS fits $CPUS CPUs" >&2; exit 1; }

python3 - "$RESULTS" "$OUT" "$DURATION" "$REPEATS" <<'EOF'
import statistics, sys
path, out, duration, repeats = sys.argv[1:]
runs = {}
for line in open(path):
    n, pl, server, ops = line.split()
    runs.setdefault((int(n), int(pl)), {}).setdefault(server, []).append(float(ops))
head = ("threads", "pipeline", "memcached ops/s", "ringcache ops/s", "rc/mc")
rows = []
for (n, pl), by in sorted(runs.items()):
    mc, rc = statistics.median(by["memcached"]), statistics.median(by["ringcache"])
    rows.append((str(n), str(pl), f"{mc:,.0f}", f"{rc:,.0f}", f"{rc / mc:.2f}"))
widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
for r in [head] + rows:
    print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
if out:
    with open(out, "w") as f:
        f.write(f"# Thread scaling: ringcache vs memcached (memtier, set:get 1:10)\n\nMedians of {repeats} "
                f"runs of {duration} s, server on CPUs 0..N-1, memtier -t N -c 32 on CPUs N..2N-1. "
                "Produced by `bench/scaling.sh`.\n\n| " + " | ".join(head) + " |\n|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
    print(f"\nwrote {out}", file=sys.stderr)
EOF
