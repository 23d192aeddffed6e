# The project's two commands: `make run` and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conveyor-target

.PHONY: run test bench lint

run:
	cargo run --release -p local --bin conveyor

test: lint
	cargo test --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo run --release -p local --bin conveyor -- bench --jobs 10000 --celery
