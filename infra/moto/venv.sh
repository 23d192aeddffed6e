#!/usr/bin/env bash
# The test suite's AWS emulator: a venv with moto pinned whole (requirements.txt beside this
# file), at ${CONVEYOR_CACHE:-~/.cache}/conveyor-venv (infra/venv.sh: installed on first use and
# whenever requirements.txt changes). The suite runs this venv's Python with serve.py, never a
# moto_server found on the PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../venv.sh" conveyor-venv "$here/requirements.txt" python3
