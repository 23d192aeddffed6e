# The project's two commands: `make run` and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conveyor-target

# Each binary is built and tested with the features it ships with, and each feature set is
# built once: the runtime (`conveyor`, the end-to-end suite's runtime, the shared crate's
# tests: `shared` with embedded, handlers and aws), and the Lambda functions (`shared` with
# lambda; the worker with handlers too). Building them in one cargo invocation would unify the
# features and test a set that nothing ships.
LAMBDAS := api authorizer maintenance notify scheduler stats ws
RUNTIME := --workspace $(addprefix --exclude ,$(LAMBDAS) worker)
FUNCTIONS := $(addprefix -p ,$(LAMBDAS))
NEXTEST := cargo nextest run --all-targets

.PHONY: print-runtime print-functions run test suite tools lint test-aws-endpoint test-api-schema test-browser build-runtime build-functions test-functions deploy deploy-check destroy bench

run:
	cargo run --release -p local --bin conveyor

# Everything on the embedded backend and on moto (one server for the whole run).
test: tools lint suite

# The tests alone (what `.ci/stress` repeats).
suite: tools
	infra/moto/with.sh $(NEXTEST) $(RUNTIME) -E 'not ($(AWS_ONLY)) & not ($(LAMBDA_RUN))'
	infra/moto/with.sh $(NEXTEST) $(FUNCTIONS)

# What the tests need, installed on first use: the pinned AWS emulator (infra/moto/venv.sh)
# and the test runner.
tools:
	@infra/moto/venv.sh
	@cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest

lint:
	cargo fmt --all -- --check
	cargo clippy $(RUNTIME) --all-targets -- -D warnings
	cargo clippy $(FUNCTIONS) --all-targets -- -D warnings
	cargo clippy -p worker --all-targets -- -D warnings

# The AWS adapters' tests again, on the emulator at CONVEYOR_TEST_AWS_ENDPOINT (LocalStack in
# CI), then the end-to-end suite with every runtime on CONVEYOR_BACKEND=aws there, then the api
# function. The same builds as `make test`: nothing is compiled again. Left out of the
# end-to-end pass, by name: what has no AWS side (the embedded store's files and data
# directory, its in-process harnesses, the local gateway's own socket handling, the template
# and configuration checks), the blocked-threads test (it times the runtime's threads, not the
# backend), and the 260-job SIGKILL test, whose moment (jobs queued behind a half-done one) an
# emulator's slower submits never produce; exactly_once's SIGKILL test runs there. And the
# thousand-job move between backends, which names its backends itself (embedded, and the suite's
# emulator: moto in `make test`), and would only repeat that against LocalStack, slowly. And the
# external types' runs in the pass (on SQLite and moto in `make test`; the AWS one is run alone
# before it, AWS_EXTERNAL).
# Tests that need LocalStack's concurrent DynamoDB (moto serves one request at a time: too slow
# for them); `make test-aws-endpoint` runs them first and alone (they keep the emulator busy,
# and an emulator holding the hundreds of tables and streams the other tests leave behind
# serves them several times slower).
AWS_ONLY := binary(e2e) & test(/^at_scale::/)

# The external types' run on the AWS backend (a real Python handler process, a hundred jobs
# and more) runs next, alone too: beside the others it slowed the emulator past their limits.
AWS_EXTERNAL := binary(e2e) & test(=external::external_types_run_through_a_python_handler_on_the_aws_backend)

AWS_E2E_SKIP := test(/^storage::/) | test(/^maintenance::/) | test(/^worker_entrypoint::/) \
	| test(/^template::/) | test(/^config::/) | test(/^containment::/) \
	| test(=crash_recovery::every_accepted_job_ends_exactly_once_across_a_sigkill) \
	| test(=auth::the_command_line_manages_keys_in_the_data_directory) \
	| test(=live::a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving) \
	| test(=transfer::a_thousand_jobs_exported_from_embedded_list_and_count_the_same_on_aws) \
	| test(/^external::/)

