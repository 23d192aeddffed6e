//! The Lambda authorizer, called as Lambda would with an API Gateway HTTP API (payload 2.0)
//! event, and the router taking its answer: a valid credential becomes the caller's tenant and
//! roles, a refused one the API's own 401, on the embedded store's keys.

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use shared::adapters::embedded::{Durability, EmbeddedBackend};
use shared::auth::{issue_token, Authenticator, JwtSettings};
use shared::domain::{ApiKey, Role, Tenant};
use shared::entrypoints::authorizer::{authorize, context_fields, identity_from_context};
use shared::entrypoints::http::{router, ApiState, HttpLimits, Verified};
use shared::jobs::{BuiltinSettings, Registry};
use shared::service::JobService;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &str = "a-test-secret-of-thirty-two-bytes-at-least";

fn event(authorization: &str) -> ApiGatewayV2CustomAuthorizerV2Request {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/authorizer-request.json"
    ))
    .unwrap()
    .replace("Bearer REPLACED-BY-THE-TEST", authorization);
    serde_json::from_str(&text).unwrap()
}

struct Setup {
    auth: Arc<Authenticator>,
    backend: EmbeddedBackend,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Durability::Process, vec![]).unwrap();
    let jwt = JwtSettings {
        secret: Some(Arc::new(SECRET.to_string())),
        ..Default::default()
    };
    Setup {
        auth: Arc::new(Authenticator::new(jwt, backend.ports().keys.clone())),
        backend,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_valid_token_or_key_becomes_the_callers_tenant_and_roles() {
    // GIVEN a token for acme and a key of globex
    let s = setup();
    let acme = Tenant::parse("acme").unwrap();
    let token = issue_token(
        SECRET,
        &acme,
        "alice",
        &[Role::Submitter],
        Duration::from_secs(60),
        None,
        None,
        chrono::Utc::now(),
    )
    .unwrap();
    let (key, key_token) = ApiKey::generate(
        Tenant::parse("globex").unwrap(),
        vec![Role::Reader],
        "svc".into(),
        None,
        chrono::Utc::now(),
    );
    s.backend.ports().keys.put_key(&key).await.unwrap();

    // WHEN the authorizer is invoked with each
    let by_token = authorize(&s.auth, event(&format!("Bearer {token}")))
        .await
        .unwrap();
    let by_key = authorize(&s.auth, event(&format!("Bearer {key_token}")))
        .await
        .unwrap();

    // THEN both are let through with who the caller is in the context
    assert!(by_token.is_authorized && by_key.is_authorized);
    let who = identity_from_context(&context_fields(&by_token))
        .unwrap()
        .unwrap();
    assert_eq!(
        (who.tenant.as_str(), who.subject.as_str(), who.roles.clone()),
        ("acme", "jwt:alice", vec![Role::Submitter])
    );
    let who = identity_from_context(&context_fields(&by_key))
        .unwrap()
        .unwrap();
    assert_eq!(
        (who.tenant.as_str(), who.subject),
        ("globex", format!("key:{}", key.id))
    );
}

#[tokio::test]
async fn a_refused_credential_is_denied_and_a_refusal_that_reaches_the_api_is_its_own_401() {
    // GIVEN a forged token and the API router behind the authorizer
    let s = setup();
    let acme = Tenant::parse("acme").unwrap();
    let forged = issue_token(
        "another-secret-of-thirty-two-bytes-or-so!",
        &acme,
        "mallory",
        &[Role::Admin],
        Duration::from_secs(60),
        None,
        None,
        chrono::Utc::now(),
    )
    .unwrap();
    let answer = authorize(&s.auth, event(&format!("Bearer {forged}")))
        .await
        .unwrap();
    // (denied: API Gateway answers it; the context says why, for the authorizer's log)
    assert!(!answer.is_authorized);
    let missing = authorize(&s.auth, event("")).await.unwrap();
    assert!(!missing.is_authorized);
    let identity = identity_from_context(&context_fields(&answer)).expect("an answer");
    assert!(identity.is_err());
    let registry = Arc::new(Registry::builtin("conveyor-", &BuiltinSettings::default()));
    let app = router(Arc::new(ApiState {
        service: JobService::new(s.backend.ports(), registry, 1024),
        auth: s.auth.clone(),
        audit_retention: Duration::from_secs(3600),
        audit_submits: true,
        webhook_master: None,
        limits: HttpLimits {
            timeout: Duration::from_secs(5),
            max_in_flight: 8,
        },
        health: Default::default(),
        live: None,
        ws_url: None,
    }));
    let call = |identity| {
        let app = app.clone();
        async move {
            let mut request = Request::get("/v1/jobs").body(Body::empty()).unwrap();
            request.extensions_mut().insert(Verified(identity));
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body: Value =
                serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap())
                    .unwrap();
            (status, body)
        }
    };

    // WHEN the router gets a refusal all the same, and then a verified caller (neither sends a
    // header)
    let (status, body) = call(identity).await;
    // THEN the refusal is the API's JSON 401, and the verified caller is let in as itself
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let good = issue_token(
        SECRET,
        &acme,
        "alice",
        &[Role::Reader],
        Duration::from_secs(60),
        None,
        None,
        chrono::Utc::now(),
    )
    .unwrap();
    let answer = authorize(&s.auth, event(&format!("Bearer {good}")))
        .await
        .unwrap();
    let (status, body) = call(identity_from_context(&context_fields(&answer)).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A WebSocket API event of `route` on the fixture's connection, as API Gateway sends it to
/// the `ws` function after the authorizer answered with `authorizer`.
fn ws_event(route: &str, authorizer: &Value, body: Option<&str>) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/ws-connect.json"
    ))
    .unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["requestContext"]["routeKey"] = route.into();
    let mut context = authorizer["context"].clone();
    context["principalId"] = authorizer["principalId"].clone();
    event["requestContext"]["authorizer"] = context;
    if let Some(body) = body {
        event["body"] = body.into();
    }
    event
}

