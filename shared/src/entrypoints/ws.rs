//! WebSocket routes, as API Gateway's WebSocket API routes them (`$connect`, `$disconnect`,
//! `subscribe`, `unsubscribe`, `$default`, selected by `$request.body.action`): the `ws`
//! function and the local runtime's `/ws` both call these. The protocol is in `live`.

use crate::auth::Principal;
use crate::domain::{JobId, JobSummary, Role};
use crate::live::{error_message, SubscribeFrame, Topic};
use crate::ports::{Connection, JobStore, LivePorts, StoreError};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

/// How long a connection may live: API Gateway closes a WebSocket after 2 hours.
pub const CONNECTION_LIFETIME: chrono::Duration = chrono::Duration::hours(2);

/// The WebSocket API's routes (the template declares exactly these).
pub const ROUTES: [&str; 5] = [
    "$connect",
    "$disconnect",
    "subscribe",
    "unsubscribe",
    "$default",
];

/// The route a frame takes: its `action` when that is a route, else `$default`.
pub fn route_of(body: &str) -> &'static str {
    let action = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("action").and_then(Value::as_str).map(str::to_string));
    match action.as_deref() {
        Some("subscribe") => "subscribe",
        Some("unsubscribe") => "unsubscribe",
        _ => "$default",
    }
}

#[derive(Clone)]
pub struct WsRoutes {
    pub live: LivePorts,
    pub store: Arc<dyn JobStore>,
}

impl WsRoutes {
    /// `$connect`: the caller, verified (by the authorizer on AWS), is remembered.
    pub async fn connect(
        &self,
        id: &str,
        principal: &Principal,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.live
            .connections
            .connect(&Connection {
                id: id.to_string(),
                tenant: principal.tenant.clone(),
                subject: principal.subject.clone(),
                connected_at: now,
                expires_at: now + CONNECTION_LIFETIME,
            })
            .await
    }

    /// `$disconnect` (best effort on AWS: a connection it misses ends with its TTL).
    pub async fn disconnect(&self, id: &str) -> Result<(), StoreError> {
        self.live.connections.disconnect(id).await
    }

    /// A frame on route `route`; the message to send back.
    pub async fn message(&self, id: &str, route: &str, body: &str) -> String {
        match self.answer(id, route, body).await {
            Ok(reply) => reply.to_string(),
            Err((code, message)) => error_message(code, &message),
        }
    }

    async fn answer(&self, id: &str, route: &str, body: &str) -> Result<Value, (&str, String)> {
        let unavailable = |e: StoreError| ("unavailable", e.to_string());
        if route == "$default" {
            return Err(match serde_json::from_str::<Value>(body) {
                Err(e) => ("bad_frame", format!("the frame is not JSON: {e}")),
                Ok(_) => (
                    "unknown_action",
                    "expected {\"action\":\"subscribe\"|\"unsubscribe\", \"job_id\":\"…\" or \"all\":true}".into(),
                ),
            });
        }
        let frame: SubscribeFrame = serde_json::from_str(body)
            .map_err(|e| ("bad_frame", format!("the frame cannot be read: {e}")))?;
        let topic = match (&frame.job_id, frame.all) {
            (Some(id), None | Some(false)) => Topic::Job(
                JobId::parse(id)
                    .map_err(|_| ("bad_frame", format!("job_id {id:?} is not a job id")))?,
            ),
            (None, Some(true)) => Topic::All,
            _ => {
                return Err((
                    "bad_frame",
                    "give either \"job_id\" or \"all\": true".into(),
                ))
            }
        };
        let Some(connection) = self
            .live
            .connections
            .connection(id)
            .await
            .map_err(unavailable)?
        else {
            return Err((
                "not_connected",
                "this connection is not known (expired?): connect again".into(),
            ));
        };
        let mut reply = match topic {
            Topic::Job(job_id) => json!({ "job_id": job_id }),
            Topic::All => json!({ "all": true }),
        };
        if route == "unsubscribe" {
            self.live
                .connections
                .unsubscribe(&connection, topic)
                .await
                .map_err(unavailable)?;
            reply["type"] = json!("unsubscribed");
            return Ok(reply);
        }
        if let Topic::Job(job_id) = topic {
            // Another tenant's job is answered as a missing one.
            let job = self
                .store
                .get(job_id)
                .await
                .map_err(unavailable)?
                .filter(|j| j.tenant == connection.tenant)
                .ok_or(("not_found", format!("no job {job_id}")))?;
            reply["job"] = json!(JobSummary::from(&job));
        }
        self.live
            .connections
            .subscribe(&connection, topic)
            .await
            .map_err(|e| match e {
                StoreError::Rejected(why) => ("too_many_subscriptions", why),
                e => unavailable(e),
            })?;
        reply["type"] = json!("subscribed");
        Ok(reply)
    }
}

/// The `ws` function's handler: an API Gateway WebSocket event, answered as API Gateway
/// expects (`statusCode`, and for a message the reply as `body`, which the route's
/// `$default` route response sends back to the client).
pub async fn handle_ws_event(routes: &WsRoutes, event: &Value) -> Value {
    let ctx = &event["requestContext"];
    let id = ctx["connectionId"].as_str().unwrap_or_default();
    let route = ctx["routeKey"].as_str().unwrap_or("$default");
    match route {
        "$connect" => {
            let fields = ctx["authorizer"]
                .as_object()
                .map(|o| o.clone().into_iter().collect())
                .unwrap_or_default();
            let principal = match super::authorizer::identity_from_context(&fields) {
                Some(Ok(p)) if p.has(Role::Reader) => p,
                _ => return json!({ "statusCode": 403 }),
            };
            match routes.connect(id, &principal, Utc::now()).await {
                Ok(()) => json!({ "statusCode": 200 }),
                Err(e) => {
                    tracing::warn!(connection = id, error = %e, "connection not stored");
                    json!({ "statusCode": 500 })
                }
            }
        }
        "$disconnect" => {
            if let Err(e) = routes.disconnect(id).await {
                tracing::warn!(connection = id, error = %e, "connection not removed; its TTL ends it");
            }
            json!({ "statusCode": 200 })
        }
        route => {
            let body = event["body"].as_str().unwrap_or_default();
            let reply = routes.message(id, route, body).await;
            json!({ "statusCode": 200, "body": reply })
        }
    }
}
