//! The `authorizer` Lambda: API Gateway's Lambda authorizer for the HTTP API (and later the
//! WebSocket `$connect`): an API key or a JWT verified into the caller's tenant and roles.

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use lambda_runtime::{service_fn, LambdaEvent};
use shared::entrypoints::authorizer::authorize;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_target(false)
        .without_time()
        .init();
    let config = shared::Config::from_env()?;
    let (ports, _) = shared::adapters::open_ports(&config).await?;
    let auth = &shared::adapters::authenticator(&config, &ports).await;
    shared::auth::require_configured(auth.jwt_settings())?;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
            authorize(auth, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
