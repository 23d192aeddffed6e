//! `/v1/jobs`: submit (one job, read from its JSON as a `SubmitBody`), read, list, cancel,
//! retry, replay, logs and results; `/v1/stats`. A child of `http`.

use super::fields::*;
use super::*;
use crate::domain::{
    ConcurrencyKey, Debounce, DependencyFailure, BATCH_KEY_PREFIX, TICK_KEY_PREFIX,
};
use crate::service::DEPENDS_ON_MAX;
use serde::Deserialize;

/// Room for the fields around the payload in a submit body.
pub(super) const ENVELOPE_BYTES: usize = 64 * 1024;

/// A job as `POST /v1/jobs` takes it, and as each of a batch's jobs is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "SubmitRequest")
)]
pub(crate) struct SubmitBody {
    #[serde(rename = "type")]
    job_type: Text<JobType>,
    /// any JSON the type accepts
    #[serde(default = "empty_object")]
    payload: Value,
    priority: Option<Priority>,
    max_attempts: Option<MaxAttempts>,
    delay_seconds: Option<DelaySeconds>,
    run_at: Option<Time>,
    idempotency_key: Option<Text<IdempotencyKey>>,
    backoff: Option<BackoffBody>,
    /// what the type's per-key limits count this job under (a customer, a domain)
    concurrency_key: Option<Text<ConcurrencyKey>>,
    /// later submits with this key (same tenant and type) replace the waiting job's payload and
    /// move its run to window_seconds after the latest submit, at most max_wait_seconds after
    /// the first; not with idempotency_key, run_at or delay_seconds
    debounce: Option<DebounceBody>,
    /// jobs of the same tenant this one waits for (status waiting until they end); it runs once
    /// all succeeded; not with run_at, delay_seconds or debounce
    depends_on: Option<AtMost<JobRef, DEPENDS_ON_MAX>>,
    /// when a job it depends on fails, dies, is cancelled or is gone: cancel this one (default)
    /// or run it anyway once all have ended
    on_dependency_failure: Option<DependencyFailureChoice>,
    /// join an unfinished batch of the tenant's as a member (e.g. from a member, before it ends)
    batch_id: Option<BatchRef>,
}

/// A job's retry delays: `base_ms` doubled each attempt, up to `cap_ms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {base_ms, cap_ms}")]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "Backoff")
)]
pub(crate) struct BackoffBody {
    base_ms: Millis,
    cap_ms: Millis,
}

impl BackoffBody {
    /// The backoff, its cap at least its base (`at`: where the body has it).
    pub(crate) fn parse(self, at: &str) -> ApiResult<Backoff> {
        if self.cap_ms.0 < self.base_ms.0 {
            return Err(bad(
                &format!("{at}.cap_ms"),
                &format!("must be at least {at}.base_ms"),
            ));
        }
        Ok(Backoff {
            base_ms: self.base_ms.0 as u64,
            cap_ms: self.cap_ms.0 as u64,
        })
    }
}

/// `{"key": "…", "window_seconds": n, "max_wait_seconds": m}` (the last optional).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object {key, window_seconds, max_wait_seconds}"
)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "Debounce")
)]
pub(crate) struct DebounceBody {
    key: Text<ConcurrencyKey>,
    window_seconds: DebounceSeconds,
    max_wait_seconds: Option<DebounceSeconds>,
}

/// Keys starting with these are the schedules' and the batches' own.
fn reserved(key: &str) -> bool {
    key.starts_with(TICK_KEY_PREFIX) || key.starts_with(BATCH_KEY_PREFIX)
}

const RESERVED: &str =
    "keys starting with 'schedule:' or 'batch:' are kept for schedules' and batches' jobs";

