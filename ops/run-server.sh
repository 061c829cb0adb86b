#!/usr/bin/env bash
# One command to run a node: installs missing system packages, builds in release mode,
# and starts ringcache on 127.0.0.1:11211. Extra arguments go to ringcache
# (memcached's flags: -p, -l, -m, -c, -t, -I, -M, -C, -F, -v; see `ringcache --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install-deps.sh
cargo build --release -p ringcache-server --bin ringcache
exec ./target/release/ringcache -l 127.0.0.1 -p 11211 "$@"
