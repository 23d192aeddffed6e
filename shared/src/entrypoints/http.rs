//! The HTTP API as an axum `Router`: the same router serves API Gateway (through
//! `lambda_http::run`) and the local runtime. Errors are JSON:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use crate::domain::{Backoff, IdempotencyKey, JobId, JobStatus, JobType, Tenant, ValidationError};
use crate::service::{JobService, ServiceError, SubmitRequest};
use axum::body::to_bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The header naming the tenant (until the security layer derives it from a token).
pub const TENANT_HEADER: &str = "x-conveyor-tenant";
/// Longest `delay_seconds` accepted: one year.
const MAX_DELAY_SECS: f64 = 365.0 * 24.0 * 3600.0;
/// Room for the fields around the payload in a submit body.
const ENVELOPE_BYTES: usize = 64 * 1024;

pub struct ApiState {
    pub service: JobService,
    pub default_tenant: Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds to send as `Retry-After` (503s from backpressure).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn invalid(e: ValidationError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", e.message).field(e.field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "field": self.field }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Invalid(v) if v.field == "type" => {
                Self::new(StatusCode::BAD_REQUEST, "unknown_type", v.message).field("type")
            }
            ServiceError::Invalid(v) => Self::invalid(v),
            ServiceError::PayloadTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
                    .field("payload")
            }
            ServiceError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "job_not_found", message).field("id")
            }
            ServiceError::Illegal(_) => {
                Self::new(StatusCode::CONFLICT, "illegal_transition", message).field("status")
            }
            ServiceError::Contended => Self::new(StatusCode::CONFLICT, "contended", message),
            ServiceError::Busy(_) => {
                tracing::warn!(error = %message, "backend saturated; refusing new work");
                let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
                e.retry_after = Some(1);
                e
            }
            ServiceError::Unavailable(_) => {
                tracing::error!(error = %message, "backend unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Run a use case to its end even if the client goes away mid-request (the server then drops
/// the handler): a submit that stored its job must also send its message.
async fn detached<T, F>(
    state: &Arc<ApiState>,
    use_case: impl FnOnce(Arc<ApiState>) -> F,
) -> ApiResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
{
    match tokio::spawn(use_case(state.clone())).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed unexpectedly",
            ))
        }
    }
}

/// Build the API router over a service.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/stats", get(stats))
        .route("/v1/types", get(types))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

fn tenant(state: &ApiState, headers: &HeaderMap) -> ApiResult<Tenant> {
    match headers.get(TENANT_HEADER) {
        None => Ok(state.default_tenant.clone()),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", "must be ASCII")
                    .field(TENANT_HEADER)
            })?;
            Tenant::parse(s).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.message)
                    .field(TENANT_HEADER)
            })
        }
    }
}

fn job_id(raw: &str) -> ApiResult<JobId> {
    JobId::parse(raw).map_err(ApiError::invalid)
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
    let Value::Object(mut obj) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "request body must be a JSON object",
        ));
    };
    let bad = |field: &str, message: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).field(field)
    };
    const KNOWN: [&str; 8] = [
        "type",
        "payload",
        "priority",
        "delay_seconds",
        "run_at",
        "max_attempts",
        "idempotency_key",
        "backoff",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(unknown, "unknown field"));
    }
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
    if delay.is_some() && run_at.is_some() {
        return Err(bad("run_at", "give delay_seconds or run_at, not both"));
    }
    let max_attempts = match obj.remove("max_attempts") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| bad("max_attempts", "must be a whole number from 1 to 100"))?
                as u32,
        ),
    };
    let idempotency_key = match (obj.remove("idempotency_key"), idempotency_header) {
        (Some(Value::String(s)), _) => Some(IdempotencyKey::parse(s).map_err(ApiError::invalid)?),
        (None | Some(Value::Null), Some(h)) => {
            Some(IdempotencyKey::parse(h).map_err(|e| bad("idempotency-key", &e.message))?)
        }
        (None | Some(Value::Null), None) => None,
        (Some(_), _) => return Err(bad("idempotency_key", "must be a string")),
    };
    let backoff = match obj.remove("backoff") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => {
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
    Ok(SubmitRequest {
        job_type,
        payload,
        priority,
        run_at,
        delay,
        max_attempts,
        backoff,
        idempotency_key,
    })
}

