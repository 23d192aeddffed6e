# The project's two commands: `make run` and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conveyor-target

.PHONY: run test test-aws-endpoint test-api-schema test-browser bench lint

run:
	cargo run --release -p local --bin conveyor

test: lint
	cargo test --workspace --all-targets

# The AWS adapters' tests again, on the emulator at CONVEYOR_TEST_AWS_ENDPOINT (LocalStack in CI),
# then the end-to-end suite with every runtime on CONVEYOR_BACKEND=aws there. Not run there:
# what has no AWS side (the embedded store's files, its in-process harnesses, the template and
# configuration checks), the blocked-threads test (it times the runtime's threads, not the
# backend), and the 260-job SIGKILL test, whose moment (jobs queued behind a half-done one)
# an emulator's slower submits never produce; exactly_once's SIGKILL test runs there.
AWS_E2E_SKIP = --skip storage:: --skip maintenance:: --skip worker_entrypoint:: --skip template:: \
	--skip config:: --skip containment:: --skip crash_recovery::every_accepted_job_ends_exactly_once_across_a_sigkill

test-aws-endpoint:
	cargo test -p shared --test contract -- aws:: aws_flow:: live::
	CONVEYOR_TEST_E2E_BACKEND=aws cargo test -p e2e --test e2e -- $(AWS_E2E_SKIP)

# The running API fuzzed against its own OpenAPI description (schemathesis; see .ci/api-schema).
test-api-schema:
	bash .ci/api-schema

# The dashboard in headless Chromium (playwright-core; see .ci/browser); screenshots in
# $(CARGO_TARGET_DIR)/screenshots.
test-browser:
	bash .ci/browser

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo run --release -p local --bin conveyor -- bench --jobs 10000 --celery
