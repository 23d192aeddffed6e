//! The HTTP API behind API Gateway (the `api` function): the caller the Lambda authorizer
//! verified, or refused, and the source address API Gateway saw, put where the router looks for
//! them; each request's figures flushed as CloudWatch embedded-metric-format log lines. No
//! credential is verified here: a request that did not pass the authorizer is refused.

use super::authorizer::identity_from_context;
use super::http::{router, ApiState, SourceIp, Verified};
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;
use std::sync::Arc;

/// The router over `state`, behind what API Gateway's request context says of the caller.
pub fn app(state: ApiState) -> axum::Router {
    router(Arc::new(state))
        .layer(axum::middleware::from_fn(gateway))
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let response = next.run(request).await;
                crate::metrics::flush_emf();
                response
            },
        ))
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
