#!/usr/bin/env bash
# Network figures of ringcache side by side with memcached, in one run.
#
# Measures, for each server (fresh server per run, 1 worker thread, pinned to CPU 0; the load
# tool pinned to CPU 1; servers alternated, order swapped every repeat):
#   a. memtier_benchmark, memcache_text, 1 thread x 32 connections, set:get 1:10, 32 B values,
#      100k keys, --pipeline 1 and 16, on an empty server and on a prefilled key space:
#      ops/s and mean/p50/p99 latency (ms) of memtier's Totals line.
#   b. memcaslap (memaslap) load, 1 thread x 32 concurrency, get:set 9:1, 16 B keys, 32 B values:
#      ops/s, server syscalls per request (perf stat -e raw_syscalls:sys_enter -p PID) and server
#      CPU us per request (utime+stime from /proc/PID/stat), requests being the cmd_get+cmd_set
#      deltas of the server's own `stats`, over a window of DURATION seconds after a warm-up;
#      and CPU us per request less the time ringcache's shards spent looking for work and
#      finding none (`io_uring_idle_spin_us`; memcached does not spin, so its two are equal).
#   c. ringcache-bench, get:set 10:1, values of 4 KiB (20000 keys, -c 50), 64 KiB (2000 keys,
#      -c 50) and 1 MiB (200 keys, -c 8, both servers with -I 2m), prefilled: ops/s and MB/s
#      (ops/s x value size).
# Prints one table (median over repeats per server, ratio ringcache/memcached) and writes it as
# Markdown to bench/results/network.md.
#
# Run from the repository root after `cargo build --release`:
#     bench/network.sh                          # DURATION=10 s per measured run, REPEATS=3
#     DURATION=3 REPEATS=1 bench/network.sh     # quick check
#     PARTS=sizes bench/network.sh              # only some of a (memtier), b (memcaslap), c (sizes)
# Environment: MEMTIER (memtier_benchmark 2.x; default: in PATH, else /tmp/memtier/memtier_benchmark),
# MEMCASLAP (memcaslap/memaslap; default: in PATH), RINGCACHE, RINGCACHE_BENCH, DURATION, REPEATS, WARMUP (s before the
# memcaslap window, default 2), SERVER_CPU (default 0), LOAD_CPU (default 1), OUT (Markdown file).
# Needs: memcached, perf (tracepoints suffice), python3, taskset, timeout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
PARTS=${PARTS:-memtier memcaslap sizes}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-bench/results/network.md}
MEMTIER=${MEMTIER:-$(command -v memtier_benchmark || echo /tmp/memtier/memtier_benchmark)}
MEMCASLAP=${MEMCASLAP:-$(command -v memcaslap || command -v memaslap || echo memcaslap)}
PERF=${PERF:-perf}
RINGCACHE=${RINGCACHE:-./target/release/ringcache}
BENCH=${RINGCACHE_BENCH:-./target/release/ringcache-bench}

for tool in memcached "$MEMTIER" "$MEMCASLAP" "$PERF" "$RINGCACHE" "$BENCH" python3 taskset timeout; do
  command -v "$tool" >/dev/null || { echo "network.sh: missing $tool" >&2; exit 1; }
done

. bench/lib/servers.sh
bench_init network

