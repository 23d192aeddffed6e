//! `/v1/jobs/batch` and `/v1/batches`: many jobs in one request, and batches followed to their
//! end. A child of `http`.

use super::fields::*;
use super::*;
use crate::service::MemberCursor;
use serde::{Deserialize, Deserializer};

/// Largest batch submit body.
pub(super) const BATCH_BYTES: usize = 5 * 1024 * 1024;

/// `POST /v1/jobs/batch`: up to 1,000 jobs, each as `POST /v1/jobs` takes one (no debounce);
/// `atomic`: all or nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "BatchRequest")
)]
pub(crate) struct BatchBody {
    jobs: BatchJobs,
    atomic: Option<bool>,
    /// make the jobs one batch: GET /v1/batches/{id} follows it; on_complete runs once every
    /// member has ended, on_success only if all succeeded
    batch: Option<BatchSpecBody>,
}

/// A batch's jobs, each kept as given: each is read on its own, and refused on its own.
#[derive(Debug)]
pub(crate) struct BatchJobs(Vec<Value>);

impl<'de> Deserialize<'de> for BatchJobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Array(jobs) if (1..=crate::service::BATCH_MAX).contains(&jobs.len()) => {
                Ok(BatchJobs(jobs))
            }
            Value::Array(_) => Err(D::Error::custom(format!(
                "must hold 1 to {} jobs",
                crate::service::BATCH_MAX
            ))),
            _ => Err(D::Error::custom("must be an array of jobs")),
        }
    }
}

#[cfg(feature = "openapi")]
impl schemars::JsonSchema for BatchJobs {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BatchJobs".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array",
            "items": generator.subschema_for::<super::jobs::SubmitBody>(),
            "minItems": 1,
            "maxItems": crate::service::BATCH_MAX,
        })
    }
}

/// A batch's callbacks: `{"on_complete": {type, payload, …}, "on_success": {…}}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object {on_complete?, on_success?}: the batch's callbacks"
)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "BatchCallbacks")
)]
pub(crate) struct BatchSpecBody {
    on_complete: Option<CallbackBody>,
    on_success: Option<CallbackBody>,
}

/// A job submitted once when every member has ended (its payload gets the batch's counts as
/// "batch").
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a job {type, payload, priority?, max_attempts?}"
)]
#[cfg_attr(
    feature = "openapi",
    derive(schemars::JsonSchema),
    schemars(rename = "BatchCallback")
)]
pub(crate) struct CallbackBody {
    #[serde(rename = "type")]
    job_type: Text<JobType>,
    /// any JSON the type accepts
    #[serde(default)]
    payload: Value,
    priority: Option<Priority>,
    max_attempts: Option<MaxAttempts>,
}

impl BatchSpecBody {
    fn into_spec(self) -> crate::service::BatchSpec {
        let callback = |c: CallbackBody| crate::domain::CallbackSpec {
            job_type: c.job_type.0,
            payload: c.payload,
            priority: c.priority.map_or(0, |p| p.0 as i32),
            max_attempts: c.max_attempts.map(|n| n.0 as u32),
        };
        crate::service::BatchSpec {
            on_complete: self.on_complete.map(callback),
            on_success: self.on_success.map(callback),
        }
    }
}

/// One item's outcome in a batch answer: its job (id and status) and whether it is new, or its
/// error as a single submit would have answered it.
pub(super) fn batch_item(
    index: usize,
    outcome: Result<(crate::domain::Job, bool), ApiError>,
) -> Value {
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
pub(super) async fn submit_batch(
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
    let BatchBody {
        jobs: BatchJobs(jobs),
        atomic,
        batch,
    } = parse_body(&body)?;
    let atomic = atomic.unwrap_or(false);
    let batch = batch.map(BatchSpecBody::into_spec);
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

/// A batch as the API shows it: its counts by status, progress and callbacks.
pub(super) fn batch_view(b: &crate::domain::Batch) -> Value {
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
pub(super) async fn get_batch(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let batch = state.service.get_batch(&caller.tenant(&q)?, id).await?;
    Ok(Json(batch_view(&batch)).into_response())
}

/// `GET /v1/batches/{id}/jobs`: a page of the batch's members (1 to 500, 50 unless `limit` says),
/// in the order they joined, each as the job listing shows it; and the next page's cursor.
pub(super) async fn batch_members(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Params(q): Params,
    JobPath(id): JobPath,
) -> ApiResult<Response> {
    caller.require(Role::Reader)?;
    let tenant = caller.tenant(&q)?;
    let limit = whole_number(&q, "limit", 1, 500)?.unwrap_or(50) as usize;
    let cursor = cursor_param(&q, |c| MemberCursor::decode(c, &tenant))?;
    let page = state
        .service
        .batch_members(&tenant, id, cursor, limit)
        .await?;
    Ok(Json(page).into_response())
}

/// `POST /v1/batches/{id}/cancel`: every unfinished member cancelled, by a bulk job (202 and
/// that job).
pub(super) async fn cancel_batch(
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

/// The batches resource's routes, as described.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/jobs/batch"),
    ("get", "/v1/batches/{id}"),
    ("get", "/v1/batches/{id}/jobs"),
    ("post", "/v1/batches/{id}/cancel"),
];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    match route {
        "/v1/batches/{id}/jobs" => Some(&["tenant", "cursor", "limit"]),
        _ => ROUTES
            .iter()
            .any(|(_, path)| *path == route)
            .then_some(&["tenant"]),
    }
}

/// The resource's routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/v1/batches/{id}/jobs", get(batch_members))
        .route("/v1/batches/{id}/cancel", post(cancel_batch))
}
