#!/usr/bin/env bash
# Installs the test peers and tools on Debian 12 (root, or a user with sudo):
# SIPp, baresip, Kamailio (with its presence modules), sipsak, tshark, sox,
# espeak-ng, PulseAudio, the build dependencies, and the Python packages of the
# end-to-end tests.
# Idempotent and fast when everything is present (no apt, no pip call then).
#
#   scripts/install-test-deps.sh          # uses `python3`; PYTHON=... to choose
set -euo pipefail

PY="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(
  sip-tester baresip-core kamailio kamailio-presence-modules kamailio-tls-modules sipsak tshark sox
  libsox-fmt-all espeak-ng openssl
  libasound2-dev libopus-dev cmake pkg-config python3-pip python3-venv
  # sound devices without a sound card: a private PulseAudio server with null
  # sinks, parec/paplay/pactl, and ALSA's pulse plugin (ALSA's `default` device)
  pulseaudio pulseaudio-utils libasound2-plugins
  # to build the `pesq` wheel from source on Debian's Python
  python3-dev gcc
  # libFuzzer (C++) for the fuzz targets (scripts/fuzz.sh)
  g++
  # the D-Bus and desktop tests: a private session bus (dbus-daemon), busctl
  # (systemd), gdbus (D-Bus error names), xdg-open and xdg-mime, dpkg-deb, and the
  # shells whose completions are checked
  dbus-daemon dbus-bin systemd libglib2.0-bin xdg-utils dpkg zsh fish
  # the web page's test (tests/e2e/test_web.py): Debian's chromium, driven by
  # playwright-core from npm (never a downloaded browser); Node.js below
  chromium
  # the NAT tests (tests/e2e/test_nat.py): the routers' MASQUERADE and a STUN
  # server (coturn's turnserver --stun-only)
  iptables coturn
)
PY_PACKAGES=(pytest numpy pesq jeepney)

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -E "$@"
  else
    log "need root (or sudo) for: $*"
    return 1
  fi
}

# ---- Debian packages -------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    *" installed") ;;
    *) missing+=("$p") ;;
  esac
done
# The binaries the tests call, in case a package is half there.
for b in sipp baresip kamailio kamcmd sipsak tshark sox espeak-ng cmake pkg-config \
         pulseaudio parec paplay pactl dbus-daemon busctl gdbus xdg-open dpkg-deb \
         chromium iptables turnserver; do
  if ! command -v "$b" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$b" ]; then
    missing+=("(binary $b)")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "missing: ${missing[*]}; installing with apt-get"
  # tshark asks whether non-root users may capture: answer no, without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" \
    | as_root debconf-set-selections || true
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${APT_PACKAGES[@]}"
else
  log "Debian packages present"
fi

for b in sipp kamailio kamcmd sipsak; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || { log "$b still missing"; exit 1; }
done

# Node.js and npm: a machine may already have them from elsewhere (NodeSource's
# nodejs carries npm, and conflicts with Debian's npm package): only when a
# command is missing are Debian's packages installed.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node or npm missing; installing Debian's nodejs and npm"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    nodejs npm
fi

# ---- Python packages -------------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || { log "$PY not found"; exit 1; }

# Debian's own Python refuses a plain `pip install` (PEP 668: EXTERNALLY-MANAGED);
# a pyenv or venv Python does not need the override.
PIP_EXTRA=()
if "$PY" - <<'PYEOF'
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if os.path.exists(marker) and sys.prefix == sys.base_prefix else 1)
PYEOF
then
  PIP_EXTRA=(--break-system-packages)
fi

pip_install() {
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    log "$PY has no pip (install python3-pip)"
    return 1
  fi
  "$PY" -m pip install -q --disable-pip-version-check "${PIP_EXTRA[@]}" "$@"
}

if "$PY" -c 'import pytest, numpy' >/dev/null 2>&1; then
  log "pytest and numpy present ($PY)"
else
  log "installing pytest numpy for $PY"
  pip_install pytest numpy
fi

# jeepney (pure Python D-Bus) for the fake notification server of the desktop tests.
if "$PY" -c 'import jeepney' >/dev/null 2>&1; then
  log "jeepney present"
else
  log "installing jeepney for $PY"
  pip_install jeepney
fi

# pesq (ITU-T P.862, for the audio tests) builds from source; a failure here
# is reported but does not block the registration tests.
if "$PY" -c 'import pesq' >/dev/null 2>&1; then
  log "pesq present"
else
  log "installing pesq for $PY"
  pip_install pesq || log "WARNING: pesq did not install; audio-quality tests will fail"
fi

# websockets and schemathesis: the HTTP API's tests (tests/e2e/test_http.py).
if "$PY" -c 'import websockets, schemathesis' >/dev/null 2>&1; then
  log "websockets and schemathesis present"
else
  log "installing websockets schemathesis for $PY"
  pip_install websockets schemathesis
fi

# playwright-core (pinned by tests/e2e/web/package-lock.json) for the web page's
# test; it drives /usr/bin/chromium and never downloads a browser.
WEB_TESTS="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/web"
if [ -f "$WEB_TESTS/node_modules/playwright-core/package.json" ]; then
  log "playwright-core present"
else
  log "installing playwright-core in $WEB_TESTS"
  (cd "$WEB_TESTS" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

"$PY" -c 'import pytest, numpy, websockets, schemathesis' || { log "pytest/numpy/websockets/schemathesis not importable by $PY"; exit 1; }
log "done"
