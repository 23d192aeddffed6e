//! The HTTP API as an axum `Router`: the same router serves API Gateway (through
//! `lambda_http::run`) and the local runtime. Errors are JSON:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.
//!
//! This module holds what every route shares: the state, the caller, the errors, health, the
//! description and the page, and the router assembled from the resources. Each resource is a
//! child module of its own (`http_<name>.rs`) with its routes (`ROUTES`, `params`, `router`),
//! request types and handlers: `jobs`, `batches`, `schedules`, `bulk` (bulk actions and dead
//! letters), `live` (server-sent events), `admin` (keys, audit trail, limits, webhook secret);
//! `fields` holds the field types request bodies parse into, `middleware` is what a request
//! passes before its handler, and `auditing` writes the audit trail.

use crate::auth::{AuthError, Principal, Verify};
use crate::domain::{
    Actor, ApiKey, AuditEntry, Backoff, IdempotencyKey, JobId, JobStatus, JobType, Role, Tenant,
    ValidationError,
};
use crate::health::Health;
use crate::ports::AuditQuery;
use crate::service::{Cursor, JobService, ServiceError, SubmitRequest};
use axum::body::to_bytes;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// `Retry-After` of a submit over the active-job quota: a guess at when a job will have
/// finished (the client may try sooner).
const QUOTA_RETRY_AFTER_SECS: u32 = 5;
pub struct ApiState {
    pub service: JobService,
    /// Who may call: every route but `/healthz` needs a credential it accepts.
    pub auth: Arc<dyn Verify>,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Whether an accepted single submit writes an audit entry of its own
    /// (`CONVEYOR_AUDIT_SUBMITS`).
    pub audit_submits: bool,
    /// The deployment's webhook master key, from which each tenant's signing keys are derived
    /// (`None`: webhooks are not signed here, and the webhook-secret routes answer 503).
    pub webhook_master: Option<crate::jobs::WebhookKey>,
    pub limits: HttpLimits,
    pub health: Arc<Health>,
    /// The process's change feed, where it has one (the local runtime): `/v1/events` then
    /// streams from it. Without one (the `api` function) each `/v1/events` request answers
    /// what changed since the client's last event and ends; the client's `EventSource`
    /// comes back after `retry`.
    pub live: Option<Arc<dyn crate::live::FollowChanges>>,
    /// Where the dashboard connects for live updates (`None`: this origin's `/ws`).
    pub ws_url: Option<String>,
}

/// The caller's address, as the gateway saw it (set by the Lambda entry; the local runtime's
/// server gives the socket's peer address instead).
#[derive(Debug, Clone)]
pub struct SourceIp(pub String);

/// A caller already verified, or refused, before the router (by the API Gateway Lambda
/// authorizer, whose answer the `api` function puts here); the router then does not verify again.
#[derive(Debug, Clone)]
pub struct Verified(pub Result<Principal, AuthError>);

/// The verified caller of a request, and where it came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source_ip: Option<String>,
}

impl Caller {
    fn actor(&self) -> Actor {
        Actor {
            actor: self.principal.subject.clone(),
            source_ip: self.source_ip.clone(),
        }
    }

    /// 403 unless the caller holds `role` (or one above it).
    fn require(&self, role: Role) -> ApiResult<()> {
        if self.principal.has(role) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the {role} role; the credential has: {}",
                self.principal
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// The tenant a request acts on: the caller's own; an operator may name another with
    /// `tenant=`. Anyone else naming a tenant not their own gets a 403 (an admin administers
    /// their own tenant only).
    fn tenant(&self, q: &HashMap<String, String>) -> ApiResult<Tenant> {
        let Some(named) = q.get("tenant") else {
            return Ok(self.principal.tenant.clone());
        };
        let named = Tenant::parse(named.as_str()).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.message).field("tenant")
        })?;
        self.act_on(named)
    }

    /// `tenant`, if the caller may act on it: its own, or any for an operator; else a 403.
    fn act_on(&self, tenant: Tenant) -> ApiResult<Tenant> {
        if !self.principal.may_act_on(&tenant) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only an operator may act on another tenant",
            )
            .field("tenant"));
        }
        Ok(tenant)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                AuthError::Missing.to_string(),
            )
        })
    }
}

/// How long a request may take, and how many may be in flight (past it: 503, not a queue).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub timeout: Duration,
    pub max_in_flight: usize,
}

