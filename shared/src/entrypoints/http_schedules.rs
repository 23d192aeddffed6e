//! `/v1/schedules`: declare, read, change, pause, resume and delete recurring jobs, and read
//! what each tick became. A child of `http`: same errors, caller, audit and limits.

use super::{audit, bad, ApiError, ApiResult, ApiState, Caller, Params};
use crate::domain::{Cadence, CatchUp, Overlap, Role, Schedule, ScheduleName};
use crate::schedules::{self, ScheduleSpec};
use axum::body::to_bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Largest schedule body: the payload limit and room for the other fields.
const ENVELOPE_BYTES: usize = 16 * 1024;

fn name_of(raw: &str) -> ApiResult<ScheduleName> {
    ScheduleName::parse(raw).map_err(ApiError::invalid)
}

/// A schedule as the API shows it: its definition and state, when it fires next; its runs
/// are at `/runs`.
pub fn view(schedule: &Schedule) -> Value {
    let mut v = serde_json::to_value(schedule).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.remove("runs");
        map.remove("tenant");
        map.insert("tenant".into(), json!(schedule.tenant));
        map.insert(
            "next_run_at".into(),
            json!(schedules::next_run(schedule, chrono::Utc::now())),
        );
    }
    v
}

/// Parse a schedule body, naming the field at fault. `path_name`: the name in the path (PUT),
/// which the body may repeat but not contradict.
pub fn parse_schedule(body: &[u8], path_name: Option<&ScheduleName>) -> ApiResult<ScheduleSpec> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "request body must be a JSON object",
        ));
    };
    const KNOWN: [&str; 14] = [
        "name",
        "type",
        "payload",
        "priority",
        "max_attempts",
        "cron",
        "rate",
        "at",
        "timezone",
        "start_at",
        "end_at",
        "overlap",
        "catch_up",
        "paused",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(unknown, "unknown field"));
    }
    let string = |obj: &mut Map<String, Value>, field: &str| -> ApiResult<Option<String>> {
        match obj.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(field, "must be a string")),
        }
    };
    let name = match (string(&mut obj, "name")?, path_name) {
        (Some(n), Some(p)) if n != p.as_str() => {
            return Err(bad("name", "differs from the name in the path"))
        }
        (Some(n), _) => name_of(&n)?,
        (None, Some(p)) => p.clone(),
        (None, None) => return Err(bad("name", "is required")),
    };
    let super::JobFields {
        job_type,
        payload,
        priority,
        max_attempts,
    } = super::job_fields(&mut obj)?;
    let expression = match (
        string(&mut obj, "cron")?,
        string(&mut obj, "rate")?,
        string(&mut obj, "at")?,
    ) {
        (Some(c), None, None) => {
            Cadence::Cron(crate::domain::Cron::parse(&c).map_err(ApiError::invalid)?)
        }
        (None, Some(r), None) => Cadence::parse_rate(&r).map_err(ApiError::invalid)?,
        (None, None, Some(a)) => Cadence::parse_at(&a).map_err(ApiError::invalid)?,
        (None, None, None) => return Err(bad("cron", "give one of cron, rate or at")),
        _ => return Err(bad("cron", "give only one of cron, rate or at")),
    };
    let timezone = string(&mut obj, "timezone")?.unwrap_or_else(|| "UTC".into());
    crate::domain::parse_timezone(&timezone).map_err(ApiError::invalid)?;
    let time = |obj: &mut Map<String, Value>,
                field: &str|
     -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
        string(obj, field)?
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| bad(field, "must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z"))
            })
            .transpose()
    };
    let start_at = time(&mut obj, "start_at")?;
    let end_at = time(&mut obj, "end_at")?;
    let overlap = match string(&mut obj, "overlap")?.as_deref() {
        None | Some("skip") => Overlap::Skip,
        Some("allow") => Overlap::Allow,
        Some("queue_one") => Overlap::QueueOne,
        Some(_) => return Err(bad("overlap", "must be skip, allow or queue_one")),
    };
    let catch_up = match string(&mut obj, "catch_up")?.as_deref() {
        None | Some("latest") => CatchUp::Latest,
        Some("none") => CatchUp::None,
        Some(_) => return Err(bad("catch_up", "must be latest or none")),
    };
    let paused = match obj.remove("paused") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("paused", "must be true or false")),
    };
    Ok(ScheduleSpec {
        name,
        job_type,
        payload,
        priority,
        max_attempts,
        expression,
        timezone,
        start_at,
        end_at,
        overlap,
        catch_up,
        paused,
    })
}

async fn body_of(state: &ApiState, request: Request) -> ApiResult<axum::body::Bytes> {
    let limit = state.service.max_payload_bytes() + ENVELOPE_BYTES;
    to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over {limit} bytes"),
        )
        .field("payload")
    })
}

pub(super) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let spec = parse_schedule(&body_of(&state, request).await?, None)?;
        Ok::<_, ApiError>(
            schedules::create(&state.service, &tenant, spec, chrono::Utc::now()).await?,
        )
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "schedule.create",
        None,
        outcome_code(&outcome),
    )
    .await;
    let schedule = outcome?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/schedules/{}", schedule.name))],
        Json(view(&schedule)),
    )
        .into_response())
}

fn outcome_code<T>(r: &ApiResult<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code,
    }
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let all = schedules::list(&state.service, &caller.tenant(&q)?).await?;
    Ok(Json(json!({ "schedules": all.iter().map(view).collect::<Vec<_>>() })).into_response())
}

pub(super) async fn get_one(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let s = schedules::get(&state.service, &caller.tenant(&q)?, &name_of(&name)?).await?;
    Ok(Json(view(&s)).into_response())
}

pub(super) async fn runs(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let s = schedules::get(&state.service, &caller.tenant(&q)?, &name_of(&name)?).await?;
    let runs: Vec<_> = s.runs.iter().rev().collect();
    Ok(Json(json!({ "runs": runs })).into_response())
}

pub(super) async fn replace(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let name = name_of(&name)?;
        let spec = parse_schedule(&body_of(&state, request).await?, Some(&name))?;
        Ok::<_, ApiError>(
            schedules::replace(&state.service, &tenant, spec, chrono::Utc::now()).await?,
        )
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "schedule.update",
        None,
        outcome_code(&outcome),
    )
    .await;
    Ok(Json(view(&outcome?)).into_response())
}

async fn pause_or_resume(
    state: Arc<ApiState>,
    caller: Caller,
    q: std::collections::HashMap<String, String>,
    name: String,
    paused: bool,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let name = name_of(&name)?;
        Ok::<_, ApiError>(
            schedules::set_paused(&state.service, &tenant, &name, paused, chrono::Utc::now())
                .await?,
        )
    }
    .await;
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    audit(
        &state,
        &caller,
        &tenant,
        action,
        None,
        outcome_code(&outcome),
    )
    .await;
    Ok(Json(view(&outcome?)).into_response())
}

pub(super) async fn pause(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    pause_or_resume(state, caller, q, name, true).await
}

pub(super) async fn resume(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    pause_or_resume(state, caller, q, name, false).await
}

pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let name = name_of(&name)?;
        schedules::delete(&state.service, &tenant, &name).await?;
        Ok::<_, ApiError>(name)
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "schedule.delete",
        None,
        outcome_code(&outcome),
    )
    .await;
    Ok(Json(json!({ "deleted": outcome? })).into_response())
}
