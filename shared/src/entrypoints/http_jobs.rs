//! `/v1/jobs`: submit (one job, parsed from its JSON), read, list, cancel, retry, logs and
//! results; `/v1/stats` and `/v1/types`. A child of `http`.

use super::*;

/// Longest `delay_seconds` accepted: one year.
pub(super) const MAX_DELAY_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Room for the fields around the payload in a submit body.
pub(super) const ENVELOPE_BYTES: usize = 64 * 1024;

/// The fields a job submit and a schedule share: its type (required), payload (default `{}`),
/// priority (default 0) and max attempts.
pub(crate) struct JobFields {
    pub job_type: JobType,
    pub payload: Value,
    pub priority: i32,
    pub max_attempts: Option<u32>,
}

/// Take the shared job fields out of a request body, naming the one at fault.
pub(crate) fn job_fields(obj: &mut Map<String, Value>) -> ApiResult<JobFields> {
    let job_type = match obj.remove("type") {
        Some(Value::String(s)) => JobType::parse(s).map_err(ApiError::invalid)?,
        Some(_) => return Err(bad("type", "must be a string")),
        None => return Err(bad("type", "is required")),
    };
    let payload = obj.remove("payload").unwrap_or(Value::Object(Map::new()));
    let priority = match obj.remove("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|p| (-1000..=1000).contains(p))
            .ok_or_else(|| bad("priority", "must be a whole number from -1000 to 1000"))?
            as i32,
    };
    let max_attempts = match obj.remove("max_attempts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| bad("max_attempts", "must be a whole number from 1 to 100"))?
                as u32,
        ),
    };
    Ok(JobFields {
        job_type,
        payload,
        priority,
        max_attempts,
    })
}

/// Parse a submit body into a `SubmitRequest`, naming the field at fault.
pub fn parse_submit(
    body: &[u8],
    idempotency_header: Option<&str>,
) -> Result<SubmitRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    submit_of(value, idempotency_header)
}

/// A submit from its JSON (a request body, or one job of a batch).
pub(super) fn submit_of(
    value: Value,
    idempotency_header: Option<&str>,
) -> Result<SubmitRequest, ApiError> {
    let Value::Object(mut obj) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "a job must be a JSON object",
        ));
    };
    const KNOWN: [&str; 13] = [
        "batch_id",
        "depends_on",
        "on_dependency_failure",
        "debounce",
        "type",
        "payload",
        "priority",
        "delay_seconds",
        "run_at",
        "max_attempts",
        "idempotency_key",
        "backoff",
        "concurrency_key",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(unknown, "unknown field"));
    }
    let JobFields {
        job_type,
        payload,
        priority,
        max_attempts,
    } = job_fields(&mut obj)?;
    let delay = match obj.remove("delay_seconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|d| (0.0..=MAX_DELAY_SECS).contains(d))
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    bad(
                        "delay_seconds",
                        "must be a number of seconds from 0 to one year",
                    )
                })?,
        ),
    };
    let run_at = match obj.remove("run_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            chrono::DateTime::parse_from_rfc3339(&s)
                .map_err(|_| {
                    bad(
                        "run_at",
                        "must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z",
                    )
                })?
                .with_timezone(&chrono::Utc),
        ),
        Some(_) => return Err(bad("run_at", "must be an RFC 3339 time string")),
    };
    if let Some(at) = run_at {
        let horizon = chrono::Utc::now() + chrono::Duration::seconds(MAX_DELAY_SECS as i64);
        if at > horizon {
            return Err(bad("run_at", "must be at most one year from now"));
        }
    }
    if delay.is_some() && run_at.is_some() {
        return Err(bad("run_at", "give delay_seconds or run_at, not both"));
    }
    let idempotency_key = match (obj.remove("idempotency_key"), idempotency_header) {
        (Some(Value::String(s)), Some(h)) if s != h => {
            return Err(bad(
                "idempotency_key",
                "differs from the Idempotency-Key header; give one, or the same in both",
            ))
        }
        (Some(Value::String(s)), _) => Some(IdempotencyKey::parse(s).map_err(ApiError::invalid)?),
        (None | Some(Value::Null), Some(h))
            if h.starts_with(crate::domain::TICK_KEY_PREFIX)
                || h.starts_with(crate::domain::BATCH_KEY_PREFIX) =>
        {
            return Err(bad(
                "idempotency-key",
                "keys starting with 'schedule:' or 'batch:' are kept for schedules' and batches' jobs",
            ))
        }
        (None | Some(Value::Null), Some(h)) => {
            Some(IdempotencyKey::parse(h).map_err(|e| bad("idempotency-key", &e.message))?)
        }
        (None | Some(Value::Null), None) => None,
        (Some(_), _) => return Err(bad("idempotency_key", "must be a string")),
    };
    if idempotency_key.as_ref().is_some_and(|k| {
        k.as_str().starts_with(crate::domain::TICK_KEY_PREFIX)
            || k.as_str().starts_with(crate::domain::BATCH_KEY_PREFIX)
    }) {
        return Err(bad(
            "idempotency_key",
            "keys starting with 'schedule:' or 'batch:' are kept for schedules' and batches' jobs",
        ));
    }
    let backoff = match obj.remove("backoff") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => {
            if let Some(unknown) = b
                .keys()
                .find(|k| !["base_ms", "cap_ms"].contains(&k.as_str()))
            {
                return Err(bad(&format!("backoff.{unknown}"), "unknown field"));
            }
            let ms = |name: &str| -> ApiResult<u64> {
                b.get(name)
                    .and_then(Value::as_u64)
                    .filter(|v| *v <= 24 * 3600 * 1000)
                    .ok_or_else(|| {
                        bad(
                            &format!("backoff.{name}"),
                            "must be a whole number of milliseconds up to one day",
                        )
                    })
            };
            let (base_ms, cap_ms) = (ms("base_ms")?, ms("cap_ms")?);
            if cap_ms < base_ms {
                return Err(bad("backoff.cap_ms", "must be at least backoff.base_ms"));
            }
            Some(Backoff { base_ms, cap_ms })
        }
        Some(_) => return Err(bad("backoff", "must be an object {base_ms, cap_ms}")),
    };
    let concurrency_key = match obj.remove("concurrency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => {
            Some(crate::domain::ConcurrencyKey::parse(k).map_err(ApiError::invalid)?)
        }
        Some(_) => return Err(bad("concurrency_key", "must be a string")),
    };
    let debounce = match obj.remove("debounce") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => Some(debounce_of(d)?),
        Some(_) => {
            return Err(bad(
                "debounce",
                "must be an object {key, window_seconds, max_wait_seconds}",
            ))
        }
    };
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
    let depends_on = match obj.remove("depends_on") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(ids)) if ids.len() <= crate::service::DEPENDS_ON_MAX => ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                id.as_str()
                    .and_then(|id| JobId::parse(id).ok())
                    .ok_or_else(|| bad(&format!("depends_on[{i}]"), "must be a job id"))
            })
            .collect::<ApiResult<Vec<_>>>()?,
        Some(_) => {
            return Err(bad(
                "depends_on",
                &format!(
                    "must be a list of at most {} job ids",
                    crate::service::DEPENDS_ON_MAX
                ),
            ))
        }
    };
    let on_dependency_failure = match obj.remove("on_dependency_failure") {
        None | Some(Value::Null) => crate::domain::DependencyFailure::Cancel,
        Some(v) => serde_json::from_value::<crate::domain::DependencyFailure>(v)
            .map_err(|_| bad("on_dependency_failure", "must be \"cancel\" or \"run\""))?,
    };
    let batch_id = match obj.remove("batch_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(JobId::parse(&id).map_err(|_| bad("batch_id", "must be a batch id"))?)
        }
        Some(_) => return Err(bad("batch_id", "must be a batch id (a string)")),
    };
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
        job_type,
        payload,
        priority,
        run_at,
        delay,
        max_attempts,
        backoff,
        idempotency_key,
        concurrency_key,
        debounce,
        depends_on,
        on_dependency_failure,
        batch_id,
    })
}