test-aws-endpoint: tools
	@test -n "$$CONVEYOR_TEST_AWS_ENDPOINT" || { echo "set CONVEYOR_TEST_AWS_ENDPOINT" >&2; exit 1; }
	CONVEYOR_TEST_E2E_BACKEND=aws $(NEXTEST) $(RUNTIME) -E '$(AWS_ONLY)'
	CONVEYOR_TEST_E2E_BACKEND=aws $(NEXTEST) $(RUNTIME) -E '$(AWS_EXTERNAL)'
	$(NEXTEST) $(RUNTIME) -E 'binary(contract) & (test(/^aws::/) | test(/^aws_flow::/) | test(/^aws_scale::/) | test(/^live::/))'
	CONVEYOR_TEST_E2E_BACKEND=aws $(NEXTEST) $(RUNTIME) -E 'binary(e2e) & not ($(AWS_E2E_SKIP)) & not ($(AWS_ONLY))'
	$(NEXTEST) $(FUNCTIONS)

# The Lambda functions as shipped, run as Lambda runs them (tests/functions): the release
# builds `sam build` makes (cargo-lambda in each function's directory, the size-first profile
# of functions/.cargo), each started under cargo-lambda's Lambda Runtime API emulator and
# invoked with events in AWS's documented shapes, on moto, which stands in for IAM: each function
# may take only the table actions the template grants it. Once they have all run, one more test
# (ignored in the first pass) checks that each asked for every action it is granted, so that a
# grant nothing uses fails too. The deploy tools install on first use (infra/sam/venv.sh).
LAMBDA_RUN := binary(functions)
SAM_BIN := $(or $(CONVEYOR_CACHE),$(HOME)/.cache)/conveyor-sam/bin
LAMBDA_BUILD := PATH="$(SAM_BIN):$$PATH" cargo lambda build --release

build-functions:
	@infra/sam/venv.sh
	cd functions/api && $(LAMBDA_BUILD) $(FUNCTIONS)
	cd functions/worker && $(LAMBDA_BUILD)

test-functions: tools build-functions
	CONVEYOR_TEST_FUNCTIONS=$(CARGO_TARGET_DIR)/lambda CONVEYOR_TEST_CARGO_LAMBDA=$(SAM_BIN)/cargo-lambda \
	  infra/moto/with.sh sh -c "$(NEXTEST) $(RUNTIME) -E '$(LAMBDA_RUN)' && \
	    $(NEXTEST) $(RUNTIME) --run-ignored only -E '$(LAMBDA_RUN)'"

# Deploy to AWS, or take the stack down (README, "Deploy to AWS"; infra/deploy.sh):
#   make deploy STACK=conveyor-prod REGION=eu-west-1 [ARCH=arm64|x86_64] [ALARM_TOPIC=arn:…]
#   make deploy-check STACK=… REGION=… [ARCH=…]: every check a deploy makes first, and no more
#   make destroy STACK=conveyor-prod REGION=eu-west-1
deploy-check:
	@STACK="$(STACK)" REGION="$(REGION)" ARCH="$(ARCH)" infra/deploy.sh check
deploy destroy:
	@STACK="$(STACK)" REGION="$(REGION)" ARCH="$(ARCH)" ALARM_TOPIC="$(ALARM_TOPIC)" infra/deploy.sh $@

# The runtime binary as the tests build it (no other feature set, so nothing is compiled
# twice): $(CARGO_TARGET_DIR)/debug/conveyor.
build-runtime:
	cargo build -q $(RUNTIME) --all-targets

# The running API fuzzed against its own OpenAPI description (schemathesis; see .ci/api-schema).
test-api-schema: build-runtime
	bash .ci/api-schema

# The dashboard in headless Chromium (playwright-core; see .ci/browser); screenshots in
# $(CARGO_TARGET_DIR)/screenshots.
test-browser: build-runtime
	bash .ci/browser

bench:
	cargo run --release -p local --bin conveyor -- bench --jobs 10000 --celery

# The package selections, for scripts (.ci/stress).
print-runtime:
	@echo $(RUNTIME)
print-functions:
	@echo $(FUNCTIONS)
