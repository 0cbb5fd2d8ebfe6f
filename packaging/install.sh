#!/usr/bin/env bash
# Installs the phone: the binary, the .desktop file (handler of tel:, sip:, sips:
# and callto: links), the systemd user unit, the man page and the bash, zsh and fish
# completions (both made by the binary itself: `microsip man`,
# `microsip completions SHELL`).
#
#   packaging/install.sh [--user] [--prefix DIR] [--destdir DIR] [--bin FILE]
#                        [--set-default] [--uninstall]
#
#   (system)   PREFIX=/usr/local: $PREFIX/bin, $PREFIX/share/{applications,man,...},
#              $PREFIX/lib/systemd/user
#   --user     PREFIX=~/.local: ~/.local/bin, $XDG_DATA_HOME/{applications,man,...},
#              $XDG_CONFIG_HOME/systemd/user
#   --prefix   another prefix (PREFIX=... in the environment works too)
#   --destdir  stage everything under this folder (packaging; nothing is registered)
#   --bin      the binary to install (default: target/release/microsip, built with
#              `cargo build --release` when missing and cargo is there)
#   --set-default  make microsip the default handler of the four link types
#              (xdg-mime; the user's mimeapps.list)
#   --uninstall    remove what an install with the same options put there
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$REPO/packaging"
MODE=system
PREFIX="${PREFIX:-}"
DESTDIR="${DESTDIR:-}"
BIN=""
SET_DEFAULT=0
UNINSTALL=0
SCHEMES=(tel sip sips callto)

die() { printf 'install.sh: %s\n' "$*" >&2; exit 2; }
say() { printf 'install.sh: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --user) MODE=user ;;
    --system) MODE=system ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX="$2"; shift ;;
    --prefix=*) PREFIX="${1#*=}" ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a folder"; DESTDIR="$2"; shift ;;
    --destdir=*) DESTDIR="${1#*=}" ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a file"; BIN="$2"; shift ;;
    --bin=*) BIN="${1#*=}" ;;
    --set-default) SET_DEFAULT=1 ;;
    --uninstall) UNINSTALL=1 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

if [ "$MODE" = user ]; then
  [ -n "${HOME:-}" ] || die "--user needs HOME"
  PREFIX="${PREFIX:-$HOME/.local}"
  DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
  UNITS="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  BASH_DIR="$DATA/bash-completion/completions"
  ZSH_DIR="$DATA/zsh/site-functions"
  FISH_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions"
  MAN_DIR="$DATA/man/man1"
  APPS="$DATA/applications"
else
  PREFIX="${PREFIX:-/usr/local}"
  DATA="$PREFIX/share"
  UNITS="$PREFIX/lib/systemd/user"
  BASH_DIR="$DATA/bash-completion/completions"
  # Debian's zsh reads vendor-completions under /usr, site-functions elsewhere.
  if [ "$PREFIX" = /usr ]; then ZSH_DIR="$DATA/zsh/vendor-completions"; else ZSH_DIR="$DATA/zsh/site-functions"; fi
  FISH_DIR="$DATA/fish/vendor_completions.d"
  MAN_DIR="$DATA/man/man1"
  APPS="$DATA/applications"
fi
case "$PREFIX" in /*) ;; *) die "the prefix must be an absolute path: $PREFIX" ;; esac
BINDIR="$PREFIX/bin"

TARGETS=(
  "$BINDIR/microsip"
  "$APPS/microsip.desktop"
  "$UNITS/microsip.service"
  "$MAN_DIR/microsip.1.gz"
  "$BASH_DIR/microsip"
  "$ZSH_DIR/_microsip"
  "$FISH_DIR/microsip.fish"
)

if [ "$UNINSTALL" = 1 ]; then
  for t in "${TARGETS[@]}"; do
    if [ -e "$DESTDIR$t" ] || [ -L "$DESTDIR$t" ]; then
      rm -f "$DESTDIR$t"
      say "removed $DESTDIR$t"
    fi
  done
  exit 0
fi

if [ -z "$BIN" ]; then
  BIN="$REPO/target/release/microsip"
  if [ ! -x "$BIN" ]; then
    command -v cargo >/dev/null 2>&1 || die "no $BIN and no cargo to build it: give --bin FILE"
    say "building the release binary (cargo build --release -p microsip)"
    (cd "$REPO" && cargo build --release -p microsip)
  fi
fi
[ -x "$BIN" ] || die "not an executable: $BIN"

# The generated files, made by the binary being installed.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$BIN" man > "$WORK/microsip.1"
gzip -9n < "$WORK/microsip.1" > "$WORK/microsip.1.gz"
for shell in bash zsh fish; do
  "$BIN" completions "$shell" > "$WORK/completion.$shell"
  [ -s "$WORK/completion.$shell" ] || die "$BIN made an empty $shell completion"
done
sed "s|@BINDIR@|$BINDIR|g" "$HERE/microsip.service.in" > "$WORK/microsip.service"

put() { # put MODE SOURCE TARGET
  install -D -m "$1" "$2" "$DESTDIR$3"
  say "installed $DESTDIR$3"
}
put 0755 "$BIN" "$BINDIR/microsip"
put 0644 "$HERE/microsip.desktop" "$APPS/microsip.desktop"
put 0644 "$WORK/microsip.service" "$UNITS/microsip.service"
put 0644 "$WORK/microsip.1.gz" "$MAN_DIR/microsip.1.gz"
put 0644 "$WORK/completion.bash" "$BASH_DIR/microsip"
put 0644 "$WORK/completion.zsh" "$ZSH_DIR/_microsip"
put 0644 "$WORK/completion.fish" "$FISH_DIR/microsip.fish"

# Registering is for a real install, not a staged one.
if [ -z "$DESTDIR" ]; then
  if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$APPS" 2>/dev/null || true
  fi
  if [ "$SET_DEFAULT" = 1 ]; then
    command -v xdg-mime >/dev/null 2>&1 || die "--set-default needs xdg-mime (xdg-utils)"
    for scheme in "${SCHEMES[@]}"; do
      xdg-mime default microsip.desktop "x-scheme-handler/$scheme"
    done
    say "microsip is the default handler of ${SCHEMES[*]} links"
  fi
  if [ "$MODE" = user ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --user daemon-reload 2>/dev/null || true
  fi
  case ":$PATH:" in
    *":$BINDIR:"*) ;;
    *) say "note: $BINDIR is not on PATH; the .desktop file runs 'microsip' from PATH" ;;
  esac
  say "start it at login with: systemctl --user enable --now microsip"
fi