/// `{"key": "…", "window_seconds": n, "max_wait_seconds": m}` (the last optional).
pub(super) fn debounce_of(
    mut d: serde_json::Map<String, Value>,
) -> ApiResult<crate::domain::Debounce> {
    if let Some(unknown) = d
        .keys()
        .find(|k| !["key", "window_seconds", "max_wait_seconds"].contains(&k.as_str()))
    {
        return Err(bad(&format!("debounce.{unknown}"), "unknown field"));
    }
    let key = match d.remove("key") {
        Some(Value::String(k)) => crate::domain::ConcurrencyKey::parse(k).map_err(|e| {
            ApiError::invalid(crate::domain::ValidationError::new(
                "debounce.key",
                e.message,
            ))
        })?,
        _ => return Err(bad("debounce.key", "must be a string")),
    };
    let max = crate::domain::MAX_DEBOUNCE.as_secs_f64();
    let seconds = |name: &str, v: Option<Value>| -> ApiResult<Option<Duration>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|s| *s > 0.0 && *s <= max)
                .map(|s| Some(Duration::from_secs_f64(s)))
                .ok_or_else(|| {
                    bad(
                        &format!("debounce.{name}"),
                        "must be a number of seconds above 0, up to one day",
                    )
                }),
        }
    };
    let window = seconds("window_seconds", d.remove("window_seconds"))?
        .ok_or_else(|| bad("debounce.window_seconds", "is required"))?;
    let max_wait = seconds("max_wait_seconds", d.remove("max_wait_seconds"))?;
    if max_wait.is_some_and(|m| m < window) {
        return Err(bad(
            "debounce.max_wait_seconds",
            "must be at least debounce.window_seconds",
        ));
    }
    Ok(crate::domain::Debounce {
        key,
        window,
        max_wait,
    })
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
    let status = q
        .get("status")
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                bad(
                    "status",
                    "must be one of waiting, scheduled, queued, running, succeeded, failed, dead, cancelled",
                )
            })
        })
        .transpose()?;
    let job_type = q
        .get("type")
        .map(|t| JobType::parse(t.as_str()).map_err(ApiError::invalid))
        .transpose()?;
    let limit = whole_number(&q, "limit", 1, 500)?.unwrap_or(50) as usize;
    if let Some(since) = q.get("updated_since") {
        let since = DateTime::parse_from_rfc3339(since)
            .map_err(|_| {
                bad(
                    "updated_since",
                    "must be an RFC 3339 time, e.g. 2026-01-02T03:04:05.123456Z",
                )
            })?
            .with_timezone(&Utc);
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
    let cursor = q
        .get("cursor")
        .map(|c| {
            Cursor::decode(c, &tenant).ok_or_else(|| {
                bad(
                    "cursor",
                    "is not a cursor this API returned for this tenant",
                )
            })
        })
        .transpose()?;
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
}

pub(super) async fn stats(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let stats = state.service.stats(&caller.tenant(&q)?).await?;
    let mut out = Stats {
        by_type: BTreeMap::new(),
        by_status: JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        total: 0,
        quarantined: stats.quarantined,
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

pub(super) async fn types(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let registry = state.service.registry();
    Json(json!({
        "types": registry.iter().map(|r| json!({
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
        })).collect::<Vec<_>>()
    }))
}
