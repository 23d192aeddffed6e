//! Dead letters and bulk actions: `GET /v1/dead-letters` lists a tenant's dead jobs with why
//! they died (the messages a dead-letter queue received are settled into dead jobs by
//! maintenance, with kind `dead_letter`); `POST /v1/dead-letters/redrive` puts given ones back
//! at once, or every one a filter matches as a bulk job; `POST /v1/jobs/bulk` retries or cancels
//! every job a filter matches, as a job of its own (`conveyor.bulk`). A child of `http`.

#[cfg(feature = "openapi")]
use super::fields::JobRef;
use super::fields::{BulkActionChoice, StatusChoice, Text, Time};
use super::{audit, bad, body_as, cursor_param, ApiError, ApiResult, ApiState, Caller, Params};
use crate::domain::{JobId, JobStatus, JobType, Role, Tenant};
use crate::jobs::{BulkAction, BulkRequest, JobFilter, BULK_TYPE};
use crate::service::{Cursor, ServiceError, SubmitRequest};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Ids one redrive request may name (more: use a filter, which runs as a bulk job).
pub const REDRIVE_IDS: usize = 100;
const BODY_BYTES: usize = 64 * 1024;

/// The body of a bulk request: at most `BODY_BYTES`, read as `T`.
async fn body_of<T: serde::de::DeserializeOwned>(request: Request) -> ApiResult<T> {
    body_as(request, BODY_BYTES).await
}

/// `POST /v1/jobs/bulk`: retry or cancel every job of the tenant `filter` matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "BulkRequest")
)]
pub(crate) struct BulkBody {
    action: BulkActionChoice,
    filter: Option<FilterBody>,
}

/// Which of the tenant's jobs: all given conditions hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "JobFilter")
)]
pub(crate) struct FilterBody {
    status: Option<StatusChoice>,
    #[serde(rename = "type")]
    job_type: Option<Text<JobType>>,
    created_after: Option<Time>,
    created_before: Option<Time>,
}

/// `POST /v1/dead-letters/redrive`: ids (at most 100), or a filter (type, created range) run
/// as a bulk job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "RedriveRequest")
)]
pub(crate) struct RedriveBody {
    ids: Option<RedriveIds>,
    /// (refused: a redrive takes dead jobs only)
    #[cfg_attr(feature = "openapi", schemars(skip))]
    status: Option<StatusChoice>,
    #[serde(rename = "type")]
    job_type: Option<Text<JobType>>,
    created_after: Option<Time>,
    created_before: Option<Time>,
}

/// The dead jobs a redrive names: 1 to `REDRIVE_IDS` job ids.
#[derive(Debug)]
pub(crate) struct RedriveIds(Vec<JobId>);

impl<'de> serde::Deserialize<'de> for RedriveIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Array(ids) if ids.is_empty() || ids.len() > REDRIVE_IDS => {
                Err(D::Error::custom(format!(
                    "must hold 1 to {REDRIVE_IDS} job ids (more: a filter)"
                )))
            }
            Value::Array(ids) => ids
                .iter()
                .map(|v| v.as_str().and_then(|s| JobId::parse(s).ok()))
                .collect::<Option<Vec<JobId>>>()
                .map(RedriveIds)
                .ok_or_else(|| D::Error::custom("must be job ids")),
            _ => Err(D::Error::custom("must be a list of job ids")),
        }
    }
}

#[cfg(feature = "openapi")]
impl schemars::JsonSchema for RedriveIds {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RedriveIds".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "items": generator.subschema_for::<JobRef>(),
            "minItems": 1,
            "maxItems": REDRIVE_IDS,
        })
    }
}

/// A filter from its fields (each named `<prefix><field>` when at fault).
fn filter_of(
    prefix: &str,
    status: Option<StatusChoice>,
    job_type: Option<Text<JobType>>,
    created_after: Option<Time>,
    created_before: Option<Time>,
) -> ApiResult<JobFilter> {
    let filter = JobFilter {
        status: status.map(|s| s.0),
        job_type: job_type.map(|t| t.0),
        created_after: created_after.map(|t| t.0),
        created_before: created_before.map(|t| t.0),
        batch: None,
    };
    if let (Some(a), Some(b)) = (filter.created_after, filter.created_before) {
        if b <= a {
            return Err(bad(
                &format!("{prefix}created_before"),
                "must be after created_after",
            ));
        }
    }
    Ok(filter)
}

