#!/usr/bin/env bash
# Runs one fuzz target (fuzz/fuzz_targets/TARGET.rs) for SECONDS, or every target
# in turn with TARGET `all`. Exits non-zero when a target crashes (the input is
# left in fuzz/artifacts/TARGET/). New inputs go to fuzz/work/TARGET (not checked
# in); fuzz/corpus/TARGET holds the seeds and is only read.
#
#   scripts/fuzz.sh sip_reader 3600
#   scripts/fuzz.sh all 20
#
# cargo fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# them. FUZZ_SANITIZER (address by default; `none` is faster) is passed on.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ $# -ne 2 ]; then
  echo "usage: $0 TARGET|all SECONDS" >&2
  exit 2
fi
target=$1
seconds=$2
export RUSTC_BOOTSTRAP=1
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

if [ "$target" = all ]; then
  targets=$(cd fuzz && cargo fuzz list)
else
  targets=$target
fi

nice -n 10 cargo fuzz build "${sanitizer[@]}"
for t in $targets; do
  mkdir -p "fuzz/work/$t"
  echo "==== fuzz $t for ${seconds}s"
  # libFuzzer's progress lines (NEW, REDUCE, pulse) are left out.
  if ! nice -n 10 cargo fuzz run "${sanitizer[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 \
    > >(grep -E --line-buffered -v '^#[0-9]+\s+(NEW|REDUCE|pulse)') 2>&1; then
    echo "fuzz target $t FAILED (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
done
