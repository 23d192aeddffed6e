//! The local runtime's live updates: the WebSocket gateway at `/ws` (API Gateway's part: it
//! routes frames to the same `ws` routes the Lambda runs), and the loop that hands the change
//! feed to the same `notify` the `notify` Lambda runs.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use shared::adapters::hub::Hub;
use shared::auth::{Principal, Verify};
use shared::entrypoints::ws::{route_of, WsRoutes};
use shared::live::{error_message, notify, ChangeFeed, JobChange};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// How long a client may take to send its credential as the first frame.
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// The largest frame and message a client may send (its frames are a few hundred bytes): past
/// it the connection is closed, so no socket buffers more than this.
const MAX_MESSAGE: usize = 16 * 1024;
/// How long one frame may take to go out before the client is taken for gone.
const SEND_WAIT: Duration = Duration::from_secs(10);
/// A connection's read buffer, and how much is gathered before a write.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;
/// Messages written to a socket before one flush, when that many are waiting.
const WRITE_BATCH: usize = 64;

/// Changes handed to one `notify` at most.
const NOTIFY_BATCH: usize = 256;

#[derive(Clone)]
pub struct Gateway {
    pub hub: Arc<Hub>,
    /// The changes pushed (kept while a client is connected).
    pub feed: Arc<ChangeFeed>,
    pub routes: WsRoutes,
    pub auth: Arc<dyn Verify>,
}

/// `GET /ws[?token=…]`: a credential in the query is checked before the upgrade (a refused one
/// gets the API's JSON 401); without one, the first frame must be
/// `{"action":"auth","token":"…"}`.
pub async fn upgrade(
    State(gateway): State<Gateway>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    method: axum::http::Method,
    ws: WebSocketUpgrade,
) -> Response {
    let refuse = |status: StatusCode, code: &str, message: &str| {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        (status, axum::Json(body)).into_response()
    };
    // (Dev mode, where no credential is asked for: only from this machine's own pages.)
    if gateway.auth.is_open() {
        if let Some((_, why)) = shared::entrypoints::http::dev_mode_refusal(&method, &headers, true)
        {
            return refuse(StatusCode::FORBIDDEN, "forbidden", &why);
        }
    }
    let credential = q.get("token").map(|t| format!("Bearer {t}")).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let principal = match credential {
        Some(c) => match gateway.auth.authenticate(Some(&c)).await {
            Ok(p) => Some(p),
            Err(e) => return refuse(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string()),
        },
        // No credential: dev mode lets the caller in as it is; otherwise the first frame
        // must carry one.
        None => gateway.auth.authenticate(None).await.ok(),
    };
    // A place among the process's live readers (one without a credential yet counts too, so
    // sockets that never authenticate cannot hold them all), and its tenant's when known.
    let slot = match gateway
        .feed
        .limits()
        .open(principal.as_ref().map(|p| &p.tenant))
    {
        Ok(slot) => slot,
        Err(why) => return refuse(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", &why),
    };
    // Clients send small frames: a small read buffer keeps an idle connection cheap (the
    // default is 128 KiB each), and nothing larger than `MAX_MESSAGE` is taken.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(gateway, socket, principal, slot))
}

async fn serve(
    gateway: Gateway,
    socket: WebSocket,
    principal: Option<Principal>,
    mut slot: shared::live::LiveSlot,
) {
    let (mut tx, mut rx) = socket.split();
    let principal = match principal {
        Some(p) => p,
        None => match first_frame_credential(&gateway, &mut rx).await {
            Ok(p) => match slot.of(&p.tenant) {
                Ok(()) => p,
                Err(why) => {
                    let _ = tx
                        .send(Message::Text(
                            error_message("too_many_connections", &why).into(),
                        ))
                        .await;
                    let _ = tx.close().await;
                    return;
                }
            },
            Err(message) => {
                let _ = tx
                    .send(Message::Text(
                        error_message("unauthorized", &message).into(),
                    ))
                    .await;
                let _ = tx.close().await;
                return;
            }
        },
    };
    let id = ulid::Ulid::new().to_string();
    let _watching = gateway.feed.watch();
    let mut outbox = gateway.hub.attach(&id);
    if let Err(e) = gateway
        .routes
        .connect(&id, &principal, chrono::Utc::now())
        .await
    {
        tracing::warn!(error = %e, "connection not stored");
        return;
    }
    let mut out: Vec<String> = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
            frame = rx.next() => match frame {
                Some(Ok(Message::Text(body))) => {
                    let reply = gateway.routes.message(&id, route_of(&body), &body).await;
                    // What was pushed before the frame was handled goes out before its reply.
                    while let Ok(m) = outbox.try_recv() {
                        out.push(m.to_string());
                    }
                    out.push(reply);
                }
                Some(Ok(Message::Binary(_))) => out.push(error_message("bad_frame", "frames are JSON text")),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            },
            pushed = outbox.recv() => match pushed {
                Some(message) => {
                    out.push(message.to_string());
                    // What else is waiting goes out with it, in one write.
                    while out.len() < WRITE_BATCH {
                        match outbox.try_recv() {
                            Ok(m) => out.push(m.to_string()),
                            Err(_) => break,
                        }
                    }
                }
                // Dropped by the hub: it fell behind.
                None => {
                    let _ = tx.send(Message::Text(error_message("too_slow", "this client fell behind and was dropped; connect again").into())).await;
                    break;
                }
            },
        };
        let write = async {
            for m in out.drain(..) {
                tx.feed(Message::Text(m.into())).await?;
            }
            tx.flush().await
        };
        match tokio::time::timeout(SEND_WAIT, write).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let _ = gateway.routes.disconnect(&id).await;
}

async fn first_frame_credential(
    gateway: &Gateway,
    rx: &mut futures::stream::SplitStream<WebSocket>,
) -> Result<Principal, String> {
    let frame = tokio::time::timeout(AUTH_WAIT, rx.next())
        .await
        .map_err(|_| "no credential: connect with ?token= or send {\"action\":\"auth\",\"token\":\"…\"} first".to_string())?;
    let Some(Ok(Message::Text(body))) = frame else {
        return Err("the first frame must be {\"action\":\"auth\",\"token\":\"…\"}".into());
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let token = match (v["action"].as_str(), v["token"].as_str()) {
        (Some("auth"), Some(t)) => t,
        _ => return Err("the first frame must be {\"action\":\"auth\",\"token\":\"…\"}".into()),
    };
    gateway
        .auth
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .map_err(|e| e.to_string())
}

/// Hand the feed's changes to `notify`, as the `notify` Lambda gets the stream's, until `stop`.
pub async fn push_changes(feed: Arc<ChangeFeed>, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut rx = feed.subscribe();
    let mut batch: Vec<JobChange> = Vec::with_capacity(NOTIFY_BATCH);
    loop {
        let first = tokio::select! {
            got = rx.recv() => got,
            _ = stop.changed() => return,
        };
        match first {
            Ok(c) => batch.push(c.change.clone()),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "live updates fell behind; some changes were not pushed"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        }
        while batch.len() < NOTIFY_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c.change.clone()),
                Err(_) => break,
            }
        }
        // (No one connected: nothing to look up.)
        if hub.open_connections() == 0 {
            batch.clear();
            continue;
        }
        if let Err(e) = notify(hub.as_ref(), hub.as_ref(), &batch).await {
            tracing::warn!(error = %e, "changes not pushed");
        }
        batch.clear();
    }
}