#[tokio::test]
async fn a_websocket_connect_is_allowed_with_a_valid_token_and_its_frames_are_answered() {
    use shared::adapters::hub::Hub;
    use shared::entrypoints::authorizer::authorize_any;
    use shared::entrypoints::ws::{handle_ws_event, WsRoutes};
    use shared::ports::{ConnectionStore, LivePorts};
    // GIVEN a reader's token for acme, and one of acme's jobs
    let s = setup();
    let acme = Tenant::parse("acme").unwrap();
    let token = issue_token(
        SECRET,
        &acme,
        "alice",
        &[Role::Reader],
        Duration::from_secs(600),
        None,
        None,
        chrono::Utc::now(),
    )
    .unwrap();
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/ws-connect.json"
    ))
    .unwrap();
    let connect = |token: &str| -> Value {
        serde_json::from_str(&fixture.replace("REPLACED-BY-THE-TEST", token)).unwrap()
    };

    // WHEN API Gateway asks the authorizer about the $connect, with a good and a bad token
    let allowed = authorize_any(&s.auth, connect(&token)).await.unwrap();
    let denied = authorize_any(&s.auth, connect("not-a-token"))
        .await
        .unwrap();

    // THEN the good one is allowed for that route, with the caller in the context; the bad
    // one is denied
    let statement = &allowed["policyDocument"]["Statement"][0];
    assert_eq!(statement["Effect"], "Allow", "{allowed}");
    assert_eq!(
        statement["Resource"],
        "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/live/$connect"
    );
    assert_eq!(allowed["context"]["tenant"], "acme");
    assert_eq!(denied["policyDocument"]["Statement"][0]["Effect"], "Deny");

    // AND the ws function stores the connection and answers its frames
    let hub = Hub::new(8);
    let routes = WsRoutes {
        live: LivePorts {
            connections: hub.clone(),
            pusher: hub.clone(),
        },
        store: s.backend.ports().store.clone(),
    };
    let connected = handle_ws_event(&routes, &ws_event("$connect", &allowed, None)).await;
    assert_eq!(connected["statusCode"], 200);
    let stored = hub.connection("Ab1CdEfGhIjKl=").await.unwrap().unwrap();
    assert_eq!(stored.tenant, acme);
    let refused = handle_ws_event(&routes, &ws_event("$connect", &denied, None)).await;
    assert_eq!(refused["statusCode"], 403);
    let frame = r#"{"action":"subscribe","all":true}"#;
    let answer = handle_ws_event(&routes, &ws_event("subscribe", &allowed, Some(frame))).await;
    let reply: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({ "type": "subscribed", "all": true })
    );
    assert_eq!(
        hub.subscribers(&acme, shared::live::Topic::All)
            .await
            .unwrap(),
        ["Ab1CdEfGhIjKl="]
    );
    let gone = handle_ws_event(&routes, &ws_event("$disconnect", &allowed, None)).await;
    assert_eq!(gone["statusCode"], 200);
    assert!(hub.connection("Ab1CdEfGhIjKl=").await.unwrap().is_none());
}
