//! The API's OpenAPI 3.1 description, served at `/v1/openapi.json`. It is built from the same
//! route table the router checks query parameters against (`http::ROUTES`), so a route or a
//! parameter cannot be added to one and not the other (a test compares the router with it).

use super::http::{route_params, ROUTES};
use serde_json::{json, Map, Value};

/// What one operation is: for the description only (the router holds the behaviour).
struct Op {
    summary: &'static str,
    role: Option<&'static str>,
    body: Option<Value>,
    ok: (u16, Value),
}

/// A tenant name: letters, digits, `.`, `_`, `-`, at most 64.
fn tenant_schema() -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" })
}

/// A job id: a ULID.
fn ulid_schema() -> Value {
    json!({ "type": "string", "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$" })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn op(method: &str, path: &str) -> Op {
    let o = |summary, role, body, ok| Op {
        summary,
        role,
        body,
        ok,
    };
    match (method, path) {
        ("get", "/healthz") => o("Health of each part (no credential)", None, None, (200, schema("Health"))),
        ("get", "/v1/openapi.json") => o("This description (no credential)", None, None, (200, json!({ "type": "object" }))),
        ("post", "/v1/jobs") => o("Submit a job (202 new; 200 the job an earlier submit with the same idempotency key made)", Some("submitter"), Some(schema("SubmitRequest")), (202, schema("Job"))),
        ("get", "/v1/jobs") => o("List the tenant's jobs, newest first", Some("reader"), None, (200, schema("Page"))),
        ("get", "/v1/jobs/{id}") => o("One job", Some("reader"), None, (200, schema("Job"))),
        ("post", "/v1/jobs/{id}/cancel") => o("Cancel a job (a running one is asked to stop)", Some("submitter"), None, (202, schema("Job"))),
        ("post", "/v1/jobs/{id}/retry") => o("Retry a failed, dead or cancelled job", Some("submitter"), None, (202, schema("Job"))),
        ("get", "/v1/jobs/{id}/logs") => o("A job's log lines", Some("reader"), None, (200, schema("Logs"))),
        ("get", "/v1/jobs/{id}/result") => o("A job's result, once it is ready", Some("reader"), None, (200, schema("Result"))),
        ("get", "/v1/stats") => o("Counts of the tenant's jobs by type and status", Some("reader"), None, (200, schema("Stats"))),
        ("get", "/v1/types") => o("The registered job types and their options", Some("reader"), None, (200, schema("Types"))),
        ("post", "/v1/api-keys") => o("Create an API key (shown once)", Some("admin"), Some(schema("KeyRequest")), (201, schema("ApiKeyCreated"))),
        ("get", "/v1/api-keys") => o("List API keys, without secrets", Some("admin"), None, (200, schema("ApiKeys"))),
        ("delete", "/v1/api-keys/{id}") => o("Revoke an API key (refused from the next request on)", Some("admin"), None, (200, schema("ApiKey"))),
        ("get", "/v1/audit") => o("The audit trail, oldest first", Some("admin"), None, (200, schema("Audit"))),
        ("get", "/v1/tenants/{tenant}/limits") => o("A tenant's limits and active jobs", Some("admin"), None, (200, schema("Limits"))),
        ("put", "/v1/tenants/{tenant}/limits") => o("Set a tenant's limits (null: the default)", Some("admin"), Some(schema("LimitsRequest")), (200, schema("Limits"))),
        ("get", "/v1/webhook-secret") => o("The secrets the tenant's webhooks are signed with", Some("submitter"), None, (200, schema("WebhookSecrets"))),
        ("post", "/v1/webhook-secret/rotate") => o("Start a new webhook secret; the old one also signs during the overlap", Some("admin"), Some(schema("RotateRequest")), (200, schema("WebhookSecrets"))),
        _ => o("", None, None, (200, json!({}))),
    }
}

/// A query parameter's schema.
fn param_schema(name: &str) -> Value {
    match name {
        "limit" => json!({ "type": "integer", "minimum": 1 }),
        "after" => json!({ "type": "integer", "minimum": 0 }),
        "status" => {
            json!({ "type": "string", "enum": ["scheduled", "queued", "running", "succeeded", "failed", "dead", "cancelled"] })
        }
        "since" => json!({ "type": "string", "format": "date-time" }),
        "anonymous" => json!({ "type": "boolean" }),
        "tenant" => tenant_schema(),
        _ => json!({ "type": "string" }),
    }
}

fn param_doc(name: &str) -> &'static str {
    match name {
        "tenant" => "act on this tenant (admin only; others may name only their own)",
        "cursor" => "the previous page's next_cursor",
        "type" => "only jobs of this type",
        "status" => "only jobs in this status",
        "limit" => "most items to return",
        "after" => "only lines after this sequence number",
        "since" => "only entries from this time on (default: a day ago)",
        "anonymous" => "refusals no tenant could be told for, instead of a tenant's entries",
        _ => "",
    }
}