impl SubmitBody {
    /// The submit it asks for, with what only the fields together tell (and the
    /// `Idempotency-Key` header, which the body may repeat but not contradict).
    fn into_request(self, idempotency_header: Option<&str>) -> ApiResult<SubmitRequest> {
        let delay = self.delay_seconds.map(|d| d.0);
        let run_at = self.run_at.map(|t| t.0);
        if let Some(at) = run_at {
            let horizon = chrono::Utc::now() + chrono::Duration::seconds(MAX_DELAY_SECS as i64);
            if at > horizon {
                return Err(bad("run_at", "must be at most one year from now"));
            }
        }
        if delay.is_some() && run_at.is_some() {
            return Err(bad("run_at", "give delay_seconds or run_at, not both"));
        }
        let idempotency_key = match (self.idempotency_key, idempotency_header) {
            (Some(Text(k)), Some(h)) if k.as_str() != h => {
                return Err(bad(
                    "idempotency_key",
                    "differs from the Idempotency-Key header; give one, or the same in both",
                ))
            }
            (Some(Text(k)), _) if reserved(k.as_str()) => {
                return Err(bad("idempotency_key", RESERVED))
            }
            (Some(Text(k)), _) => Some(k),
            (None, Some(h)) if reserved(h) => return Err(bad("idempotency-key", RESERVED)),
            (None, Some(h)) => {
                Some(IdempotencyKey::parse(h).map_err(|e| bad("idempotency-key", &e.message))?)
            }
            (None, None) => None,
        };
        let backoff = self.backoff.map(|b| b.parse("backoff")).transpose()?;
        let debounce = self.debounce.map(DebounceBody::parse).transpose()?;
        if debounce.is_some() {
            none_given_with(
                "debounce (a debounced job runs window_seconds after the last submit)",
                &[
                    ("idempotency_key", idempotency_key.is_some()),
                    ("run_at", run_at.is_some()),
                    ("delay_seconds", delay.is_some()),
                ],
            )?;
        }
        let depends_on: Vec<JobId> = self
            .depends_on
            .map(|ids| ids.0.into_iter().map(|id| id.0).collect())
            .unwrap_or_default();
        if !depends_on.is_empty() {
            none_given_with(
                "depends_on (a dependent job runs when its dependencies end)",
                &[
                    ("debounce", debounce.is_some()),
                    ("run_at", run_at.is_some()),
                    ("delay_seconds", delay.is_some()),
                ],
            )?;
        }
        Ok(SubmitRequest {
            job_type: self.job_type.0,
            payload: self.payload,
            priority: self.priority.map_or(0, |p| p.0 as i32),
            run_at,
            delay,
            max_attempts: self.max_attempts.map(|n| n.0 as u32),
            backoff,
            idempotency_key,
            concurrency_key: self.concurrency_key.map(|k| k.0),
            debounce,
            depends_on,
            on_dependency_failure: self
                .on_dependency_failure
                .map_or(DependencyFailure::Cancel, |f| f.0),
            batch_id: self.batch_id.map(|id| id.0),
        })
    }
}

impl DebounceBody {
    fn parse(self) -> ApiResult<Debounce> {
        let (window, max_wait) = (self.window_seconds.0, self.max_wait_seconds.map(|m| m.0));
        if max_wait.is_some_and(|m| m < window) {
            return Err(bad(
                "debounce.max_wait_seconds",
                "must be at least debounce.window_seconds",
            ));
        }
        Ok(Debounce {
            key: self.key.0,
            window,
            max_wait,
        })
    }
}

/// Parse a submit body into a `SubmitRequest`, naming the field at fault.
pub fn parse_submit(
    body: &[u8],
    idempotency_header: Option<&str>,
) -> Result<SubmitRequest, ApiError> {
    submit_of(json_of(body)?, idempotency_header)
}

/// A submit from its JSON (a request body, or one job of a batch).
pub(super) fn submit_of(
    value: Value,
    idempotency_header: Option<&str>,
) -> Result<SubmitRequest, ApiError> {
    object::<SubmitBody>(value, "a job must be a JSON object")?.into_request(idempotency_header)
}

