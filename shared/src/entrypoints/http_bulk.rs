//! Dead letters and bulk actions: `GET /v1/dead-letters` lists a tenant's dead jobs with why
//! they died (the messages a dead-letter queue received are settled into dead jobs by
//! maintenance, with kind `dead_letter`); `POST /v1/dead-letters/redrive` puts given ones back
//! at once, or every one a filter matches as a bulk job; `POST /v1/jobs/bulk` retries or cancels
//! every job a filter matches, as a job of its own (`conveyor.bulk`). A child of `http`.

use super::{audit, bad, ApiError, ApiResult, ApiState, Caller, Params};
use crate::domain::{JobId, JobStatus, JobType, Role, Tenant};
use crate::jobs::{BulkAction, BulkRequest, JobFilter, BULK_TYPE};
use crate::service::{Cursor, ServiceError, SubmitRequest};
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Ids one redrive request may name (more: use a filter, which runs as a bulk job).
pub const REDRIVE_IDS: usize = 100;
const BODY_BYTES: usize = 64 * 1024;

async fn object(request: Request) -> ApiResult<Map<String, Value>> {
    let body = to_bytes(request.into_body(), BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is over {BODY_BYTES} bytes"),
            )
        })?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// A filter's fields from `obj` (each named `<prefix><field>` when at fault).
fn filter_of(obj: &mut Map<String, Value>, prefix: &str) -> ApiResult<JobFilter> {
    let field = |name: &str| format!("{prefix}{name}");
    let string = |obj: &mut Map<String, Value>, name: &str| -> ApiResult<Option<String>> {
        match obj.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(&field(name), "must be a string")),
        }
    };
    let time = |obj: &mut Map<String, Value>, name: &str| {
        string(obj, name)?
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| bad(&field(name), "must be an RFC 3339 time"))
            })
            .transpose()
    };
    let status = string(obj, "status")?
        .map(|s| {
            JobStatus::parse(&s).ok_or_else(|| {
                bad(
                    &field("status"),
                    "must be one of waiting, scheduled, queued, running, succeeded, failed, dead, cancelled",
                )
            })
        })
        .transpose()?;
    let job_type = string(obj, "type")?
        .map(|t| JobType::parse(t).map_err(|e| bad(&field("type"), &e.message)))
        .transpose()?;
    let filter = JobFilter {
        status,
        job_type,
        created_after: time(obj, "created_after")?,
        created_before: time(obj, "created_before")?,
        batch: None,
    };
    if let (Some(a), Some(b)) = (filter.created_after, filter.created_before) {
        if b <= a {
            return Err(bad(&field("created_before"), "must be after created_after"));
        }
    }
    Ok(filter)
}

/// Submit the bulk job for `request`: 202 and the job.
async fn submit_bulk(
    state: &ApiState,
    tenant: Tenant,
    request: BulkRequest,
) -> Result<Response, ServiceError> {
    let payload = serde_json::to_value(&request).expect("serializable");
    let (job, _) = state
        .service
        .submit(
            tenant,
            SubmitRequest::new(
                JobType::parse(BULK_TYPE).expect("a valid type name"),
                payload,
            ),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
        Json(job),
    )
        .into_response())
}

pub(super) async fn bulk(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let mut obj = object(request).await?;
        let action = match obj.remove("action") {
            Some(Value::String(a)) if a == "retry" => BulkAction::Retry,
            Some(Value::String(a)) if a == "cancel" => BulkAction::Cancel,
            None | Some(Value::Null) => return Err(bad("action", "is required: retry or cancel")),
            Some(_) => return Err(bad("action", "must be retry or cancel")),
        };
        let mut filter = match obj.remove("filter") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(f)) => f,
            Some(_) => return Err(bad("filter", "must be an object")),
        };
        let parsed = filter_of(&mut filter, "filter.")?;
        if let Some(unknown) = filter.keys().next() {
            return Err(bad(&format!("filter.{unknown}"), "unknown field"));
        }
        if let Some(unknown) = obj.keys().next() {
            return Err(bad(unknown, "unknown field"));
        }
        Ok(submit_bulk(
            &state,
            tenant.clone(),
            BulkRequest {
                action,
                filter: parsed,
            },
        )
        .await?)
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "jobs.bulk",
        None,
        outcome.as_ref().map_or_else(|e| e.code, |_| "ok"),
    )
    .await;
    outcome
}

pub(super) async fn dead_letters(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let job_type = q
        .get("type")
        .map(|t| JobType::parse(t.as_str()).map_err(|e| bad("type", &e.message)))
        .transpose()?;
    let cursor = q
        .get("cursor")
        .map(|c| {
            Cursor::decode(c, &tenant)
                .ok_or_else(|| bad("cursor", "not a cursor this API handed out"))
        })
        .transpose()?;
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| bad("limit", "must be a whole number from 1 to 500"))?,
    };
    let page = state
        .service
        .list(&tenant, Some(JobStatus::Dead), job_type, cursor, limit)
        .await?;
    Ok(Json(page).into_response())
}

pub(super) async fn redrive(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let mut obj = object(request).await?;
        let ids = match obj.remove("ids") {
            None | Some(Value::Null) => None,
            Some(Value::Array(ids)) if ids.is_empty() || ids.len() > REDRIVE_IDS => {
                return Err(bad("ids", &format!("must hold 1 to {REDRIVE_IDS} job ids (more: a filter)")))
            }
            Some(Value::Array(ids)) => Some(
                ids.iter()
                    .map(|v| {
                        v.as_str()
                            .and_then(|s| JobId::parse(s).ok())
                            .ok_or_else(|| bad("ids", "must be job ids"))
                    })
                    .collect::<ApiResult<Vec<JobId>>>()?,
            ),
            Some(_) => return Err(bad("ids", "must be a list of job ids")),
        };
        let mut filter = filter_of(&mut obj, "")?;
        if let Some(unknown) = obj.keys().next() {
            return Err(bad(unknown, "unknown field"));
        }
        if filter.status.is_some() {
            return Err(bad("status", "a redrive takes dead jobs only"));
        }
        let Some(ids) = ids else {
            filter.status = Some(JobStatus::Dead);
            return Ok(submit_bulk(&state, tenant.clone(), BulkRequest { action: BulkAction::Retry, filter }).await?);
        };
        if filter != JobFilter::default() {
            return Err(bad("ids", "give ids or a filter, not both"));
        }
        let mut results = vec![];
        for id in ids {
            let result = match state.service.get(&tenant, id).await {
                Ok(job) if job.status != JobStatus::Dead => json!({
                    "id": id, "error": { "code": "illegal_transition", "message": format!("the job is {}, not dead", job.status) },
                }),
                Ok(_) => match state.service.retry(&tenant, id).await {
                    Ok(job) => json!({ "id": id, "status": job.status }),
                    Err(e) => {
                        let e = ApiError::from(e);
                        json!({ "id": id, "error": { "code": e.code, "message": e.message } })
                    }
                },
                Err(e) => {
                    let e = ApiError::from(e);
                    json!({ "id": id, "error": { "code": e.code, "message": e.message } })
                }
            };
            results.push(result);
        }
        Ok(Json(json!({ "results": results })).into_response())
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "dead_letters.redrive",
        None,
        outcome.as_ref().map_or_else(|e| e.code, |_| "ok"),
    )
    .await;
    outcome
}
