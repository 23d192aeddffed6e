//! `/v1/events`: live updates as server-sent events (the local runtime's feed, or a catch-up
//! read from the store on Lambda). A child of `http`.

use super::*;

/// `GET /v1/events?job_id=…` or `?all=true`: live updates as server-sent events, each
/// event's data a message of the WebSocket protocol (`live`), resumable with `Last-Event-ID`.
pub(super) async fn events(
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
pub(super) async fn catch_up(
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

/// The live resource's routes (the WebSocket protocol has routes of its own, `ws::ROUTES`).
pub(super) const ROUTES: &[(&str, &str)] = &[("get", "/v1/events")];

/// The query parameters each of the resource's routes takes.
pub(super) fn params(route: &str) -> Option<&'static [&'static str]> {
    (route == "/v1/events").then_some(&["job_id", "all", "tenant", "last_event_id"])
}

/// The resource's routes, served.
pub(super) fn router() -> Router<Arc<ApiState>> {
    Router::new().route("/v1/events", get(events))
}
