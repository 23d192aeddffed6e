#!/usr/bin/env bash
# The deploy tools (requirements.txt beside this file: SAM CLI, cargo-lambda) in a venv at
# ${CONVEYOR_CACHE:-~/.cache}/conveyor-sam (infra/venv.sh: installed on first use and whenever
# requirements.txt changes). The tools are then in that venv's bin.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../venv.sh" conveyor-sam "$here/requirements.txt" sam cargo-lambda
