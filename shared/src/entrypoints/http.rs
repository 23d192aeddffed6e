//! The HTTP API as an axum `Router`: the same router serves API Gateway (through
//! `lambda_http::run`) and the local runtime. Errors are JSON:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use crate::auth::{AuthError, Principal, Verify};
use crate::domain::{
    parse_roles, Actor, ApiKey, AuditEntry, Backoff, IdempotencyKey, JobId, JobStatus, JobType,
    Role, Tenant, ValidationError,
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
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Longest `delay_seconds` accepted: one year.
const MAX_DELAY_SECS: f64 = 365.0 * 24.0 * 3600.0;
/// Room for the fields around the payload in a submit body.
const ENVELOPE_BYTES: usize = 64 * 1024;
/// `Retry-After` of a submit over the active-job quota: a guess at when a job will have
/// finished (the client may try sooner).
const QUOTA_RETRY_AFTER_SECS: u32 = 5;
/// Most request headers accepted, and most bytes of them (names and values).
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 16 * 1024;

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

#[path = "http_schedules.rs"]
mod schedules;

#[path = "http_bulk.rs"]
mod bulk;

/// Every route, as `(method, path)`: what `/v1/openapi.json` describes (`openapi::spec`); a
/// test checks the router serves each.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/v1/openapi.json"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/retry"),
    ("get", "/v1/jobs/{id}/logs"),
    ("get", "/v1/jobs/{id}/result"),
    ("get", "/v1/stats"),
    ("get", "/v1/types"),
    ("get", "/v1/events"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/tenants/{tenant}/limits"),
    ("put", "/v1/tenants/{tenant}/limits"),
    ("get", "/v1/webhook-secret"),
    ("post", "/v1/webhook-secret/rotate"),
    ("post", "/v1/schedules"),
    ("get", "/v1/schedules"),
    ("get", "/v1/schedules/{name}"),
    ("put", "/v1/schedules/{name}"),
    ("delete", "/v1/schedules/{name}"),
    ("post", "/v1/schedules/{name}/pause"),
    ("post", "/v1/schedules/{name}/resume"),
    ("get", "/v1/schedules/{name}/runs"),
    ("post", "/v1/jobs/bulk"),
    ("post", "/v1/jobs/batch"),
    ("get", "/v1/batches/{id}"),
    ("post", "/v1/batches/{id}/cancel"),
    ("get", "/v1/dead-letters"),
    ("post", "/v1/dead-letters/redrive"),
];

/// Routes that need no credential.
pub const OPEN_ROUTES: [&str; 2] = ["/healthz", "/v1/openapi.json"];

/// Query parameters each route takes; any other is a 400 (a typo is never silently ignored).
pub fn route_params(route: &str) -> &'static [&'static str] {
    match route {
        "/v1/jobs" => &[
            "status",
            "type",
            "limit",
            "cursor",
            "tenant",
            "updated_since",
        ],
        "/v1/events" => &["job_id", "all", "tenant", "last_event_id"],
        "/v1/jobs/{id}/logs" => &["after", "limit", "tenant"],
        "/v1/jobs/{id}"
        | "/v1/jobs/{id}/cancel"
        | "/v1/jobs/{id}/retry"
        | "/v1/jobs/{id}/result"
        | "/v1/stats" => &["tenant"],
        "/v1/api-keys" | "/v1/webhook-secret" | "/v1/webhook-secret/rotate" => &["tenant"],
        "/v1/schedules"
        | "/v1/schedules/{name}"
        | "/v1/schedules/{name}/pause"
        | "/v1/schedules/{name}/resume"
        | "/v1/schedules/{name}/runs" => &["tenant"],
        "/v1/jobs/bulk"
        | "/v1/jobs/batch"
        | "/v1/dead-letters/redrive"
        | "/v1/batches/{id}"
        | "/v1/batches/{id}/cancel" => &["tenant"],
        "/v1/dead-letters" => &["type", "limit", "cursor", "tenant"],
        "/v1/audit" => &["tenant", "since", "limit", "anonymous"],
        _ => &[],
    }
}

/// Build the API router over a service: every answer, error or not, is JSON; requests are
/// bounded in time and in number (`HttpLimits`).
pub fn router(state: Arc<ApiState>) -> Router {
    let limits = state.limits;
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(super::openapi::spec()) }),
        )
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/jobs/{id}/logs", get(logs))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/stats", get(stats))
        .route("/v1/types", get(types))
        .route("/v1/events", get(events))
        .route("/v1/api-keys", post(create_key).get(list_keys))
        .route("/v1/api-keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/audit", get(audit_trail))
        .route(
            "/v1/tenants/{tenant}/limits",
            get(get_limits).put(put_limits),
        )
        .route("/v1/webhook-secret", get(webhook_secret))
        .route("/v1/webhook-secret/rotate", post(rotate_webhook_secret))
        .route(
            "/v1/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/v1/schedules/{name}",
            get(schedules::get_one)
                .put(schedules::replace)
                .delete(schedules::delete),
        )
        .route("/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/v1/schedules/{name}/runs", get(schedules::runs))
        .route("/v1/jobs/bulk", post(bulk::bulk))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/v1/batches/{id}/cancel", post(cancel_batch))
        .route("/v1/dead-letters", get(bulk::dead_letters))
        .route("/v1/dead-letters/redrive", post(bulk::redrive))
        .route_layer(axum::middleware::from_fn(only_known_params))
        // (Runs before the parameter check: a caller without a credential learns nothing.)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .route_layer(axum::middleware::from_fn(record_http))
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

