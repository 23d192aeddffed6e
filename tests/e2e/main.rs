//! Conveyor's end-to-end suite, one test binary. Each test starts the real local runtime as a
//! process of its own (own data directory, own port) and talks to it over HTTP, with scripted
//! HTTP targets on 127.0.0.1; `worker_entrypoint` drives the SQS worker entrypoint in-process.

#[path = "../support/aws.rs"]
mod aws;
mod helpers;

mod api;
mod at_scale;
mod auth;
mod aws_backend;
mod bad_input;
mod batch;
mod batches;
mod cancel;
mod cli;
mod config;
mod containment;
mod crash_recovery;
mod dead_letters;
mod debounce;
mod dependencies;
mod exactly_once;
mod external;
mod history;
mod http_fetch;
mod idempotency;
mod listing;
mod live;
mod maintenance;
mod metrics;
#[path = "../../shared/tests/support/moto.rs"]
mod moto;
mod pauses;
mod priorities;
mod quotas;
mod rates;
mod replay;
mod retries;
mod scan;
mod schedules;
mod security;
mod shutdown;
mod ssrf;
mod steps;
mod storage;
mod template;
mod tenancy;
mod transfer;
mod webhook;
mod worker_entrypoint;
