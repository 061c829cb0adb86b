#!/usr/bin/env bash
# One command to run the whole test suite: installs what the tests need (Debian's
# memcached as the reference, pymemcache), then unit, property and whole-process tests,
# then clippy with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install-deps.sh --test
cargo test --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
