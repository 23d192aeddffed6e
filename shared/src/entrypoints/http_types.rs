//! The job types: what each is (`GET /v1/types`), and pausing and resuming one, for a tenant
//! (its admin) or for every tenant (an operator, `all_tenants=true`). A paused type keeps
//! taking submits and starts none of the jobs it holds until it is resumed. And what ended per
//! type and minute, for charts (`GET /v1/stats/history`).

use super::*;
use crate::domain::{PauseScope, Pauses};

/// A type as listed: its options, and the pauses that hold the tenant's jobs of it.
fn type_view(
    registry: &crate::jobs::Registry,
    r: &crate::jobs::Registration,
    tenant: &Tenant,
    pauses: &Pauses,
) -> Value {
    let holding: Vec<_> = pauses
        .holding(tenant, r.job_type.as_str())
        .map(|p| p.view())
        .collect();
    json!({
        "type": r.job_type,
        "queue": registry.queue_name(&r.job_type),
        "high_priority_queue": registry.high_queue_name(&r.job_type),
        "high_priority_ratio": r.options.high_priority_ratio,
        "max_attempts": r.options.max_attempts,
        "timeout_ms": r.options.timeout.as_millis() as u64,
        "concurrency": r.options.concurrency,
        "batch_size": r.options.batch_size,
        "min_interval_ms": r.options.min_interval.as_millis() as u64,
        "rate": r.options.rate.map(|rate| json!({
            "per": rate.per,
            "period_ms": rate.period.as_millis() as u64,
        })),
        "max_running_per_key": r.options.max_running_per_key,
        "rate_per_key": r.options.rate_per_key.map(|rate| json!({
            "per": rate.per,
            "period_ms": rate.period.as_millis() as u64,
        })),
        "retention_secs": r.options.retention.as_secs(),
        "paused": !holding.is_empty(),
        "pauses": holding,
    })
}

async fn pauses_of(state: &ApiState) -> ApiResult<Pauses> {
    state
        .service
        .ports()
        .pauses
        .pauses()
        .await
        .map_err(ApiError::from)
}

/// `GET /v1/types` (reader): every type, and whether it is paused for the tenant.
pub(super) async fn types(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let pauses = pauses_of(&state).await?;
    let registry = state.service.registry();
    let types: Vec<Value> = registry
        .iter()
        .map(|r| type_view(registry, r, &tenant, &pauses))
        .collect();
    Ok(Json(json!({ "types": types })).into_response())
}

/// The scope a pause or resume names: the tenant's (admin), or with `all_tenants=true` every
/// tenant's (operator).
fn scope_of(caller: &Caller, q: &HashMap<String, String>) -> ApiResult<(PauseScope, Tenant)> {
    caller.require(Role::Admin)?;
    let all = match q.get("all_tenants").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("all_tenants", "must be true or false")),
    };
    let tenant = caller.tenant(&q.clone())?;
    if all {
        if q.contains_key("tenant") {
            return Err(bad(
                "tenant",
                "names one tenant; all_tenants=true names every one",
            ));
        }
        caller.require(Role::Operator)?;
        return Ok((PauseScope::All, tenant));
    }
    Ok((PauseScope::Tenant(tenant.clone()), tenant))
}

/// The type a path names, if the deployment has it (else 404).
fn known_type<'a>(
    state: &'a ApiState,
    raw: &str,
) -> ApiResult<&'a std::sync::Arc<crate::jobs::Registration>> {
    state.service.registry().get(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job type '{raw}'"),
        )
        .field("type")
    })
}

/// `POST /v1/types/{type}/pause` or `/resume`: the type as it is then, for the tenant.
async fn pause_or_resume(
    state: Arc<ApiState>,
    caller: Caller,
    raw: String,
    q: HashMap<String, String>,
    pause: bool,
) -> ApiResult<Response> {
    let (scope, tenant) = scope_of(&caller, &q)?;
    let registration = known_type(&state, &raw)?.clone();
    let store = &state.service.ports().pauses;
    let job_type = registration.job_type.clone();
    let outcome = if pause {
        store
            .pause(&crate::domain::Pause {
                scope: scope.clone(),
                job_type,
                since: chrono::Utc::now(),
                by: caller.actor().actor,
            })
            .await
    } else {
        store.resume(&scope, &job_type).await
    }
    .map_err(ApiError::from);
    let audited = match &scope {
        PauseScope::Tenant(t) => t.clone(),
        PauseScope::All => tenant.clone(),
    };
    let action = if pause { "type.pause" } else { "type.resume" };
    audit(
        &state,
        &caller,
        &audited,
        action,
        None,
        outcome_of(&outcome),
    )
    .await;
    outcome?;
    let pauses = pauses_of(&state).await?;
    let registry = state.service.registry();
    Ok(Json(type_view(registry, &registration, &tenant, &pauses)).into_response())
}

pub(super) async fn pause_type(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(q): Params,
) -> ApiResult<Response> {
    pause_or_resume(state, caller, raw, q, true).await
}

pub(super) async fn resume_type(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(q): Params,
) -> ApiResult<Response> {
    pause_or_resume(state, caller, raw, q, false).await
}

/// `GET /v1/stats/history` (reader): what ended per type and minute over the last `minutes` (1
/// to 2,880; default 60), oldest first: jobs succeeded, failed (or dead), and the p50 and p99
/// of their run times (from buckets: each the upper bound of the bucket it falls in).
pub(super) async fn history(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let minutes = whole_number(&q, "minutes", 1, 2880)?.unwrap_or(60);
    let since =
        crate::domain::minute_of(Utc::now() - chrono::Duration::minutes(minutes as i64 - 1));
    let rows = state
        .service
        .ports()
        .history
        .minutes(&tenant, since)
        .await
        .map_err(ApiError::from)?;
    let mut types: BTreeMap<String, Vec<crate::domain::MinuteView>> = BTreeMap::new();
    for (at, job_type, minute) in rows {
        types
            .entry(job_type)
            .or_default()
            .push(crate::domain::MinuteView::of(at, &minute));
    }
    Ok(Json(json!({ "minutes": minutes, "since": since, "types": types })).into_response())
}

/// The types resource's routes, as described.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/types"),
    ("post", "/v1/types/{type}/pause"),
    ("post", "/v1/types/{type}/resume"),
    ("get", "/v1/stats/history"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "/v1/types" => &["tenant"],
        "/v1/types/{type}/pause" | "/v1/types/{type}/resume" => &["tenant", "all_tenants"],
        "/v1/stats/history" => &["tenant", "minutes"],
        _ => return None,
    })
}

/// The resource's routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/types", get(types))
        .route("/v1/types/{type}/pause", post(pause_type))
        .route("/v1/types/{type}/resume", post(resume_type))
        .route("/v1/stats/history", get(history))
}
