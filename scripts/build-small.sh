#!/usr/bin/env bash
# Builds the small phone: one static binary (musl libc, libopus linked in, no shared
# library at all) without sound-card support, for headless use (intercoms, test rigs,
# call-centre automation: file:, tone: and null audio). It idles in about 3.2 MB of
# RSS with an account registered, against about 6 MB for the default build, which
# maps glibc, libm, libasound and libopus.
#
#   scripts/build-small.sh            # target/x86_64-unknown-linux-musl/small/microsip
#   scripts/build-small.sh --debug    # the same, unoptimised (what the tests run)
#
# Installs musl-tools and cmake (libopus is built from source for musl) and the
# Rust target x86_64-unknown-linux-musl when missing. Prints the binary's path last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=x86_64-unknown-linux-musl
profile=small  # Cargo.toml: the release profile optimised for size
cargo_profile=(--profile small)
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  cargo_profile=()
fi

need=()
for pkg in musl-tools cmake gcc; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q " installed$" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${need[@]}" >&2
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >&2
fi

# audiopus_sys links the system's libopus dynamically unless told otherwise; for
# musl it builds libopus from source with musl-gcc and links it statically.
LIBOPUS_STATIC=1 CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build "${cargo_profile[@]}" -p microsip --no-default-features --target "$TARGET" >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/$TARGET/$profile/microsip"
