#!/usr/bin/env bash
# One command to run the whole test suite: installs what the tests need (Debian's
# memcached as the reference, pymemcache), checks the core's boundary (no clock, no
# server runtime), then unit, property and whole-process tests (conformance, hostile
# clients, lifecycle, warm restart), clippy with warnings as errors, and a short run of
# every fuzz target (FUZZ_SECONDS each, default 20; 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install-deps.sh --test
./ops/check-core.sh
cargo test --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
if [ "${FUZZ_SECONDS:-20}" != "0" ]; then
  ./ops/fuzz.sh "${FUZZ_SECONDS:-20}"
fi
