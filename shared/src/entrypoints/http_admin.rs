//! The administration of a tenant: API keys, the audit trail, limits and the webhook secret.
//! A child of `http`.

use super::fields::{parse_body, Label, Roles, Text, Whole};
use super::*;
use serde::Deserialize;

/// `POST /v1/api-keys` (admin): a new key, shown once.
pub(super) async fn create_key(
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

/// `POST /v1/api-keys`: a key's name, roles, tenant (default the caller's) and lifetime.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "KeyRequest")
)]
pub(crate) struct KeyBody {
    name: Label,
    roles: Roles,
    tenant: Option<Text<Tenant>>,
    /// seconds from now until the key stops working (none: it does not expire)
    expires_in_seconds: Option<Whole<60, 315_360_000>>,
}

/// `PUT /v1/tenants/{tenant}/limits`: each a number, or null (or left out) for the
/// deployment's default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "LimitsRequest")
)]
pub(crate) struct LimitsBody {
    max_active: Option<Whole<1, 1_000_000_000>>,
    submits_per_second: Option<Whole<1, 10_000_000>>,
    /// at most the deployment's payload limit
    max_payload_bytes: Option<Whole<1, { i64::MAX }>>,
    max_running: Option<Whole<1, 1_000_000>>,
    max_schedules: Option<Whole<1, 1_000_000>>,
}

/// `POST /v1/webhook-secret/rotate` (an empty body: the defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "RotateRequest")
)]
pub(crate) struct RotateBody {
    /// how long the old secret also signs, in seconds (default a day, at most 30 days)
    overlap_seconds: Option<Whole<0, 2_592_000>>,
}

/// Parse a key request: `{"name", "roles", "tenant"?, "expires_in_seconds"?}`.
pub(super) fn new_key(
    caller: &Caller,
    q: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<(ApiKey, String)> {
    let KeyBody {
        name: Label(name),
        roles: Roles(roles),
        tenant,
        expires_in_seconds,
    } = parse_body(body)?;
    let tenant = match tenant {
        None => caller.tenant(q)?,
        Some(Text(t)) => caller.act_on(t)?,
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
    let expires_at = expires_in_seconds.map(|n| now + chrono::Duration::seconds(n.0));
    Ok(ApiKey::generate(tenant, roles, name, expires_at, now))
}

/// `GET /v1/api-keys` (admin): every key (or one tenant's with `tenant=`), without secrets.
pub(super) async fn list_keys(
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
pub(super) async fn revoke_key(
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
pub(super) async fn audit_trail(
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
    let since = time_param(&q, "since")?
        .unwrap_or(now - chrono::Duration::days(1))
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
pub(super) fn path_tenant(raw: &str) -> ApiResult<Tenant> {
    Tenant::parse(raw).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.message).field("tenant")
    })
}

/// A tenant's limits: as stored (`null`: the default), as they apply, and its active jobs.
pub(super) async fn limits_view(state: &ApiState, tenant: &Tenant) -> ApiResult<Value> {
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
pub(super) async fn get_limits(
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
pub(super) async fn put_limits(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // (a tenant's limits are what the deployment allows it: an operator's to set, not the
    // tenant's own admin's)
    caller.require(Role::Operator)?;
    let tenant = path_tenant(&raw)?;
    let body: LimitsBody = parse_body(&body)?;
    let max_payload = state.service.max_payload_bytes() as i64;
    if body.max_payload_bytes.is_some_and(|n| n.0 > max_payload) {
        return Err(bad(
            "max_payload_bytes",
            &format!("must be a whole number from 1 to {max_payload}, or null for the default"),
        ));
    }
    let limits = crate::domain::TenantLimits {
        max_active: body.max_active.map(|n| n.0 as u64),
        submits_per_second: body.submits_per_second.map(|n| n.0 as u32),
        max_payload_bytes: body.max_payload_bytes.map(|n| n.0 as usize),
        max_running: body.max_running.map(|n| n.0 as u32),
        max_schedules: body.max_schedules.map(|n| n.0 as u64),
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
pub(super) async fn webhook_secrets_view(
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
pub(super) async fn webhook_secret(
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
pub(super) async fn rotate_webhook_secret(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let tenant = caller.tenant(&q)?;
    let body: RotateBody = match body.is_empty() {
        true => RotateBody::default(),
        false => parse_body(&body)?,
    };
    let overlap = body.overlap_seconds.map_or(24 * 3600, |n| n.0);
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

/// `GET /v1/me` (any credential): who the caller is, its tenant, and which roles it holds (a
/// higher one grants every lower one), so a client offers only what the caller may do.
pub(super) async fn me(caller: Caller) -> ApiResult<Response> {
    let p = &caller.principal;
    let grants: BTreeMap<&str, bool> = Role::ALL.iter().map(|r| (r.as_str(), p.has(*r))).collect();
    Ok(Json(json!({
        "tenant": p.tenant,
        "subject": p.subject,
        "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "grants": grants,
    }))
    .into_response())
}

/// The administration's routes, as described.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/me"),
    ("post", "/v1/api-keys"),
    ("get", "/v1/api-keys"),
    ("delete", "/v1/api-keys/{id}"),
    ("get", "/v1/audit"),
    ("get", "/v1/tenants/{tenant}/limits"),
    ("put", "/v1/tenants/{tenant}/limits"),
    ("get", "/v1/webhook-secret"),
    ("post", "/v1/webhook-secret/rotate"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "/v1/api-keys" | "/v1/webhook-secret" | "/v1/webhook-secret/rotate" => &["tenant"],
        "/v1/audit" => &["tenant", "since", "limit", "anonymous"],
        "/v1/api-keys/{id}" | "/v1/tenants/{tenant}/limits" | "/v1/me" => &[],
        _ => return None,
    })
}

/// The resource's routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/api-keys", post(create_key).get(list_keys))
        .route("/v1/api-keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/audit", get(audit_trail))
        .route(
            "/v1/tenants/{tenant}/limits",
            get(get_limits).put(put_limits),
        )
        .route("/v1/webhook-secret", get(webhook_secret))
        .route("/v1/webhook-secret/rotate", post(rotate_webhook_secret))
}
