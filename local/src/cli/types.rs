//! `conveyor types list|get|register|delete|pause|resume`: the deployment's job types, external
//! types served by a team's own code declared and removed, and pausing one (its jobs wait,
//! submits go on); each for the tenant, or with `--all-tenants` for every tenant (an operator).

use super::client::{Client, Connection, Scope};
use serde_json::{json, Value};

/// `conveyor types`.
#[derive(Debug, clap::Args)]
pub struct TypesArgs {
    #[command(subcommand)]
    pub command: TypesCommand,
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Debug, clap::Subcommand)]
pub enum TypesCommand {
    /// Every job type, shipped or external, its options, and whether it is paused
    List,
    /// One job type, shipped or external
    Get {
        /// The job type
        job_type: String,
    },
    /// Declare an external type: each attempt of its jobs is a signed POST to --handler (or, on
    /// AWS, an invocation of the --lambda function), whose answer ends the attempt (declared
    /// again: replaced)
    Register(RegisterArgs),
    /// Remove an external type's declaration (its jobs not started then fail)
    Delete {
        /// The job type
        job_type: String,
        /// The declaration for every tenant, not the credential's tenant's (an operator's)
        #[arg(long)]
        all_tenants: bool,
    },
    /// Start none of the type's jobs until it is resumed (submits go on)
    Pause(PauseArgs),
    /// Start the type's jobs again
    Resume(PauseArgs),
}

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The type's name (not a shipped type's, nor starting with "conveyor.")
    pub job_type: String,
    /// Where each attempt is POSTed: the handler's http or https URL
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "lambda",
        conflicts_with = "lambda"
    )]
    pub handler: Option<String>,
    /// On the AWS backend: the Lambda function (its ARN) invoked once an attempt
    #[arg(long, value_name = "ARN")]
    pub lambda: Option<String>,
    /// Longest an attempt may take, in milliseconds (default 60000)
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Attempts before a job dies (default 3)
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Most of its jobs running at once for the tenant (default 10)
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// At most this many starts (with --rate-period-ms) …
    #[arg(long, value_name = "N", requires = "rate_period_ms")]
    pub rate: Option<u32>,
    /// … each this many milliseconds, for the tenant
    #[arg(long, value_name = "MS", requires = "rate")]
    pub rate_period_ms: Option<u64>,
    /// For every tenant, not only the credential's (an operator's)
    #[arg(long)]
    pub all_tenants: bool,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The job type
    pub job_type: String,
    /// For every tenant, not only the credential's (an operator's)
    #[arg(long)]
    pub all_tenants: bool,
}

fn paused_note(t: &serde_json::Value) -> String {
    let scopes: Vec<&str> = t["pauses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["scope"].as_str())
        .collect();
    if scopes.is_empty() {
        "running".to_string()
    } else {
        format!("paused ({})", scopes.join(", ").replace('_', " "))
    }
}

fn type_line(t: &Value) -> String {
    let mut line = format!(
        "{:<24} {:<28} concurrency {:<3} attempts {:<3} timeout {} ms",
        t["type"].as_str().unwrap_or("?"),
        paused_note(t),
        t["concurrency"],
        t["max_attempts"],
        t["timeout_ms"]
    );
    let handler = t["handler"]["url"]
        .as_str()
        .or_else(|| t["handler"]["lambda"].as_str());
    if let Some(url) = handler {
        line.push_str(&format!(
            "  external ({}): {url}",
            t["scope"].as_str().unwrap_or("tenant").replace('_', " ")
        ));
    }
    line
}

fn scope_query(all_tenants: bool) -> Vec<(&'static str, String)> {
    if all_tenants {
        vec![("all_tenants", "true".to_string())]
    } else {
        vec![]
    }
}

pub async fn run(a: TypesArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, Some(&a.scope))?;
    match a.command {
        TypesCommand::List => {
            let v = c.get("/v1/types", &[]).await?;
            c.print(&v, |v| {
                v["types"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(type_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TypesCommand::Get { job_type } => {
            let v = c.get(&format!("/v1/types/{job_type}"), &[]).await?;
            c.print(&v, type_line);
        }
        TypesCommand::Register(r) => {
            let mut body = json!({ "handler": match (r.handler, r.lambda) {
                (Some(url), _) => json!({ "url": url }),
                (None, arn) => json!({ "lambda": arn }),
            } });
            for (field, value) in [
                ("timeout_ms", r.timeout_ms.map(Value::from)),
                ("max_attempts", r.max_attempts.map(Value::from)),
                ("concurrency", r.concurrency.map(Value::from)),
            ] {
                if let Some(v) = value {
                    body[field] = v;
                }
            }
            if let (Some(per), Some(period_ms)) = (r.rate, r.rate_period_ms) {
                body["rate"] = json!({ "per": per, "period_ms": period_ms });
            }
            let path = format!("/v1/types/{}", r.job_type);
            let v = c
                .call(
                    reqwest::Method::PUT,
                    &path,
                    &scope_query(r.all_tenants),
                    Some(body),
                )
                .await?;
            c.print(&v, type_line);
        }
        TypesCommand::Delete {
            job_type,
            all_tenants,
        } => {
            let path = format!("/v1/types/{job_type}");
            let v = c
                .call(
                    reqwest::Method::DELETE,
                    &path,
                    &scope_query(all_tenants),
                    None,
                )
                .await?;
            c.print(&v, |v| {
                format!("deleted {}", v["deleted"].as_str().unwrap_or("?"))
            });
        }
        TypesCommand::Pause(p) => change(&c, "pause", p).await?,
        TypesCommand::Resume(p) => change(&c, "resume", p).await?,
    }
    Ok(0)
}

async fn change(c: &Client, action: &str, p: PauseArgs) -> anyhow::Result<()> {
    let query = scope_query(p.all_tenants);
    let path = format!("/v1/types/{}/{action}", p.job_type);
    let v = c.call(reqwest::Method::POST, &path, &query, None).await?;
    c.print(&v, |t| {
        format!("{}: {}", t["type"].as_str().unwrap_or("?"), paused_note(t))
    });
    Ok(())
}