/// Submit the bulk job for `request`: 202 and the job.
async fn submit_bulk(
    state: &ApiState,
    tenant: Tenant,
    request: BulkRequest,
) -> Result<Response, ServiceError> {
    let payload = serde_json::to_value(&request).expect("serializable");
    let (job, _) = state
        .service
        .submit(
            tenant,
            SubmitRequest::new(
                JobType::parse(BULK_TYPE).expect("a valid type name"),
                payload,
            ),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
        Json(job),
    )
        .into_response())
}

pub(super) async fn bulk(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let BulkBody { action, filter } = body_of(request).await?;
        let parsed = match filter {
            Some(f) => filter_of(
                "filter.",
                f.status,
                f.job_type,
                f.created_after,
                f.created_before,
            )?,
            None => JobFilter::default(),
        };
        Ok::<_, ApiError>(
            submit_bulk(
                &state,
                tenant.clone(),
                BulkRequest {
                    action: action.0,
                    filter: parsed,
                },
            )
            .await?,
        )
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "jobs.bulk",
        None,
        outcome.as_ref().map_or_else(|e| e.code, |_| "ok"),
    )
    .await;
    outcome
}

pub(super) async fn dead_letters(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let job_type = q
        .get("type")
        .map(|t| JobType::parse(t.as_str()).map_err(|e| bad("type", &e.message)))
        .transpose()?;
    let cursor = cursor_param(&q, |c| Cursor::decode(c, &tenant))?;
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| bad("limit", "must be a whole number from 1 to 500"))?,
    };
    let page = state
        .service
        .list(&tenant, Some(JobStatus::Dead), job_type, cursor, limit)
        .await?;
    Ok(Json(page).into_response())
}

pub(super) async fn redrive(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    request: Request,
) -> ApiResult<Response> {
    caller.require(Role::Submitter)?;
    let tenant = caller.tenant(&q)?;
    let outcome = async {
        let body: RedriveBody = body_of(request).await?;
        if body.status.is_some() {
            return Err(bad("status", "a redrive takes dead jobs only"));
        }
        let ids = body.ids.map(|ids| ids.0);
        let mut filter = filter_of(
            "",
            None,
            body.job_type,
            body.created_after,
            body.created_before,
        )?;
        let Some(ids) = ids else {
            filter.status = Some(JobStatus::Dead);
            return Ok(submit_bulk(&state, tenant.clone(), BulkRequest { action: BulkAction::Retry, filter }).await?);
        };
        if filter != JobFilter::default() {
            return Err(bad("ids", "give ids or a filter, not both"));
        }
        let mut results = vec![];
        for id in ids {
            let result = match state.service.get(&tenant, id).await {
                Ok(job) if job.status != JobStatus::Dead => json!({
                    "id": id, "error": { "code": "illegal_transition", "message": format!("the job is {}, not dead", job.status) },
                }),
                Ok(_) => match state.service.retry(&tenant, id).await {
                    Ok(job) => json!({ "id": id, "status": job.status }),
                    Err(e) => {
                        let e = ApiError::from(e);
                        json!({ "id": id, "error": { "code": e.code, "message": e.message } })
                    }
                },
                Err(e) => {
                    let e = ApiError::from(e);
                    json!({ "id": id, "error": { "code": e.code, "message": e.message } })
                }
            };
            results.push(result);
        }
        Ok(Json(json!({ "results": results })).into_response())
    }
    .await;
    audit(
        &state,
        &caller,
        &tenant,
        "dead_letters.redrive",
        None,
        outcome.as_ref().map_or_else(|e| e.code, |_| "ok"),
    )
    .await;
    outcome
}

/// The routes of bulk actions and dead letters, as described.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs/bulk"),
    ("get", "/v1/dead-letters"),
    ("post", "/v1/dead-letters/redrive"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    Some(match route {
        "/v1/jobs/bulk" | "/v1/dead-letters/redrive" => &["tenant"],
        "/v1/dead-letters" => &["type", "limit", "cursor", "tenant"],
        _ => return None,
    })
}

/// The resource's routes, served.
pub(super) fn router() -> axum::Router<std::sync::Arc<ApiState>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/jobs/bulk", post(bulk))
        .route("/v1/dead-letters", get(dead_letters))
        .route("/v1/dead-letters/redrive", post(redrive))
}