fn operation(method: &str, path: &str) -> Value {
    let op = op(method, path);
    let mut parameters: Vec<Value> = vec![];
    for segment in path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let schema = match (name, path) {
                ("tenant", _) => tenant_schema(),
                (_, p) if p.starts_with("/v1/jobs") => ulid_schema(),
                _ => json!({ "type": "string", "pattern": "^[0-9a-z]{26}$" }),
            };
            parameters.push(json!({
                "name": name, "in": "path", "required": true, "schema": schema,
            }));
        }
    }
    for name in route_params(path) {
        parameters.push(json!({
            "name": name, "in": "query", "required": false,
            "schema": param_schema(name), "description": param_doc(name),
        }));
    }
    let mut responses = Map::new();
    responses.insert(
        op.ok.0.to_string(),
        json!({ "description": "done", "content": { "application/json": { "schema": op.ok.1 } } }),
    );
    if path == "/v1/jobs" && method == "post" {
        responses.insert(
            "200".into(),
            json!({ "description": "the job an earlier submit with this idempotency key made", "content": { "application/json": { "schema": schema("Job") } } }),
        );
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "an error: 400 invalid input (`field` names it), 401 no or a refused credential, 403 a role too low, 404 not found, 409 conflict, 413 too large, 422 refused by the store, 429 quota or rate (`Retry-After`), 431 headers, 503 unavailable (`Retry-After`), 504 timeout",
            "content": { "application/json": { "schema": schema("Error") } },
        }),
    );
    let mut out = json!({
        "summary": op.summary,
        "operationId": format!("{method}_{}", path.trim_start_matches('/').replace(['/', '{', '}', '.', '-'], "_")),
        "parameters": parameters,
        "responses": responses,
    });
    match op.role {
        None => out["security"] = json!([]),
        Some(role) => {
            out["description"] = json!(format!("Needs the {role} role (or one above it)."))
        }
    }
    if let Some(body) = op.body {
        out["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": body } } });
    }
    out
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let time = json!({ "type": "string", "format": "date-time" });
    let int = json!({ "type": "integer" });
    let status = json!({ "type": "string", "enum": ["scheduled", "queued", "running", "succeeded", "failed", "dead", "cancelled"] });
    let roles = json!({ "type": "array", "items": { "type": "string", "enum": ["admin", "submitter", "reader"] } });
    let backoff = json!({
        "type": "object", "additionalProperties": false, "required": ["base_ms", "cap_ms"],
        "properties": { "base_ms": { "type": "integer", "minimum": 1 }, "cap_ms": { "type": "integer", "minimum": 1 } },
    });
    let job_error =
        json!({ "type": ["object", "null"], "properties": { "kind": string, "message": string } });
    let summary_props = json!({
        "id": string, "tenant": string, "type": string, "status": status, "priority": int,
        "attempt": int, "max_attempts": int, "created_at": time, "run_at": time,
        "started_at": nullable("string"), "finished_at": nullable("string"), "error": job_error,
    });
    let mut job_props = summary_props.as_object().unwrap().clone();
    for (k, v) in [
        ("payload", json!({})),
        ("result", json!({})),
        ("runs", int.clone()),
        ("backoff", backoff.clone()),
        ("timeout_ms", int.clone()),
        ("retention_secs", int.clone()),
        ("progress", json!({ "type": ["object", "null"] })),
        ("idempotency_key", nullable("string")),
        ("cancel_requested", json!({ "type": "boolean" })),
        ("queued_at", time.clone()),
        ("heartbeat_at", nullable("string")),
        ("expires_at", nullable("string")),
        ("version", int.clone()),
    ] {
        job_props.insert(k.into(), v);
    }
    let key_props = json!({
        "id": string, "tenant": string, "roles": roles, "name": string, "created_at": time,
        "last_used_at": nullable("string"), "expires_at": nullable("string"), "revoked_at": nullable("string"),
    });
    let mut created_props = key_props.as_object().unwrap().clone();
    created_props.insert(
        "key".into(),
        json!({ "type": "string", "description": "cvk_…: shown only here" }),
    );
    let limits = json!({
        "type": "object",
        "properties": {
            "max_active": nullable("integer"), "submits_per_second": nullable("integer"), "max_payload_bytes": nullable("integer"),
        },
    });
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": {
                "type": "object", "required": ["code", "message", "field"],
                "properties": { "code": string, "message": string, "field": nullable("string") },
            } },
        },
        "Health": { "type": "object", "required": ["status"], "properties": { "status": string, "components": { "type": "object" } } },
        "SubmitRequest": {
            "type": "object", "additionalProperties": false, "required": ["type"],
            "properties": {
                "type": { "type": "string", "description": "a registered job type (GET /v1/types)" },
                "payload": { "description": "any JSON the type accepts" },
                "priority": { "type": ["integer", "null"], "minimum": -1000, "maximum": 1000 },
                "delay_seconds": { "type": ["number", "null"], "minimum": 0, "maximum": 31536000 },
                "run_at": { "type": ["string", "null"], "format": "date-time" },
                "max_attempts": { "type": ["integer", "null"], "minimum": 1, "maximum": 100 },
                "idempotency_key": { "type": ["string", "null"], "maxLength": 255 },
                "backoff": backoff,
            },
        },
        "Job": { "type": "object", "required": ["id", "tenant", "type", "status"], "properties": job_props },
        "JobSummary": { "type": "object", "required": ["id", "tenant", "type", "status"], "properties": summary_props },
        "Page": { "type": "object", "required": ["jobs", "next_cursor"], "properties": { "jobs": { "type": "array", "items": schema("JobSummary") }, "next_cursor": nullable("string") } },
        "Logs": { "type": "object", "required": ["id", "logs"], "properties": { "id": string, "logs": { "type": "array", "items": {
            "type": "object", "required": ["seq", "at", "attempt", "line"],
            "properties": { "seq": int, "at": time, "attempt": int, "line": string },
        } } } },
        "Result": { "type": "object", "required": ["id", "status", "ready"], "properties": { "id": string, "status": status, "ready": { "type": "boolean" }, "result": {}, "error": job_error } },
        "Stats": { "type": "object", "required": ["by_type", "by_status", "total"], "properties": {
            "by_type": { "type": "object", "additionalProperties": { "type": "object", "additionalProperties": int } },
            "by_status": { "type": "object", "additionalProperties": int },
            "total": int, "quarantined": int,
        } },
        "Types": { "type": "object", "required": ["types"], "properties": { "types": { "type": "array", "items": { "type": "object", "required": ["type", "queue"] } } } },
        "KeyRequest": {
            "type": "object", "additionalProperties": false, "required": ["name", "roles"],
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 100 },
                "roles": roles,
                "tenant": { "type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,64}$" },
                "expires_in_seconds": { "type": ["integer", "null"], "minimum": 60, "maximum": 315360000 },
            },
        },
        "ApiKey": { "type": "object", "required": ["id", "tenant", "roles", "name"], "properties": key_props },
        "ApiKeyCreated": { "type": "object", "required": ["id", "key", "tenant", "roles"], "properties": created_props },
        "ApiKeys": { "type": "object", "required": ["keys"], "properties": { "keys": { "type": "array", "items": schema("ApiKey") } } },
        "Audit": { "type": "object", "required": ["entries"], "properties": { "entries": { "type": "array", "items": {
            "type": "object", "required": ["id", "at", "actor", "action", "outcome"],
            "properties": {
                "id": string, "at": time, "tenant": nullable("string"), "actor": string, "action": string,
                "job_id": nullable("string"), "source_ip": nullable("string"), "outcome": string, "expires_at": time,
            },
        } } } },
        "LimitsRequest": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "max_active": { "type": ["integer", "null"], "minimum": 1, "maximum": 1000000000 },
                "submits_per_second": { "type": ["integer", "null"], "minimum": 1, "maximum": 10000000 },
                "max_payload_bytes": { "type": ["integer", "null"], "minimum": 1 },
            },
        },
        "Limits": { "type": "object", "required": ["tenant", "limits", "effective", "active_jobs"], "properties": {
            "tenant": string, "limits": limits, "effective": limits, "active_jobs": int,
        } },
        "RotateRequest": { "type": "object", "additionalProperties": false, "properties": { "overlap_seconds": { "type": ["integer", "null"], "minimum": 0, "maximum": 2592000 } } },
        "WebhookSecrets": { "type": "object", "required": ["tenant", "secrets"], "properties": { "tenant": string, "secrets": { "type": "array", "items": {
            "type": "object", "required": ["generation", "secret"],
            "properties": { "generation": int, "secret": string, "valid_until": nullable("string") },
        } } } },
    })
}

/// The whole description.
pub fn spec() -> Value {
    let mut paths = Map::new();
    for (method, path) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation(method, path);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Background jobs over HTTP. Every route but /healthz and this one needs `Authorization: Bearer <API key or JWT>`; the tenant comes from the credential. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "an API key (cvk_…) or a JWT (HS256, or RS/PS/ES from the configured JWKS)" },
            },
            "schemas": schemas(),
        },
    })
}
