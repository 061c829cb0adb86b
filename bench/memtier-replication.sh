#!/bin/bash
# Run from the repository root after `cargo build --release`; MEMTIER=path/to/memtier_benchmark (2.x).
# memtier cross-check: sets to one node alone vs a 3-node group (strong, fsync / none), all servers on CPU 0, memtier on CPU 1.
printf '#!/bin/sh\nexec taskset -c 0 %s/target/release/ringcache "$@"\n' "$PWD" > bench/.ringcache-cpu0
chmod +x bench/.ringcache-cpu0
trap 'rm -f bench/.ringcache-cpu0' EXIT
M="taskset -c 1 ${MEMTIER:-memtier_benchmark} -P memcache_text -s 127.0.0.1 -t 1 -c 50 --ratio 1:0 --test-time 8 --key-maximum 100000 -d 32 --pipeline 1 --hide-histogram"
run_alone() {
  taskset -c 0 ./target/release/ringcache -l 127.0.0.1 -p 23999 -t 1 -m 1024 >/dev/null 2>&1 & P=$!; sleep 1
  $M -p 23999 2>/dev/null | grep -E "^Sets|^Totals" | head -1; kill $P; wait $P 2>/dev/null
}
run_group() {
  rm -rf /tmp/rc-memtier; RINGCACHE_CLUSTER_DIR=/tmp/rc-memtier RINGCACHE_BIN="$PWD/bench/.ringcache-cpu0" ./ops/cluster.sh start 3 -t 1 -m 1024 --durability $1 >/dev/null; sleep 2
  L=$(./target/release/ringcache-ctl --nodes 127.0.0.1:21211,127.0.0.1:21212,127.0.0.1:21213 status | awk '$4=="leader"{print $1; exit}' | cut -d: -f2)
  $M -p $L 2>/dev/null | grep -E "^Sets|^Totals" | head -1
  RINGCACHE_CLUSTER_DIR=/tmp/rc-memtier ./ops/cluster.sh stop >/dev/null
}
for r in 1 2 3; do
  echo -n "alone  "; run_alone
  echo -n "fsync  "; run_group fsync
  echo -n "none   "; run_group none
done
