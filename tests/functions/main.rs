//! The Lambda functions as Lambda runs them. Each shipped binary (the release build `cargo
//! lambda build` makes, found under `$CONVEYOR_TEST_FUNCTIONS/<name>/bootstrap`) is started
//! under cargo-lambda's Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`)
//! and invoked with events in the shapes AWS sends them: AWS's documented samples (the
//! `aws_lambda_events` crate's fixtures), with this test's values set in them. The functions
//! run against the suite's AWS emulator, and each invocation's effect is read back from the
//! table, the queues and the schedules. `make test-functions` builds the functions and runs
//! this.

#[path = "../support/aws.rs"]
mod aws;
mod harness;
mod http;
mod iam;
mod jobs;
#[path = "../../shared/tests/support/moto.rs"]
mod moto;
mod schedules;
#[path = "../support/template.rs"]
mod template;
mod user_function;
mod ws;
