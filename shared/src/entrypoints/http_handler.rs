//! `/v1/jobs/{id}/handler/…`: what an external type's handler does with the job token its call
//! carried (`jobs::JobToken`): report progress, say it is alive and learn of a cancel, and post
//! the result of an attempt it answered with 202. The token is the credential, for one run of
//! one job until its deadline: these routes take no other, and a token grants nothing else. A
//! child of `http`.

use super::fields::*;
use super::*;
use crate::domain::{Job, Progress};
use crate::jobs::{JobToken, RESULT_STEP};
use serde::Deserialize;

/// How long a late result is kept with its job (as long as a step).
const RESULT_KEPT: chrono::Duration = chrono::Duration::days(60);
const BODY_BYTES: usize = 1024 * 1024;

/// `POST /v1/jobs/{id}/handler/progress`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "HandlerProgress")
)]
pub(crate) struct ProgressBody {
    /// the share done, 0 to 100
    percent: Whole<0, 100>,
    /// what it is doing
    message: Option<String>,
}

/// `POST /v1/jobs/{id}/handler/complete`: the result, or the error, of the attempt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "HandlerCompletion")
)]
pub(crate) struct CompleteBody {
    /// the attempt succeeded with this result (any JSON)
    result: Option<Value>,
    /// the attempt failed: {"message", "retryable"?} (retryable: false unless said)
    error: Option<Value>,
}

fn forbidden(why: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
}

/// The job `id` and the token's run of it, if the request's token holds for that run now.
async fn attempt_of(state: &ApiState, headers: &HeaderMap, id: JobId) -> ApiResult<(Job, u32)> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a job token is required: Authorization: Bearer <the call's \"token\">",
            )
        })?;
    let token = JobToken::parse(raw.trim()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not a job token: these routes take the token a handler's call carried",
        )
    })?;
    if token.job_id != id {
        return Err(forbidden("the token is for another job"));
    }
    let unavailable =
        |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why);
    let master = match &state.webhook_master {
        Some(key) => key
            .0
            .key()
            .await
            .map_err(|e| unavailable(format!("the signing key is unavailable: {e}")))?,
        None => return Err(unavailable("no signing key is configured".into())),
    };
    let job = state
        .service
        .ports()
        .store
        .get(id)
        .await?
        .ok_or_else(|| forbidden("the token is for no job here"))?;
    if !token.verify(&master, &job.tenant, Utc::now()) {
        return Err(forbidden(
            "the token was not made for this job, or it has expired",
        ));
    }
    if job.status != JobStatus::Running || job.runs != token.run {
        return Err(forbidden("the token's attempt has ended"));
    }
    Ok((job, token.run))
}

/// A heartbeat of the token's run, with progress or not: whether a cancel was asked for.
async fn beat(
    state: &ApiState,
    id: JobId,
    run: u32,
    progress: Option<&Progress>,
) -> ApiResult<Response> {
    match state
        .service
        .ports()
        .store
        .heartbeat(id, run, Utc::now(), progress)
        .await
    {
        Ok(live) => Ok(Json(json!({ "cancel_requested": live.cancel_requested })).into_response()),
        Err(crate::ports::StoreError::Conflict) => Err(forbidden("the token's attempt has ended")),
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/jobs/{id}/handler/progress` (job token): the attempt's progress, shown on the job
/// and pushed live; answers whether a cancel was asked for.
pub(super) async fn progress(
    State(state): State<Arc<ApiState>>,
    JobPath(id): JobPath,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<Response> {
    let (_, run) = attempt_of(&state, &headers, id).await?;
    let body: ProgressBody = body_as(request, BODY_BYTES).await?;
    let progress = Progress {
        percent: body.percent.0 as u8,
        message: body.message.filter(|m| !m.is_empty()),
    };
    beat(&state, id, run, Some(&progress)).await
}

/// `POST /v1/jobs/{id}/handler/heartbeat` (job token): the attempt is alive; answers whether a
/// cancel was asked for (the handler should then stop, and answer or complete with an error).
pub(super) async fn heartbeat(
    State(state): State<Arc<ApiState>>,
    JobPath(id): JobPath,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, run) = attempt_of(&state, &headers, id).await?;
    beat(&state, id, run, None).await
}

/// `POST /v1/jobs/{id}/handler/complete` (job token): the result or error of an attempt the
/// handler answered with 202; the worker waiting on it ends the attempt with it. Once: a
/// second completion of the attempt is a 409.
pub(super) async fn complete(
    State(state): State<Arc<ApiState>>,
    JobPath(id): JobPath,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<Response> {
    let (_, run) = attempt_of(&state, &headers, id).await?;
    let body: CompleteBody = body_as(request, BODY_BYTES).await?;
    let outcome = match (body.result, body.error) {
        (Some(result), None) => json!({ "result": result }),
        (None, Some(error)) if error.is_object() || error.is_string() => {
            json!({ "error": error })
        }
        (None, Some(_)) => return Err(bad("error", "must be an object {message, retryable?}")),
        _ => return Err(bad("result", "give one of result or error")),
    };
    let now = Utc::now();
    let stored = state
        .service
        .ports()
        .store
        .save_step(
            id,
            &format!("{RESULT_STEP}{run}"),
            &outcome,
            now,
            now + RESULT_KEPT,
        )
        .await?;
    if stored != outcome {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_completed",
            "this attempt was completed already",
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response())
}

/// The handler resource's routes, as described.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs/{id}/handler/progress"),
    ("post", "/v1/jobs/{id}/handler/heartbeat"),
    ("post", "/v1/jobs/{id}/handler/complete"),
];

/// The query parameters each of the resource's routes takes: none.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    ROUTES.iter().any(|(_, path)| *path == route).then_some(&[])
}

/// The resource's routes, served: outside the credential check of every other route (the
/// job token is checked here).
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/jobs/{id}/handler/progress", post(progress))
        .route("/v1/jobs/{id}/handler/heartbeat", post(heartbeat))
        .route("/v1/jobs/{id}/handler/complete", post(complete))
        .route_layer(axum::middleware::from_fn(only_known_params))
}
