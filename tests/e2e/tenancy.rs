//! Tenancy, route by route: a matrix made from the router's own route table
//! (`shared::entrypoints::http::routes`), so a route added without an entry here fails it. For
//! every route that reaches a tenant's data, tenant B's most powerful tenant credential (an
//! admin) is refused on tenant A's objects: a 404 where it names one of A's (a job, a batch, a
//! schedule, a key), a 403 where it names A itself (`?tenant=`, a key's `tenant`, a limits
//! path), and on the WebSocket a subscription to A's job is one to a missing job. A's objects
//! are unchanged afterwards. Every admin route refuses a submitter and a
//! reader. Only an operator acts across tenants.

use crate::helpers::{spawn_app, token, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::entrypoints::http::routes;

/// How B's admin is refused on a route with A's objects.
enum Case {
    /// No tenant's data: `/healthz`, the API's description.
    NoTenantData,
    /// Called as `method` `path` with `body`, B's admin gets `status`.
    Refused {
        path: String,
        body: Option<Value>,
        status: StatusCode,
    },
}

/// Tenant A's objects.
struct A {
    job: String,
    batch: String,
    key: String,
    key_id: String,
}

/// The matrix's entry for route (`method`, `template`), with A's objects filled in.
fn case(method: &str, template: &str, a: &A) -> Case {
    use Case::*;
    let forbidden = |path: &str, body: Option<Value>| Refused {
        path: path.to_string(),
        body,
        status: StatusCode::FORBIDDEN,
    };
    let missing = |path: String, body: Option<Value>| Refused {
        path,
        body,
        status: StatusCode::NOT_FOUND,
    };
    let schedule = json!({ "name": "nightly", "type": "noop", "cron": "0 3 * * *" });
    match (method, template) {
        ("get", "/healthz") | ("get", "/v1/openapi.json") => NoTenantData,
        // (the caller's own credential, described to it)
        ("get", "/v1/me") => NoTenantData,
        ("get", "/v1/jobs/export") => forbidden("/v1/jobs/export?tenant=acme", None),
        ("get", "/v1/stats/history") => forbidden("/v1/stats/history?tenant=acme", None),
        ("post", "/v1/jobs/import") => forbidden(
            "/v1/jobs/import?tenant=acme",
            Some(json!({ "jobs": [{ "job": { "id": a.job } }] })),
        ),
        ("get", "/v1/types") => forbidden("/v1/types?tenant=acme", None),
        ("post", "/v1/types/{type}/pause") => forbidden("/v1/types/noop/pause?tenant=acme", None),
        // (A's external type: B sees none of that name, and may declare its own, not A's)
        ("get", "/v1/types/{type}") => missing("/v1/types/a.only".into(), None),
        ("delete", "/v1/types/{type}") => missing("/v1/types/a.only".into(), None),
        ("put", "/v1/types/{type}") => forbidden(
            "/v1/types/a.only?tenant=acme",
            Some(json!({ "handler": { "url": "http://127.0.0.1:9/b" } })),
        ),
        // (a handler's routes take only its job token)
        ("post", "/v1/jobs/{id}/handler/progress") => Refused {
            path: format!("/v1/jobs/{}/handler/progress", a.job),
            body: Some(json!({ "percent": 1 })),
            status: StatusCode::UNAUTHORIZED,
        },
        ("post", "/v1/jobs/{id}/handler/heartbeat") => Refused {
            path: format!("/v1/jobs/{}/handler/heartbeat", a.job),
            body: None,
            status: StatusCode::UNAUTHORIZED,
        },
        ("post", "/v1/jobs/{id}/handler/complete") => Refused {
            path: format!("/v1/jobs/{}/handler/complete", a.job),
            body: Some(json!({ "result": 1 })),
            status: StatusCode::UNAUTHORIZED,
        },
        ("post", "/v1/types/{type}/resume") => forbidden("/v1/types/noop/resume?tenant=acme", None),
        ("post", "/v1/jobs") => forbidden("/v1/jobs?tenant=acme", Some(json!({ "type": "noop" }))),
        ("get", "/v1/jobs") => forbidden("/v1/jobs?tenant=acme", None),
        ("get", "/v1/jobs/{id}") => missing(format!("/v1/jobs/{}", a.job), None),
        ("post", "/v1/jobs/{id}/cancel") => missing(format!("/v1/jobs/{}/cancel", a.job), None),
        ("post", "/v1/jobs/{id}/retry") => missing(format!("/v1/jobs/{}/retry", a.job), None),
        ("post", "/v1/jobs/{id}/replay") => missing(format!("/v1/jobs/{}/replay", a.job), None),
        ("get", "/v1/jobs/{id}/logs") => missing(format!("/v1/jobs/{}/logs", a.job), None),
        ("get", "/v1/jobs/{id}/result") => missing(format!("/v1/jobs/{}/result", a.job), None),
        ("get", "/v1/stats") => forbidden("/v1/stats?tenant=acme", None),
        ("get", "/v1/events") => missing(format!("/v1/events?job_id={}", a.job), None),
        ("post", "/v1/api-keys") => forbidden(
            "/v1/api-keys",
            Some(json!({ "name": "theirs", "roles": ["admin"], "tenant": "acme" })),
        ),
        ("get", "/v1/api-keys") => forbidden("/v1/api-keys?tenant=acme", None),
        ("delete", "/v1/api-keys/{id}") => missing(format!("/v1/api-keys/{}", a.key_id), None),
        ("get", "/v1/audit") => forbidden("/v1/audit?tenant=acme", None),
        ("get", "/v1/tenants/{tenant}/limits") => forbidden("/v1/tenants/acme/limits", None),
        ("put", "/v1/tenants/{tenant}/limits") => {
            forbidden("/v1/tenants/acme/limits", Some(json!({ "max_active": 1 })))
        }
        ("get", "/v1/webhook-secret") => forbidden("/v1/webhook-secret?tenant=acme", None),
        ("post", "/v1/webhook-secret/rotate") => {
            forbidden("/v1/webhook-secret/rotate?tenant=acme", Some(json!({})))
        }
        ("post", "/v1/schedules") => forbidden("/v1/schedules?tenant=acme", Some(schedule)),
        ("get", "/v1/schedules") => forbidden("/v1/schedules?tenant=acme", None),
        ("get", "/v1/schedules/{name}") => missing("/v1/schedules/nightly".into(), None),
        ("put", "/v1/schedules/{name}") => missing("/v1/schedules/nightly".into(), Some(schedule)),
        ("delete", "/v1/schedules/{name}") => missing("/v1/schedules/nightly".into(), None),
        ("post", "/v1/schedules/{name}/pause") => {
            missing("/v1/schedules/nightly/pause".into(), None)
        }
        ("post", "/v1/schedules/{name}/resume") => {
            missing("/v1/schedules/nightly/resume".into(), None)
        }
        ("get", "/v1/schedules/{name}/runs") => missing("/v1/schedules/nightly/runs".into(), None),
        ("post", "/v1/jobs/bulk") => forbidden(
            "/v1/jobs/bulk?tenant=acme",
            Some(json!({ "action": "cancel", "filter": { "type": "noop" } })),
        ),
        ("post", "/v1/jobs/batch") => forbidden(
            "/v1/jobs/batch?tenant=acme",
            Some(json!({ "jobs": [{ "type": "noop" }] })),
        ),
        ("get", "/v1/batches/{id}") => missing(format!("/v1/batches/{}", a.batch), None),
        ("get", "/v1/batches/{id}/jobs") => missing(format!("/v1/batches/{}/jobs", a.batch), None),
        ("post", "/v1/batches/{id}/cancel") => {
            missing(format!("/v1/batches/{}/cancel", a.batch), None)
        }
        ("get", "/v1/dead-letters") => forbidden("/v1/dead-letters?type=noop&tenant=acme", None),
        ("post", "/v1/dead-letters/redrive") => forbidden(
            "/v1/dead-letters/redrive?tenant=acme",
            Some(json!({ "type": "noop" })),
        ),
        (method, path) => panic!(
            "{} {path} has no entry in the tenancy matrix: say how another tenant is refused on it",
            method.to_uppercase()
        ),
    }
}

/// The routes only an admin (or an operator) may take.
const ADMIN_ROUTES: [(&str, &str); 12] = [
    ("put", "/v1/types/{type}"),
    ("delete", "/v1/types/{type}"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/tenants/{tenant}/limits"),
    ("put", "/v1/tenants/{tenant}/limits"),
    ("post", "/v1/webhook-secret/rotate"),
    ("post", "/v1/types/{type}/pause"),
    ("post", "/v1/types/{type}/resume"),
    ("post", "/v1/jobs/import"),
];

async fn call(
    app: &TestApp,
    credential: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let caller = app.as_caller(Some(credential));
    let url = app.url(path);
    let request = match method {
        "post" => caller.client.post(url),
        "put" => caller.client.put(url),
        "delete" => caller.client.delete(url),
        _ => caller.client.get(url),
    };
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    caller.send(request).await
}

/// What A's objects look like, to tell that nothing of A's changed.
async fn snapshot(app: &TestApp, admin: &str, a: &A) -> Vec<(String, Value)> {
    let mut seen = vec![];
    for path in [
        format!("/v1/jobs/{}", a.job),
        format!("/v1/batches/{}", a.batch),
        "/v1/schedules/nightly".to_string(),
        "/v1/webhook-secret".to_string(),
        "/v1/tenants/acme/limits".to_string(),
        "/v1/types".to_string(),
        "/v1/types/a.only".to_string(),
    ] {
        let (status, mut body) = call(app, admin, "get", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // (what changes by itself as time goes by)
        for volatile in ["next_run_at", "updated_at"] {
            if let Some(o) = body.as_object_mut() {
                o.remove(volatile);
            }
        }
        seen.push((path, body));
    }
    // (A's own key still works)
    let (status, _) = call(app, &a.key, "get", "/v1/jobs", None).await;
    seen.push(("A's key".into(), json!(status.as_u16())));
    seen
}

#[tokio::test]
async fn another_tenants_admin_is_refused_on_every_route_and_changes_nothing() {
    // GIVEN tenant A (acme) with a waiting job, a batch, a schedule, a key, its limits, a
    // paused type and an external type of its own, and
    // tenant B's (globex) admin
    let app = spawn_app(&[]).await;
    let a_admin = token("acme", &["admin"]);
    let operator = token("ops", &["operator"]);
    let (status, job) = call(
        &app,
        &a_admin,
        "post",
        "/v1/jobs",
        Some(&json!({ "type": "noop", "delay_seconds": 3600 })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (status, batch) = call(
        &app,
        &a_admin,
        "post",
        "/v1/jobs/batch",
        Some(&json!({ "jobs": [{ "type": "noop", "delay_seconds": 3600 }], "batch": {} })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let (status, made) = call(
        &app,
        &a_admin,
        "post",
        "/v1/schedules",
        Some(&json!({ "name": "nightly", "type": "noop", "cron": "0 3 * * *" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, key) = call(
        &app,
        &a_admin,
        "post",
        "/v1/api-keys",
        Some(&json!({ "name": "a-service", "roles": ["reader"] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let (status, limits) = call(
        &app,
        &operator,
        "put",
        "/v1/tenants/acme/limits",
        Some(&json!({ "max_active": 100 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{limits}");
    let (status, paused) = call(&app, &a_admin, "post", "/v1/types/sleep/pause", None).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    let (status, declared) = call(
        &app,
        &a_admin,
        "put",
        "/v1/types/a.only",
        Some(&json!({ "handler": { "url": "http://127.0.0.1:9/a" } })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{declared}");
    let a = A {
        job: job["id"].as_str().unwrap().into(),
        batch: batch["batch"]["id"].as_str().unwrap().into(),
        key: key["key"].as_str().unwrap().into(),
        key_id: key["id"].as_str().unwrap().into(),
    };
    let before = snapshot(&app, &a_admin, &a).await;
    let b_admin = token("globex", &["admin"]);

    // WHEN B's admin takes every route of the router with A's objects
    let mut wrong = vec![];
    for (method, template) in routes() {
        let Case::Refused { path, body, status } = case(method, template, &a) else {
            continue;
        };
        let (got, answer) = call(&app, &b_admin, method, &path, body.as_ref()).await;
        // THEN each refuses it: 404 for an object of A's, 403 for A named
        if got != status {
            wrong.push(format!(
                "{} {path}: {got} (not {status}): {answer}",
                method.to_uppercase()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // AND on the WebSocket, B's subscription to A's job is answered as one to a missing job
    let url = app
        .url(&format!("/ws?token={b_admin}"))
        .replace("http", "ws");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::{SinkExt, StreamExt};
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({ "action": "subscribe", "job_id": a.job })
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let reply = loop {
        match socket.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                break serde_json::from_str::<Value>(&t).unwrap()
            }
            Some(Ok(_)) => continue,
            other => panic!("no answer: {other:?}"),
        }
    };
    assert_eq!(reply["code"], "not_found", "{reply}");
    // AND nothing of A's changed
    assert_eq!(snapshot(&app, &a_admin, &a).await, before);

    // WHEN B's submitter and reader take the admin routes in their own tenant
    for roles in [&["submitter"][..], &["reader"][..]] {
        let caller = token("globex", roles);
        for (method, template) in ADMIN_ROUTES {
            let path = template
                .replace("{id}", "01JF0000000000000000000000")
                .replace("{tenant}", "globex")
                .replace("{type}", "noop");
            let body = (method != "get" && method != "delete")
                .then(|| json!({ "name": "k", "roles": ["reader"] }));
            let (status, answer) = call(&app, &caller, method, &path, body.as_ref()).await;
            // THEN each is refused for the role
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{roles:?} {method} {path}: {answer}"
            );
        }
    }
}

#[test]
fn the_matrix_has_an_entry_for_every_route_and_every_admin_route_is_a_route() {
    let a = A {
        job: "j".into(),
        batch: "b".into(),
        key: "k".into(),
        key_id: "i".into(),
    };
    for (method, template) in routes() {
        // (panics naming a route without an entry)
        let _ = case(method, template, &a);
    }
    for route in ADMIN_ROUTES {
        assert!(routes().any(|r| r == route), "{route:?}");
    }
}

#[tokio::test]
async fn an_admin_acts_on_its_own_tenant_and_only_an_operator_on_another() {
    let app = spawn_app(&[]).await;
    let (acme_admin, operator) = (token("acme", &["admin"]), token("ops", &["operator"]));
    let (status, job) = call(
        &app,
        &token("globex", &["submitter"]),
        "post",
        "/v1/jobs",
        Some(&json!({ "type": "noop", "delay_seconds": 3600 })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let key_for_globex = json!({ "name": "x", "roles": ["submitter"], "tenant": "globex" });
    // WHEN acme's admin makes a key for globex and lists globex's jobs
    let (made, answer) = call(
        &app,
        &acme_admin,
        "post",
        "/v1/api-keys",
        Some(&key_for_globex),
    )
    .await;
    let (listed, _) = call(&app, &acme_admin, "get", "/v1/jobs?tenant=globex", None).await;
    // THEN both are refused
    assert_eq!(made, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["field"], "tenant", "{answer}");
    assert_eq!(listed, StatusCode::FORBIDDEN);
    // AND it may not make an operator's key, even of its own tenant
    let (status, answer) = call(
        &app,
        &acme_admin,
        "post",
        "/v1/api-keys",
        Some(&json!({ "name": "x", "roles": ["operator"] })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // WHEN the operator does both
    let (made, key) = call(
        &app,
        &operator,
        "post",
        "/v1/api-keys",
        Some(&key_for_globex),
    )
    .await;
    let (listed, page) = call(&app, &operator, "get", "/v1/jobs?tenant=globex", None).await;
    // THEN both are done
    assert_eq!(made, StatusCode::CREATED, "{key}");
    assert_eq!(key["tenant"], "globex", "{key}");
    assert_eq!(listed, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"][0]["id"], job["id"], "{page}");
}
