#!/usr/bin/env bash
# Installs what the Celery + Redis baseline needs; safe to run again (does nothing when ready).
#   redis-server          Debian package, only if `redis-server` is not on PATH
#   a venv with Celery    at $CONVEYOR_BENCH_VENV (default ~/.cache/conveyor-bench/celery-venv),
#                         pinned by requirements.txt beside this file
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${CONVEYOR_BENCH_VENV:-$HOME/.cache/conveyor-bench/celery-venv}"
python="${PYTHON:-python3}"

if ! command -v redis-server >/dev/null 2>&1; then
    echo "setup: installing redis-server (apt)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: apt-get could not install redis-server" >&2
        exit 1
    fi
    command -v redis-server >/dev/null 2>&1 || { echo "setup: redis-server still missing after apt-get" >&2; exit 1; }
fi

if ! "$venv/bin/python" -c 'import celery, redis' >/dev/null 2>&1; then
    echo "setup: creating venv with Celery at $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    "$venv/bin/python" -c 'import celery, redis' || { echo "setup: celery does not import in $venv" >&2; exit 1; }
fi

echo "setup: ready: $(redis-server --version | cut -d' ' -f1-3), celery $("$venv/bin/python" -c 'import celery; print(celery.__version__)') in $venv" >&2
