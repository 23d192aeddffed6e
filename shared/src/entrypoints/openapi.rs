//! The API's OpenAPI 3.1 description, generated: its operations from the route table the
//! router checks query parameters against (`http::routes`), and its request bodies' schemas
//! from the types the handlers read them into (`http::bodies`), so a route, a parameter or a
//! field cannot be added to one and not the other. Every binary serves the checked-in result
//! (`http::OPENAPI`, `openapi.json`); the shared crate's tests hold that file to what this
//! generates (`CONVEYOR_UPDATE_OPENAPI=1` writes it). Only with the `openapi` feature: the
//! schema generator stays out of the Lambda functions.

use super::http::bodies::{
    BatchBody, BulkBody, CompleteBody, DeclareBody, ImportBody, KeyBody, LimitsBody, ProgressBody,
    RedriveBody, ReplayBody, RotateBody, ScheduleBody, SubmitBody,
};
use super::http::{route_params, routes};
use schemars::{generate::SchemaSettings, JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// A request body's schema: a reference to the one generated from its type.
type Body = fn(&mut SchemaGenerator) -> Value;

fn body<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().into()
}

/// What each operation is, for the description only (the router holds the behaviour):
/// `(method, path, summary, role needed, request body type, success status, its schema)`.
type OpRow = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<Body>,
    u16,
    &'static str,
);

/// The "role" of the routes an external type's handler calls with its job token.
const JOB_TOKEN: &str = "job token";

