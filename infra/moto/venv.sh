#!/usr/bin/env bash
# The test suite's AWS emulator: a venv with moto pinned whole (requirements.txt beside this
# file), at ${CONVEYOR_CACHE:-~/.cache}/conveyor-venv. Installs on first use and again whenever
# requirements.txt changes (a stamp in the venv holds its digest); otherwise returns at once.
# The suite runs this venv's Python with serve.py, never a moto_server found on the PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CONVEYOR_CACHE:-$HOME/.cache}/conveyor-venv"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ -x "$venv/bin/python3" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "infra/moto/venv.sh: installing the pinned emulator into $venv" >&2
rm -rf "$venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3-venv python3-pip
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$venv/.requirements"
