//! Bad input: every malformed or impossible request gets its 4xx with a JSON error naming the
//! field at fault, and changes nothing.

use crate::helpers::{spawn_app, status_is};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// One bad request and the error it must get.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

impl Case {
    fn submit(what: &'static str, body: Value) -> Self {
        Self::submit_raw(what, body.to_string().into_bytes())
    }

    fn submit_raw(what: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            what,
            method: Method::POST,
            path: "/v1/jobs".into(),
            body: Some(body.into()),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            field: None,
        }
    }

    fn call(what: &'static str, method: Method, path: impl Into<String>) -> Self {
        Self {
            what,
            method,
            path: path.into(),
            body: None,
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            field: None,
        }
    }

    fn expect(
        mut self,
        status: StatusCode,
        code: &'static str,
        field: Option<&'static str>,
    ) -> Self {
        (self.status, self.code, self.field) = (status, code, field);
        self
    }

    /// 400 invalid_field naming `field`.
    fn invalid(self, field: &'static str) -> Self {
        self.expect(StatusCode::BAD_REQUEST, "invalid_field", Some(field))
    }
}

fn bad_requests(succeeded: &str, queued: &str) -> Vec<Case> {
    use Case as C;
    let bad_request = StatusCode::BAD_REQUEST;
    let not_found = StatusCode::NOT_FOUND;
    let unknown = ulid::Ulid::new().to_string();
    let noop_with = |extra: Value| {
        let mut body = json!({ "type": "noop" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    vec![
        // The submit body as a whole.
        C::submit("unknown type", json!({ "type": "teleport" })).expect(
            bad_request,
            "unknown_type",
            Some("type"),
        ),
        C::submit_raw("malformed JSON", r#"{"type": "noop","#).expect(
            bad_request,
            "malformed_json",
            None,
        ),
        C::submit_raw("empty body", "").expect(bad_request, "malformed_json", None),
        C::submit("array body", json!([{ "type": "noop" }])).expect(
            bad_request,
            "malformed_json",
            None,
        ),
        C::submit("string body", json!("noop")).expect(bad_request, "malformed_json", None),
        C::submit("missing type", json!({ "payload": {} })).invalid("type"),
        C::submit("type not a string", json!({ "type": 7 })).invalid("type"),
        C::submit("unknown field", noop_with(json!({ "colour": "red" }))).invalid("colour"),
        C::submit(
            "payload over the limit",
            noop_with(json!({ "payload": { "blob": "x".repeat(2048) } })),
        )
        .expect(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            Some("payload"),
        ),
        C::submit(
            "body far over the limit",
            noop_with(json!({ "payload": { "blob": "x".repeat(100_000) } })),
        )
        .expect(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            Some("payload"),
        ),
        // Scheduling and retry settings.
        C::submit("negative delay", noop_with(json!({ "delay_seconds": -1 })))
            .invalid("delay_seconds"),
        C::submit(
            "delay not a number",
            noop_with(json!({ "delay_seconds": "soon" })),
        )
        .invalid("delay_seconds"),
        C::submit(
            "delay over a year",
            noop_with(json!({ "delay_seconds": 40_000_000 })),
        )
        .invalid("delay_seconds"),
        C::submit(
            "both delay_seconds and run_at",
            noop_with(json!({ "delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z" })),
        )
        .invalid("run_at"),
        C::submit(
            "run_at not a time",
            noop_with(json!({ "run_at": "tomorrow" })),
        )
        .invalid("run_at"),
        C::submit("zero max_attempts", noop_with(json!({ "max_attempts": 0 })))
            .invalid("max_attempts"),
        C::submit(
            "too many max_attempts",
            noop_with(json!({ "max_attempts": 101 })),
        )
        .invalid("max_attempts"),
        C::submit(
            "fractional max_attempts",
            noop_with(json!({ "max_attempts": 2.5 })),
        )
        .invalid("max_attempts"),
        C::submit(
            "max_attempts as a string",
            noop_with(json!({ "max_attempts": "3" })),
        )
        .invalid("max_attempts"),
        C::submit(
            "priority out of range",
            noop_with(json!({ "priority": 5000 })),
        )
        .invalid("priority"),
        C::submit(
            "backoff not an object",
            noop_with(json!({ "backoff": "fast" })),
        )
        .invalid("backoff"),
        C::submit(
            "backoff without cap",
            noop_with(json!({ "backoff": { "base_ms": 10 } })),
        )
        .invalid("backoff.cap_ms"),
        C::submit(
            "backoff cap under base",
            noop_with(json!({ "backoff": { "base_ms": 500, "cap_ms": 100 } })),
        )
        .invalid("backoff.cap_ms"),
        C::submit(
            "idempotency key with a space",
            noop_with(json!({ "idempotency_key": "a b" })),
        )
        .invalid("idempotency_key"),
        C::submit(
            "idempotency key not a string",
            noop_with(json!({ "idempotency_key": 5 })),
        )
        .invalid("idempotency_key"),
        // Payloads the job type can never run.
        C::submit(
            "sleep without ms",
            json!({ "type": "sleep", "payload": {} }),
        )
        .invalid("payload.ms"),
        C::submit(
            "sleep with text ms",
            json!({ "type": "sleep", "payload": { "ms": "long" } }),
        )
        .invalid("payload.ms"),
        C::submit(
            "sleep longer than its type's timeout allows",
            json!({ "type": "sleep", "payload": { "ms": 600_001 } }),
        )
        .invalid("payload.ms"),
        C::submit(
            "sleep payload not an object",
            json!({ "type": "sleep", "payload": [1] }),
        )
        .invalid("payload"),
        C::submit(
            "fetch of a non-URL",
            json!({ "type": "http.fetch", "payload": { "url": "not a url" } }),
        )
        .invalid("payload.url"),
        C::submit(
            "fetch of an ftp URL",
            json!({ "type": "http.fetch", "payload": { "url": "ftp://127.0.0.1/x" } }),
        )
        .invalid("payload.url"),
        C::submit(
            "fetch without url",
            json!({ "type": "http.fetch", "payload": {} }),
        )
        .invalid("payload.url"),
        C::submit(
            "webhook without body",
            json!({ "type": "webhook.deliver", "payload": { "url": "http://127.0.0.1:9/hook" } }),
        )
        .invalid("payload.body"),
        // Ids.
        C::call(
            "GET of an unknown id",
            Method::GET,
            format!("/v1/jobs/{unknown}"),
        )
        .expect(not_found, "job_not_found", Some("id")),
        C::call(
            "cancel of an unknown id",
            Method::POST,
            format!("/v1/jobs/{unknown}/cancel"),
        )
        .expect(not_found, "job_not_found", Some("id")),
        C::call(
            "retry of an unknown id",
            Method::POST,
            format!("/v1/jobs/{unknown}/retry"),
        )
        .expect(not_found, "job_not_found", Some("id")),
        C::call(
            "logs of an unknown id",
            Method::GET,
            format!("/v1/jobs/{unknown}/logs"),
        )
        .expect(not_found, "job_not_found", Some("id")),
        C::call(
            "result of an unknown id",
            Method::GET,
            format!("/v1/jobs/{unknown}/result"),
        )
        .expect(not_found, "job_not_found", Some("id")),
        C::call("GET of a non-ULID id", Method::GET, "/v1/jobs/not-a-ulid").invalid("id"),
        C::call(
            "cancel of a non-ULID id",
            Method::POST,
            "/v1/jobs/not-a-ulid/cancel",
        )
        .invalid("id"),
        C::call(
            "retry of a non-ULID id",
            Method::POST,
            "/v1/jobs/not-a-ulid/retry",
        )
        .invalid("id"),
        // Listing.
        C::call(
            "list by an unknown status",
            Method::GET,
            "/v1/jobs?status=finished",
        )
        .invalid("status"),
        C::call("list with limit 0", Method::GET, "/v1/jobs?limit=0").invalid("limit"),
        C::call("list with limit 501", Method::GET, "/v1/jobs?limit=501").invalid("limit"),
        C::call("list with a text limit", Method::GET, "/v1/jobs?limit=ten").invalid("limit"),
        C::call(
            "list with a garbage cursor",
            Method::GET,
            "/v1/jobs?cursor=page-2",
        )
        .invalid("cursor"),
        C::call(
            "list with an unknown parameter",
            Method::GET,
            "/v1/jobs?colour=red",
        )
        .invalid("colour"),
        // Transitions the job's status does not allow.
        C::call(
            "retry of a succeeded job",
            Method::POST,
            format!("/v1/jobs/{succeeded}/retry"),
        )
        .expect(StatusCode::CONFLICT, "illegal_transition", Some("status")),
        C::call(
            "retry of a queued job",
            Method::POST,
            format!("/v1/jobs/{queued}/retry"),
        )
        .expect(StatusCode::CONFLICT, "illegal_transition", Some("status")),
        // Routes.
        C::call("unknown route", Method::GET, "/v1/nothing-here").expect(
            not_found,
            "route_not_found",
            None,
        ),
        C::call("wrong method", Method::DELETE, "/v1/jobs").expect(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
    ]
}

#[tokio::test]
async fn every_bad_request_gets_its_error_and_changes_nothing() {
    // GIVEN an app with a 1 KiB payload limit, holding one succeeded and one waiting job
    let app = spawn_app(&[("CONVEYOR_MAX_PAYLOAD_BYTES", "1024")]).await;
    let succeeded = app.submit_new(&json!({ "type": "noop" })).await;
    app.wait_for_status(&succeeded, status_is("succeeded"), Duration::from_secs(10))
        .await;
    let queued = app
        .submit_new(&json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600 }))
        .await;
    let stats_before = app.stats().await;
    let jobs_before = app.list("").await;
    assert_eq!(stats_before["total"], 2, "{stats_before}");

    // WHEN each bad request is sent
    let mut wrong = vec![];
    for case in bad_requests(&succeeded, &queued) {
        let mut request = app.client.request(case.method.clone(), app.url(&case.path));
        if let Some(body) = case.body.clone() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let (status, body) = app.send(request).await;

        // THEN it gets its status and a JSON error with its code, its field and a message
        let error = &body["error"];
        let got = (status, error["code"].as_str(), error["field"].as_str());
        let has_message = error["message"].as_str().is_some_and(|m| !m.is_empty());
        if got != (case.status, Some(case.code), case.field) || !has_message {
            wrong.push(format!(
                "{}: {} {} expected {} {} {:?}, got {status} {body}",
                case.what, case.method, case.path, case.status, case.code, case.field
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));

    // AND no job was made or changed
    assert_eq!(app.stats().await, stats_before);
    assert_eq!(app.list("").await, jobs_before);
}