const OPS: &[OpRow] = &[
    (
        "get",
        "/healthz",
        "Health of each part (no credential)",
        None,
        None,
        200,
        "Health",
    ),
    (
        "get",
        "/v1/openapi.json",
        "This description (no credential)",
        None,
        None,
        200,
        "Object",
    ),
    (
        "post",
        "/v1/jobs",
        "Submit a job (202 new; 200 the job an earlier submit with the same idempotency key made)",
        Some("submitter"),
        Some(body::<SubmitBody>),
        202,
        "Job",
    ),
    (
        "get",
        "/v1/jobs",
        "List the tenant's jobs, newest first",
        Some("reader"),
        None,
        200,
        "Page",
    ),
    (
        "get",
        "/v1/events",
        "Live updates as server-sent events: each event's data is a message of the WebSocket protocol ({\"type\":\"job\",\"job\":…} or {\"type\":\"log\",…}); resumable with Last-Event-ID. The local runtime streams; on AWS each request answers what changed since the last event and ends, and the client comes back after `retry`. The WebSocket protocol (the local runtime's /ws, the stack's WebSocketUrl): connect with ?token=, send {\"action\":\"subscribe\",\"job_id\":…} or {\"action\":\"subscribe\",\"all\":true}, and unsubscribe likewise",
        Some("reader"),
        None,
        200,
        "EventStream",
    ),
    (
        "get",
        "/v1/types/{type}",
        "One job type, shipped or external, as the tenant sees it",
        Some("reader"),
        None,
        200,
        "Type",
    ),
    (
        "put",
        "/v1/types/{type}",
        "Declare an external type (201; 200 when it replaced the declaration): each attempt of its jobs is one signed POST to the handler's URL, which answers with the result (2xx), a permanent failure (4xx), a retryable one (5xx, 429, or no answer in time), or 202 and completes the job later with its job token. For the tenant (admin), or with all_tenants=true for every tenant (operator)",
        Some("admin"),
        Some(body::<DeclareBody>),
        201,
        "Type",
    ),
    (
        "delete",
        "/v1/types/{type}",
        "Remove an external type's declaration for the tenant (admin), or with all_tenants=true for every tenant (operator); jobs of it not started then fail",
        Some("admin"),
        None,
        200,
        "Deleted",
    ),
    (
        "post",
        "/v1/jobs/{id}/handler/progress",
        "An external handler reports its attempt's progress (shown on the job, pushed live); answers whether a cancel was asked for",
        Some(JOB_TOKEN),
        Some(body::<ProgressBody>),
        200,
        "Liveness",
    ),
    (
        "post",
        "/v1/jobs/{id}/handler/heartbeat",
        "An external handler says its attempt is alive; answers whether a cancel was asked for",
        Some(JOB_TOKEN),
        None,
        200,
        "Liveness",
    ),
    (
        "post",
        "/v1/jobs/{id}/handler/complete",
        "An external handler that answered 202 posts its attempt's result or error (once: 409 after)",
        Some(JOB_TOKEN),
        Some(body::<CompleteBody>),
        202,
        "Accepted",
    ),
    (
        "get",
        "/v1/stats/history",
        "What ended per type and minute over the last `minutes` (default 60, at most 2,880): succeeded, failed (or dead), p50 and p99 run time (each the upper bound of its bucket), oldest first",
        Some("reader"),
        None,
        200,
        "History",
    ),
    (
        "get",
        "/v1/jobs/export",
        "Export the tenant's jobs a filter takes, newest first, each with its payload, result, log and steps (`conveyor export` writes them oldest first as JSON Lines)",
        Some("reader"),
        None,
        200,
        "ExportPage",
    ),
    (
        "post",
        "/v1/jobs/import",
        "Import exported jobs under their ids, in order: a finished job as it ended (never run again), a waiting one waiting here, a queued or running one queued again; what became of each",
        Some("admin"),
        Some(body::<ImportBody>),
        200,
        "ImportResults",
    ),
    (
        "get",
        "/v1/jobs/{id}",
        "One job",
        Some("reader"),
        None,
        200,
        "Job",
    ),
    (
        "post",
        "/v1/jobs/{id}/cancel",
        "Cancel a job (a running one is asked to stop)",
        Some("submitter"),
        None,
        202,
        "Job",
    ),
    (
        "post",
        "/v1/jobs/{id}/retry",
        "Retry a failed, dead or cancelled job",
        Some("submitter"),
        None,
        202,
        "Job",
    ),
    (
        "post",
        "/v1/jobs/{id}/replay",
        "Replay a job (any status): a new job of its type, priority, attempts, backoff and key, with its payload or the one given; each names the other (replay_of, replayed_as)",
        Some("submitter"),
        Some(body::<ReplayBody>),
        202,
        "Job",
    ),
    (
        "get",
        "/v1/jobs/{id}/logs",
        "A job's log lines",
        Some("reader"),
        None,
        200,
        "Logs",
    ),
    (
        "get",
        "/v1/jobs/{id}/result",
        "A job's result, once it is ready",
        Some("reader"),
        None,
        200,
        "Result",
    ),
    (
        "get",
        "/v1/stats",
        "Counts of the tenant's jobs by type and status",
        Some("reader"),
        None,
        200,
        "Stats",
    ),
    (
        "get",
        "/v1/types",
        "The registered job types, their options, and the pauses that hold the tenant's jobs of each",
        Some("reader"),
        None,
        200,
        "Types",
    ),
    (
        "post",
        "/v1/types/{type}/pause",
        "Pause a type: its jobs keep being accepted and none starts until it is resumed (for the tenant; all_tenants=true: for every tenant, operator)",
        Some("admin"),
        None,
        200,
        "Type",
    ),
    (
        "post",
        "/v1/types/{type}/resume",
        "Resume a paused type (for the tenant; all_tenants=true: for every tenant, operator)",
        Some("admin"),
        None,
        200,
        "Type",
    ),
    (
        "get",
        "/v1/me",
        "Who the credential is: its tenant, subject and roles, and which roles it grants (a higher role grants the lower ones)",
        Some("reader"),
        None,
        200,
        "Me",
    ),
    (
        "post",
        "/v1/api-keys",
        "Create an API key (shown once)",
        Some("admin"),
        Some(body::<KeyBody>),
        201,
        "ApiKeyCreated",
    ),
    (
        "get",
        "/v1/api-keys",
        "List API keys, without secrets",
        Some("admin"),
        None,
        200,
        "ApiKeys",
    ),
    (
        "delete",
        "/v1/api-keys/{id}",
        "Revoke an API key (refused from the next request on)",
        Some("admin"),
        None,
        200,
        "ApiKey",
    ),
    (
        "get",
        "/v1/audit",
        "The audit trail, oldest first",
        Some("admin"),
        None,
        200,
        "Audit",
    ),
    (
        "get",
        "/v1/tenants/{tenant}/limits",
        "A tenant's limits and active jobs",
        Some("admin"),
        None,
        200,
        "Limits",
    ),
    (
        "put",
        "/v1/tenants/{tenant}/limits",
        "Set a tenant's limits (null: the default)",
        Some("admin"),
        Some(body::<LimitsBody>),
        200,
        "Limits",
    ),
    (
        "get",
        "/v1/webhook-secret",
        "The secrets the tenant's webhooks are signed with",
        Some("submitter"),
        None,
        200,
        "WebhookSecrets",
    ),
    (
        "post",
        "/v1/webhook-secret/rotate",
        "Start a new webhook secret; the old one also signs during the overlap",
        Some("admin"),
        Some(body::<RotateBody>),
        200,
        "WebhookSecrets",
    ),
    (
        "post",
        "/v1/schedules",
        "Declare a recurring job: a cron (five fields), rate or one-time `at` expression in an IANA time zone; each tick submits one job (idempotency key `schedule:<name>:<tick>`). On AWS it becomes an EventBridge Scheduler schedule",
        Some("submitter"),
        Some(body::<ScheduleBody>),
        201,
        "Schedule",
    ),
    (
        "get",
        "/v1/schedules",
        "The tenant's schedules, by name",
        Some("reader"),
        None,
        200,
        "Schedules",
    ),
    (
        "get",
        "/v1/schedules/{name}",
        "One schedule, with when it fires next",
        Some("reader"),
        None,
        200,
        "Schedule",
    ),
    (
        "put",
        "/v1/schedules/{name}",
        "Replace a schedule's definition (its runs stay); ticks fire from now on",
        Some("submitter"),
        Some(body::<ScheduleBody>),
        200,
        "Schedule",
    ),
    (
        "delete",
        "/v1/schedules/{name}",
        "Delete a schedule (its jobs stay)",
        Some("submitter"),
        None,
        200,
        "Deleted",
    ),
    (
        "post",
        "/v1/schedules/{name}/pause",
        "Pause: no tick fires until resumed",
        Some("submitter"),
        None,
        200,
        "Schedule",
    ),
    (
        "post",
        "/v1/schedules/{name}/resume",
        "Resume: ticks fire again from now (the paused ones are not made up)",
        Some("submitter"),
        None,
        200,
        "Schedule",
    ),
    (
        "get",
        "/v1/schedules/{name}/runs",
        "What each recent tick became (submitted with its job, skipped, waiting), newest first",
        Some("reader"),
        None,
        200,
        "ScheduleRuns",
    ),
    (
        "post",
        "/v1/jobs/bulk",
        "Retry or cancel every job of the tenant a filter matches, as a job of its own (type conveyor.bulk): 202 and that job, whose progress and result tell how it went",
        Some("submitter"),
        Some(body::<BulkBody>),
        202,
        "Job",
    ),
    (
        "post",
        "/v1/jobs/batch",
        "Submit up to 1,000 jobs at once: 200 and each one's outcome in order (202 created, 200 an idempotency key's earlier job, or its error); with atomic, any refused job makes it a 400 listing them, and nothing is created",
        Some("submitter"),
        Some(body::<BatchBody>),
        200,
        "BatchResults",
    ),
    (
        "get",
        "/v1/batches/{id}",
        "A batch (made by POST /v1/jobs/batch with \"batch\"): its members' counts by status, its progress, and its callbacks once it ended",
        Some("reader"),
        None,
        200,
        "Batch",
    ),
    (
        "get",
        "/v1/batches/{id}/jobs",
        "A batch's members, in the order they joined, each as the job listing shows it (its status now); next_cursor pages on",
        Some("reader"),
        None,
        200,
        "Page",
    ),
    (
        "post",
        "/v1/batches/{id}/cancel",
        "Cancel every unfinished member of a batch, as a job of its own (type conveyor.bulk): 202 and that job",
        Some("submitter"),
        None,
        202,
        "Job",
    ),
    (
        "get",
        "/v1/dead-letters",
        "The tenant's dead jobs, newest first, each with why (error; kind dead_letter: its message reached the dead-letter queue)",
        Some("reader"),
        None,
        200,
        "Page",
    ),
    (
        "post",
        "/v1/dead-letters/redrive",
        "Put dead jobs back with fresh attempts: given ids at once (200, a result each), or every one a filter matches as a bulk job (202 and that job)",
        Some("submitter"),
        Some(body::<RedriveBody>),
        202,
        "Job",
    ),
];