impl HttpLimits {
    pub fn from_config(c: &crate::Config) -> Self {
        Self {
            timeout: c.http_timeout,
            max_in_flight: c.http_max_in_flight,
        }
    }
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

/// A 400 naming the field that is wrong, and why.
pub(crate) fn bad(field: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).field(field)
}

/// Refuse the first of `fields` (name, given) that was given with what `with` names.
fn none_given_with(with: &str, fields: &[(&str, bool)]) -> ApiResult<()> {
    match fields.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(bad(field, &format!("cannot be combined with {with}"))),
        None => Ok(()),
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
            ServiceError::InvalidBatch(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_batch", message).field("jobs")
            }
            ServiceError::PayloadTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
                    .field("payload")
            }
            ServiceError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "job_not_found", message).field("id")
            }
            ServiceError::BatchNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "batch_not_found", message).field("id")
            }
            ServiceError::IdempotencyConflict(..) => {
                Self::new(StatusCode::CONFLICT, "idempotency_conflict", message)
                    .field("idempotency_key")
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
            ServiceError::QuotaExceeded { .. } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message);
                e.retry_after = Some(QUOTA_RETRY_AFTER_SECS);
                e
            }
            ServiceError::RateLimited { .. } => {
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                e.retry_after = Some(1);
                e
            }
            ServiceError::Rejected(_) => {
                tracing::warn!(error = %message, "the store refused a request");
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", message)
            }
            ServiceError::TooManySchedules { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", message).field("name")
            }
            ServiceError::ScheduleNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "schedule_not_found", message).field("name")
            }
            ServiceError::ScheduleExists(_) => {
                Self::new(StatusCode::CONFLICT, "schedule_exists", message).field("name")
            }
            ServiceError::ScheduleRefused(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_field", message).field("expression")
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

#[path = "http_fields.rs"]
mod fields;
#[path = "http_middleware.rs"]
mod middleware;
use middleware::*;
#[path = "http_auditing.rs"]
mod auditing;
use auditing::*;
#[path = "http_jobs.rs"]
mod jobs;
use jobs::*;
#[path = "http_admin.rs"]
mod admin;
#[path = "http_batches.rs"]
mod batches;
#[path = "http_live.rs"]
mod live;
pub use jobs::parse_submit;
pub use live::CATCH_UP_OVERLAP;
pub use middleware::dev_mode_refusal;

#[path = "http_schedules.rs"]
mod schedules;

#[path = "http_bulk.rs"]
mod bulk;

#[path = "http_types.rs"]
mod types;

#[path = "http_transfer.rs"]
mod transfer;

#[path = "http_handler.rs"]
mod handler;

/// The request bodies, each a type that parses: what the OpenAPI description's request
/// schemas are generated from (`openapi`).
#[cfg(feature = "openapi")]
pub(crate) mod bodies {
    pub(crate) use super::admin::{KeyBody, LimitsBody, RotateBody};
    pub(crate) use super::batches::BatchBody;
    pub(crate) use super::bulk::{BulkBody, RedriveBody};
    pub(crate) use super::handler::{CompleteBody, ProgressBody};
    pub(crate) use super::jobs::{ReplayBody, SubmitBody};
    pub(crate) use super::schedules::ScheduleBody;
    pub(crate) use super::transfer::ImportBody;
    pub(crate) use super::types::DeclareBody;
}

/// The API's OpenAPI 3.1 description, served at `/v1/openapi.json`: generated from the route
/// table and the request types by `openapi::generate` (a test holds this file to it).
pub static OPENAPI: crate::assets::Packed = crate::packed!("openapi.json.z");

/// The description's own routes, and health.
const DOCS_ROUTES: &[(&str, &str)] = &[("get", "/healthz"), ("get", "/v1/openapi.json")];

/// Every route, as `(method, path)`, resource by resource: what `/v1/openapi.json` describes
/// (`openapi::generate`); a test checks the router serves each.
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    [
        DOCS_ROUTES,
        jobs::ROUTES,
        live::ROUTES,
        admin::ROUTES,
        schedules::ROUTES,
        bulk::ROUTES,
        batches::ROUTES,
        types::ROUTES,
        transfer::ROUTES,
        handler::ROUTES,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// Routes that need no credential.
pub const OPEN_ROUTES: [&str; 2] = ["/healthz", "/v1/openapi.json"];

/// Query parameters each route takes; any other is a 400 (a typo is never silently ignored).
pub fn route_params(route: &str) -> &'static [&'static str] {
    jobs::params(route)
        .or_else(|| live::params(route))
        .or_else(|| admin::params(route))
        .or_else(|| schedules::params(route))
        .or_else(|| bulk::params(route))
        .or_else(|| batches::params(route))
        .or_else(|| types::params(route))
        .or_else(|| transfer::params(route))
        .or_else(|| handler::params(route))
        .unwrap_or(&[])
}

/// Build the API router over a service: every answer, error or not, is JSON; requests are
/// bounded in time and in number (`HttpLimits`).
pub fn router(state: Arc<ApiState>) -> Router {
    let limits = state.limits;
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI.text()) }),
        )
        .merge(jobs::router())
        .merge(live::router())
        .merge(admin::router())
        .merge(schedules::router())
        .merge(bulk::router())
        .merge(batches::router())
        .merge(types::router())
        .merge(transfer::router())
        .route_layer(axum::middleware::from_fn(only_known_params))
        // (Runs before the parameter check: a caller without a credential learns nothing.)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .route_layer(axum::middleware::from_fn(record_http))
        // (An external handler's routes take its job token, which they check themselves.)
        .merge(handler::router())
        // (The page holds no data: it asks for the credential and calls the API with it.)
        .route("/", get(dashboard))
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
        // (One guard shared by every route: `layer` wraps each route on its own.)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Guard {
                in_flight: tokio::sync::Semaphore::new(limits.max_in_flight.max(1)),
                timeout: limits.timeout,
            }),
            guard,
        ))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let report = state.health.report();
    if report.ok {
        Json(json!({ "status": "ok", "components": report.components })).into_response()
    } else {
        let down = report.down().join(", ");
        let body = json!({
            "error": {
                "code": "unhealthy",
                "message": format!("not working: {down}"),
                "field": null,
            },
            "status": "unhealthy",
            "components": report.components,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

fn job_id(raw: &str) -> ApiResult<JobId> {
    JobId::parse(raw).map_err(ApiError::invalid)
}

/// A listing's `status` and `type` query parameters, each checked where given.
fn status_and_type(q: &HashMap<String, String>) -> ApiResult<(Option<JobStatus>, Option<JobType>)> {
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
    Ok((status, job_type))
}

/// An optional whole-number query parameter within `[min, max]` (overflow is out of range).
/// A request's body of at most `limit` bytes (else a 413), read as `T` (else a 400 naming
/// the field).
async fn body_as<T: serde::de::DeserializeOwned>(request: Request, limit: usize) -> ApiResult<T> {
    let body = to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is over {limit} bytes"),
        )
    })?;
    fields::parse_body(&body)
}