# cmd_get+cmd_set of the server on $PORT and its idle spin (us; 0 for memcached), read over
# the text protocol.
server_requests() {
  timeout 10 python3 -c "
import sys; sys.path.insert(0, 'bench'); from harness import stats
st = stats($PORT); print(int(st['cmd_get']) + int(st['cmd_set']), int(st.get('io_uring_idle_spin_us', 0)))"
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SERVER_PID/stat"; }
now() { date +%s.%N; }

MT_BASE=(-P memcache_text -s 127.0.0.1 -t 1 -c 32 --hide-histogram -d 32 --key-maximum 100000)
memtier() { # label prefilled(0|1) pipeline kind
  local label=$1 prefilled=$2 pipeline=$3 kind=$4
  start_server "$kind" 1 "$SERVER_CPU"
  if [ "$prefilled" = 1 ]; then
    timeout 300 taskset -c "$LOAD_CPU" "$MEMTIER" "${MT_BASE[@]}" -p "$PORT" --ratio 1:0 \
      --key-pattern P:P --requests allkeys >"$TMP/prefill.out" 2>&1 \
      || { echo "memtier prefill failed:" >&2; tail -5 "$TMP/prefill.out" >&2; exit 1; }
  fi
  timeout $((DURATION + 60)) taskset -c "$LOAD_CPU" "$MEMTIER" "${MT_BASE[@]}" -p "$PORT" --ratio 1:10 \
    --key-pattern R:R --pipeline "$pipeline" --test-time "$DURATION" >"$TMP/memtier.out" 2>&1 \
    || { echo "memtier failed:" >&2; tail -5 "$TMP/memtier.out" >&2; exit 1; }
  stop_server
  local line; line=$(awk '/^Totals/ { print $2, $5, $6, $7 }' "$TMP/memtier.out")
  [ -n "$line" ] || { echo "no Totals line from memtier" >&2; exit 1; }
  read -r ops mean p50 p99 <<<"$line"
  record "$label" "ops/s" "$kind" "$ops"
  record "$label" "mean ms" "$kind" "$mean"
  record "$label" "p50 ms" "$kind" "$p50"
  record "$label" "p99 ms" "$kind" "$p99"
  echo "  $label $kind: $ops ops/s, mean $mean ms, p50 $p50 ms, p99 $p99 ms" >&2
}

# memaslap workload file: key length, value length, command mix (type 0 = set, 1 = get).
cat >"$TMP/memcaslap.cfg" <<'EOF'
key
16 16 1
value
32 32 1
cmd
0 0.1
1 0.9
EOF
memcaslap_run() { # kind
  local kind=$1 label="memcaslap get:set 9:1"
  start_server "$kind" 1 "$SERVER_CPU"
  # -w 3k: 3000 keys per concurrency, 96k in all. memaslap only gets keys it has set before,
  # so every get hits; the warm-up before the window fills the key space further.
  timeout $((WARMUP + DURATION + 60)) taskset -c "$LOAD_CPU" "$MEMCASLAP" -s "127.0.0.1:$PORT" \
    -T 1 -c 32 -w 3k -F "$TMP/memcaslap.cfg" -t "$((WARMUP + DURATION + 3))s" >"$TMP/memcaslap.out" 2>&1 &
  local load=$!
  sleep "$WARMUP"
  local r0 c0 t0 r1 c1 t1 s0 s1
  read -r r0 s0 < <(server_requests); c0=$(cpu_ticks); t0=$(now)
  timeout $((DURATION + 30)) "$PERF" stat -e raw_syscalls:sys_enter -p "$SERVER_PID" -o "$TMP/perf.out" -- sleep "$DURATION"
  read -r r1 s1 < <(server_requests); c1=$(cpu_ticks); t1=$(now)
  wait "$load" || { echo "memcaslap failed:" >&2; tail -5 "$TMP/memcaslap.out" >&2; exit 1; }
  stop_server
  local calls elapsed
  calls=$(awk '/raw_syscalls:sys_enter/ { gsub(/[,.]/, "", $1); print $1 }' "$TMP/perf.out")
  elapsed=$(awk '/seconds time elapsed/ { print $1 }' "$TMP/perf.out")
  [ -n "$calls" ] && [ -n "$elapsed" ] || { echo "no perf count:" >&2; cat "$TMP/perf.out" >&2; exit 1; }
  # Requests in the perf window = request rate over the stats window x perf's own elapsed time.
  read -r ops sys cpu net < <(python3 -c "
import os
req, dt = $r1 - $r0, $t1 - $t0
rate = req / dt
cpu = ($c1 - $c0) / os.sysconf(\"SC_CLK_TCK\") * 1e6 / req
print(f'{rate:.1f} {$calls / (rate * $elapsed):.4f} {cpu:.4f} {cpu - ($s1 - $s0) / req:.4f}')")
  record "$label" "ops/s" "$kind" "$ops"
  record "$label" "syscalls/req" "$kind" "$sys"
  record "$label" "CPU us/req" "$kind" "$cpu"
  record "$label" "CPU us/req less idle spin" "$kind" "$net"
  echo "  $label $kind: $ops ops/s, $sys syscalls/req, $cpu CPU us/req ($net less idle spin)" >&2
}

vsize() { # label value-size keys conns kind [server options]
  local label=$1 size=$2 keys=$3 conns=$4 kind=$5; shift 5
  start_server "$kind" 1 "$SERVER_CPU" "$@"
  local common=(--servers "127.0.0.1:$PORT" --cpus "$LOAD_CPU" --ratio 10:1 --value-size "$size"
                --keys "$keys" -c "$conns" --pipeline 1)
  timeout 300 taskset -c "$LOAD_CPU" "$BENCH" "${common[@]}" --json "$TMP/prefill.json" --prefill --requests 1 \
    >"$TMP/bench.out" 2>&1 || { echo "ringcache-bench prefill failed:" >&2; tail -5 "$TMP/bench.out" >&2; exit 1; }
  timeout $((DURATION + 60)) taskset -c "$LOAD_CPU" "$BENCH" "${common[@]}" --json "$TMP/run.json" \
    --duration "$DURATION" --seed 7 >"$TMP/bench.out" 2>&1 \
    || { echo "ringcache-bench failed:" >&2; tail -5 "$TMP/bench.out" >&2; exit 1; }
  stop_server
  read -r ops hit < <(python3 -c "
import json; m = json.load(open('$TMP/run.json'))['measured']
print(m['ops_per_sec'], m['hit_ratio'] if m['hit_ratio'] is not None else 'nan')")
  record "$label" "ops/s" "$kind" "$ops"
  record "$label" "MB/s" "$kind" "$(python3 -c "print($ops * $size / 1e6)")"
  record "$label" "hit ratio" "$kind" "$hit"
  echo "  $label $kind: $ops ops/s, hit ratio $hit" >&2
}

for rep in $(seq "$REPEATS"); do
  if [ $((rep % 2)) = 1 ]; then order="memcached ringcache"; else order="ringcache memcached"; fi
  echo "repeat $rep/$REPEATS" >&2
  if [[ " $PARTS " == *" memtier "* ]]; then
    for pre in 0 1; do
      for pl in 1 16; do
        [ "$pre" = 1 ] && state=prefilled || state=empty
        for kind in $order; do memtier "memtier pipeline $pl $state" "$pre" "$pl" "$kind"; done
      done
    done
  fi
  if [[ " $PARTS " == *" memcaslap "* ]]; then
    for kind in $order; do memcaslap_run "$kind"; done
  fi
  if [[ " $PARTS " == *" sizes "* ]]; then
    for kind in $order; do vsize "values 4 KiB" 4096 20000 50 "$kind"; done
    for kind in $order; do vsize "values 64 KiB" 65536 2000 50 "$kind"; done
    for kind in $order; do vsize "values 1 MiB" 1048576 200 8 "$kind" -I 2m; done
  fi
done

mkdir -p "$(dirname "$OUT")"
python3 bench/lib/table.py "$RESULTS" "$OUT" "Network figures: ringcache vs memcached" \
  "Medians of $REPEATS runs of $DURATION s each, fresh server per run, 1 server thread on CPU $SERVER_CPU, load on CPU $LOAD_CPU ($(memcached -V); $("$MEMTIER" --version 2>&1 | head -1); memcaslap from libmemcached-tools). Produced by \`bench/network.sh\`."
