//! `GET /metrics` on the local runtime: the process's figures (`shared::metrics`) in
//! Prometheus's text format, with gauges read at each scrape: jobs by type and status, each
//! queue's depth and the age of its oldest message (embedded backend; on AWS, SQS's own
//! CloudWatch metrics have those, and the functions write theirs as embedded-metric-format log
//! lines), and the open live-update connections. An operator's credential is asked for, as for
//! any cross-tenant figure (dev mode's caller is the operator).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::adapters::embedded::{EmbeddedQueue, EmbeddedStore};
use shared::adapters::hub::Hub;
use shared::auth::Verify;
use shared::domain::Role;
use shared::metrics::{global, Gauge};
use std::sync::Arc;

#[derive(Clone)]
pub struct MetricsSource {
    pub auth: Arc<dyn Verify>,
    pub store: Option<Arc<EmbeddedStore>>,
    pub queue: Option<Arc<EmbeddedQueue>>,
    pub hub: Arc<Hub>,
}

pub async fn serve(State(source): State<MetricsSource>, headers: HeaderMap) -> Response {
    // (Dev mode, where no credential is asked for: only from this machine.)
    if source.auth.is_open() {
        if let Some((_, why)) =
            shared::entrypoints::http::dev_mode_refusal(&axum::http::Method::GET, &headers, false)
        {
            return refuse(StatusCode::FORBIDDEN, "forbidden", &why);
        }
    }
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match source.auth.authenticate(credential).await {
        Ok(p) if p.has(Role::Operator) => {}
        Ok(_) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs the operator role (its figures are every tenant's)",
            )
        }
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string()),
    }
    let mut gauges = vec![];
    if let Some(store) = &source.store {
        if let Ok(stats) = store.stats_of(None).await {
            for row in stats.rows {
                gauges.push(Gauge {
                    name: "conveyor_jobs",
                    help: "jobs stored, by type and status (all tenants)",
                    labels: vec![("type", row.job_type), ("status", row.status.to_string())],
                    value: row.count as f64,
                });
            }
        }
    }
    if let Some(queue) = &source.queue {
        if let Ok(depths) = queue.depths().await {
            for (name, depth, _) in &depths {
                gauges.push(Gauge {
                    name: "conveyor_queue_messages",
                    help: "messages in the queue (waiting, delayed and in flight)",
                    labels: vec![("queue", name.clone())],
                    value: *depth as f64,
                });
            }
            for (name, _, age) in &depths {
                gauges.push(Gauge {
                    name: "conveyor_queue_oldest_message_seconds",
                    help: "how long the queue's oldest message has been there (0: empty)",
                    labels: vec![("queue", name.clone())],
                    value: age.map_or(0.0, |a| a.as_secs_f64()),
                });
            }
        }
    }
    gauges.push(Gauge {
        name: "conveyor_live_connections",
        help: "open live-update (WebSocket) connections",
        labels: vec![],
        value: source.hub.open_connections() as f64,
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        global().prometheus(&gauges),
    )
        .into_response()
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}
