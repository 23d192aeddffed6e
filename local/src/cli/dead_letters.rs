//! `conveyor dead-letters …`: the tenant's dead jobs with why they died, and redrives (given
//! ones at once, or every one a filter matches as a bulk job).

use super::bulk::{bulk_job_line, Filter};
use super::client::{item_error, page_lines, Client, Connection, Scope};
use serde_json::{json, Value};

/// `conveyor dead-letters`.
#[derive(Debug, clap::Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub command: DeadLettersCommand,
    #[command(flatten)]
    pub scope: Scope,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// The dead jobs, newest first, each with why it died
    List {
        /// Only jobs of this type
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
        /// Jobs a page (1 to 500)
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// The page after the one that printed this cursor
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// Put dead jobs back with fresh attempts: given ones at once (up to 100), or every one a
    /// filter matches as a bulk job
    Redrive(Redrive),
}

/// The dead jobs a redrive takes: ids, or a filter, or `--all`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).multiple(true)))]
#[command(group(clap::ArgGroup::new("filter").multiple(true)))]
pub struct Redrive {
    /// These dead jobs (not with a filter)
    #[arg(value_name = "JOB_ID", group = "targets", conflicts_with = "filter")]
    pub job_ids: Vec<String>,
    #[command(flatten)]
    pub filter: Filter,
    /// Every dead job of the tenant (no filter)
    #[arg(long, group = "targets", conflicts_with_all = ["filter", "job_ids"])]
    pub all: bool,
}

pub async fn run(a: DeadLettersArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    match a.command {
        DeadLettersCommand::List {
            job_type,
            limit,
            cursor,
        } => {
            let query: Vec<(&str, String)> = [
                ("type", job_type),
                ("limit", limit.map(|n| n.to_string())),
                ("cursor", cursor),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
            let page = c.get("/v1/dead-letters", &query).await?;
            c.print(&page, page_lines);
            Ok(0)
        }
        DeadLettersCommand::Redrive(r) if !r.job_ids.is_empty() => {
            let answer = c
                .post(
                    "/v1/dead-letters/redrive",
                    Some(json!({ "ids": r.job_ids })),
                )
                .await?;
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            c.print(&answer, |_| {
                results
                    .iter()
                    .map(|item| match item["status"].as_str() {
                        Some(status) => format!("{}  {status}", item["id"].as_str().unwrap_or("?")),
                        None => item_error(item),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            let failed = results.iter().any(|r| r["error"].is_object());
            Ok(if failed { 1 } else { 0 })
        }
        DeadLettersCommand::Redrive(r) => {
            let job = c
                .post(
                    "/v1/dead-letters/redrive",
                    Some(Value::Object(r.filter.fields())),
                )
                .await?;
            c.print(&job, bulk_job_line);
            Ok(0)
        }
    }
}
