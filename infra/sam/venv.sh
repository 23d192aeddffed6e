#!/usr/bin/env bash
# The deploy tools (requirements.txt beside this file: SAM CLI, cargo-lambda) in a venv at
# ${CONVEYOR_CACHE:-~/.cache}/conveyor-sam. Installs on first use and again whenever
# requirements.txt changes (a stamp in the venv holds its digest); otherwise returns at once.
# Prints nothing but errors; the tools are then in "$venv/bin" (`make print-sam-bin`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CONVEYOR_CACHE:-$HOME/.cache}/conveyor-sam"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ -x "$venv/bin/sam" ] && [ -x "$venv/bin/cargo-lambda" ] \
  && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "infra/sam/venv.sh: installing SAM CLI and cargo-lambda into $venv" >&2
rm -rf "$venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3-venv python3-pip
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$venv/.requirements"
