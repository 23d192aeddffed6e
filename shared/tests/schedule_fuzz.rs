//! Schedules from any input: expressions, time zones and windows made up at random (numbers of
//! any size, years far out, text that means nothing) go to `POST /v1/schedules` in-process
//! over the embedded backend. Every answer is a 4xx naming a field, or a stored schedule whose
//! next run is known; none is a 5xx, none panics, and the scheduler's pass over whatever was
//! stored goes on.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::adapters::embedded::{Durability, EmbeddedBackend, WAL_RESTART_BYTES};
use shared::domain::Tenant;
use shared::entrypoints::http::{router, ApiState, HttpLimits};
use shared::jobs::{BuiltinSettings, Registry};
use shared::service::JobService;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct App {
    router: axum::Router,
    state: Arc<ApiState>,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::builtin("conveyor-", &BuiltinSettings::default()));
    let backend = EmbeddedBackend::open_with(
        dir.path(),
        Durability::Process,
        WAL_RESTART_BYTES,
        1024,
        shared::adapters::queue_settings(
            &shared::Config::from_lookup(&|_| None).unwrap(),
            &registry,
        ),
    )
    .unwrap();
    let ports = backend.ports();
    let auth = shared::auth::Authenticator::new(Default::default(), ports.keys.clone())
        .open(Tenant::parse("t").unwrap());
    let state = Arc::new(ApiState {
        service: JobService::new(ports, registry, 1024 * 1024),
        auth: Arc::new(auth),
        audit_retention: Duration::from_secs(3600),
        audit_submits: false,
        webhook_master: None,
        limits: HttpLimits {
            timeout: Duration::from_secs(30),
            max_in_flight: 64,
        },
        health: Arc::new(shared::health::Health::new()),
        live: Some(Arc::new(backend.feed.clone())),
        ws_url: None,
    });
    App {
        router: router(state.clone()),
        state,
        _dir: dir,
    }
}

async fn call(app: &App, method: &str, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A number as a schedule's fields may be given one: small, at the edges, or past them.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100).prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("-1".to_string()),
        "[0-9]{1,30}",
    ]
}

/// A year, near now or far out.
fn year() -> impl Strategy<Value = i64> {
    prop_oneof![
        1960i64..2100,
        0i64..10_000,
        9_990i64..10_010,
        200_000i64..262_143
    ]
}

fn time() -> impl Strategy<Value = String> {
    prop_oneof![
        (year(), 1u32..13, 1u32..29, 0u32..24)
            .prop_map(|(y, mo, d, h)| { format!("{y:04}-{mo:02}-{d:02}T{h:02}:00:00Z") }),
        "[ -~]{0,24}",
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        number(),
        (number(), number()).prop_map(|(a, b)| format!("{a}-{b}")),
        (number(), number()).prop_map(|(a, b)| format!("{a}/{b}")),
        Just("MON".to_string()),
        Just("FEB".to_string()),
        "[ -~]{0,6}",
    ]
}

/// One of cron, rate or at, as a client might send it.
fn cadence() -> impl Strategy<Value = (&'static str, String)> {
    prop_oneof![
        prop::collection::vec(field(), 0..7).prop_map(|f| ("cron", f.join(" "))),
        (
            number(),
            prop_oneof![
                Just("minute"),
                Just("minutes"),
                Just("hours"),
                Just("days"),
                Just("weeks")
            ]
        )
            .prop_map(|(n, unit)| ("rate", format!("{n} {unit}"))),
        (year(), 1u32..13, 1u32..32)
            .prop_map(|(y, mo, d)| ("at", format!("{y:04}-{mo:02}-{d:02}T12:00:00"))),
        "[ -~]{0,30}".prop_map(|t| ("rate", t)),
    ]
}

fn timezone() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Pacific/Chatham",
        ])
        .prop_map(|z| Some(z.to_string())),
        "[ -~]{0,20}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_schedule_is_refused_by_field_or_stored_with_a_next_run(
        (kind, expression) in cadence(),
        zone in timezone(),
        start in prop::option::of(time()),
        end in prop::option::of(time()),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let app = app();
            let mut body = json!({ "name": "fuzzed", "type": "noop", kind: expression });
            if let Some(zone) = &zone {
                body["timezone"] = json!(zone);
            }
            if let Some(start) = &start {
                body["start_at"] = json!(start);
            }
            if let Some(end) = &end {
                body["end_at"] = json!(end);
            }
            // WHEN it is declared
            let (status, answer) = call(&app, "POST", "/v1/schedules", Some(&body)).await;
            // THEN it is refused with a 4xx that names a field, or stored
            if status == StatusCode::CREATED {
                // AND then its next run is known, as listing shows it
                let (status, listed) = call(&app, "GET", "/v1/schedules", None).await;
                assert_eq!(status, StatusCode::OK, "{listed}");
                let next = &listed["schedules"][0]["next_run_at"];
                assert!(next.is_string(), "{body} stored without a next run: {listed}");
            } else {
                assert!(status.is_client_error(), "{body}: {status} {answer}");
                assert!(answer["error"]["field"].is_string(), "{body}: {answer}");
            }
            // AND a scheduler's pass over what is stored goes on
            shared::schedules::evaluate(&app.state.service, chrono::Utc::now(), true)
                .await
                .unwrap();
        });
    }
}
