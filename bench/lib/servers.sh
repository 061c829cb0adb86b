# Sourced by the benchmark scripts in bench/: a temporary directory cleaned up on exit,
# fresh servers pinned to given CPUs (memcached or ringcache, on a free loopback port),
# and a results file of one measurement per line.
#
#   bench_init NAME              TMP, RESULTS (measure <tab> metric <tab> server <tab> value)
#   start_server KIND THREADS CPUS [OPTION...]
#                                KIND memcached|ringcache, -m 1024; sets PORT, SERVER_PID
#   stop_server
#   record MEASURE METRIC SERVER VALUE
#
# Needs RINGCACHE (the server binary) to be set by the caller.

bench_init() {
  TMP=$(mktemp -d "/tmp/ringcache-$1.XXXXXX")
  RESULTS=$TMP/results.tsv
  : >"$RESULTS"
  SERVER_PID=
  NEXT_PORT=$((22000 + $$ % 500 * 10))
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$TMP"
}

start_server() {
  local kind=$1 threads=$2 cpus=$3
  shift 3
  PORT=$NEXT_PORT
  while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
  NEXT_PORT=$((PORT + 1))
  local cmd
  if [ "$kind" = memcached ]; then
    cmd=(memcached -U 0 -u root -l 127.0.0.1 -p "$PORT" -t "$threads" -m 1024 "$@")
  else
    cmd=("$RINGCACHE" -l 127.0.0.1 -p "$PORT" -t "$threads" -m 1024 "$@")
  fi
  taskset -c "$cpus" "${cmd[@]}" >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "$kind exited before listening:" >&2; cat "$TMP/server.log" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
    sleep 0.05
  done
  echo "$kind did not listen on $PORT within 30 s" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  timeout 30 tail --pid="$SERVER_PID" -f /dev/null || kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
