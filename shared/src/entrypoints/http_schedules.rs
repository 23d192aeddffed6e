//! `/v1/schedules`: declare, read, change, pause, resume and delete recurring jobs, and read
//! what each tick became. A child of `http`: same errors, caller, audit and limits.

use super::fields::{
    empty_object, parse_body, AtText, CatchUpChoice, CronText, MaxAttempts, OverlapChoice,
    Priority, RateText, Text, Time, TimeZone,
};
use super::{audit, bad, ApiError, ApiResult, ApiState, Caller, Params};
use crate::domain::{CatchUp, JobType, Overlap, Role, Schedule, ScheduleName};
use crate::schedules::{self, ScheduleSpec};
use axum::body::to_bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
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

/// A schedule as `POST /v1/schedules` and `PUT /v1/schedules/{name}` take it: give exactly one
/// of cron, rate or at; name is required on POST (on PUT it may repeat the path's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "ScheduleRequest")
)]
pub(crate) struct ScheduleBody {
    name: Option<Text<ScheduleName>>,
    #[serde(rename = "type")]
    job_type: Text<JobType>,
    /// any JSON the type accepts
    #[serde(default = "empty_object")]
    payload: Value,
    priority: Option<Priority>,
    max_attempts: Option<MaxAttempts>,
    cron: Option<CronText>,
    rate: Option<RateText>,
    at: Option<AtText>,
    timezone: Option<TimeZone>,
    start_at: Option<Time>,
    end_at: Option<Time>,
    /// while the previous run is not finished: skip the tick (default), allow it, or keep one
    /// waiting
    overlap: Option<OverlapChoice>,
    /// after downtime: fire the latest missed tick once (default), or none more than a minute
    /// late
    catch_up: Option<CatchUpChoice>,
    paused: Option<bool>,
}

/// Parse a schedule body, naming the field at fault. `path_name`: the name in the path (PUT),
/// which the body may repeat but not contradict.
pub fn parse_schedule(body: &[u8], path_name: Option<&ScheduleName>) -> ApiResult<ScheduleSpec> {
    let body: ScheduleBody = parse_body(body)?;
    let name = match (body.name, path_name) {
        (Some(Text(n)), Some(p)) if &n != p => {
            return Err(bad("name", "differs from the name in the path"))
        }
        (Some(Text(n)), _) => n,
        (None, Some(p)) => p.clone(),
        (None, None) => return Err(bad("name", "is required")),
    };
    let expression = match (body.cron, body.rate, body.at) {
        (Some(CronText(c)), None, None)
        | (None, Some(RateText(c)), None)
        | (None, None, Some(AtText(c))) => c,
        (None, None, None) => return Err(bad("cron", "give one of cron, rate or at")),
        _ => return Err(bad("cron", "give only one of cron, rate or at")),
    };
    Ok(ScheduleSpec {
        name,
        job_type: body.job_type.0,
        payload: body.payload,
        priority: body.priority.map_or(0, |p| p.0 as i32),
        max_attempts: body.max_attempts.map(|n| n.0 as u32),
        expression,
        timezone: body.timezone.map_or_else(|| "UTC".into(), |z| z.0),
        start_at: body.start_at.map(|t| t.0),
        end_at: body.end_at.map(|t| t.0),
        overlap: body.overlap.map_or(Overlap::Skip, |o| o.0),
        catch_up: body.catch_up.map_or(CatchUp::Latest, |c| c.0),
        paused: body.paused.unwrap_or(false),
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

/// The schedules resource's routes, as described.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/schedules"),
    ("get", "/v1/schedules"),
    ("get", "/v1/schedules/{name}"),
    ("put", "/v1/schedules/{name}"),
    ("delete", "/v1/schedules/{name}"),
    ("post", "/v1/schedules/{name}/pause"),
    ("post", "/v1/schedules/{name}/resume"),
    ("get", "/v1/schedules/{name}/runs"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    ROUTES
        .iter()
        .any(|(_, path)| *path == route)
        .then_some(&["tenant"])
}

/// The resource's routes, served.
pub(super) fn router() -> axum::Router<std::sync::Arc<ApiState>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/schedules", post(create).get(list))
        .route(
            "/v1/schedules/{name}",
            get(get_one).put(replace).delete(delete),
        )
        .route("/v1/schedules/{name}/pause", post(pause))
        .route("/v1/schedules/{name}/resume", post(resume))
        .route("/v1/schedules/{name}/runs", get(runs))
}
