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
    headers: Vec<(String, String)>,
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
            headers: vec![],
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
            headers: vec![],
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

    fn with_body(self, body: Value) -> Self {
        self.with_raw_body(body.to_string())
    }

    fn with_raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    fn with_path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// 400 invalid_field naming `field`.
    fn invalid(self, field: &'static str) -> Self {
        self.expect(StatusCode::BAD_REQUEST, "invalid_field", Some(field))
    }
}

/// The idempotency key of the keyed job the test starts with, and its request.
const KEY: &str = "bad-input-key";

fn keyed_request() -> Value {
    json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600, "idempotency_key": KEY })
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
        // Bytes that do not decode, and JSON too deep to read.
        C::call("GET of an id that is not UTF-8", Method::GET, "/v1/jobs/%FF").invalid("id"),
        C::call("cancel of an id that is not UTF-8", Method::POST, "/v1/jobs/%FF%FE/cancel")
            .invalid("id"),
        C::submit_raw("a body that is not UTF-8", b"{\"type\": \"noop\xff\"}".to_vec())
            .expect(bad_request, "malformed_json", None),
        C::submit_raw(
            "JSON nested 10,000 deep",
            format!(r#"{{"type": "noop", "payload": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000)),
        )
        .expect(bad_request, "malformed_json", None),
        C::call("a query string that is not UTF-8", Method::GET, "/v1/jobs?limit=%FF").expect(
            bad_request,
            "malformed_query",
            None,
        ),
        // Headers.
        (0..80).fold(
            C::call("80 headers", Method::GET, format!("/v1/jobs/{succeeded}")),
            |c, i| c.header(format!("x-extra-{i}"), "1"),
        )
        .expect(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", None),
        C::call("a 20 KiB header", Method::GET, "/v1/stats")
            .header("x-large", "x".repeat(20 * 1024))
            .expect(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", None),
        // Nested fields, bounds and overflow.
        C::submit(
            "a dependency that is not a job id",
            noop_with(json!({ "depends_on": ["01JF0000000000000000000000", "nope"] })),
        )
        .invalid("depends_on[1]"),
        C::submit(
            "backoff milliseconds as text",
            noop_with(json!({ "backoff": { "base_ms": "10", "cap_ms": 20 } })),
        )
        .invalid("backoff.base_ms"),
        C::submit(
            "a debounce window as text",
            noop_with(json!({ "debounce": { "key": "k", "window_seconds": "2" } })),
        )
        .invalid("debounce.window_seconds"),
        C::submit(
            "priority as text",
            noop_with(json!({ "priority": "high" })),
        )
        .invalid("priority"),
        C::submit(
            "an unknown on_dependency_failure",
            noop_with(json!({ "on_dependency_failure": "maybe" })),
        )
        .invalid("on_dependency_failure"),
        C::submit("a batch id that is not one", noop_with(json!({ "batch_id": 7 })))
            .invalid("batch_id"),
        C::call("a batch with a bad job's field", Method::POST, "/v1/jobs/batch")
            .with_body(json!({ "jobs": [{ "type": "noop" }], "batch": { "on_complete": { "type": "noop", "priority": "high" } } }))
            .invalid("batch.on_complete.priority"),
        C::call("a schedule with a bad overlap", Method::POST, "/v1/schedules")
            .with_body(json!({ "name": "a", "type": "noop", "cron": "* * * * *", "overlap": 3 }))
            .invalid("overlap"),
        C::call("a schedule with an unknown field", Method::POST, "/v1/schedules")
            .with_body(json!({ "name": "a", "type": "noop", "cron": "* * * * *", "every": "day" }))
            .invalid("every"),
        C::call("a schedule body that is not JSON", Method::POST, "/v1/schedules")
            .with_raw_body("{\"name\":")
            .expect(bad_request, "malformed_json", None),
        C::call("a bulk filter that is not an object", Method::POST, "/v1/jobs/bulk")
            .with_body(json!({ "action": "retry", "filter": [] }))
            .invalid("filter"),
        C::call("a redrive of ids that are not ids", Method::POST, "/v1/dead-letters/redrive")
            .with_body(json!({ "ids": [1, 2] }))
            .invalid("ids"),
        C::submit(
            "unknown field inside backoff",
            noop_with(json!({ "backoff": { "base_ms": 1, "cap_ms": 2, "jitter": true } })),
        )
        .invalid("backoff.jitter"),
        C::submit(
            "run_at beyond one year",
            noop_with(json!({ "run_at": (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339() })),
        )
        .invalid("run_at"),
        C::call(
            "logs after an overflowing sequence",
            Method::GET,
            format!("/v1/jobs/{succeeded}/logs?after=99999999999999999999999"),
        )
        .invalid("after"),
        C::call("logs with limit 0", Method::GET, format!("/v1/jobs/{succeeded}/logs?limit=0"))
            .invalid("limit"),
        C::call("logs with limit 1001", Method::GET, format!("/v1/jobs/{succeeded}/logs?limit=1001"))
            .invalid("limit"),
        C::call("list with an overflowing limit", Method::GET, "/v1/jobs?limit=99999999999999999999")
            .invalid("limit"),
        C::call("list with limit given twice", Method::GET, "/v1/jobs?limit=1&limit=2")
            .invalid("limit"),
        // Unknown query parameters, on every route.
        C::call("GET a job with a parameter", Method::GET, format!("/v1/jobs/{succeeded}?fields=all"))
            .invalid("fields"),
        C::call("result with a parameter", Method::GET, format!("/v1/jobs/{succeeded}/result?wait=1"))
            .invalid("wait"),
        C::call("logs with an unknown parameter", Method::GET, format!("/v1/jobs/{succeeded}/logs?tail=1"))
            .invalid("tail"),
        C::call("cancel with a parameter", Method::POST, format!("/v1/jobs/{queued}/cancel?force=1"))
            .invalid("force"),
        C::call("retry with a parameter", Method::POST, format!("/v1/jobs/{succeeded}/retry?now=1"))
            .invalid("now"),
        C::call("stats with a parameter", Method::GET, "/v1/stats?type=noop").invalid("type"),
        C::call("types with a parameter", Method::GET, "/v1/types?all=1").invalid("all"),
        C::submit("submit with a parameter", json!({ "type": "noop" })).invalid("x").with_path("/v1/jobs?x=1"),
        // Idempotency keys.
        C::submit("a known key with another payload", {
            let mut r = keyed_request();
            r["payload"]["ms"] = json!(20);
            r
        })
        .expect(StatusCode::CONFLICT, "idempotency_conflict", Some("idempotency_key")),
        C::submit("a known key with another priority", {
            let mut r = keyed_request();
            r["priority"] = json!(5);
            r
        })
        .expect(StatusCode::CONFLICT, "idempotency_conflict", Some("idempotency_key")),
        C::submit("a known key with another type", {
            let mut r = keyed_request();
            r["type"] = json!("noop");
            r["payload"] = json!({});
            r
        })
        .expect(StatusCode::CONFLICT, "idempotency_conflict", Some("idempotency_key")),
        C::submit("body key and a different header key", noop_with(json!({ "idempotency_key": "a" })))
            .header("idempotency-key", "b")
            .invalid("idempotency_key"),
        // Routes.
        C::call("wrong method on a job", Method::DELETE, format!("/v1/jobs/{queued}")).expect(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        ),
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
    // AND a waiting job made with an idempotency key
    app.submit_new(&keyed_request()).await;
    let stats_before = app.stats_when(|s| s["total"] == 3).await;
    let jobs_before = app.list("").await;
    assert_eq!(stats_before["total"], 3, "{stats_before}");

    // WHEN each bad request is sent
    let mut wrong = vec![];
    for case in bad_requests(&succeeded, &queued) {
        let mut request = app.client.request(case.method.clone(), app.url(&case.path));
        for (name, value) in &case.headers {
            request = request.header(name, value);
        }
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
    assert_eq!(app.list("").await, jobs_before);
    assert_eq!(app.settled_stats().await, stats_before);
}