/// The schemas of the answers (JSON Schema 2020-12, as OpenAPI 3.1 takes it); the request
/// bodies' are generated.
const ANSWERS: &str = include_str!("openapi_answers.json");

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

/// A query parameter's schema.
fn param_schema(name: &str) -> Value {
    match name {
        "limit" => json!({ "type": "integer", "minimum": 1 }),
        "after" => json!({ "type": "integer", "minimum": 0 }),
        "status" => {
            json!({ "type": "string", "enum": ["waiting", "scheduled", "queued", "running", "succeeded", "failed", "dead", "cancelled"] })
        }
        "since" | "updated_since" => json!({ "type": "string", "format": "date-time" }),
        "job_id" => ulid_schema(),
        "all" => json!({ "type": "boolean" }),
        "anonymous" | "all_tenants" => json!({ "type": "boolean" }),
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
        "updated_since" => "instead of a page by creation: the jobs changed at or after this time (RFC 3339), oldest change first; poll again from next_updated_since",
        "job_id" => "the job to follow",
        "all" => "follow every job of the tenant (true)",
        "all_tenants" => "for every tenant, not the caller's alone (true; operator)",
        "last_event_id" => "resume after this event (as the Last-Event-ID header does)",
        _ => "",
    }
}

fn operation(generator: &mut SchemaGenerator, method: &str, path: &str) -> Value {
    let &(_, _, summary, role, body, ok_status, ok_schema) = OPS
        .iter()
        .find(|o| o.0 == method && o.1 == path)
        .expect("every route is in OPS");
    let mut parameters: Vec<Value> = vec![];
    for segment in path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let schema = match (name, path) {
                ("tenant", _) => tenant_schema(),
                ("name", _) => json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,48}$" }),
                ("type", _) => json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" }),
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
    let content = if ok_schema == "EventStream" {
        json!({ "text/event-stream": { "schema": { "type": "string" } } })
    } else {
        json!({ "application/json": { "schema": schema(ok_schema) } })
    };
    responses.insert(
        ok_status.to_string(),
        json!({ "description": "done", "content": content }),
    );
    if path == "/v1/dead-letters/redrive" {
        responses.insert(
            "200".into(),
            json!({ "description": "the given ids, each redriven or why not", "content": { "application/json": { "schema": schema("RedriveResults") } } }),
        );
    }
    if path == "/v1/jobs" && method == "post" {
        responses.insert(
            "200".into(),
            json!({ "description": "the job an earlier submit with this idempotency key made", "content": { "application/json": { "schema": schema("Job") } } }),
        );
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "an error (its status: see the description's info)",
            "content": { "application/json": { "schema": schema("Error") } },
        }),
    );
    let mut out = json!({
        "summary": summary,
        "operationId": format!("{method}_{}", path.trim_start_matches('/').replace(['/', '{', '}', '.', '-'], "_")),
        "parameters": parameters,
        "responses": responses,
    });
    match role {
        None => out["security"] = json!([]),
        Some(JOB_TOKEN) => {
            out["description"] = json!("Takes the job token the handler's call carried (`Authorization: Bearer cjt_…`), good for that one attempt of that one job until its deadline; no other credential.")
        }
        Some(role) => {
            out["description"] = json!(format!("Needs the {role} role (or one above it)."))
        }
    }
    if let Some(body) = body {
        out["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": body(generator) } },
        });
    }
    out
}

