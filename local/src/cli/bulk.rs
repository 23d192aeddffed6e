//! `conveyor bulk …`: retry or cancel every job a filter matches (as one bulk job, whose
//! progress `bulk show` prints), or given jobs one by one.

use super::client::{summary_line, Client, Connection, Scope};
use serde_json::{json, Map, Value};

/// `conveyor bulk`.
#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    #[command(subcommand)]
    pub command: BulkCommand,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
pub enum BulkCommand {
    /// Retry given jobs, or every one a filter matches (a bulk job)
    Retry(Targets),
    /// Cancel given jobs, or every one a filter matches (a bulk job)
    Cancel(Targets),
    /// A bulk job's progress, and once it ended what it did
    Show {
        /// The bulk job's id
        job_id: String,
    },
}

/// The jobs a bulk action takes: ids, or a filter, or `--all`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).multiple(true)))]
#[command(group(clap::ArgGroup::new("filter").multiple(true)))]
pub struct Targets {
    /// These jobs, each at once (not with a filter)
    #[arg(value_name = "JOB_ID", group = "targets", conflicts_with = "filter")]
    pub job_ids: Vec<String>,
    /// Only jobs in this status
    #[arg(long, value_name = "STATUS", group = "targets", group = "filter")]
    pub status: Option<String>,
    #[command(flatten)]
    pub filter: Filter,
    /// Every job of the tenant (no filter)
    #[arg(long, group = "targets", conflicts_with_all = ["filter", "job_ids"])]
    pub all: bool,
}

/// A filter's type and creation range, as bulk actions and redrives take them.
#[derive(Debug, clap::Args)]
pub struct Filter {
    /// Only jobs of this type
    #[arg(
        long = "type",
        value_name = "TYPE",
        group = "targets",
        group = "filter"
    )]
    pub job_type: Option<String>,
    /// Only jobs created after this time (RFC 3339)
    #[arg(long, value_name = "TIME", group = "targets", group = "filter")]
    pub created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339)
    #[arg(long, value_name = "TIME", group = "targets", group = "filter")]
    pub created_before: Option<String>,
}

impl Filter {
    /// The filter's fields as the API names them (the ones given).
    pub fn fields(&self) -> Map<String, Value> {
        [
            ("type", &self.job_type),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), json!(v.as_ref()?))))
        .collect()
    }
}

/// A submitted bulk job, and how to follow it.
pub fn bulk_job_line(j: &Value) -> String {
    format!(
        "{}\n(a bulk job: `conveyor bulk show {}` tells how far it got)",
        summary_line(j),
        j["id"].as_str().unwrap_or("?")
    )
}

/// A bulk job's progress and, once it ended, its counts.
fn progress_line(j: &Value) -> String {
    let mut line = summary_line(j);
    if let Some(note) = j["progress"]["message"].as_str() {
        line.push_str(&format!(" ({note})"));
    }
    let r = &j["result"];
    if r.is_object() {
        line.push_str(&format!(
            "\n{}: matched {}, changed {}, skipped {}",
            r["action"].as_str().unwrap_or("?"),
            r["matched"],
            r["changed"],
            r["skipped"]
        ));
    }
    line
}

/// `action` (retry or cancel) on each job in turn: a line each, exit code 1 if any failed.
pub async fn each(c: &Client, action: &str, ids: &[String]) -> anyhow::Result<u8> {
    let mut failed = 0;
    for id in ids {
        match c.post(&format!("/v1/jobs/{id}/{action}"), None).await {
            Ok(job) => c.print(&job, summary_line),
            Err(e) => {
                failed += 1;
                eprintln!("{id}  {e:#}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

pub async fn run(a: BulkArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    let (action, targets) = match a.command {
        BulkCommand::Show { job_id } => {
            let job = c.get(&format!("/v1/jobs/{job_id}"), &[]).await?;
            c.print(&job, progress_line);
            return Ok(0);
        }
        BulkCommand::Retry(t) => ("retry", t),
        BulkCommand::Cancel(t) => ("cancel", t),
    };
    if !targets.job_ids.is_empty() {
        return each(&c, action, &targets.job_ids).await;
    }
    let mut filter = targets.filter.fields();
    if let Some(status) = targets.status {
        filter.insert("status".into(), json!(status));
    }
    let job = c
        .post(
            "/v1/jobs/bulk",
            Some(json!({ "action": action, "filter": filter })),
        )
        .await?;
    c.print(&job, bulk_job_line);
    Ok(0)
}
