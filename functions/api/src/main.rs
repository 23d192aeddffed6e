//! The `api` Lambda: API Gateway HTTP API events into the shared router, behind the Lambda
//! authorizer (`shared::entrypoints::api_gateway`).

use shared::auth::GatewayVerified;
use shared::entrypoints::http::ApiState;
use std::sync::Arc;

#[cfg(test)]
mod tests;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    lambda_http::run(app(&config).await?).await
}

/// The function's whole app: the API on the configured ports. Every request was verified by
/// the authorizer function before it came here.
async fn app(config: &shared::Config) -> Result<axum::Router, lambda_http::Error> {
    let (ports, registry) = shared::adapters::open_ports(config).await?;
    let state = ApiState::from_config(config, ports, registry, Arc::new(GatewayVerified)).await;
    Ok(shared::entrypoints::api_gateway::app(state))
}