/// A query parameter that is a time, RFC 3339.
fn time_param(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    q.get(name)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad(name, "must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z"))
        })
        .transpose()
}

/// The query parameter `cursor`, decoded by `decode` for the caller's tenant (a cursor names
/// its tenant: another tenant's is refused as no cursor of this API's).
fn cursor_param<C>(
    q: &HashMap<String, String>,
    decode: impl FnOnce(&str) -> Option<C>,
) -> ApiResult<Option<C>> {
    q.get("cursor")
        .map(|c| {
            decode(c).ok_or_else(|| {
                bad(
                    "cursor",
                    "is not a cursor this API returned for this tenant",
                )
            })
        })
        .transpose()
}

fn whole_number(
    q: &HashMap<String, String>,
    name: &str,
    min: u64,
    max: u64,
) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_field",
                        format!("must be a whole number from {min} to {max}"),
                    )
                    .field(name)
                })
        })
        .transpose()
}

/// The dashboard: one page, no build step, talking to this API and its live updates.
static DASHBOARD: crate::assets::Packed = crate::packed!("dashboard.html.z");

async fn dashboard(State(state): State<Arc<ApiState>>) -> Response {
    let ws = state.ws_url.as_deref().unwrap_or("");
    let ws: String = ws
        .chars()
        .filter(|c| !matches!(c, '"' | '<' | '>' | '&'))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD.text().replace("{{WS_URL}}", &ws),
    )
        .into_response()
}

impl From<crate::ports::StoreError> for ApiError {
    fn from(e: crate::ports::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}