/// The whole description.
pub fn generate() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths = Map::new();
    for (method, path) in routes() {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = operation(&mut generator, method, path);
    }
    let Ok(Value::Object(mut schemas)) = serde_json::from_str::<Value>(ANSWERS) else {
        panic!("openapi_answers.json is a JSON object");
    };
    for (name, schema) in generator.take_definitions(true) {
        assert!(
            schemas.insert(name.clone(), schema).is_none(),
            "{name} is both an answer's schema and a request type's"
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Background jobs over HTTP. Every route but /healthz and this one needs `Authorization: Bearer <API key or JWT>`; the tenant comes from the credential. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`: 400 invalid input (`field` names it), 401 no or a refused credential, 403 a role too low, 404 not found, 409 conflict, 413 too large, 422 refused by the store, 429 quota or rate (`Retry-After`), 431 headers, 503 unavailable (`Retry-After`), 504 timeout.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "an API key (cvk_…) or a JWT (HS256, or RS/PS/ES from the configured JWKS)" },
            },
            "schemas": schemas,
        },
    })
}

/// The description as it is checked in: an operation or a schema a line (a change shows as
/// the lines of what changed, and the text every binary includes stays small), keys sorted,
/// ending in a newline.
pub fn generate_text() -> String {
    let mut text = String::new();
    write_lines(&generate(), 0, &mut text);
    text.push('\n');
    text
}

/// `value` into `out`: objects down to an operation or a schema one key a line, the rest
/// compact.
fn write_lines(value: &Value, depth: usize, out: &mut String) {
    let compact = |v: &Value| serde_json::to_string(v).expect("JSON");
    match value {
        Value::Object(map) if depth < 3 && !map.is_empty() => {
            out.push_str("{\n");
            for (i, (key, v)) in map.iter().enumerate() {
                out.push_str(&" ".repeat(depth + 1));
                out.push_str(&compact(&Value::String(key.clone())));
                out.push_str(": ");
                write_lines(v, depth + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(depth));
            out.push('}');
        }
        other => out.push_str(&compact(other)),
    }
}
