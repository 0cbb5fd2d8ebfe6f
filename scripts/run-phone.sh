#!/usr/bin/env bash
# Installs what the phone needs on Debian 12 (a C compiler, pkg-config, libopus and
# libasound for sound cards)
# and starts it.
# Any argument is passed to the phone, e.g. scripts/run-phone.sh --ini my.ini
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in pkg-config gcc libopus-dev libasound2-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q " installed$" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
cargo build --release -p microsip
exec target/release/microsip "$@"
