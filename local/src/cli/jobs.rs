//! `conveyor submit|get|cancel|retry|list|logs|stats`: one job at a time, and the tenant's
//! listing and counts.

use super::client::{is_finished, page_lines, parse_json, summary_line, Client, Connection, Scope};
use serde_json::{json, Value};
use std::time::Duration;

/// `conveyor submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The job's type, e.g. sleep or http.fetch
    #[arg(value_name = "TYPE")]
    pub job_type: String,
    /// The job's payload, a JSON value
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<Value>,
    /// Run it no sooner than this many seconds from now
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub delay: Option<i64>,
    /// Run it no sooner than this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub run_at: Option<String>,
    /// Higher runs first (-1000 to 1000)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Attempts before it is dead (1 to 100)
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i64>,
    /// The same key again answers the same job
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

/// A command on one job.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job's id
    pub job_id: String,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

/// `conveyor replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The job to replay (of any status)
    pub job_id: String,
    /// The new job's payload, as JSON (default: the replayed job's)
    #[arg(long, value_parser = parse_json)]
    pub payload: Option<serde_json::Value>,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

/// `conveyor list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only jobs in this status (waiting, scheduled, queued, running, succeeded, failed, dead,
    /// cancelled)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// Only jobs of this type
    #[arg(long = "type", value_name = "TYPE")]
    pub job_type: Option<String>,
    /// Jobs a page (1 to 500)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// The page after the one that printed this cursor
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

/// `conveyor logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The job's id
    pub job_id: String,
    /// Keep printing new lines until the job ends
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

/// `conveyor stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let mut body = json!({ "type": a.job_type });
    if let Some(p) = a.payload {
        body["payload"] = p;
    }
    for (value, field) in [
        (a.delay, "delay_seconds"),
        (a.priority, "priority"),
        (a.max_attempts, "max_attempts"),
    ] {
        if let Some(v) = value {
            body[field] = json!(v);
        }
    }
    if let Some(t) = a.run_at {
        body["run_at"] = json!(t);
    }
    if let Some(k) = a.idempotency_key {
        body["idempotency_key"] = json!(k);
    }
    let job = c.post("/v1/jobs", Some(body)).await?;
    c.print(&job, summary_line);
    Ok(0)
}

/// `get`, `cancel` or `retry` (`action`) one job.
pub async fn one(action: &str, a: JobArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let id = &a.job_id;
    let job = match action {
        "get" => c.get(&format!("/v1/jobs/{id}"), &[]).await?,
        action => c.post(&format!("/v1/jobs/{id}/{action}"), None).await?,
    };
    c.print(&job, |j| {
        let mut out = summary_line(j);
        if action == "get" && !j["result"].is_null() {
            out.push_str(&format!("\nresult: {}", j["result"]));
        }
        out
    });
    Ok(0)
}

pub async fn replay(a: ReplayArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let body = a.payload.map(|p| serde_json::json!({ "payload": p }));
    let job = c
        .post(&format!("/v1/jobs/{}/replay", a.job_id), body)
        .await?;
    c.print(&job, |j| {
        format!(
            "{}\nreplays {}",
            summary_line(j),
            j["replay_of"].as_str().unwrap_or("?")
        )
    });
    Ok(0)
}

pub async fn list(a: ListArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let query: Vec<(&str, String)> = [
        ("status", a.status),
        ("type", a.job_type),
        ("limit", a.limit.map(|n| n.to_string())),
        ("cursor", a.cursor),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    let page = c.get("/v1/jobs", &query).await?;
    c.print(&page, page_lines);
    Ok(0)
}

pub async fn stats(a: StatsArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let stats = c.get("/v1/stats", &[]).await?;
    c.print(&stats, |s| {
        let mut lines = vec![format!("total {}", s["total"])];
        for (t, counts) in s["by_type"].as_object().into_iter().flatten() {
            let counts: Vec<String> = counts
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            lines.push(format!("{t:<16} {}", counts.join(", ")));
        }
        lines.join("\n")
    });
    Ok(0)
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let id = &a.job_id;
    let mut after = 0u64;
    let print_page = |page: &Value, after: &mut u64| {
        for line in page["logs"].as_array().into_iter().flatten() {
            *after = (*after).max(line["seq"].as_u64().unwrap_or(*after));
            c.print(line, |l| {
                format!(
                    "[attempt {}] {}",
                    l["attempt"],
                    l["line"].as_str().unwrap_or("")
                )
            });
        }
    };
    loop {
        let page = c
            .get(
                &format!("/v1/jobs/{id}/logs"),
                &[("after", after.to_string())],
            )
            .await?;
        print_page(&page, &mut after);
        if !a.follow {
            return Ok(0);
        }
        let job = c.get(&format!("/v1/jobs/{id}"), &[]).await?;
        if is_finished(&job) {
            // (one more read for lines written just before the end)
            let page = c
                .get(
                    &format!("/v1/jobs/{id}/logs"),
                    &[("after", after.to_string())],
                )
                .await?;
            print_page(&page, &mut after);
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
