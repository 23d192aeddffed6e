//! The `authorizer` Lambda: API Gateway's Lambda authorizer for the HTTP API and the
//! WebSocket API's `$connect`: an API key or a JWT verified into the caller's tenant and roles.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::entrypoints::authorizer::authorize_any;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let (ports, _) = shared::adapters::open_ports(&config).await?;
    let auth = &shared::adapters::authenticator(&config, &ports).await;
    shared::auth::require_configured(auth.jwt_settings())?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        authorize_any(auth, event.payload)
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
