//! Event translation: API Gateway HTTP requests (an axum `Router`), SQS batches and scheduled
//! events into domain calls. The Lambda binaries, `local/` and the tests all use these.

pub mod api;
#[cfg(feature = "lambda")]
pub mod api_gateway;
pub mod authorizer;
pub mod http;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod schedule;
pub mod sqs;
pub mod ws;
