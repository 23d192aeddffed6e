//! `/v1/openapi.json` and the router agree: every described operation is served (not a
//! `route_not_found` nor `method_not_allowed`), the description is served without a credential,
//! and every operation documents its success and its error shape.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use shared::adapters::embedded::{Durability, EmbeddedBackend};
use shared::entrypoints::http::{router, routes, ApiState, HttpLimits};
use shared::jobs::{BuiltinSettings, Registry};
use shared::service::JobService;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn every_described_operation_is_served_and_the_description_is_open() {
    // GIVEN the router with credentials required (a JWT secret configured)
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Durability::Process, vec![]).unwrap();
    let jwt = shared::auth::JwtSettings {
        secret: Some(Arc::new(
            "a-test-secret-of-thirty-two-bytes-at-least".to_string(),
        )),
        ..Default::default()
    };
    let app = router(Arc::new(ApiState {
        service: JobService::new(
            backend.ports(),
            Arc::new(Registry::builtin("conveyor-", &BuiltinSettings::default())),
            1024,
        ),
        auth: Arc::new(shared::auth::Authenticator::new(
            jwt,
            backend.ports().keys.clone(),
        )),
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
    let call = |method: &str, path: &str| {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body: Value =
                serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap())
                    .unwrap();
            (status, body)
        }
    };

    // WHEN the description is fetched without a credential
    let (status, spec) = call("get", "/v1/openapi.json").await;
    // THEN it is OpenAPI 3.1 with one path per described route
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    for (method, path) in routes() {
        let op = &paths[path][method];
        assert!(
            op["responses"]["default"]["content"]["application/json"]["schema"].is_object(),
            "{method} {path}"
        );
        assert!(
            op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with('2')),
            "{method} {path}"
        );
        // AND the router serves it: without a credential it is a 401 (or open), never unknown
        let concrete = path
            .replace("{id}", "01JF0000000000000000000000")
            .replace("{tenant}", "acme");
        let (status, body) = call(method, &concrete).await;
        assert!(
            !matches!(
                body["error"]["code"].as_str(),
                Some("route_not_found" | "method_not_allowed")
            ),
            "{method} {path}: {status} {body}"
        );
        let open = op["security"] == serde_json::json!([]);
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            !open,
            "{method} {path}: {status}"
        );
    }
    let described: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(described, routes().count());
}

#[test]
fn the_checked_in_description_is_what_the_route_table_and_the_request_types_generate() {
    // GIVEN the description as the route table and the request types make it
    let generated = shared::entrypoints::openapi::generate_text();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/entrypoints/openapi.json");
    if std::env::var_os("CONVEYOR_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    // THEN every binary serves that one (the file it includes)
    assert!(
        shared::entrypoints::http::OPENAPI.text() == generated,
        "{path} is not what the route table and the request types generate; write it again \
         with:\n  CONVEYOR_UPDATE_OPENAPI=1 cargo nextest run -p shared --test openapi\n\
         (then build again: the binaries include the file)"
    );
}
