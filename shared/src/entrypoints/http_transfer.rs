//! Moving jobs between deployments: `GET /v1/jobs/export` gives a tenant's jobs page by page,
//! each with its payload, result, log and steps; `POST /v1/jobs/import` takes such jobs in under
//! their ids (a finished one as it ended, never run again; a queued or running one queued
//! again). `conveyor export` and `conveyor import` drive them. A child of `http`.

use super::*;
use crate::service::{ExportFilter, ExportedJob, Imported};

/// Most jobs one import request carries.
pub const IMPORT_MAX: usize = 100;
/// Most bytes of one import request (under a Lambda function's request size).
pub const IMPORT_BYTES: usize = 5 * 1024 * 1024;
/// Jobs of one import request taken in at once.
const IMPORTS_AT_ONCE: usize = 8;
/// Most ids one export request names.
pub const EXPORT_IDS: usize = 100;

/// `GET /v1/jobs/export` (reader): a page of the tenant's jobs a filter takes, newest first,
/// each as `{"job", "logs", "steps"}`, and the next page's cursor.
pub(super) async fn export(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let (status, job_type) = status_and_type(&q)?;
    let ids = q
        .get("ids")
        .map(|raw| {
            let ids = raw
                .split(',')
                .map(|id| JobId::parse(id.trim()).map_err(|e| bad("ids", &e.message)))
                .collect::<ApiResult<Vec<_>>>()?;
            if ids.is_empty() || ids.len() > EXPORT_IDS {
                return Err(bad(
                    "ids",
                    &format!("names 1 to {EXPORT_IDS} job ids, separated by commas"),
                ));
            }
            Ok(ids)
        })
        .transpose()?;
    let filter = ExportFilter {
        status,
        job_type,
        created_after: time_param(&q, "created_after")?,
        created_before: time_param(&q, "created_before")?,
        ids,
    };
    if filter.ids.is_some() && q.contains_key("cursor") {
        return Err(bad(
            "cursor",
            "cannot be combined with ids (one page holds them)",
        ));
    }
    let cursor = cursor_param(&q, |c| Cursor::decode(c, &tenant))?;
    let limit = whole_number(&q, "limit", 1, 500)?.unwrap_or(100) as usize;
    let page = state
        .service
        .export(&tenant, &filter, cursor, limit)
        .await?;
    Ok(Json(page).into_response())
}

/// `POST /v1/jobs/import`: jobs as an export gives them, oldest first.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "ImportRequest")
)]
pub(crate) struct ImportBody {
    /// 1 to 100 jobs, each `{"job", "logs", "steps"}` as `GET /v1/jobs/export` gives it, oldest
    /// first (a job after the jobs it depends on)
    jobs: Vec<Value>,
}

/// One job of an import body, read: its id (when it has one that reads), and the job or why
/// not, naming the part that does not read (`jobs[i].job`, `.logs` or `.steps`). (Each part is
/// read on its own with `serde_json`, whose readers of a job every binary has already: a reader
/// that tracks paths would be a second copy of them in the api function.)
fn exported_of(i: usize, raw: Value) -> (Option<String>, Result<ExportedJob, ApiError>) {
    let id = raw["job"]["id"].as_str().map(str::to_string);
    let part = |field: &str, e: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("not a job as an export gives it: {e}"),
        )
        .field(format!("jobs[{i}].{field}"))
    };
    let parsed = (|| {
        let Value::Object(mut record) = raw else {
            return Err(part("job", "each job is an object".into()));
        };
        if let Some(other) = record
            .keys()
            .find(|k| !matches!(k.as_str(), "job" | "logs" | "steps"))
        {
            return Err(part(other, "unknown field (job, logs, steps)".into()));
        }
        let mut take = |name: &str| record.remove(name).unwrap_or(Value::Null);
        let job = serde_json::from_value(take("job")).map_err(|e| part("job", e.to_string()))?;
        let logs = match take("logs") {
            Value::Null => vec![],
            v => serde_json::from_value(v).map_err(|e| part("logs", e.to_string()))?,
        };
        let steps = match take("steps") {
            Value::Null => vec![],
            v => serde_json::from_value(v).map_err(|e| part("steps", e.to_string()))?,
        };
        Ok(ExportedJob { job, logs, steps })
    })();
    (id, parsed)
}

