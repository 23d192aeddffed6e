//! `conveyor batches …`: many jobs submitted as one batch, followed by its counts and its
//! members, cancelled together.

use super::client::{
    item_error, page_lines, parse_json, summary_line, Client, Connection, Scope, Usage,
};
use serde_json::{json, Value};

/// `conveyor batches`.
#[derive(Debug, clap::Args)]
pub struct BatchesArgs {
    #[command(subcommand)]
    pub command: BatchesCommand,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
pub enum BatchesCommand {
    /// Submit up to 1,000 jobs as one batch; prints the batch and each job (exit 1 if any
    /// was refused)
    #[command(visible_alias = "submit")]
    Create(CreateArgs),
    /// A batch's counts by status, its progress and its callbacks
    Get {
        /// The batch's id
        batch_id: String,
    },
    /// A batch's members, in the order they joined, each with its status now
    #[command(visible_alias = "members")]
    Jobs {
        /// The batch's id
        batch_id: String,
        /// Members a page (1 to 500)
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// The page after the one that printed this cursor
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// Cancel every unfinished member, as a bulk job (prints that job)
    Cancel {
        /// The batch's id
        batch_id: String,
    },
}

/// The jobs of a new batch, and its callbacks.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(true)))]
pub struct CreateArgs {
    /// A job as POST /v1/jobs takes it, e.g. '{"type": "noop"}' (repeat for more)
    #[arg(long = "job", value_name = "JSON", value_parser = parse_json, group = "input")]
    pub jobs: Vec<Value>,
    /// A file of jobs: a JSON array, or one job a line (- reads standard input)
    #[arg(long, value_name = "FILE", group = "input")]
    pub file: Option<std::path::PathBuf>,
    /// A job submitted once every member has ended, e.g. '{"type": "noop"}'
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub on_complete: Option<Value>,
    /// A job submitted once every member has ended, only if all succeeded
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub on_success: Option<Value>,
    /// All or nothing: any refused job refuses the batch
    #[arg(long)]
    pub atomic: bool,
}

/// The jobs a file holds: a JSON array, or a JSON value a line.
fn jobs_in(path: &std::path::Path) -> Result<Vec<Value>, Usage> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| Usage(format!("--file {}: {e}", path.display())))?;
    if let Ok(Value::Array(jobs)) = serde_json::from_str(&text) {
        return Ok(jobs);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Usage(format!(
                    "--file {}: line {} is not JSON: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// A batch in one line: id, status, progress and counts.
pub fn batch_line(b: &Value) -> String {
    let counts = &b["counts"];
    let mut line = format!(
        "{}  {:<8} {:>3}%  {} jobs: pending {}, succeeded {}, failed {}, dead {}, cancelled {}",
        b["id"].as_str().unwrap_or("?"),
        b["status"].as_str().unwrap_or("?"),
        b["progress"],
        b["total"],
        counts["pending"],
        counts["succeeded"],
        counts["failed"],
        counts["dead"],
        counts["cancelled"],
    );
    for (name, job) in b["callbacks"].as_object().into_iter().flatten() {
        line.push_str(&format!("\n  {name}: {}", job.as_str().unwrap_or("?")));
    }
    line
}

pub async fn run(a: BatchesArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    match a.command {
        BatchesCommand::Create(create) => {
            let mut jobs = create.jobs;
            if let Some(path) = &create.file {
                jobs.extend(jobs_in(path)?);
            }
            let mut batch = json!({});
            if let Some(job) = create.on_complete {
                batch["on_complete"] = job;
            }
            if let Some(job) = create.on_success {
                batch["on_success"] = job;
            }
            let body = json!({ "jobs": jobs, "atomic": create.atomic, "batch": batch });
            let answer = c.post("/v1/jobs/batch", Some(body)).await?;
            c.print(&answer, |a| {
                let mut lines = vec![format!(
                    "{}\n{} created, {} existing, {} refused",
                    batch_line(&a["batch"]),
                    a["created"],
                    a["existing"],
                    a["refused"]
                )];
                for item in a["results"].as_array().into_iter().flatten() {
                    lines.push(match item["job"]["id"].as_str() {
                        Some(id) => format!(
                            "#{}  {id}  {}",
                            item["index"],
                            item["job"]["status"].as_str().unwrap_or("?")
                        ),
                        None => item_error(item),
                    });
                }
                lines.join("\n")
            });
            Ok(if answer["refused"].as_u64().unwrap_or(0) > 0 {
                1
            } else {
                0
            })
        }
        BatchesCommand::Get { batch_id } => {
            let b = c.get(&format!("/v1/batches/{batch_id}"), &[]).await?;
            c.print(&b, batch_line);
            Ok(0)
        }
        BatchesCommand::Jobs {
            batch_id,
            limit,
            cursor,
        } => {
            let query: Vec<(&str, String)> =
                [("limit", limit.map(|n| n.to_string())), ("cursor", cursor)]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect();
            let page = c
                .get(&format!("/v1/batches/{batch_id}/jobs"), &query)
                .await?;
            c.print(&page, page_lines);
            Ok(0)
        }
        BatchesCommand::Cancel { batch_id } => {
            let job = c
                .post(&format!("/v1/batches/{batch_id}/cancel"), None)
                .await?;
            c.print(&job, |j| {
                format!(
                    "{}\n(a bulk job: `conveyor bulk show {}` tells how far it got)",
                    summary_line(j),
                    j["id"].as_str().unwrap_or("?")
                )
            });
            Ok(0)
        }
    }
}
