#!/usr/bin/env bash
# Open-loop latency of ringcache side by side with memcached, at fixed offered rates.
#
# First memcached's saturation rate is measured (closed loop: ringcache-bench -c 32
# --pipeline 1, get:set 10:1, 32 B values, 100k keys, prefilled; median of REPEATS runs;
# ringcache's is measured alongside for reference). Then, for each fraction in FRACTIONS
# (default 50 and 80 percent of memcached's saturation rate), each repeat and each server
# (fresh server per run, servers alternated, order swapped every repeat), the same load is
# offered open loop (`--rate`, requests sent at scheduled times, latency measured from the
# scheduled time, so coordinated omission is corrected) and p50/p99/p99.9 are recorded with
# the throughput achieved. Server: 1 thread on SERVER_CPU; load on LOAD_CPU. Prints a table
# (medians, ratio ringcache/memcached) and writes it as Markdown to OUT.
#
# Run from the repository root after `cargo build --release`:
#     bench/latency.sh                            # DURATION=10, WARMUP=2, REPEATS=3
#     DURATION=3 REPEATS=1 bench/latency.sh       # quick check
# Environment: RINGCACHE, RINGCACHE_BENCH, DURATION, WARMUP, REPEATS, FRACTIONS, SERVER_CPU
# (default 0), LOAD_CPU (default 1), OUT (default bench/results/latency.md).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEATS=${REPEATS:-3}
FRACTIONS=${FRACTIONS:-50 80}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-bench/results/latency.md}
RINGCACHE=${RINGCACHE:-./target/release/ringcache}
BENCH=${RINGCACHE_BENCH:-./target/release/ringcache-bench}

for tool in memcached "$RINGCACHE" "$BENCH" python3 taskset timeout; do
  command -v "$tool" >/dev/null || { echo "latency.sh: missing $tool" >&2; exit 1; }
done
. bench/lib/servers.sh
bench_init latency

# One ringcache-bench run against a fresh server of kind $1 (prefilled first); the rest of
# the arguments go to the measured run. Leaves its JSON report in $TMP/run.json.
bench_run() {
  local kind=$1; shift
  start_server "$kind" 1 "$SERVER_CPU"
  local common=(--servers "127.0.0.1:$PORT" --cpus "$LOAD_CPU" --ratio 10:1 --value-size 32 --keys 100000
                -c 32 --pipeline 1)
  timeout 300 taskset -c "$LOAD_CPU" "$BENCH" "${common[@]}" --prefill --requests 1 >"$TMP/bench.out" 2>&1 \
    || { echo "ringcache-bench prefill failed:" >&2; tail -5 "$TMP/bench.out" >&2; exit 1; }
  timeout $((WARMUP + DURATION + 60)) taskset -c "$LOAD_CPU" "$BENCH" "${common[@]}" --json "$TMP/run.json" \
    --warmup "$WARMUP" --duration "$DURATION" --seed 7 "$@" >"$TMP/bench.out" 2>&1 \
    || { echo "ringcache-bench failed:" >&2; tail -5 "$TMP/bench.out" >&2; exit 1; }
  stop_server
}

measured() { # field... of the measured phase: ops_per_sec, or latency percentiles in us
  python3 -c "
import json, sys; m = json.load(open('$TMP/run.json'))['measured']
print(' '.join(str(m['ops_per_sec']) if f == 'ops' else str(m['latency'][f]) for f in sys.argv[1:]))" "$@"
}

order_for() { if [ $(($1 % 2)) = 1 ]; then echo "memcached ringcache"; else echo "ringcache memcached"; fi; }

SATURATION=$TMP/saturation
: >"$SATURATION"
for rep in $(seq "$REPEATS"); do
  for kind in $(order_for "$rep"); do
    bench_run "$kind"
    ops=$(measured ops)
    record "closed loop (saturation)" "ops/s" "$kind" "$ops"
    [ "$kind" = memcached ] && echo "$ops" >>"$SATURATION"
    echo "  saturation $kind: $ops ops/s" >&2
  done
done
RATE=$(python3 -c "import statistics; print(statistics.median(float(l) for l in open('$SATURATION')))")
echo "memcached saturates at $RATE ops/s" >&2

for frac in $FRACTIONS; do
  rate=$(python3 -c "print(int($RATE * $frac / 100))")
  label="open loop $frac% ($rate/s)"
  for rep in $(seq "$REPEATS"); do
    for kind in $(order_for "$rep"); do
      bench_run "$kind" --rate "$rate"
      read -r ops p50 p99 p999 < <(measured ops p50_us p99_us p999_us)
      record "$label" "ops/s" "$kind" "$ops"
      record "$label" "p50 us" "$kind" "$p50"
      record "$label" "p99 us" "$kind" "$p99"
      record "$label" "p99.9 us" "$kind" "$p999"
      echo "  $label $kind: $ops ops/s, p50 $p50 us, p99 $p99 us, p99.9 $p999 us" >&2
    done
  done
done

mkdir -p "$(dirname "$OUT")"
python3 bench/lib/table.py "$RESULTS" "$OUT" "Open-loop latency: ringcache vs memcached" \
  "Medians of $REPEATS runs of $DURATION s (after $WARMUP s of warm-up), fresh server per run, 1 server thread on CPU $SERVER_CPU, \`ringcache-bench -c 32 --pipeline 1 --ratio 10:1 --value-size 32 --keys 100000\` on CPU $LOAD_CPU, prefilled; open-loop rows offer a fixed share of memcached's median closed-loop rate with \`--rate\` (latency from the scheduled send). $(memcached -V). Produced by \`bench/latency.sh\`."