pub(super) async fn submit(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    request: Request,
) -> ApiResult<Response> {
    let tenant = caller.tenant(&parse_query(request.uri().query().unwrap_or(""))?)?;
    let outcome = submit_as(&state, &caller, tenant.clone(), request).await;
    if let Err(e) = &outcome {
        // (A job accepted is recorded with it, in the same write, where submits are audited.)
        audit(&state, &caller, &tenant, "job.submit", None, e.code).await;
    }
    outcome
}

pub(super) async fn submit_as(
    state: &Arc<ApiState>,
    caller: &Caller,
    tenant: Tenant,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let headers = request.headers().clone();
    let limit = state.service.max_payload_bytes() + ENVELOPE_BYTES;
    let body = to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "request body is over {limit} bytes (payload limit {} bytes)",
                state.service.max_payload_bytes()
            ),
        )
        .field("payload")
    })?;
    let idempotency_header = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    "must be printable ASCII",
                )
                .field("idempotency-key")
            })
        })
        .transpose()?;
    let req = parse_submit(&body, idempotency_header)?;
    let entry = state.audit_submits.then(|| {
        caller.actor().entry(
            Some(tenant.clone()),
            "job.submit",
            None,
            "ok",
            chrono::Utc::now(),
            state.audit_retention,
        )
    });
    let (job, created) = detached(state, |state| async move {
        state.service.submit_audited(tenant, req, entry).await
    })
    .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
        Json(job),
    )
        .into_response())
}

pub(super) async fn get_job(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let job = state.service.get(&caller.tenant(&q)?, id).await?;
    Ok(Json(job).into_response())
}

pub(super) async fn result(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let job = state.service.get(&caller.tenant(&q)?, id).await?;
    Ok(Json(json!({
        "id": job.id,
        "status": job.status,
        "ready": job.status.is_terminal(),
        "result": job.result,
        "error": job.error,
    }))
    .into_response())
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let (status, job_type) = status_and_type(&q)?;
    let limit = whole_number(&q, "limit", 1, 500)?.unwrap_or(50) as usize;
    if let Some(since) = time_param(&q, "updated_since")? {
        if q.contains_key("cursor") {
            return Err(bad(
                "cursor",
                "goes with listing by creation; with updated_since, ask again from next_updated_since",
            ));
        }
        let (jobs, next) = state.service.changed_since(&tenant, since, limit).await?;
        let jobs: Vec<_> = jobs
            .into_iter()
            .filter(|j| status.is_none_or(|s| j.status == s))
            .filter(|j| job_type.as_ref().is_none_or(|t| &j.job_type == t))
            .collect();
        return Ok(Json(json!({
            "jobs": jobs,
            "next_updated_since": next.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }))
        .into_response());
    }
    let cursor = cursor_param(&q, |c| Cursor::decode(c, &tenant))?;
    let page = state
        .service
        .list(&tenant, status, job_type, cursor, limit)
        .await?;
    Ok(Json(page).into_response())
}

pub(super) async fn cancel(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    change_job(&state, &caller, &q, id, "job.cancel").await
}

pub(super) async fn retry(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    change_job(&state, &caller, &q, id, "job.retry").await
}

/// A cancel or a retry, recorded in the audit trail whatever its outcome.
pub(super) async fn change_job(
    state: &Arc<ApiState>,
    caller: &Caller,
    q: &HashMap<String, String>,
    id: JobId,
    action: &'static str,
) -> ApiResult<Response> {
    let tenant = caller.tenant(q)?;
    let outcome = match caller.require(Role::Submitter) {
        Err(e) => Err(e),
        Ok(()) => {
            let t = tenant.clone();
            detached(state, |state| async move {
                match action {
                    "job.cancel" => state.service.cancel(&t, id).await,
                    _ => state.service.retry(&t, id).await,
                }
            })
            .await
        }
    };
    audit(
        state,
        caller,
        &tenant,
        action,
        Some(id),
        outcome_of(&outcome),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(outcome?)).into_response())
}

