# The project's two commands: `make run` and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conveyor-target

.PHONY: run test test-aws-endpoint bench lint

run:
	cargo run --release -p local --bin conveyor

test: lint
	cargo test --workspace --all-targets

# The AWS adapters' tests again, on the emulator at CONVEYOR_TEST_AWS_ENDPOINT (LocalStack in CI).
test-aws-endpoint:
	cargo test -p shared --test contract -- aws:: aws_flow::
	cargo test -p e2e --test e2e -- aws_backend::

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo run --release -p local --bin conveyor -- bench --jobs 10000 --celery