/// What every request passes first: the in-flight limit and the request timeout.
struct Guard {
    in_flight: tokio::sync::Semaphore,
    timeout: Duration,
}

/// Past the in-flight limit a request is refused at once (503 + Retry-After), never queued;
/// too many or too large headers are a 431; a request out of time is a 504. All JSON.
async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let Ok(_slot) = guard.in_flight.try_acquire() else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many requests in flight; try again shortly",
        );
        e.retry_after = Some(1);
        return e.into_response();
    };
    if let Some(e) = oversized_headers(request.headers()) {
        return e.into_response();
    }
    match tokio::time::timeout(guard.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took too long; its outcome is unknown: retry it (with the same Idempotency-Key for a submit)",
        )
        .into_response(),
    }
}

/// Count each routed request by route, method and code, and time it (and a submit's time on
/// its own: what a client waits for a durable job).
async fn record_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let m = crate::metrics::global();
    let code = response.status().as_u16().to_string();
    m.count(
        "conveyor_http_requests_total",
        &[
            ("route", &route),
            ("method", method.as_str()),
            ("code", &code),
        ],
        1,
    );
    m.observe(
        "conveyor_http_request_seconds",
        &[("route", &route)],
        seconds,
    );
    if route == "/v1/jobs" && method == axum::http::Method::POST {
        m.observe("conveyor_submit_seconds", &[], seconds);
    }
    response
}

/// Verify the caller (every route but `/healthz`): no or a refused credential is a 401 (and an
/// audit entry), a store that cannot be asked a 503. The verified caller goes into the
/// request's extensions for the handlers.
/// Why dev mode refuses a request, if it does. Dev mode asks for no credential, on a loopback
/// address only; but any web page the machine's browser opens can reach a loopback address too.
/// So it answers only a loopback `Host` (a name rebound to 127.0.0.1 is not one), no request a
/// proxy forwarded, and no write without `Content-Type: application/json`, which a page cannot
/// send to another origin without asking first (and it is not answered). `websocket`: the
/// WebSocket's `Origin` must be a loopback page too.
pub fn dev_mode_refusal(
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    websocket: bool,
) -> Option<(&'static str, String)> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(host) = text("host") {
        if !is_loopback_host(host) {
            return Some((
                "host",
                format!("dev mode answers only a loopback Host (localhost, 127.0.0.1, [::1]), not {host:?}"),
            ));
        }
    }
    for forwarded in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    ] {
        if headers.contains_key(forwarded) {
            return Some((
                "forwarded",
                format!("dev mode answers no forwarded request ({forwarded}): it serves this machine only"),
            ));
        }
    }
    if websocket {
        if let Some(origin) = text("origin") {
            let host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            if !is_loopback_host(host) {
                return Some((
                    "origin",
                    format!("dev mode takes WebSockets from loopback pages only, not {origin:?}"),
                ));
            }
        }
        return None;
    }
    let writes = !matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let json = text("content-type").is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if writes && !json {
        return Some((
            "content-type",
            "dev mode takes writes only with Content-Type: application/json".to_string(),
        ));
    }
    None
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.auth.is_open() {
        if let Some((field, why)) = dev_mode_refusal(request.method(), request.headers(), false) {
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
                .field(field)
                .into_response();
        }
    }
    if OPEN_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let source_ip = request
        .extensions()
        .get::<SourceIp>()
        .map(|ip| ip.0.clone())
        .or_else(|| {
            request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        });
    let verified = match request.extensions().get::<Verified>() {
        Some(Verified(identity)) => identity.clone(),
        None => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"));
            state.auth.authenticate(header).await
        }
    };
    match verified {
        Ok(principal) => {
            request.extensions_mut().insert(Caller {
                principal,
                source_ip,
            });
            next.run(request).await
        }
        Err(AuthError::Unavailable(why)) => {
            tracing::error!(error = %why, "credentials cannot be checked");
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "credentials cannot be checked now; try again shortly",
            );
            e.retry_after = Some(1);
            e.into_response()
        }
        Err(e) => {
            let actor = match &e {
                AuthError::Invalid {
                    actor: Some(actor), ..
                } => actor.clone(),
                _ => "anonymous".to_string(),
            };
            let entry = Actor { actor, source_ip }.entry(
                None,
                "auth",
                None,
                "unauthorized",
                chrono::Utc::now(),
                state.audit_retention,
            );
            record(&state, entry).await;
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
                    .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Append to the audit trail; a failure is logged, never the request's failure. A request
/// refused because the service was saturated or down (`unavailable`, `timeout`) changed nothing
/// and is not recorded: the store could not take the entry either, and waiting for it would
/// hold up the answer.
async fn record(state: &ApiState, entry: AuditEntry) {
    if matches!(entry.outcome.as_str(), "unavailable" | "timeout") {
        return;
    }
    let log = state.service.ports().audit.clone();
    if REFUSALS.contains(&entry.outcome.as_str()) {
        for entry in refusals().note(entry, log.clone()) {
            write_audit(log.as_ref(), &entry).await;
        }
        return;
    }
    write_audit(log.as_ref(), &entry).await;
}

async fn write_audit(log: &dyn crate::ports::AuditLog, entry: &AuditEntry) {
    if let Err(e) = log.record(entry).await {
        tracing::error!(error = %e, action = %entry.action, actor = %entry.actor, "could not write an audit entry");
    }
}

/// The outcomes a refused caller is answered with, which anyone can cause at any rate: each is
/// recorded once a minute for a caller, action and outcome (the first at once, the rest of the
/// minute as one entry with their `count`), so a flood of them costs the operator a few rows.
const REFUSALS: [&str; 4] = [
    "unauthorized",
    "rate_limited",
    "quota_exceeded",
    "too_many_connections",
];

/// The refusals of this process in the current minute, by caller, action and outcome.
#[derive(Default)]
struct Refusals {
    minutes: std::sync::Mutex<HashMap<RefusalKey, Counted>>,
}

type RefusalKey = (Option<Tenant>, String, Option<String>, String, String);

struct Counted {
    minute: i64,
    /// The latest refusal after the first, and how many there were.
    rest: Option<(AuditEntry, u64)>,
}

/// Most callers counted at once; past it, the oldest minutes are written out early.
const REFUSALS_KEPT: usize = 10_000;

fn refusals() -> &'static Refusals {
    static ONE: std::sync::OnceLock<Refusals> = std::sync::OnceLock::new();
    ONE.get_or_init(Refusals::default)
}

