#!/usr/bin/env bash
# `make deploy` and `make destroy` (README, "Deploy to AWS").
#   infra/deploy.sh deploy   STACK=… REGION=… [ARCH=arm64|x86_64] [ALARM_TOPIC=arn:…]
#   infra/deploy.sh check    STACK=… REGION=… [ARCH=arm64|x86_64]
#   infra/deploy.sh destroy  STACK=… REGION=…
# Every setting is checked before anything runs, and the account's Lambda concurrency is
# compared with what the stack may take (a note if it is short; `check` stops there); a deploy
# then builds the functions with cargo-lambda for ARCH (sam build), deploys them for the same
# ARCH, prints the stack's outputs and the command that makes the first admin key.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-}"
STACK="${STACK:-}"
REGION="${REGION:-${AWS_REGION:-${AWS_DEFAULT_REGION:-}}}"
ARCH="${ARCH:-arm64}"
ALARM_TOPIC="${ALARM_TOPIC:-}"
# Queue names are the stack's name, a dash and the type's queue (`conveyor-bulk-dlq`, 17 at most):
# CONVEYOR_QUEUE_PREFIX is limited to 40 characters so that every name stays within SQS's 80.
MAX_STACK=39

refuse() {
  echo "make $([ "$action" = check ] && echo deploy-check || echo "$action"): $*" >&2
  exit 2
}

case "$action" in
  deploy | check | destroy) ;;
  *) refuse "infra/deploy.sh deploy|check|destroy (STACK=… REGION=… [ARCH=arm64|x86_64])" ;;
esac
[ -n "$STACK" ] || refuse "STACK is not set: the CloudFormation stack's name, e.g. STACK=conveyor-prod"
if [ "${#STACK}" -gt "$MAX_STACK" ]; then
  refuse "STACK=$STACK is ${#STACK} characters; at most $MAX_STACK (its queues are named \"$STACK-<type>\", and that prefix may be 40 characters)"
fi
[[ "$STACK" =~ ^[A-Za-z][A-Za-z0-9-]*$ ]] \
  || refuse "STACK=$STACK: a stack name starts with a letter and holds only letters, digits and dashes"
[ -n "$REGION" ] || refuse "REGION is not set (or AWS_REGION): the AWS region to deploy to, e.g. REGION=eu-west-1"
case "$ARCH" in
  arm64) target=aarch64-unknown-linux-gnu ;;
  x86_64) target=x86_64-unknown-linux-gnu ;;
  *) refuse "ARCH=$ARCH: arm64 or x86_64" ;;
esac

infra/sam/venv.sh
sam_bin="${CONVEYOR_CACHE:-$HOME/.cache}/conveyor-sam/bin"
export PATH="$sam_bin:$PATH" SAM_CLI_TELEMETRY=0 SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conveyor-target}"

if [ "$action" = destroy ]; then
  sam delete --stack-name "$STACK" --region "$REGION" --no-prompts
  echo "Stack $STACK deleted. Kept: its jobs table (DeletionPolicy Retain: delete it in the" \
    "DynamoDB console or with \`aws dynamodb delete-table\` once its data is no longer needed)."
  exit 0
fi

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  refuse "the Rust target $target is not installed: \`rustup target add $target\` (or ARCH=$( [ "$ARCH" = arm64 ] && echo x86_64 || echo arm64 ))"
fi

"$sam_bin/python3" infra/sam/concurrency.py "$REGION" template.yaml
if [ "$action" = check ]; then
  echo "make deploy STACK=$STACK REGION=$REGION ARCH=$ARCH: ready."
  exit 0
fi

overrides=("Architecture=$ARCH")
[ -z "$ALARM_TOPIC" ] || overrides+=("AlarmTopicArn=$ALARM_TOPIC")
build_dir=".aws-sam/build-$STACK"
sam build --template template.yaml --build-dir "$build_dir" --parameter-overrides "${overrides[@]}"
sam deploy --template-file "$build_dir/template.yaml" --stack-name "$STACK" --region "$REGION" \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --resolve-s3 \
  --no-fail-on-empty-changeset --parameter-overrides "${overrides[@]}"
sam list stack-outputs --stack-name "$STACK" --region "$REGION" --output table
table=$(sam list stack-outputs --stack-name "$STACK" --region "$REGION" --output json \
  | python3 -c 'import json, sys; print(next(o["OutputValue"] for o in json.load(sys.stdin) if o["OutputKey"] == "Table"))')
cat <<EOF

The first admin key (the command prints it once; keep it):

  CONVEYOR_BACKEND=aws CONVEYOR_TABLE=$table AWS_REGION=$REGION \\
    cargo run --release -p local --features aws -- keys create --tenant default --role admin --name first-admin

EOF
