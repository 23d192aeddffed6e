//! The `api` Lambda: API Gateway HTTP API events into the shared axum router, with the caller
//! the Lambda authorizer verified (or refused) and the source address API Gateway saw. No
//! credential is verified here: a request that did not pass the authorizer is refused.

use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use shared::entrypoints::authorizer::identity_from_context;
use shared::entrypoints::http::{router, ApiState, HttpLimits, SourceIp, Verified};
use std::sync::Arc;

#[cfg(test)]
mod tests;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::init_lambda_logs();
    let config = shared::Config::from_env()?;
    lambda_http::run(app(&config).await?).await
}

/// The function's whole app: the shared router on the configured ports, behind what API
/// Gateway's request context says of the caller.
async fn app(config: &shared::Config) -> Result<axum::Router, lambda_http::Error> {
    let (ports, registry) = shared::adapters::open_ports(config).await?;
    let state = ApiState {
        service: shared::service::JobService::new(ports, registry, config.max_payload_bytes)
            .with_tenant_defaults(config.tenant_defaults.clone()),
        // Every request was verified by the authorizer function before it came here.
        auth: Arc::new(shared::auth::GatewayVerified),
        audit_retention: config.audit_retention,
        audit_submits: config.audit_submits,
        webhook_master: shared::adapters::builtin_settings(config)
            .await
            .webhook_secret,
        limits: HttpLimits::from_config(config),
        health: Default::default(),
        live: None,
        ws_url: config.ws_url.clone(),
    };
    Ok(router(Arc::new(state))
        .layer(axum::middleware::from_fn(gateway))
        // Each request's figures, as CloudWatch embedded-metric-format log lines.
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let response = next.run(request).await;
                shared::metrics::flush_emf();
                response
            },
        )))
}

/// Put what API Gateway knows of the caller where the router looks for it.
async fn gateway(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(RequestContext::ApiGatewayV2(ctx)) = request.request_context_ref().cloned() {
        if let Some(identity) = ctx
            .authorizer
            .as_ref()
            .and_then(|a| identity_from_context(&a.fields))
        {
            request.extensions_mut().insert(Verified(identity));
        }
        if let Some(ip) = ctx.http.source_ip {
            request.extensions_mut().insert(SourceIp(ip));
        }
    }
    next.run(request).await
}
