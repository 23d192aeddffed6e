//! `conveyor schedules …`: recurring jobs declared, listed, paused, resumed and deleted.

use super::client::{parse_json, Client, Connection, Scope};
use reqwest::Method;
use serde_json::{json, Value};

/// `conveyor schedules`.
#[derive(Debug, clap::Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub command: SchedulesCommand,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule of the tenant
    List,
    /// One schedule, with its next run
    Get { name: String },
    /// A schedule's latest ticks: when, what came of each, and its job
    Runs { name: String },
    /// Stop a schedule's ticks until it is resumed
    Pause { name: String },
    /// Start a paused schedule's ticks again
    Resume { name: String },
    /// Delete a schedule (its jobs stay)
    Delete { name: String },
    /// Declare a schedule
    Create(Definition),
    /// Replace a schedule's definition
    Update(Definition),
}

/// A schedule's definition, as `create` and `update` take it.
#[derive(Debug, clap::Args)]
pub struct Definition {
    /// The schedule's name
    pub name: String,
    /// The type of the job each tick submits
    #[arg(value_name = "TYPE")]
    pub job_type: String,
    #[command(flatten)]
    pub when: When,
    /// The IANA time zone a cron expression reads in, e.g. Europe/Berlin [default: UTC]
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Each job's payload, a JSON value
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<Value>,
    /// What a tick does while the last one's job has not ended
    #[arg(long, value_parser = ["skip", "allow", "queue_one"])]
    pub overlap: Option<String>,
    /// What ticks missed while nothing ran become
    #[arg(long, value_parser = ["latest", "none"])]
    pub catch_up: Option<String>,
    /// No tick before this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,
    /// No tick after this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub end_at: Option<String>,
    /// Each job's priority (-1000 to 1000)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Each job's attempts (1 to 100)
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i64>,
    /// Declare it paused
    #[arg(long)]
    pub paused: bool,
}

/// When a schedule ticks: one expression of three kinds.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct When {
    /// A cron expression, e.g. '30 2 * * *'
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// A rate, e.g. '5 minutes'
    #[arg(long, value_name = "EXPR")]
    pub rate: Option<String>,
    /// One time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

fn schedule_line(s: &Value) -> String {
    let next = s["next_run_at"].as_str().unwrap_or("-");
    format!(
        "{:<24} {:<14} {:<28} {:<16} {}next {next}",
        s["name"].as_str().unwrap_or("?"),
        s["type"].as_str().unwrap_or("?"),
        s["expression"].as_str().unwrap_or("?"),
        s["timezone"].as_str().unwrap_or("?"),
        if s["paused"] == json!(true) {
            "paused "
        } else {
            ""
        },
    )
}

fn body_of(d: Definition) -> Value {
    let mut body = json!({ "name": d.name, "type": d.job_type });
    for (value, field) in [
        (d.when.cron, "cron"),
        (d.when.rate, "rate"),
        (d.when.at, "at"),
        (d.timezone, "timezone"),
        (d.overlap, "overlap"),
        (d.catch_up, "catch_up"),
        (d.start_at, "start_at"),
        (d.end_at, "end_at"),
    ] {
        if let Some(v) = value {
            body[field] = json!(v);
        }
    }
    for (value, field) in [(d.priority, "priority"), (d.max_attempts, "max_attempts")] {
        if let Some(v) = value {
            body[field] = json!(v);
        }
    }
    if let Some(p) = d.payload {
        body["payload"] = p;
    }
    if d.paused {
        body["paused"] = json!(true);
    }
    body
}

pub async fn run(a: SchedulesArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    match a.command {
        SchedulesCommand::List => {
            let all = c.get("/v1/schedules", &[]).await?;
            c.print(&all, |v| {
                v["schedules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(schedule_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SchedulesCommand::Get { name } => {
            let s = c.get(&format!("/v1/schedules/{name}"), &[]).await?;
            c.print(&s, schedule_line);
        }
        SchedulesCommand::Runs { name } => {
            let runs = c.get(&format!("/v1/schedules/{name}/runs"), &[]).await?;
            c.print(&runs, |v| {
                v["runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{}  {:<10} {}",
                            r["tick"].as_str().unwrap_or("?"),
                            r["outcome"].as_str().unwrap_or("?"),
                            r["job_id"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        SchedulesCommand::Pause { name } => {
            let s = c.post(&format!("/v1/schedules/{name}/pause"), None).await?;
            c.print(&s, schedule_line);
        }
        SchedulesCommand::Resume { name } => {
            let s = c
                .post(&format!("/v1/schedules/{name}/resume"), None)
                .await?;
            c.print(&s, schedule_line);
        }
        SchedulesCommand::Delete { name } => {
            let v = c
                .call(Method::DELETE, &format!("/v1/schedules/{name}"), &[], None)
                .await?;
            c.print(&v, |v| {
                format!("deleted {}", v["deleted"].as_str().unwrap_or("?"))
            });
        }
        SchedulesCommand::Create(d) => {
            let s = c.post("/v1/schedules", Some(body_of(d))).await?;
            c.print(&s, schedule_line);
        }
        SchedulesCommand::Update(d) => {
            let path = format!("/v1/schedules/{}", d.name);
            let s = c.call(Method::PUT, &path, &[], Some(body_of(d))).await?;
            c.print(&s, schedule_line);
        }
    }
    Ok(0)
}