/// `POST /v1/jobs/{id}/replay`'s body (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "ReplayRequest")
)]
pub(crate) struct ReplayBody {
    /// the new job's payload (default: the replayed job's), checked as a submit's is
    payload: Option<Value>,
}

/// `POST /v1/jobs/{id}/replay` (submitter): a new job made from this one (of any status), with
/// another payload if given; 202 and the new job, which names the old (`replay_of`), as the
/// old names it (`replayed_as`).
pub(super) async fn replay(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let tenant = caller.tenant(&q)?;
    let outcome = replay_as(&state, &caller, &tenant, id, &body).await;
    if let Err(e) = &outcome {
        // (a replay made is recorded with its job, in the same write)
        audit(&state, &caller, &tenant, "job.replay", Some(id), e.code).await;
    }
    outcome
}

async fn replay_as(
    state: &Arc<ApiState>,
    caller: &Caller,
    tenant: &Tenant,
    id: JobId,
    body: &[u8],
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let body: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody::default()
    } else {
        parse_body(body)?
    };
    let entry = caller.actor().entry(
        Some(tenant.clone()),
        "job.replay",
        None,
        "ok",
        chrono::Utc::now(),
        state.audit_retention,
    );
    let t = tenant.clone();
    let (new, _old) = detached(state, |state| async move {
        state
            .service
            .replay(&t, id, body.payload, Some(entry))
            .await
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(new)).into_response())
}

pub(super) async fn logs(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    JobPath(id): JobPath,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let after = whole_number(&q, "after", 0, i64::MAX as u64)?.unwrap_or(0);
    let limit = whole_number(&q, "limit", 1, 1000)?.unwrap_or(1000) as usize;
    let lines = state
        .service
        .logs(&caller.tenant(&q)?, id, after, limit)
        .await?;
    Ok(Json(json!({ "id": id, "logs": lines })).into_response())
}

#[derive(Serialize)]
pub(super) struct Stats {
    by_type: BTreeMap<String, BTreeMap<&'static str, u64>>,
    by_status: BTreeMap<&'static str, u64>,
    total: u64,
    /// Job rows that could not be read, set aside (not in `total`).
    quarantined: u64,
    /// The types paused for the tenant (for it alone or for every tenant): their jobs wait.
    paused: Vec<crate::domain::JobType>,
}

pub(super) async fn stats(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let stats = state.service.stats(&tenant).await?;
    let paused = state
        .service
        .ports()
        .pauses
        .pauses()
        .await
        .map_err(ApiError::from)?
        .types_for(&tenant);
    let mut out = Stats {
        by_type: BTreeMap::new(),
        by_status: JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        total: 0,
        quarantined: stats.quarantined,
        paused,
    };
    for row in stats.rows {
        *out.by_type
            .entry(row.job_type)
            .or_default()
            .entry(row.status.as_str())
            .or_default() += row.count;
        *out.by_status.entry(row.status.as_str()).or_default() += row.count;
        out.total += row.count;
    }
    Ok(Json(out).into_response())
}

/// The jobs resource's routes, as described (`(method, path)`, in `http::routes`).
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/retry"),
    ("post", "/v1/jobs/{id}/replay"),
    ("get", "/v1/jobs/{id}/logs"),
    ("get", "/v1/jobs/{id}/result"),
    ("get", "/v1/stats"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "/v1/jobs" => &[
            "status",
            "type",
            "limit",
            "cursor",
            "tenant",
            "updated_since",
        ],
        "/v1/jobs/{id}/logs" => &["after", "limit", "tenant"],
        "/v1/jobs/{id}"
        | "/v1/jobs/{id}/cancel"
        | "/v1/jobs/{id}/retry"
        | "/v1/jobs/{id}/replay"
        | "/v1/jobs/{id}/result"
        | "/v1/stats" => &["tenant"],
        _ => return None,
    })
}

/// The resource's routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/jobs/{id}/replay", post(replay))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/stats", get(stats))
}
