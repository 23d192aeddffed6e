//! The API Gateway Lambda authorizer (HTTP API, payload 2.0, simple responses): the request's
//! `Authorization` header verified by the same `Authenticator` the local runtime uses.
//!
//! A verified caller is let through to the `api` function with who they are in the context. What
//! it cannot verify is denied: API Gateway answers the caller itself (403; 401 when there is no
//! `Authorization` header at all, without invoking the authorizer) and caches the denial per
//! `Authorization` value like an allowance (`AuthCacheSeconds` in the template), so a stream of
//! made-up bearer values costs neither an `api` invocation nor an audit write each.

use crate::auth::{AuthError, Authenticator, Principal};
use crate::domain::{parse_roles, Tenant};
use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Verify the request's credential: authorized with the caller in the context, or denied (the
/// context then says why, for the authorizer's own log).
/// An error (the key store cannot be read) fails the invocation: API Gateway answers 500 and
/// caches nothing.
pub async fn authorize(
    auth: &Authenticator,
    request: ApiGatewayV2CustomAuthorizerV2Request,
) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, AuthError> {
    let header = request
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (authorized, context) = match auth.authenticate(header).await {
        Ok(principal) => (
            true,
            json!({
                "tenant": principal.tenant,
                "subject": principal.subject,
                "roles": principal.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" "),
            }),
        ),
        Err(AuthError::Unavailable(why)) => return Err(AuthError::Unavailable(why)),
        Err(AuthError::Missing) => (false, json!({ "refused": AuthError::Missing.to_string() })),
        Err(AuthError::Invalid { message, actor }) => (
            false,
            json!({ "refused": message, "actor": actor.unwrap_or_else(|| "anonymous".into()) }),
        ),
    };
    if !authorized {
        tracing::info!(reason = %context["refused"], "denied");
    }
    let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    response.is_authorized = authorized;
    response.context = context;
    Ok(response)
}

/// The WebSocket API's `$connect` authorizer (a REQUEST authorizer; WebSocket APIs take IAM
/// policy answers only): the `token` query parameter verified like an `Authorization` header.
/// A refused credential is denied (API Gateway answers the upgrade 403); an accepted one is
/// allowed, with the caller in the context for the `ws` function.
pub async fn authorize_websocket(auth: &Authenticator, event: &Value) -> Result<Value, AuthError> {
    let credential = event["queryStringParameters"]["token"]
        .as_str()
        .map(|t| format!("Bearer {t}"));
    let (effect, principal, context) = match auth.authenticate(credential.as_deref()).await {
        Ok(p) => (
            "Allow",
            p.subject.clone(),
            json!({
                "tenant": p.tenant,
                "subject": p.subject,
                "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" "),
            }),
        ),
        Err(AuthError::Unavailable(why)) => return Err(AuthError::Unavailable(why)),
        Err(e) => (
            "Deny",
            "anonymous".to_string(),
            json!({ "refused": e.to_string() }),
        ),
    };
    Ok(json!({
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": effect,
                "Resource": event["methodArn"].as_str().unwrap_or("*"),
            }],
        },
        "context": context,
    }))
}

/// Either authorizer's answer, by the event's shape: a WebSocket `$connect` (it has a
/// `methodArn`) or an HTTP API request (payload 2.0).
pub async fn authorize_any(auth: &Authenticator, event: Value) -> Result<Value, AuthError> {
    if event.get("methodArn").is_some() {
        return authorize_websocket(auth, &event).await;
    }
    let request: ApiGatewayV2CustomAuthorizerV2Request =
        serde_json::from_value(event).map_err(|e| AuthError::Invalid {
            message: format!("the authorizer event cannot be read: {e}"),
            actor: None,
        })?;
    let answer = authorize(auth, request).await?;
    Ok(serde_json::to_value(answer).unwrap_or_default())
}

/// What the authorizer said of a request, read back from `requestContext.authorizer.lambda`:
/// `None` when there is no authorizer context (the `api` function then verifies by itself).
pub fn identity_from_context(
    fields: &HashMap<String, Value>,
) -> Option<Result<Principal, AuthError>> {
    if fields.is_empty() {
        return None;
    }
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    if let Some(message) = text("refused") {
        return Some(Err(AuthError::Invalid {
            message: message.to_string(),
            actor: text("actor")
                .filter(|a| *a != "anonymous")
                .map(str::to_string),
        }));
    }
    let unreadable = || {
        Err(AuthError::Invalid {
            message: "the authorizer's answer cannot be read".into(),
            actor: None,
        })
    };
    let (Some(tenant), Some(subject), Some(roles)) =
        (text("tenant"), text("subject"), text("roles"))
    else {
        return Some(unreadable());
    };
    let (Ok(tenant), Ok(roles)) = (Tenant::parse(tenant), parse_roles(roles.split_whitespace()))
    else {
        return Some(unreadable());
    };
    Some(Ok(Principal {
        tenant,
        subject: subject.to_string(),
        roles,
    }))
}

/// The context as a map (what API Gateway hands the `api` function), for tests.
pub fn context_fields(
    response: &ApiGatewayV2CustomAuthorizerSimpleResponse,
) -> HashMap<String, Value> {
    response
        .context
        .as_object()
        .cloned()
        .unwrap_or_else(Map::new)
        .into_iter()
        .collect()
}
