#!/bin/bash
# The server's CPU time per request (perf stat -e task-clock on the server process) under
# a fixed number of ringcache-bench requests: for comparing two builds where throughput
# is too noisy. The server runs on CPU 0, the load on CPU 1; a prefill comes first.
#
#   bench/cpu-per-op.sh BINARY [server args]        # PIPE=1 N=300000 by default
#   PIPE=16 N=2000000 bench/cpu-per-op.sh target/release/ringcache
#
# Prints "task-clock ns/op X". The figure includes the driver's spin before it sleeps:
# alternate the builds and compare medians of several runs.
set -euo pipefail
BIN=$1; shift
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/target/release/ringcache-bench}"
PORT=$((30000 + RANDOM % 1000))
taskset -c 0 "$BIN" -l 127.0.0.1 -p $PORT -t 1 -m 1024 "$@" >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
ARGS=(--servers 127.0.0.1:$PORT --cpus 1 --ratio 10:1 --value-size 32 --keys 100000 -c 50 --pipeline "${PIPE:-1}")
taskset -c 1 "$BENCH" "${ARGS[@]}" --prefill --requests 1 >/dev/null
OUT=$(mktemp)
perf stat -e task-clock -p $PID -o "$OUT" -- taskset -c 1 "$BENCH" "${ARGS[@]}" --requests "${N:-300000}" --seed 7 >/dev/null
awk -v n="${N:-300000}" '/task-clock/ {gsub(",","",$1); printf "task-clock ns/op %.1f\n", $1*1e6/n}' "$OUT"
rm -f "$OUT"