impl Refusals {
    /// Note a refusal: the entries to write now (its own if it is the first of its minute, and
    /// the counts of minutes that are over). The rest of its minute is written when the minute
    /// is over: by the next refusal after it, or by a task that waits for the minute's end.
    fn note(
        &'static self,
        entry: AuditEntry,
        log: Arc<dyn crate::ports::AuditLog>,
    ) -> Vec<AuditEntry> {
        let minute = entry.at.timestamp().div_euclid(60);
        let key = (
            entry.tenant.clone(),
            entry.actor.clone(),
            entry.source_ip.clone(),
            entry.action.clone(),
            entry.outcome.clone(),
        );
        let mut out = self.over(minute);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        match minutes.get_mut(&key) {
            Some(counted) if counted.minute == minute => {
                let first_of_rest = counted.rest.is_none();
                let n = counted.rest.as_ref().map_or(0, |r| r.1) + 1;
                counted.rest = Some((entry, n));
                if first_of_rest {
                    // (written at the minute's end even if no refusal comes after it)
                    let wait = (minute + 1) * 60 - chrono::Utc::now().timestamp() + 1;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(wait.clamp(1, 61) as u64)).await;
                        for entry in refusals().over(minute + 1) {
                            write_audit(log.as_ref(), &entry).await;
                        }
                    });
                }
            }
            _ => {
                if minutes.len() >= REFUSALS_KEPT {
                    drop(minutes);
                    out.extend(self.over(i64::MAX));
                    minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
                }
                minutes.insert(key, Counted { minute, rest: None });
                out.push(entry);
            }
        }
        out
    }

    /// The counted rest of every minute before `minute`, taken out to be written.
    fn over(&self, minute: i64) -> Vec<AuditEntry> {
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        minutes.retain(|_, counted| {
            if counted.minute >= minute {
                return true;
            }
            if let Some((mut entry, n)) = counted.rest.take() {
                entry.count = n;
                out.push(entry);
            }
            false
        });
        out
    }
}

/// The outcome an audit entry records: `ok`, or the error code answered.
fn outcome_of<T>(result: &ApiResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code,
    }
}

/// Record what a caller did to a job (or tried to), with the outcome it was answered.
async fn audit(
    state: &ApiState,
    caller: &Caller,
    tenant: &Tenant,
    action: &str,
    job_id: Option<JobId>,
    outcome: &'static str,
) {
    let entry = caller.actor().entry(
        Some(tenant.clone()),
        action,
        job_id,
        outcome,
        chrono::Utc::now(),
        state.audit_retention,
    );
    record(state, entry).await;
}

/// Too many or too large headers.
fn oversized_headers(headers: &HeaderMap) -> Option<ApiError> {
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    (headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES).then(|| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} headers, {bytes} bytes: at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
    })
}

/// Refuse a query string that does not parse, or names a parameter the route does not take.
async fn only_known_params(request: Request, next: Next) -> Response {
    if request.uri().query().is_none_or(str::is_empty) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let query = request.uri().query().unwrap_or("");
    match parse_query(query) {
        Err(e) => e.into_response(),
        Ok(params) => match params
            .keys()
            .find(|k| !route_params(&route).contains(&k.as_str()))
        {
            Some(unknown) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                format!(
                    "unknown query parameter; this route takes: {}",
                    match route_params(&route) {
                        [] => "none".to_string(),
                        known => known.join(", "),
                    }
                ),
            )
            .field(unknown.clone())
            .into_response(),
            None => next.run(request).await,
        },
    }
}

fn parse_query(query: &str) -> ApiResult<HashMap<String, String>> {
    let pairs: Vec<(String, String)> = decode_query_pairs(query)?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "query parameter given more than once",
            )
            .field(k));
        }
    }
    Ok(out)
}