async fn submit(State(state): State<Arc<ApiState>>, request: Request) -> ApiResult<Response> {
    let headers = request.headers().clone();
    let tenant = tenant(&state, &headers)?;
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
    let (job, created) = detached(&state, |state| async move {
        state.service.submit(tenant, req).await
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

async fn get_job(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = state
        .service
        .get(&tenant(&state, &headers)?, job_id(&id)?)
        .await?;
    Ok(Json(job).into_response())
}

async fn result(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let job = state
        .service
        .get(&tenant(&state, &headers)?, job_id(&id)?)
        .await?;
    Ok(Json(json!({
        "id": job.id,
        "status": job.status,
        "ready": job.status.is_terminal(),
        "result": job.result,
        "error": job.error,
    }))
    .into_response())
}

async fn list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let tenant = tenant(&state, &headers)?;
    let bad = |field: &str, message: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).field(field)
    };
    if let Some(unknown) = q
        .keys()
        .find(|k| !["status", "type", "limit", "cursor"].contains(&k.as_str()))
    {
        return Err(bad(unknown, "unknown query parameter"));
    }
    let status = q
        .get("status")
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                bad(
                    "status",
                    "must be one of scheduled, queued, running, succeeded, failed, dead, cancelled",
                )
            })
        })
        .transpose()?;
    let job_type = q
        .get("type")
        .map(|t| JobType::parse(t.as_str()).map_err(ApiError::invalid))
        .transpose()?;
    let limit = q
        .get("limit")
        .map(|l| {
            l.parse::<usize>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| bad("limit", "must be a whole number from 1 to 500"))
        })
        .transpose()?
        .unwrap_or(50);
    let cursor = q
        .get("cursor")
        .map(|c| JobId::parse(c).map_err(|_| bad("cursor", "is not a cursor this API returned")))
        .transpose()?;
    let page = state
        .service
        .list(&tenant, status, job_type, cursor, limit)
        .await?;
    Ok(Json(page).into_response())
}

async fn cancel(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (tenant, id) = (tenant(&state, &headers)?, job_id(&id)?);
    let job = detached(&state, |state| async move {
        state.service.cancel(&tenant, id).await
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn retry(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (tenant, id) = (tenant(&state, &headers)?, job_id(&id)?);
    let job = detached(&state, |state| async move {
        state.service.retry(&tenant, id).await
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn logs(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let bad = |field: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "must be a whole number",
        )
        .field(field)
    };
    let after = q
        .get("after")
        .map(|a| a.parse::<u64>().map_err(|_| bad("after")))
        .transpose()?
        .unwrap_or(0);
    let limit = q
        .get("limit")
        .map(|a| a.parse::<usize>().map_err(|_| bad("limit")))
        .transpose()?
        .unwrap_or(1000);
    let lines = state
        .service
        .logs(&tenant(&state, &headers)?, job_id(&id)?, after, limit)
        .await?;
    Ok(Json(json!({ "id": id, "logs": lines })).into_response())
}

#[derive(Serialize)]
struct Stats {
    by_type: BTreeMap<String, BTreeMap<&'static str, u64>>,
    by_status: BTreeMap<&'static str, u64>,
    total: u64,
    /// Job rows that could not be read, set aside (not in `total`).
    quarantined: u64,
}

async fn stats(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let stats = state.service.stats(&tenant(&state, &headers)?).await?;
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

async fn types(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let registry = state.service.registry();
    Json(json!({
        "types": registry.iter().map(|r| json!({
            "type": r.job_type,
            "queue": registry.queue_name(&r.job_type),
            "max_attempts": r.options.max_attempts,
            "timeout_ms": r.options.timeout.as_millis() as u64,
            "concurrency": r.options.concurrency,
            "batch_size": r.options.batch_size,
            "min_interval_ms": r.options.min_interval.as_millis() as u64,
            "retention_secs": r.options.retention.as_secs(),
        })).collect::<Vec<_>>()
    }))
}
