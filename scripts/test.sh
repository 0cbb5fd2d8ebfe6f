#!/usr/bin/env bash
# The one test command: installs the test peers, then runs format, lint, unit
# tests, a short run of every fuzz target (scripts/fuzz.sh), builds the phone and
# runs the end-to-end tests against Kamailio, SIPp and baresip. Exits non-zero on
# the first failure. CI runs this (.ci/run).
#
# The harness's own tests (tests/e2e/test_peers.py, test_call_peers.py,
# test_audio_tools.py: Kamailio's config, the SIPp scenarios and the audio measures
# checked against reference peers, without the phone) need no build: they run
# while the phone compiles (the compiler at low priority), and must pass too.
# Likewise the fuzz smoke run and the small static build run at the lowest priority
# while the phone's end-to-end tests run (those mostly wait on real-time audio);
# their output is printed, and their result checked, after the e2e tests.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
export PYTHON="$PY"
export PYTHONDONTWRITEBYTECODE=1
HARNESS=(tests/e2e/test_peers.py tests/e2e/test_call_peers.py tests/e2e/test_audio_tools.py)
PYTEST=("$PY" -m pytest -q -p no:cacheprovider --durations=15)

step() { printf '\n==== %s\n' "$*"; }

step "install test dependencies"
scripts/install-test-deps.sh

harness_log=$(mktemp)
background_log=$(mktemp)
small_path=$(mktemp)
harness_pid=""
background_pid=""
stop_group() {
  # Interrupt a background job's process group (pytest then tears down the peers it
  # started), give it 30 s, then kill the group.
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -INT -- "-$pid" 2>/dev/null || true
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
stop_background() {
  # On any exit: nothing started here outlives the script.
  stop_group "$harness_pid"
  stop_group "$background_pid"
  rm -f "$harness_log" "$background_log" "$small_path"
}
trap stop_background EXIT
step "harness tests (tests/e2e, peers only) started in the background"
set -m  # the harness run gets a process group of its own, stopped as one
"${PYTEST[@]}" -x "${HARNESS[@]}" >"$harness_log" 2>&1 &
harness_pid=$!
set +m

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
nice -n 15 cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
nice -n 15 cargo test --workspace

step "cargo build -p microsip"
nice -n 15 cargo build -p microsip

# The fuzz smoke run, then the small static build: in the background, at the
# lowest priority, while the e2e tests run. The small build's path goes to
# $small_path; an empty path means the musl target cannot be installed here.
fuzz_and_small_build() {
  echo "==== fuzz targets, 15 s each (scripts/fuzz.sh; fails on a crash)"
  # Without a sanitizer here (the build is much shorter; a panic is still a crash);
  # longer runs use AddressSanitizer (scripts/fuzz.sh's default).
  FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" nice -n 19 scripts/fuzz.sh all "${FUZZ_SECONDS:-15}"
  echo "==== the small static build (scripts/build-small.sh --debug)"
  local bin
  if bin=$(nice -n 19 scripts/build-small.sh --debug); then
    printf '%s' "$bin" >"$small_path"
  elif ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    # No way to fetch the musl target here: the small build cannot be tested, and
    # says so; every other test still runs.
    echo "WARNING: the Rust target x86_64-unknown-linux-musl cannot be installed;" \
         "the small build's tests are SKIPPED" >&2
  else
    echo "the small build failed" >&2
    return 1
  fi
}
step "fuzz smoke run and small static build started in the background"
set -m
fuzz_and_small_build >"$background_log" 2>&1 &
background_pid=$!
set +m

# Waits for a background job, prints its output, and ends the run if it failed.
finish_background() {
  local pid=$1 log=$2 what=$3 rc=0
  wait "$pid" || rc=$?
  cat "$log"
  if [ "$rc" -ne 0 ]; then
    echo "$what failed (exit $rc)" >&2
    exit "$rc"
  fi
}

step "harness tests (tests/e2e, peers only)"
finish_background "$harness_pid" "$harness_log" "harness tests"
harness_pid=""

step "end-to-end tests of the phone (tests/e2e)"
export MICROSIP_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/microsip"
ignore=()
for f in "${HARNESS[@]}"; do ignore+=(--ignore "$f"); done
"${PYTEST[@]}" -x "${ignore[@]}" tests/e2e

step "fuzz smoke run and small static build (from the background)"
finish_background "$background_pid" "$background_log" "fuzz smoke run or small build"
background_pid=""
small_bin=$(cat "$small_path")

if [ -n "$small_bin" ]; then
  step "end-to-end tests of the small static build ($small_bin)"
  # Registration through digest auth, calls with audio both ways, every codec
  # (libopus is linked in statically), the socket's permissions and peer check.
  MICROSIP_BIN="$small_bin" "${PYTEST[@]}" -x \
    tests/e2e/test_registration.py::test_registers_through_the_401_challenge \
    tests/e2e/test_registration.py::test_sha256_digest_registers \
    tests/e2e/test_registration.py::test_exit_unregisters_and_ends \
    tests/e2e/test_calls.py::test_we_call_baresip_and_it_hears_our_tone \
    tests/e2e/test_calls.py::test_baresip_calls_us_we_answer_and_hear_its_tone \
    tests/e2e/test_codecs.py::test_tone_crosses_each_codec \
    tests/e2e/test_cli.py::test_socket_modes \
    tests/e2e/test_cli.py::test_socket_refuses_another_user_even_root
fi