/// Split and percent-decode `a=1&b=2`; a parameter that is not UTF-8 once decoded is a 400.
fn decode_query_pairs(query: &str) -> ApiResult<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                let bytes = percent_decode(&s.replace('+', " "));
                String::from_utf8(bytes).map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_query",
                        "the query string is not valid UTF-8 once decoded",
                    )
                })
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The query parameters of a request (already checked by `only_known_params`).
struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Params)
    }
}

/// The job id in the path: a path that does not decode, or is not a job id, is a JSON 400.
struct JobPath(JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_field",
                    format!("the job id in the path cannot be read: {}", e.body_text()),
                )
                .field("id")
            })?;
        job_id(&raw).map(JobPath)
    }
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

/// An optional whole-number query parameter within `[min, max]` (overflow is out of range).
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
fn submit_of(value: Value, idempotency_header: Option<&str>) -> Result<SubmitRequest, ApiError> {
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
fn debounce_of(mut d: serde_json::Map<String, Value>) -> ApiResult<crate::domain::Debounce> {
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

async fn submit(
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

async fn submit_as(
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

/// Largest batch submit body.
const BATCH_BYTES: usize = 5 * 1024 * 1024;

/// One item's outcome in a batch answer: its job (id and status) and whether it is new, or its
/// error as a single submit would have answered it.
fn batch_item(index: usize, outcome: Result<(crate::domain::Job, bool), ApiError>) -> Value {
    match outcome {
        Ok((job, new)) => json!({
            "index": index,
            "status": if new { 202 } else { 200 },
            "job": { "id": job.id, "status": job.status },
        }),
        Err(e) => json!({
            "index": index,
            "status": e.status.as_u16(),
            "error": { "code": e.code, "message": e.message, "field": e.field },
        }),
    }
}

/// `POST /v1/jobs/batch {"jobs": [...], "atomic": false}`: up to 1,000 jobs, each as `POST
/// /v1/jobs` takes one; 200 with each one's outcome in order. With `atomic`, a batch with any
/// refused job is a 400 listing those, and nothing is created.
async fn submit_batch(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let body = to_bytes(request.into_body(), BATCH_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a batch body is at most {BATCH_BYTES} bytes: send it in parts"),
            )
            .field("jobs")
        })?;
    let mut obj = json_object(&body, &["jobs", "atomic", "batch"], false)?;
    let batch = match obj.remove("batch") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => Some(batch_spec_of(b)?),
        Some(_) => {
            return Err(bad(
                "batch",
                "must be an object {on_complete?, on_success?}: the batch's callbacks",
            ))
        }
    };
    let atomic = match obj.remove("atomic") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("atomic", "must be true or false")),
    };
    let jobs = match obj.remove("jobs") {
        Some(Value::Array(jobs)) if (1..=crate::service::BATCH_MAX).contains(&jobs.len()) => jobs,
        Some(Value::Array(_)) => {
            return Err(bad(
                "jobs",
                &format!("must hold 1 to {} jobs", crate::service::BATCH_MAX),
            ))
        }
        _ => return Err(bad("jobs", "must be an array of jobs")),
    };
    let n = jobs.len();
    // Each job parsed as a single submit is; the parsed ones go on, with where they were.
    let mut outcomes: Vec<Option<Result<(crate::domain::Job, bool), ApiError>>> =
        (0..n).map(|_| None).collect();
    let mut parsed = vec![];
    for (i, job) in jobs.into_iter().enumerate() {
        match submit_of(job, None) {
            Ok(req) => parsed.push((i, req)),
            Err(e) => outcomes[i] = Some(Err(e)),
        }
    }
    let refused = |outcomes: Vec<Option<Result<(crate::domain::Job, bool), ApiError>>>| {
        let errors: Vec<Value> = outcomes
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Some(Err(e)) => Some(batch_item(i, Err(e))),
                _ => None,
            })
            .collect();
        (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": {
                    "code": "invalid_batch",
                    "message": format!("{} of the batch's {n} jobs are refused; nothing was created (atomic)", errors.len()),
                    "field": "jobs",
                },
                "results": errors,
            })),
        )
            .into_response()
    };
    let (at, reqs): (Vec<usize>, Vec<SubmitRequest>) = parsed.into_iter().unzip();
    if atomic && at.len() < n {
        // Refused as a whole: with what the others would be refused for, too.
        let more = state
            .service
            .batch_refusals(&tenant, reqs)
            .await
            .map_err(ApiError::from)?;
        for (i, e) in more {
            outcomes[at[i]] = Some(Err(ApiError::from(e)));
        }
        audit(
            &state,
            &caller,
            &tenant,
            "job.submit_batch",
            None,
            "invalid_batch",
        )
        .await;
        return Ok(refused(outcomes));
    }
    let entry = caller.actor().entry(
        Some(tenant.clone()),
        "job.submit_batch",
        None,
        "ok",
        chrono::Utc::now(),
        state.audit_retention,
    );
    // (The outcome as it is: an atomic batch's refusals are answered item by item.)
    let submitted = detached(&state, |state| async move {
        let opened = match batch {
            Some(spec) => Some(state.service.open_batch(&tenant, spec).await?.id),
            None => None,
        };
        let outcome = state
            .service
            .submit_batch_in(tenant.clone(), reqs, atomic, Some(entry), opened)
            .await;
        let batch = match opened {
            Some(id) => Some(state.service.get_batch(&tenant, id).await?),
            None => None,
        };
        Ok(outcome.map(|results| (results, batch)))
    })
    .await?;
    let (submitted, batch) = match submitted {
        Ok((results, batch)) => (Ok(results), batch),
        Err(e) => (Err(e), None),
    };
    match submitted {
        Ok(results) => {
            for (i, r) in at.iter().zip(results) {
                outcomes[*i] = Some(r.map_err(ApiError::from));
            }
        }
        Err(ServiceError::InvalidBatch(errors)) => {
            for (i, e) in errors {
                outcomes[at[i]] = Some(Err(ApiError::from(e)));
            }
            return Ok(refused(outcomes));
        }
        Err(e) => return Err(e.into()),
    }
    let results: Vec<Value> = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| batch_item(i, o.expect("every job has its outcome")))
        .collect();
    let count = |status: u64| results.iter().filter(|r| r["status"] == status).count();
    let (created, existing) = (count(202), count(200));
    let mut answer = json!({
        "created": created,
        "existing": existing,
        "refused": n - created - existing,
        "results": results,
    });
    if let Some(batch) = batch {
        answer["batch"] = batch_view(&batch);
    }
    Ok(Json(answer).into_response())
}

