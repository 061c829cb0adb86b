#!/usr/bin/env bash
# A local replica group on loopback, for trying replication out.
#
#   ops/cluster.sh start [N]   build, then start N nodes (default 3); prints the client ports
#   ops/cluster.sh status      which nodes run, and their client ports
#   ops/cluster.sh stop        stop them cleanly (SIGTERM, then wait)
#
# Node i serves clients on 127.0.0.1:$((BASE + i)) and talks to its peers on
# 127.0.0.1:$((PEER_BASE + 100*i)) (+ shard). Data dirs, logs and the shared secret live
# under $RINGCACHE_CLUSTER_DIR (default: a directory under ${TMPDIR:-/tmp}). Extra
# arguments after N go to every node (for example -t 2 -m 256 --reads lease).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${RINGCACHE_CLUSTER_DIR:-${TMPDIR:-/tmp}/ringcache-cluster}"
BASE="${RINGCACHE_CLUSTER_PORT:-21210}"
PEER_BASE="${RINGCACHE_CLUSTER_PEER_PORT:-22000}"
BIN="${RINGCACHE_BIN:-./target/release/ringcache}"

client_port() { echo $((BASE + $1)); }

start() {
    local n="${1:-3}"
    shift || true
    if [ -n "$(ls "$DIR"/node*.pid 2>/dev/null)" ]; then
        echo "a cluster is already running in $DIR (ops/cluster.sh stop first)" >&2
        exit 1
    fi
    if [ "${RINGCACHE_BIN:-}" = "" ]; then
        cargo build --release -p ringcache-server --bin ringcache
    fi
    mkdir -p "$DIR"
    [ -f "$DIR/secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/secret"
    local peers=""
    for i in $(seq 1 "$n"); do
        peers="${peers:+$peers,}$i=127.0.0.1:$((PEER_BASE + 100 * i))"
    done
    for i in $(seq 1 "$n"); do
        mkdir -p "$DIR/node$i"
        "$BIN" -l 127.0.0.1 -p "$(client_port "$i")" --node-id "$i" --peers "$peers" \
            --data-dir "$DIR/node$i" --cluster-secret-file "$DIR/secret" "$@" \
            > "$DIR/node$i.log" 2>&1 &
        echo $! > "$DIR/node$i.pid"
    done
    for i in $(seq 1 "$n"); do
        for _ in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$(client_port "$i")") 2>/dev/null; then break; fi
            if ! kill -0 "$(cat "$DIR/node$i.pid")" 2>/dev/null; then
                echo "node $i did not start; its log:" >&2
                cat "$DIR/node$i.log" >&2
                exit 1
            fi
            sleep 0.1
        done
        echo "node $i: clients on 127.0.0.1:$(client_port "$i") (pid $(cat "$DIR/node$i.pid"), log $DIR/node$i.log)"
    done
}

status() {
    local any=0
    for pidfile in "$DIR"/node*.pid; do
        [ -e "$pidfile" ] || continue
        local i pid
        i="$(basename "$pidfile" .pid)"; i="${i#node}"
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            echo "node $i: running, pid $pid, clients on 127.0.0.1:$(client_port "$i")"
        else
            echo "node $i: not running"
        fi
        any=1
    done
    [ "$any" = 1 ] || echo "no cluster in $DIR"
}

stop() {
    for pidfile in "$DIR"/node*.pid; do
        [ -e "$pidfile" ] || continue
        kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    done
    for pidfile in "$DIR"/node*.pid; do
        [ -e "$pidfile" ] || continue
        local pid
        pid="$(cat "$pidfile")"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    echo "stopped (data in $DIR)"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    status) status ;;
    stop) stop ;;
    *) echo "usage: ops/cluster.sh start [N] [ringcache flags...] | status | stop" >&2; exit 64 ;;
esac
