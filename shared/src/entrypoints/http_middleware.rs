//! What every request of the HTTP API passes before its handler: the in-flight limit and timeout,
//! the metrics, dev mode's checks, the credential, the query's parameters, and the extractors
//! for them. A child of `http`.

use super::*;

/// Most request headers accepted, and most bytes of them (names and values).
pub(super) const MAX_HEADERS: usize = 64;

pub(super) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What every request passes first: the in-flight limit and the request timeout.
pub(super) struct Guard {
    pub(super) in_flight: tokio::sync::Semaphore,
    pub(super) timeout: Duration,
}

/// Past the in-flight limit a request is refused at once (503 + Retry-After), never queued;
/// too many or too large headers are a 431; a request out of time is a 504. All JSON.
pub(super) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
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
pub(super) async fn record_http(request: Request, next: Next) -> Response {
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
pub(super) fn is_loopback_host(host: &str) -> bool {
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

pub(super) async fn authenticate(
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

/// Too many or too large headers.
pub(super) fn oversized_headers(headers: &HeaderMap) -> Option<ApiError> {
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
pub(super) async fn only_known_params(request: Request, next: Next) -> Response {
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

pub(super) fn parse_query(query: &str) -> ApiResult<HashMap<String, String>> {
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
pub(super) fn decode_query_pairs(query: &str) -> ApiResult<Vec<(String, String)>> {
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

pub(super) fn percent_decode(s: &str) -> Vec<u8> {
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
pub(super) struct Params(pub(super) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Params)
    }
}

/// The job id in the path: a path that does not decode, or is not a job id, is a JSON 400.
pub(super) struct JobPath(pub(super) JobId);

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
