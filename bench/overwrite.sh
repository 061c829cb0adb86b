#!/bin/bash
# Storage under overwrites (issue 14): the same two-phase load against Debian's memcached
# and ringcache side by side, each on a fresh server (-m 64 -t 1 by default), the server
# on CPU 0, ringcache-bench on CPU 1. Phase 1 overwrites (get:set 1:1), phase 2 reads
# (10:1). Prints, per server: the items held afterwards (`curr_items`) and phase 2's
# hit ratio.
#
#   bench/overwrite.sh                                   # the load of issue 14's table
#   KEYS=2000000 ZIPF=0.99 VALUE=100 bench/overwrite.sh   # other rows
#   PHASE1=1:10 bench/overwrite.sh                       # a write-heavy first phase
#   EXTRA="--ttl 60" bench/overwrite.sh                  # extra ringcache-bench flags (both phases)
#   RINGCACHE="/tmp/a/ringcache /tmp/b/ringcache" bench/overwrite.sh   # several builds in turn
#   DIST1=sequential PHASE1=0:1 N1=2000000 bench/overwrite.sh   # write every key once instead
#   STATS="dead_reclaims dead_compactions" bench/overwrite.sh   # more `stats` figures, at the end
#   SAMPLES=DIR bench/overwrite.sh    # ringcache's dead-byte share every second of phase 1
#                                     # (DIR/<server>-dead-bytes.tsv) and each phase's latency
#                                     # spectrum (DIR/<server>-phase{1,2}.png)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/target/release/ringcache-bench"
RC="${RINGCACHE:-$ROOT/target/release/ringcache}"
MEM=${MEM:-64} KEYS=${KEYS:-2000000} ZIPF=${ZIPF:-0.9} VALUE=${VALUE:-100}
PHASE1=${PHASE1:-1:1} PHASE2=${PHASE2:-10:1} N1=${N1:-6000000} N2=${N2:-4000000}
VALUE_ARGS=${VALUE_ARGS:---value-size $VALUE}
EXTRA=${EXTRA:-}
DIST1=${DIST1:-zipf:$ZIPF}
SAMPLES=${SAMPLES:-}
[ -z "$SAMPLES" ] || mkdir -p "$SAMPLES"
stat_of() { # PORT [stats ARGS]: the server's `stats` lines, "name value"
    local port=$1; shift
    printf 'stats %s\r\nquit\r\n' "$*" | timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; cat >&3; cat <&3" |
        awk '/^STAT/ {print $2, $3}' | tr -d '\r'
}
run() {
    local name=$1; shift
    local port=$((31000 + RANDOM % 1000))
    taskset -c 0 "$@" -l 127.0.0.1 -p $port -t 1 -m $MEM >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    local common=(--servers 127.0.0.1:$port --cpus 1 --keys $KEYS $VALUE_ARGS -c 20 --pipeline 8 $EXTRA)
    local plot1=() plot2=() sampler=
    if [ -n "$SAMPLES" ]; then
        plot1=(--plot "$SAMPLES/$name-phase1.png"); plot2=(--plot "$SAMPLES/$name-phase2.png")
        if [ "$name" != memcached ]; then
            # The sampler's own requests (one `stats` a second) are not in the figures.
            (start=$(date +%s.%N); printf 'seconds\tdead_bytes_permille\tcurr_items\n'
             while sleep 1; do
                 stat_of $port | awk -v now="$(date +%s.%N)" -v start="$start" \
                     '$1 == "dead_bytes" {d = $2} $1 == "bytes" {b = $2} $1 == "curr_items" {i = $2}
                      END {if (d + b > 0) printf "%.0f\t%.0f\t%s\n", now - start, 1000 * d / (d + b), i}'
             done) > "$SAMPLES/$name-dead-bytes.tsv" 2>/dev/null &
            sampler=$!
        fi
    fi
    local json1; json1=$(mktemp)
    taskset -c 1 "$BENCH" "${common[@]}" --key-dist $DIST1 --ratio $PHASE1 --requests $N1 --seed 5 --json "$json1" "${plot1[@]}" >/dev/null
    [ -z "$sampler" ] || { kill $sampler; wait $sampler 2>/dev/null || true; }
    local json; json=$(mktemp)
    taskset -c 1 "$BENCH" "${common[@]}" --key-dist zipf:$ZIPF --ratio $PHASE2 --requests $N2 --seed 6 --json "$json" "${plot2[@]}" >/dev/null
    local stats; stats=$(stat_of $port)
    local items; items=$(echo "$stats" | awk '$1 == "curr_items" {print $2}')
    local evictions; evictions=$(echo "$stats" | awk '$1 == "evictions" {print $2}')
    local figures; figures=$(python3 - "$json1" "$json" <<'PY'
import json, sys
one, two = (json.load(open(p))["measured"] for p in sys.argv[1:3])
print("hit ratio (phase 2) %.4f  phase 1: %.0f ops/s p99.9 %.0f us  phase 2: %.0f ops/s p99.9 %.0f us" % (
    two["hit_ratio"], one["ops_per_sec"], one["latency"]["p999_us"], two["ops_per_sec"], two["latency"]["p999_us"]))
PY
)
    local extra=""
    for s in ${STATS:-}; do extra+="  $s $(echo "$stats" | awk -v s=$s '$1 == s {print $2}')"; done
    printf '%-10s items %9s  %s  evictions %s%s\n' "$name" "$items" "$figures" "$evictions" "$extra"
    rm -f "$json" "$json1"
    kill $pid; wait $pid 2>/dev/null || true
}
[ -n "${NO_MEMCACHED:-}" ] || run memcached memcached -U 0 -u root
if [ -z "${RINGCACHE:-}" ]; then run ringcache "$RC"; else for rc in $RC; do run "$(basename "$(dirname "$rc")")" "$rc"; done; fi
