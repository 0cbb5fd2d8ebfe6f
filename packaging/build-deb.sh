#!/usr/bin/env bash
# Builds a .deb of the phone with dpkg-deb, offline: the binary, the .desktop file,
# the systemd user unit, the man page and the completions, laid out by install.sh
# (--prefix /usr --destdir STAGE).
#
#   packaging/build-deb.sh [--bin FILE] [--out DIR]
#
#   --bin   the binary to package (default: target/release/microsip, built when
#           missing)
#   --out   where the .deb goes (default: target/deb)
# Prints the .deb's path.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=""
OUT="$REPO/target/deb"
die() { printf 'build-deb.sh: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin) [ $# -ge 2 ] || die "--bin needs a file"; BIN="$2"; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT="$2"; shift ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
command -v dpkg-deb >/dev/null 2>&1 || die "needs dpkg-deb (dpkg)"

VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml")"
[ -n "$VERSION" ] || die "no version in Cargo.toml"
ARCH="$(dpkg --print-architecture)"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
args=(--prefix /usr --destdir "$STAGE")
[ -n "$BIN" ] && args+=(--bin "$BIN")
"$REPO/packaging/install.sh" "${args[@]}" 2>/dev/null

chmod 0755 "$STAGE"
# No debugging symbols in the package (Debian strips its binaries too).
if command -v strip >/dev/null 2>&1; then
  strip --strip-unneeded "$STAGE/usr/bin/microsip"
fi

# Dependencies from the libraries the binary links.
depends=()
needed="$(readelf -d "$STAGE/usr/bin/microsip" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')"
for lib in $needed; do
  case "$lib" in
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) dep="libc6" ;;
    libgcc_s.so.*) dep="libgcc-s1" ;;
    libasound.so.*) dep="libasound2" ;;
    libopus.so.*) dep="libopus0" ;;
    *) dep="" ;;
  esac
  if [ -n "$dep" ] && [[ " ${depends[*]-} " != *" $dep "* ]]; then
    depends+=("$dep")
  fi
done
depends_line="$(IFS=,; echo "${depends[*]-}" | sed 's/,/, /g')"

mkdir -p "$STAGE/DEBIAN" "$STAGE/usr/share/doc/microsip"
cat > "$STAGE/usr/share/doc/microsip/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: microsip-rs
License: GPL-2.0-or-later
COPYRIGHT
size_kb="$(du -sk "$STAGE/usr" | cut -f1)"
{
  echo "Package: microsip"
  echo "Version: $VERSION"
  echo "Architecture: $ARCH"
  echo "Maintainer: microsip-rs developers <microsip-rs@localhost>"
  echo "Installed-Size: $size_kb"
  [ -n "$depends_line" ] && echo "Depends: $depends_line"
  echo "Recommends: xdg-utils"
  echo "Section: comm"
  echo "Priority: optional"
  echo "Description: MicroSIP-compatible SIP softphone with a real API"
  echo " A SIP softphone for Linux that reads MicroSIP's ini, takes its command"
  echo " line, DDE verbs and /x: forms, and is driven over a local socket, D-Bus"
  echo " (org.microsip.Phone1) and the desktop's tel:, sip:, sips: and callto: links."
} > "$STAGE/DEBIAN/control"

mkdir -p "$OUT"
DEB="$OUT/microsip_${VERSION}_${ARCH}.deb"
dpkg-deb --build --root-owner-group -Zgzip -z6 "$STAGE" "$DEB" >/dev/null
echo "$DEB"
