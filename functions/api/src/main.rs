//! The `api` Lambda: API Gateway HTTP API events into the shared axum router.

use shared::entrypoints::http::{router, ApiState, HttpLimits};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .without_time()
        .init();
    let config = shared::Config::from_env()?;
    let (ports, registry) = shared::adapters::open_ports(&config).await?;
    let service = shared::service::JobService::new(ports, registry, config.max_payload_bytes);
    let state = ApiState {
        service,
        default_tenant: shared::domain::Tenant::parse(config.default_tenant.clone())?,
        limits: HttpLimits::from_config(&config),
        health: Default::default(),
    };
    lambda_http::run(router(Arc::new(state))).await
}
