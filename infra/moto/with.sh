#!/usr/bin/env bash
# Run a command with one moto server for all of it: infra/moto/serve.py (the pinned venv's,
# installed by venv.sh) on a free loopback port, named to the tests in
# CONVEYOR_TEST_AWS_ENDPOINT, stopped when the command ends. Without this, each test process
# starts a server of its own (nextest runs every test in a process of its own).
# Usage: infra/moto/with.sh COMMAND [ARGS...]. With CONVEYOR_TEST_AWS_ENDPOINT already set (an
# emulator running elsewhere, such as LocalStack), it only runs the command.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${CONVEYOR_TEST_AWS_ENDPOINT:-}" ]; then
  exec "$@"
fi
"$here/venv.sh"
venv="${CONVEYOR_CACHE:-$HOME/.cache}/conveyor-venv"
port=$("$venv/bin/python3" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$venv/bin/python3" "$here/serve.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true; wait $moto 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    break
  fi
  kill -0 $moto 2>/dev/null || { cat "$log" >&2; echo "infra/moto/with.sh: moto did not start" >&2; exit 1; }
  sleep 0.1
done
status=0
CONVEYOR_TEST_AWS_ENDPOINT="http://127.0.0.1:$port" "$@" || status=$?
exit $status
