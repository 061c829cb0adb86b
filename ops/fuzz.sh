#!/usr/bin/env bash
# Runs every cargo-fuzz target of the engine (engine/core/fuzz) for SECONDS each (default 20),
# starting from the committed corpus (engine/core/fuzz/corpus/<target>, read only here; new
# inputs go to a scratch directory). Installs cargo-fuzz if it is missing. The stable
# toolchain builds the targets (RUSTC_BOOTSTRAP lets it take the sanitizer flags).
# A crash stops the run with the fuzzer's report and the input under
# engine/core/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../engine/core/fuzz"
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in parse shard restore; do
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
    tail -n 60 "$scratch/$target.log" >&2
    echo "fuzz: $target failed; the input is under engine/core/fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$scratch/$target.log"
done
