#!/usr/bin/env bash
# The one test command: installs the test peers, then runs format, lint, unit
# tests, builds the phone and runs the end-to-end tests against Kamailio and
# SIPp. Exits non-zero on the first failure. CI runs this (.ci/run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
export PYTHON="$PY"

step() { printf '\n==== %s\n' "$*"; }

step "install test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "cargo build -p microsip"
cargo build -p microsip

step "end-to-end tests (tests/e2e)"
export MICROSIP_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/microsip"
export PYTHONDONTWRITEBYTECODE=1
"$PY" -m pytest -x -q -p no:cacheprovider --durations=20 tests/e2e