/// `{"on_complete": {type, payload, priority?, max_attempts?}, "on_success": {…}}`.
fn batch_spec_of(mut b: serde_json::Map<String, Value>) -> ApiResult<crate::service::BatchSpec> {
    if let Some(unknown) = b
        .keys()
        .find(|k| !["on_complete", "on_success"].contains(&k.as_str()))
    {
        return Err(bad(&format!("batch.{unknown}"), "unknown field"));
    }
    let mut callback = |name: &str| -> ApiResult<Option<crate::domain::CallbackSpec>> {
        match b.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| {
                bad(
                    &format!("batch.{name}"),
                    &format!("must be a job {{type, payload, priority?, max_attempts?}}: {e}"),
                )
            }),
        }
    };
    Ok(crate::service::BatchSpec {
        on_complete: callback("on_complete")?,
        on_success: callback("on_success")?,
    })
}

/// A batch as the API shows it: its counts by status, progress and callbacks.
fn batch_view(b: &crate::domain::Batch) -> Value {
    json!({
        "id": b.id,
        "status": if b.finished_at.is_some() { "finished" } else { "running" },
        "total": b.total,
        "counts": {
            "pending": b.pending,
            "succeeded": b.succeeded,
            "failed": b.failed,
            "dead": b.dead,
            "cancelled": b.cancelled,
        },
        "progress": b.progress(),
        "on_complete": b.on_complete,
        "on_success": b.on_success,
        "callbacks": b.callbacks,
        "created_at": b.created_at,
        "finished_at": b.finished_at,
    })
}

/// `GET /v1/batches/{id}`: the batch's live counts, progress and callbacks.
async fn get_batch(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let batch = state.service.get_batch(&caller.tenant(&q)?, id).await?;
    Ok(Json(batch_view(&batch)).into_response())
}

/// `POST /v1/batches/{id}/cancel`: every unfinished member cancelled, by a bulk job (202 and
/// that job).
async fn cancel_batch(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = detached(&state, |state| async move {
        state
            .service
            .cancel_batch(&tenant, id)
            .await
            .map(|(job, _)| job)
    })
    .await;
    Ok((StatusCode::ACCEPTED, Json(outcome?)).into_response())
}

async fn get_job(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let job = state.service.get(&caller.tenant(&q)?, id).await?;
    Ok(Json(job).into_response())
}

async fn result(
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

async fn list(
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

/// The dashboard: one page, no build step, talking to this API and its live updates.
const DASHBOARD: &str = include_str!("dashboard.html");

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
        DASHBOARD.replace("{{WS_URL}}", &ws),
    )
        .into_response()
}

