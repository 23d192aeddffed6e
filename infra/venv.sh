#!/usr/bin/env bash
# A pinned Python venv at ${CONVEYOR_CACHE:-~/.cache}/NAME, from REQUIREMENTS (a pip
# requirements file): installed on first use, and again whenever REQUIREMENTS changes (a stamp in
# the venv holds its digest) or one of the venv's BINARIES is missing; otherwise returns at once.
# Prints nothing but errors, and a line when it installs.
# Usage: infra/venv.sh NAME REQUIREMENTS BINARY...
set -euo pipefail
name="$1" requirements="$2"
shift 2
venv="${CONVEYOR_CACHE:-$HOME/.cache}/$name"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
ready=yes
for binary in "$@"; do
  [ -x "$venv/bin/$binary" ] || ready=no
done
if [ "$ready" = yes ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "infra/venv.sh: installing $requirements into $venv" >&2
rm -rf "$venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3-venv python3-pip
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
echo "$want" > "$venv/.requirements"
