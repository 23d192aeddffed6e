//! The job types: what each is (`GET /v1/types`), external types declared, read and removed
//! (`PUT`, `GET`, `DELETE /v1/types/{type}`), and pausing and resuming one, each for a tenant
//! (its admin) or for every tenant (an operator, `all_tenants=true`). A paused type keeps
//! taking submits and starts none of the jobs it holds until it is resumed. And what ended per
//! type and minute, for charts (`GET /v1/stats/history`).

use super::fields::*;
use super::*;
use crate::domain::{ExternalType, HandlerTarget, PauseScope, Pauses};
use serde::Deserialize;

/// `PUT /v1/types/{type}`: an external type, its attempts calls to the team's own code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "TypeDeclaration")
)]
pub(crate) struct DeclareBody {
    /// where each attempt goes: {"url": "https://…"} (POSTed, signed as webhook.deliver signs)
    handler: HandlerBody,
    /// longest an attempt may take, in milliseconds (default 60,000)
    timeout_ms: Option<Whole<1, 890_000>>,
    /// attempts before a job dies (default 3)
    max_attempts: Option<MaxAttempts>,
    /// retry delays (default 1 s doubling up to 15 min)
    backoff: Option<super::jobs::BackoffBody>,
    /// most of its jobs running at once for the tenant (default 10)
    concurrency: Option<Whole<1, 1000>>,
    /// at most `per` starts each `period_ms` for the tenant
    rate: Option<RateBody>,
}

/// An external type's handler: a URL, or on the AWS backend a Lambda function.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {url} or {lambda}")]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "Handler")
)]
pub(crate) struct HandlerBody {
    /// an http or https URL, POSTed once an attempt
    url: Option<String>,
    /// on the AWS backend: a Lambda function's ARN, invoked once an attempt (one that
    /// CONVEYOR_LAMBDA_HANDLERS allows)
    lambda: Option<String>,
}

impl HandlerBody {
    fn target(self) -> Result<HandlerTarget, ApiError> {
        match (self.url, self.lambda) {
            (Some(url), None) => Ok(HandlerTarget::Url(url)),
            (None, Some(arn)) => Ok(HandlerTarget::Lambda(arn)),
            _ => Err(bad("handler", "give one of url or lambda")),
        }
    }
}

/// `{"per": n, "period_ms": m}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {per, period_ms}")]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "Rate")
)]
pub(crate) struct RateBody {
    per: Whole<1, 100_000>,
    period_ms: Whole<1, 86_400_000>,
}

/// An external type as the API shows it, with the pauses that hold the tenant's jobs of it.
fn declared_view(
    registry: &crate::jobs::Registry,
    t: &ExternalType,
    tenant: &Tenant,
    pauses: &Pauses,
) -> Value {
    let holding: Vec<_> = pauses
        .holding(tenant, t.name.as_str())
        .map(|p| p.view())
        .collect();
    json!({
        "type": t.name,
        "external": true,
        "scope": t.scope().map_or("tenant", |s| s.kind()),
        "handler": t.handler,
        "queue": registry.queue_for(&t.name, 0),
        "max_attempts": t.max_attempts,
        "timeout_ms": t.timeout_ms,
        "backoff": t.backoff,
        "concurrency": t.concurrency,
        "rate": t.rate.map(|(per, period_ms)| json!({ "per": per, "period_ms": period_ms })),
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "by": t.by,
        "paused": !holding.is_empty(),
        "pauses": holding,
    })
}

fn no_type(raw: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no job type '{raw}'"),
    )
    .field("type")
}

/// The name a path gives an external type.
fn type_name(raw: &str) -> ApiResult<JobType> {
    JobType::parse(raw).map_err(|e| bad("type", &e.message))
}

/// The external types `tenant` sees: its own, and those for every tenant it has none of.
async fn declared_for(state: &ApiState, tenant: &Tenant) -> ApiResult<Vec<ExternalType>> {
    let store = &state.service.ports().types;
    let own = store.types(&PauseScope::Tenant(tenant.clone())).await?;
    let mut all = store.types(&PauseScope::All).await?;
    all.retain(|t| !own.iter().any(|o| o.name == t.name));
    all.extend(own);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

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
    let mut types: Vec<Value> = registry
        .iter()
        .filter(|r| r.job_type.as_str() != crate::jobs::EXTERNAL_QUEUE_TYPE)
        .map(|r| type_view(registry, r, &tenant, &pauses))
        .collect();
    types.extend(
        declared_for(&state, &tenant)
            .await?
            .iter()
            .map(|t| declared_view(registry, t, &tenant, &pauses)),
    );
    Ok(Json(json!({ "types": types })).into_response())
}

/// `GET /v1/types/{type}` (reader): one type, shipped or external, as the tenant sees it.
pub(super) async fn get_type(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    Ok(Json(view_of(&state, &tenant, &raw).await?).into_response())
}

/// The type `raw` names as `tenant` sees it: a shipped one, or its external one (404: none).
async fn view_of(state: &ApiState, tenant: &Tenant, raw: &str) -> ApiResult<Value> {
    let pauses = pauses_of(state).await?;
    let registry = state.service.registry();
    if let Some(r) = registry.get(raw) {
        return Ok(type_view(registry, r, tenant, &pauses));
    }
    let name = type_name(raw)?;
    match state.service.ports().types.type_for(tenant, &name).await? {
        Some(t) => Ok(declared_view(registry, &t, tenant, &pauses)),
        None => Err(no_type(raw)),
    }
}