/// `GET /v1/events?job_id=…` or `?all=true`: live updates as server-sent events, each
/// event's data a message of the WebSocket protocol (`live`), resumable with `Last-Event-ID`.
async fn events(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    use crate::live::Topic;
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let topic = match (q.get("job_id"), q.get("all").map(String::as_str)) {
        (Some(id), None) => Topic::Job(job_id(id).map_err(|e| e.field("job_id"))?),
        (None, Some("true")) => Topic::All,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "give job_id=<id> or all=true",
            )
            .field("job_id"))
        }
    };
    let current = match topic {
        Topic::Job(id) => Some(state.service.get(&tenant, id).await?),
        Topic::All => None,
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.get("last_event_id").map(String::as_str))
        .map(str::to_string);
    let body = match &state.live {
        Some(feed) => feed
            .follow(tenant, topic, current.map(|j| (&j).into()), last)
            .map_err(|why| {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", why)
            })?,
        None => axum::body::Body::from(catch_up(&state, &tenant, current, last).await?),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// How far before its last event a client's catch-up reads again: a change is stamped by the
/// clock of the function that wrote it, and another function's clock may be behind, so a
/// change can be written after a later-stamped one the client has already seen. Within this
/// window it is still sent; an event may come twice (each is the job as it is now).
pub const CATCH_UP_OVERLAP: std::time::Duration = std::time::Duration::from_secs(5);

/// Without a feed (on Lambda): what changed since the client's last event (`t<microseconds>`),
/// less `CATCH_UP_OVERLAP`, each job as it is now, then `retry` for the client to come back.
async fn catch_up(
    state: &ApiState,
    tenant: &Tenant,
    current: Option<crate::domain::Job>,
    last: Option<String>,
) -> ApiResult<String> {
    use crate::live::{sse_event, JobChange};
    let since = last
        .as_deref()
        .and_then(|l| l.strip_prefix('t'))
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(DateTime::<Utc>::from_timestamp_micros);
    let id_after = |t: DateTime<Utc>| format!("t{}", t.timestamp_micros() + 1);
    let mut body = String::from("retry: 2000\n\n");
    match (current, since) {
        (Some(job), since) => {
            if since.is_none_or(|s| job.updated_at >= s) {
                body.push_str(&sse_event(
                    &id_after(job.updated_at),
                    Some(&JobChange::job((&job).into()).message()),
                ));
            }
        }
        (None, None) => body.push_str(&sse_event(&id_after(Utc::now()), None)),
        (None, Some(since)) => {
            let from = since
                - chrono::Duration::from_std(CATCH_UP_OVERLAP).unwrap_or(chrono::Duration::zero());
            let (jobs, _) = state.service.changed_since(tenant, from, 500).await?;
            for job in jobs {
                body.push_str(&sse_event(
                    &id_after(job.updated_at),
                    Some(&JobChange::job(job).message()),
                ));
            }
        }
    }
    Ok(body)
}

async fn cancel(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    change_job(&state, &caller, &q, id, "job.cancel").await
}

async fn retry(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    change_job(&state, &caller, &q, id, "job.retry").await
}

/// A cancel or a retry, recorded in the audit trail whatever its outcome.
async fn change_job(
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

async fn logs(
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
struct Stats {
    by_type: BTreeMap<String, BTreeMap<&'static str, u64>>,
    by_status: BTreeMap<&'static str, u64>,
    total: u64,
    /// Job rows that could not be read, set aside (not in `total`).
    quarantined: u64,
}

async fn stats(
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

async fn types(State(state): State<Arc<ApiState>>) -> Json<Value> {
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

/// A request body that must be a JSON object with no fields but `known` (an empty body, where
/// `empty_ok`, is an empty object).
fn json_object(body: &[u8], known: &[&str], empty_ok: bool) -> ApiResult<Map<String, Value>> {
    if empty_ok && body.is_empty() {
        return Ok(Map::new());
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "request body must be a JSON object",
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", "unknown field")
                .field(unknown.clone()),
        );
    }
    Ok(obj)
}

impl From<crate::ports::StoreError> for ApiError {
    fn from(e: crate::ports::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

/// `POST /v1/api-keys` (admin): a new key, shown once.
async fn create_key(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let outcome = new_key(&caller, &q, &body);
    let (key, token) = match outcome {
        Ok(made) => made,
        Err(e) => {
            let tenant = caller.principal.tenant.clone();
            audit(&state, &caller, &tenant, "key.create", None, e.code).await;
            return Err(e);
        }
    };
    let stored = state
        .service
        .ports()
        .keys
        .put_key(&key)
        .await
        .map_err(ApiError::from);
    let mut entry = caller.actor().entry(
        Some(key.tenant.clone()),
        "key.create",
        None,
        stored.as_ref().map_or_else(|e| e.code, |_| "ok"),
        chrono::Utc::now(),
        state.audit_retention,
    );
    entry.action = format!("key.create:{}", key.id);
    record(&state, entry).await;
    stored?;
    let mut view = key.view();
    view["key"] = Value::String(token);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Parse a key request: `{"name", "roles", "tenant"?, "expires_in_seconds"?}`.
fn new_key(
    caller: &Caller,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<(ApiKey, String)> {
    let mut obj = json_object(
        body,
        &["name", "roles", "tenant", "expires_in_seconds"],
        false,
    )?;
    let name = match obj.remove("name") {
        Some(Value::String(s)) if (1..=100).contains(&s.chars().count()) => s,
        None => return Err(bad("name", "is required")),
        _ => return Err(bad("name", "must be a string of 1 to 100 characters")),
    };
    let roles = match obj.remove("roles") {
        Some(Value::Array(items)) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let names = names.ok_or_else(|| bad("roles", "must be a list of role names"))?;
            parse_roles(names).map_err(|e| bad("roles", &e))?
        }
        None => return Err(bad("roles", "is required")),
        _ => return Err(bad("roles", "must be a list of role names")),
    };
    let tenant = match obj.remove("tenant") {
        None | Some(Value::Null) => caller.tenant(q)?,
        Some(Value::String(t)) => {
            caller.act_on(Tenant::parse(t).map_err(|e| bad("tenant", &e.message))?)?
        }
        Some(_) => return Err(bad("tenant", "must be a string")),
    };
    if roles.contains(&Role::Operator) && !caller.principal.has(Role::Operator) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an operator may make a key with the operator role",
        )
        .field("roles"));
    }
    let now = chrono::Utc::now();
    let expires_at = match obj.remove("expires_in_seconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (60..=10 * 365 * 24 * 3600).contains(n))
                .map(|n| now + chrono::Duration::seconds(n as i64))
                .ok_or_else(|| {
                    bad(
                        "expires_in_seconds",
                        "must be a whole number of seconds from 60 to ten years",
                    )
                })?,
        ),
    };
    Ok(ApiKey::generate(tenant, roles, name, expires_at, now))
}

/// `GET /v1/api-keys` (admin): every key (or one tenant's with `tenant=`), without secrets.
async fn list_keys(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    // (every tenant's keys for an operator that names none; else the one tenant's)
    let tenant = match q.contains_key("tenant") || !caller.principal.has(Role::Operator) {
        true => Some(caller.tenant(&q)?),
        false => None,
    };
    let keys = state
        .service
        .ports()
        .keys
        .list_keys(tenant.as_ref())
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({ "keys": keys.iter().map(ApiKey::view).collect::<Vec<_>>() })).into_response())
}

/// `DELETE /v1/api-keys/{id}` (admin): the key stops working at once.
async fn revoke_key(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let keys = &state.service.ports().keys;
    let not_found =
        || ApiError::new(StatusCode::NOT_FOUND, "key_not_found", "no such API key").field("id");
    // (another tenant's key is no key to a tenant's admin: not told apart from a missing one)
    let outcome = match keys.get_key(&id).await.map_err(ApiError::from) {
        Ok(Some(key)) if caller.principal.may_act_on(&key.tenant) => keys
            .revoke_key(&id, chrono::Utc::now())
            .await
            .map_err(ApiError::from)
            .and_then(|key| key.ok_or_else(not_found)),
        Ok(_) => Err(not_found()),
        Err(e) => Err(e),
    };
    let tenant = outcome
        .as_ref()
        .map_or(caller.principal.tenant.clone(), |k| k.tenant.clone());
    let mut entry = caller.actor().entry(
        Some(tenant),
        "key.revoke",
        None,
        outcome.as_ref().map_or_else(|e| e.code, |_| "ok"),
        chrono::Utc::now(),
        state.audit_retention,
    );
    entry.action = format!("key.revoke:{id}");
    record(&state, entry).await;
    Ok(Json(outcome?.view()).into_response())
}

/// `GET /v1/audit` (admin): a tenant's trail (the caller's own unless `tenant=`), or with
/// `anonymous=true` the refused callers no tenant could be told for; from `since` (RFC 3339,
/// default a day ago), oldest first.
async fn audit_trail(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let anonymous = match q.get("anonymous").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("anonymous", "must be true or false")),
    };
    if anonymous {
        // (refusals no tenant could be told for are the deployment's, not a tenant's)
        caller.require(Role::Operator)?;
    }
    let tenant = (!anonymous).then(|| caller.tenant(&q)).transpose()?;
    let now = chrono::Utc::now();
    let oldest =
        now - chrono::Duration::from_std(state.audit_retention).unwrap_or(chrono::Duration::MAX);
    let since = match q.get("since") {
        None => now - chrono::Duration::days(1),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| {
                bad(
                    "since",
                    "must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z",
                )
            })?
            .with_timezone(&chrono::Utc),
    }
    .max(oldest);
    let limit = whole_number(&q, "limit", 1, 1000)?.unwrap_or(100) as usize;
    let entries = state
        .service
        .ports()
        .audit
        .audit(&AuditQuery {
            tenant,
            since,
            limit,
        })
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// The tenant in a `/v1/tenants/{tenant}/…` path.
fn path_tenant(raw: &str) -> ApiResult<Tenant> {
    Tenant::parse(raw).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.message).field("tenant")
    })
}

