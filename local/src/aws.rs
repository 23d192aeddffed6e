//! The local runtime on the AWS backend (`CONVEYOR_BACKEND=aws`): the same pollers and
//! maintenance timer, against DynamoDB, SQS and EventBridge wherever the standard AWS settings
//! point (`AWS_ENDPOINT_URL` for LocalStack or moto). `conveyor bootstrap` creates the
//! resources only.

use anyhow::Context;
use shared::adapters::aws::{sdk_config_from_env, AwsBackend, AwsSettings};
use shared::adapters::queue_specs;
use shared::config::Config;
use shared::jobs::Registry;

/// The AWS backend, with the table, bus and each type's queue and dead-letter queue created
/// where they do not exist yet.
pub async fn bootstrap(config: &Config, registry: &Registry) -> anyhow::Result<AwsBackend> {
    let sdk = sdk_config_from_env().await;
    let backend = AwsBackend::new(
        &sdk,
        AwsSettings {
            table: config.table.clone(),
            event_bus: config.event_bus.clone(),
        },
    );
    backend
        .bootstrap(&queue_specs(config, registry))
        .await
        .context("creating the AWS resources")?;
    Ok(backend)
}
