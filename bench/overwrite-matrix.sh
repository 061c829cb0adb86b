#!/bin/bash
# Issue 14's rows: bench/overwrite.sh over get:set 10:1, 1:1 and 1:10 in phase 1 (phase
# 2 reads at 10:1), zipf 0.9 and 0.99, fixed (100 B) and lognormal (median 100 B)
# values, without and with a TTL (60 s, longer than the run). Fewer requests than the
# issue's table by default (N1=3000000 N2=2000000). Writes a Markdown table to OUT.
# RATIOS, ZIPFS and TTLS choose a subset (space-separated), e.g. RATIOS="1:1 1:10".
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${OUT:-$ROOT/bench/results/overwrite/matrix.md}
RATIOS=${RATIOS:-10:1 1:1 1:10} ZIPFS=${ZIPFS:-0.9 0.99} TTLS=${TTLS:-0 60}
export N1=${N1:-3000000} N2=${N2:-2000000}
mkdir -p "$(dirname "$OUT")"
{
  echo "Command: \`RATIOS=\"${RATIOS:-10:1 1:1 1:10}\" ZIPFS=\"${ZIPFS:-0.9 0.99}\" TTLS=\"${TTLS:-0 60}\" bench/overwrite-matrix.sh\` (N1=$N1 N2=$N2, -m 64 -t 1, 2M keys)"
  echo
  echo "| phase 1 | zipf | values | ttl | memcached items | ringcache items | items ratio | memcached hit | ringcache hit | ringcache evictions |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
for ratio in ${RATIOS:-10:1 1:1 1:10}; do
  for zipf in ${ZIPFS:-0.9 0.99}; do
    for values in "--value-size 100" "--value-size lognormal:100:0.5:2000"; do
      for ttl in ${TTLS:-0 60}; do
        out=$(PHASE1=$ratio ZIPF=$zipf VALUE_ARGS="$values" EXTRA="--ttl $ttl" "$ROOT/bench/overwrite.sh")
        mi=$(echo "$out" | awk '/^memcached/ {print $3}'); ri=$(echo "$out" | awk '/^ringcache/ {print $3}')
        mh=$(echo "$out" | awk '/^memcached/ {print $8}'); rh=$(echo "$out" | awk '/^ringcache/ {print $8}')
        re=$(echo "$out" | awk '/^ringcache/ {print $NF}')
        kind=$([ "$values" = "--value-size 100" ] && echo "100 B" || echo "lognormal 100")
        r=$(python3 -c "print('%.2f' % ($ri / $mi))")
        echo "| $ratio | $zipf | $kind | $ttl | $mi | $ri | $r | $mh | $rh | $re |" >> "$OUT"
        echo "$ratio $zipf $kind ttl=$ttl: $mi $ri ($r) $mh $rh $re"
      done
    done
  done
done