/// A tenant's limits: as stored (`null`: the default), as they apply, and its active jobs.
async fn limits_view(state: &ApiState, tenant: &Tenant) -> ApiResult<Value> {
    let stored = state
        .service
        .ports()
        .tenants
        .limits(tenant)
        .await
        .map_err(ApiError::from)?;
    let effective = state.service.limits_of(tenant).await?;
    let active = state
        .service
        .ports()
        .tenants
        .active_jobs(tenant)
        .await
        .map_err(ApiError::from)?;
    Ok(json!({
        "tenant": tenant,
        "limits": stored,
        "effective": effective,
        "active_jobs": active,
    }))
}

/// `GET /v1/tenants/{tenant}/limits` (admin).
async fn get_limits(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let tenant = caller.act_on(path_tenant(&raw)?)?;
    Ok(Json(limits_view(&state, &tenant).await?).into_response())
}

/// `PUT /v1/tenants/{tenant}/limits` (admin): `{"max_active", "submits_per_second",
/// "max_payload_bytes", "max_running"}`, each a number or `null` (the deployment's default).
async fn put_limits(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // (a tenant's limits are what the deployment allows it: an operator's to set, not the
    // tenant's own admin's)
    caller.require(Role::Operator)?;
    let tenant = path_tenant(&raw)?;
    let obj = json_object(
        &body,
        &[
            "max_active",
            "submits_per_second",
            "max_payload_bytes",
            "max_running",
            "max_schedules",
        ],
        false,
    )?;
    let number = |name: &str, max: u64| -> ApiResult<Option<u64>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=max).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    bad(
                        name,
                        &format!("must be a whole number from 1 to {max}, or null for the default"),
                    )
                }),
        }
    };
    let limits = crate::domain::TenantLimits {
        max_active: number("max_active", 1_000_000_000)?,
        submits_per_second: number("submits_per_second", 10_000_000)?.map(|n| n as u32),
        max_payload_bytes: number(
            "max_payload_bytes",
            state.service.max_payload_bytes() as u64,
        )?
        .map(|n| n as usize),
        max_running: number("max_running", 1_000_000)?.map(|n| n as u32),
        max_schedules: number("max_schedules", 1_000_000)?,
    };
    let outcome = state
        .service
        .set_limits(&tenant, limits)
        .await
        .map_err(ApiError::from);
    audit(
        &state,
        &caller,
        &tenant,
        "tenant.limits",
        None,
        outcome_of(&outcome),
    )
    .await;
    outcome?;
    Ok(Json(limits_view(&state, &tenant).await?).into_response())
}