/// `POST /v1/jobs/import` (admin): take the jobs in, in order, each on its own; 200 with what
/// became of each (`imported`, `exists`, `expired`, or `failed` with its error).
pub(super) async fn import(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let tenant = caller.tenant(&q)?;
    let outcome = import_as(&state, &tenant, request).await;
    audit(
        &state,
        &caller,
        &tenant,
        "jobs.import",
        None,
        outcome_of(&outcome),
    )
    .await;
    outcome
}

async fn import_as(
    state: &Arc<ApiState>,
    tenant: &Tenant,
    request: Request,
) -> ApiResult<Response> {
    let body = to_bytes(request.into_body(), IMPORT_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is over {IMPORT_BYTES} bytes; send fewer jobs a request"),
            )
        })?;
    let body: ImportBody = fields::parse_body(&body)?;
    if body.jobs.is_empty() || body.jobs.len() > IMPORT_MAX {
        return Err(bad(
            "jobs",
            &format!("holds 1 to {IMPORT_MAX} jobs a request"),
        ));
    }
    let tenant = tenant.clone();
    let results = detached(state, move |state| async move {
        use futures::StreamExt;
        let now = Utc::now();
        let import = |i: usize, parsed: Result<ExportedJob, ApiError>| {
            let (state, tenant) = (state.clone(), tenant.clone());
            async move {
                state
                    .service
                    .import(&tenant, parsed?, now)
                    .await
                    .map_err(|e| {
                        let e = ApiError::from(e);
                        let field = e.field.as_deref().map(|f| format!("jobs[{i}].{f}"));
                        ApiError { field, ..e }
                    })
            }
        };
        // A few at once; but a waiting job only once the jobs it depends on are in (those of
        // this request first), so that it is decided from them: in waves.
        let mut todo: Vec<_> = body
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let (id, parsed) = exported_of(i, raw);
                (i, id, parsed)
            })
            .collect();
        let mut results = vec![];
        while !todo.is_empty() {
            let pending: std::collections::HashSet<JobId> = todo
                .iter()
                .filter_map(|(_, _, parsed)| parsed.as_ref().ok().map(|e| e.job.id))
                .collect();
            let (wave, later): (Vec<_>, Vec<_>) = todo.into_iter().partition(|(_, _, parsed)| {
                parsed.as_ref().map_or(true, |e| {
                    !e.job.depends_on.iter().any(|p| pending.contains(p))
                })
            });
            // (a job waiting for itself, or a cycle, goes in the last wave, and is decided then)
            let (wave, later) = if wave.is_empty() {
                (later, vec![])
            } else {
                (wave, later)
            };
            results.extend(
                futures::stream::iter(wave)
                    .map(|(i, id, parsed)| {
                        let import = &import;
                        async move { (i, id, import(i, parsed).await) }
                    })
                    .buffer_unordered(IMPORTS_AT_ONCE)
                    .collect::<Vec<_>>()
                    .await,
            );
            todo = later;
        }
        results.sort_by_key(|(i, _, _)| *i);
        Ok::<_, ServiceError>(results)
    })
    .await?;
    let mut counts: BTreeMap<&str, usize> = ["imported", "exists", "expired", "failed"]
        .into_iter()
        .map(|k| (k, 0))
        .collect();
    let results: Vec<Value> = results
        .into_iter()
        .map(|(index, id, outcome)| match outcome {
            Ok(done) => {
                let name = match done {
                    Imported::Imported => "imported",
                    Imported::Exists => "exists",
                    Imported::Expired => "expired",
                };
                *counts.entry(name).or_default() += 1;
                json!({ "index": index, "id": id, "outcome": name })
            }
            Err(e) => {
                *counts.entry("failed").or_default() += 1;
                json!({
                    "index": index,
                    "id": id,
                    "outcome": "failed",
                    "error": { "code": e.code, "message": e.message, "field": e.field },
                })
            }
        })
        .collect();
    let mut answer = json!(counts);
    answer["results"] = Value::Array(results);
    Ok(Json(answer).into_response())
}

/// The transfer routes, as described.
pub(super) const ROUTES: &[(&str, &str)] =
    &[("get", "/v1/jobs/export"), ("post", "/v1/jobs/import")];

/// The query parameters each of the routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "/v1/jobs/export" => &[
            "status",
            "type",
            "created_after",
            "created_before",
            "ids",
            "cursor",
            "limit",
            "tenant",
        ],
        "/v1/jobs/import" => &["tenant"],
        _ => return None,
    })
}

/// The routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/jobs/export", get(export))
        .route("/v1/jobs/import", post(import))
}
