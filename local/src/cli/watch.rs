//! `conveyor watch`: a live progress bar for each job until all have ended, fed by the
//! WebSocket (or, when it cannot be reached, by reading the jobs every half second); the exit
//! code is the worst outcome: 0 succeeded, 3 failed, 4 dead, 5 cancelled.

use super::client::{is_finished, Client, Connection};
use anyhow::bail;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// `conveyor watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The jobs to follow
    #[arg(required = true, value_name = "JOB_ID")]
    pub job_ids: Vec<String>,
    /// Where live updates are, when not at the API's own /ws (AWS: the stack's WebSocketUrl)
    #[arg(long, env = "CONVEYOR_WS_URL", value_name = "URL")]
    pub ws_url: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// The exit code a finished job stands for.
fn outcome_code(job: &Value) -> u8 {
    match job["status"].as_str() {
        Some("succeeded") => 0,
        Some("failed") => 3,
        Some("dead") => 4,
        _ => 5,
    }
}

pub async fn watch(a: WatchArgs) -> anyhow::Result<u8> {
    use futures::{SinkExt, StreamExt};
    use indicatif::{MultiProgress, ProgressDrawTarget, ProgressStyle};
    use tokio_tungstenite::tungstenite::Message;
    let c = Client::new(&a.connection, None)?;
    let ids = &a.job_ids;
    let bars = MultiProgress::with_draw_target(if c.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
        .expect("a template")
        .progress_chars("=> ");
    let mut jobs: BTreeMap<String, (ProgressBar, Value)> = BTreeMap::new();
    for id in ids {
        let job = c.get(&format!("/v1/jobs/{id}"), &[]).await?;
        let bar = bars.add(ProgressBar::new(100).with_style(style.clone()));
        bar.set_prefix(id.clone());
        jobs.insert(id.clone(), (bar, Value::Null));
        show(&c, &mut jobs, &job);
    }
    let ws_url = a
        .ws_url
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("{}/ws", c.url.replacen("http", "ws", 1)));
    let ws_url = match &c.token {
        Some(t) => format!("{ws_url}?token={t}"),
        None => ws_url,
    };
    let socket = match tokio_tungstenite::connect_async(&ws_url).await {
        Ok((socket, _)) => Some(socket),
        Err(e) => {
            tracing::debug!(error = %e, "no WebSocket; reading the jobs instead");
            None
        }
    };
    if let Some(mut socket) = socket {
        for id in ids {
            socket
                .send(Message::Text(
                    json!({ "action": "subscribe", "job_id": id })
                        .to_string()
                        .into(),
                ))
                .await?;
        }
        // (Subscribing answers with each job as it is: nothing between the read and the
        // subscription is missed.)
        while !jobs.values().all(|(_, j)| is_finished(j)) {
            let Some(frame) = socket.next().await else {
                break;
            };
            let Ok(Message::Text(text)) = frame else {
                continue;
            };
            let m: Value = serde_json::from_str(&text).unwrap_or_default();
            let messages = match m["type"].as_str() {
                Some("batch") => m["messages"].as_array().cloned().unwrap_or_default(),
                _ => vec![m],
            };
            for m in messages {
                match m["type"].as_str() {
                    Some("job") => show(&c, &mut jobs, &m["job"]),
                    Some("subscribed") if m["job"].is_object() => show(&c, &mut jobs, &m["job"]),
                    Some("error") => bail!("{}: {}", m["code"], m["message"]),
                    _ => {}
                }
            }
        }
    }
    while !jobs.values().all(|(_, j)| is_finished(j)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for id in ids {
            let job = c.get(&format!("/v1/jobs/{id}"), &[]).await?;
            show(&c, &mut jobs, &job);
        }
    }
    Ok(jobs
        .values()
        .map(|(_, j)| outcome_code(j))
        .max()
        .unwrap_or(0))
}

/// Show a job's new state (an older one, by version, is ignored).
fn show(c: &Client, jobs: &mut BTreeMap<String, (ProgressBar, Value)>, job: &Value) {
    let Some(id) = job["id"].as_str() else { return };
    let Some((bar, seen)) = jobs.get_mut(id) else {
        return;
    };
    if seen["version"].as_u64() > job["version"].as_u64() {
        return;
    }
    if c.json {
        println!("{job}");
    }
    *seen = job.clone();
    let status = job["status"].as_str().unwrap_or("?");
    let percent = if status == "succeeded" {
        100
    } else {
        job["progress"]["percent"].as_u64().unwrap_or(0)
    };
    bar.set_position(percent);
    let note = job["progress"]["message"]
        .as_str()
        .or(job["error"]["message"].as_str())
        .unwrap_or("");
    bar.set_message(format!("{status} {note}"));
    if is_finished(job) {
        bar.finish();
    }
}