/// The tenant's webhook signing secrets, each valid generation with its end (the current
/// one has none).
async fn webhook_secrets_view(
    state: &ApiState,
    tenant: &Tenant,
    generations: crate::domain::WebhookGenerations,
) -> ApiResult<Value> {
    let master = match &state.webhook_master {
        None => Err("no webhook master key is configured".to_string()),
        Some(key) => key.0.key().await,
    }
    .map_err(|why| {
        tracing::error!(error = %why, "the webhook master key is unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the webhook signing key is unavailable now; try again shortly",
        )
    })?;
    let now = chrono::Utc::now();
    let secrets: Vec<Value> = generations
        .valid(now)
        .into_iter()
        .map(|g| {
            json!({
                "generation": g,
                "secret": crate::jobs::tenant_secret(&master, tenant, g),
                "valid_until": (g != generations.current).then_some(generations.previous_until).flatten(),
            })
        })
        .collect();
    Ok(json!({ "tenant": tenant, "secrets": secrets }))
}

/// `GET /v1/webhook-secret` (submitter): the secrets the tenant's deliveries are signed with
/// (made with the first call or the first delivery), to verify `X-Conveyor-Signature`.
async fn webhook_secret(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let generations = state
        .service
        .ports()
        .tenants
        .webhook_generations(&tenant)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(webhook_secrets_view(&state, &tenant, generations).await?).into_response())
}

/// `POST /v1/webhook-secret/rotate` (admin): a new secret signs from now on; the old one also
/// signs (a second `v2=`) for `overlap_seconds` (default a day, at most 30 days).
async fn rotate_webhook_secret(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let tenant = caller.tenant(&q)?;
    let obj = json_object(&body, &["overlap_seconds"], true)?;
    let overlap = match obj.get("overlap_seconds") {
        None | Some(Value::Null) => 24 * 3600,
        Some(v) => v.as_u64().filter(|n| *n <= 30 * 24 * 3600).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "must be a whole number of seconds from 0 to 30 days",
            )
            .field("overlap_seconds")
        })?,
    };
    let until = chrono::Utc::now() + chrono::Duration::seconds(overlap as i64);
    let outcome = state
        .service
        .ports()
        .tenants
        .rotate_webhook_key(&tenant, until)
        .await
        .map_err(ApiError::from);
    audit(
        &state,
        &caller,
        &tenant,
        "webhook.rotate",
        None,
        outcome_of(&outcome),
    )
    .await;
    Ok(Json(webhook_secrets_view(&state, &tenant, outcome?).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Actor;

    /// An audit log in memory.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<AuditEntry>>);

    #[async_trait::async_trait]
    impl crate::ports::AuditLog for Kept {
        async fn record(&self, entry: &AuditEntry) -> Result<(), crate::ports::StoreError> {
            self.0.lock().unwrap().push(entry.clone());
            Ok(())
        }
        async fn audit(
            &self,
            _: &crate::ports::AuditQuery,
        ) -> Result<Vec<AuditEntry>, crate::ports::StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    fn refusal(actor: &str, at: chrono::DateTime<chrono::Utc>) -> AuditEntry {
        Actor {
            actor: actor.into(),
            source_ip: Some("203.0.113.7".into()),
        }
        .entry(
            None,
            "auth",
            None,
            "unauthorized",
            at,
            Duration::from_secs(3600),
        )
    }

    #[tokio::test]
    async fn a_callers_refusals_of_one_minute_are_written_as_the_first_and_one_count_of_the_rest() {
        let log: Arc<dyn crate::ports::AuditLog> = Arc::new(Kept::default());
        let actor = format!("key:{}", ulid::Ulid::new());
        let minute = chrono::DateTime::from_timestamp(1_800_000_000 / 60 * 60, 0).unwrap();
        // WHEN one caller is refused 50 times within a minute
        let mut written = vec![];
        for i in 0..50 {
            let at = minute + chrono::Duration::milliseconds(i * 100);
            written.extend(refusals().note(refusal(&actor, at), log.clone()));
        }
        // THEN only the first was written then
        let ours = |w: &[AuditEntry]| -> Vec<AuditEntry> {
            w.iter().filter(|e| e.actor == actor).cloned().collect()
        };
        assert_eq!(ours(&written).len(), 1, "{written:?}");
        assert_eq!(ours(&written)[0].count, 1);
        // AND once the minute is over, the rest is one entry counting them
        let rest = ours(&refusals().over(minute.timestamp() / 60 + 1));
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert_eq!(rest[0].count, 49);
        // AND a refusal of the next minute is written at once again
        let next = minute + chrono::Duration::seconds(60);
        let written = refusals().note(refusal(&actor, next), log.clone());
        assert_eq!(ours(&written).len(), 1, "{written:?}");
    }
}
