//! The `ws` Lambda: the WebSocket API's routes (`$connect` after the authorizer, `$disconnect`,
//! `subscribe`, `unsubscribe`, `$default`), with connections and subscriptions in the table.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::adapters::aws::open_live;
use shared::entrypoints::ws::{handle_ws_event, WsRoutes};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    let (ports, _) = shared::adapters::open_ports(&config).await?;
    let routes = &WsRoutes {
        live: open_live(&config).await,
        store: ports.store,
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(handle_ws_event(routes, &event.payload).await)
    }))
    .await
}