/// `PUT /v1/types/{type}` (admin; operator with `all_tenants=true`): declare an external type,
/// or replace its declaration (201 new, 200 replaced). Its jobs are submitted as any other's.
pub(super) async fn declare_type(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    let (scope, tenant) = scope_of(&caller, &q)?;
    let name = type_name(&raw)?;
    let registry = state.service.registry();
    ExternalType::check_name(&name, &registry.names()).map_err(|e| bad("type", &e.message))?;
    let body: DeclareBody = body_as(request, 64 * 1024).await?;
    let handler = body
        .handler
        .target()?
        .parse()
        .map_err(|e| bad(&e.field, &e.message))?;
    let calls = registry.external().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this deployment calls no external types",
        )
    })?;
    calls.check(&handler).map_err(|e| {
        bad(
            &e.field,
            &format!("cannot be called from here: {}", e.message),
        )
    })?;
    let now = Utc::now();
    let defaults = crate::jobs::JobOptions::default();
    let declared = ExternalType {
        name: name.clone(),
        scope: scope.key().to_string(),
        handler,
        timeout_ms: body.timeout_ms.map_or(60_000, |t| t.0 as u64),
        max_attempts: body
            .max_attempts
            .map_or(defaults.max_attempts, |n| n.0 as u32),
        backoff: body
            .backoff
            .map(|b| b.parse("backoff"))
            .transpose()?
            .unwrap_or(defaults.backoff),
        concurrency: body.concurrency.map_or(10, |c| c.0 as u32),
        rate: body.rate.map(|r| (r.per.0 as u32, r.period_ms.0 as u64)),
        created_at: now,
        updated_at: now,
        by: caller.actor().actor,
    };
    let outcome = state
        .service
        .ports()
        .types
        .put_type(&declared)
        .await
        .map_err(ApiError::from);
    calls.forget(&scope, &name);
    let audited = match &scope {
        PauseScope::Tenant(t) => t.clone(),
        PauseScope::All => tenant.clone(),
    };
    audit(
        &state,
        &caller,
        &audited,
        "type.declare",
        None,
        outcome_of(&outcome),
    )
    .await;
    let new = outcome?;
    let stored = state
        .service
        .ports()
        .types
        .get_type(&scope, &name)
        .await?
        .unwrap_or(declared);
    let pauses = pauses_of(&state).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(declared_view(registry, &stored, &tenant, &pauses)),
    )
        .into_response())
}

/// `DELETE /v1/types/{type}` (admin; operator with `all_tenants=true`): the declaration goes;
/// jobs of the type not yet started fail when their turn comes ("no handler").
pub(super) async fn delete_type(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    Params(q): Params,
) -> ApiResult<Response> {
    let (scope, tenant) = scope_of(&caller, &q)?;
    let name = type_name(&raw)?;
    let outcome = state
        .service
        .ports()
        .types
        .delete_type(&scope, &name)
        .await
        .map_err(ApiError::from)
        .and_then(|found| if found { Ok(()) } else { Err(no_type(&raw)) });
    if let Some(calls) = state.service.registry().external() {
        calls.forget(&scope, &name);
    }
    let audited = match &scope {
        PauseScope::Tenant(t) => t.clone(),
        PauseScope::All => tenant.clone(),
    };
    audit(
        &state,
        &caller,
        &audited,
        "type.delete",
        None,
        outcome_of(&outcome),
    )
    .await;
    outcome?;
    Ok(Json(json!({ "deleted": name })).into_response())
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

/// The type a path names, if the deployment has it (else 404): a shipped one, or one declared
/// in the scope (for a tenant: its own, or one for every tenant).
async fn known_type(state: &ApiState, raw: &str, scope: &PauseScope) -> ApiResult<JobType> {
    if let Some(r) = state.service.registry().get(raw) {
        return Ok(r.job_type.clone());
    }
    let name = JobType::parse(raw).map_err(|_| no_type(raw))?;
    let types = &state.service.ports().types;
    let declared = match scope {
        PauseScope::Tenant(t) => types.type_for(t, &name).await?,
        PauseScope::All => types.get_type(scope, &name).await?,
    };
    declared.map(|t| t.name).ok_or_else(|| no_type(raw))
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
    let job_type = known_type(&state, &raw, &scope).await?;
    let store = &state.service.ports().pauses;
    let outcome = if pause {
        store
            .pause(&crate::domain::Pause {
                scope: scope.clone(),
                job_type: job_type.clone(),
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
    Ok(Json(view_of(&state, &tenant, job_type.as_str()).await?).into_response())
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
    ("get", "/v1/types/{type}"),
    ("put", "/v1/types/{type}"),
    ("delete", "/v1/types/{type}"),
    ("post", "/v1/types/{type}/pause"),
    ("post", "/v1/types/{type}/resume"),
    ("get", "/v1/stats/history"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "/v1/types" => &["tenant"],
        "/v1/types/{type}/pause" | "/v1/types/{type}/resume" | "/v1/types/{type}" => {
            &["tenant", "all_tenants"]
        }
        "/v1/stats/history" => &["tenant", "minutes"],
        _ => return None,
    })
}

/// The resource's routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/types", get(types))
        .route(
            "/v1/types/{type}",
            get(get_type).put(declare_type).delete(delete_type),
        )
        .route("/v1/types/{type}/pause", post(pause_type))
        .route("/v1/types/{type}/resume", post(resume_type))
        .route("/v1/stats/history", get(history))
}
