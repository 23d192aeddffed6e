//! The port contract: one suite every backend must pass. Today it runs against the embedded
//! backend; the AWS adapters join by adding a `Backend` constructor to `helpers`.

mod helpers;
mod queue;
mod store;
