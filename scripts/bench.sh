#!/usr/bin/env bash
# Benchmarks (prints numbers; not part of the test suite). Needs the test peers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
command -v hyperfine >/dev/null 2>&1 || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hyperfine
}
cargo build --release -p microsip -p microsip-control --examples --bins
scripts/build-small.sh  # the small static build, measured next to the default one
python3 bench/registration_control.py
python3 bench/calls.py
python3 bench/integrations.py
python3 bench/codec_calls.py
python3 bench/srtp_calls.py  # CPU per call with SRTP vs clear (50 calls, microsip and baresip); MICROSIP_BIN_BEFORE=OLD_BINARY adds the size difference
python3 bench/pesq_loss.py
python3 bench/control_under_load.py  # MICROSIP_BIN_BEFORE=OLD_BINARY adds a row for it
python3 bench/startup.py
python3 bench/connections.py
python3 bench/tls.py  # TLS vs UDP: start -> registered, register round trip, idle RSS
python3 bench/http_api.py  # (not http.py: that name would hide Python's http module) MICROSIP_BEFORE_BIN=OLD_BINARY adds its idle RSS
python3 bench/nat.py  # behind a MASQUERADE NAT: STUN round trip, registration and call setup with and without STUN (root)
python3 bench/soak.py
python3 bench/dbus_idle.py  # idle RSS without/with D-Bus, Status over D-Bus vs the socket
python3 bench/ws_media.py  # live call audio over WebSocket: latency both ways (root: RTP capture), CPU per streamed call, 100 calls streamed
python3 bench/web_page.py  # the web page: bytes and load time in chromium
cargo bench -p microsip-media --bench codecs
