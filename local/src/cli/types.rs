//! `conveyor types list|pause|resume`: the deployment's job types, and pausing one (its jobs
//! wait, submits go on) for the tenant, or with `--all-tenants` for every tenant (an operator).

use super::client::{Client, Connection, Scope};

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
    /// Every job type, its options, and whether it is paused
    List,
    /// Start none of the type's jobs until it is resumed (submits go on)
    Pause(PauseArgs),
    /// Start the type's jobs again
    Resume(PauseArgs),
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

fn type_line(t: &serde_json::Value) -> String {
    format!(
        "{:<24} {:<28} concurrency {:<3} attempts {:<3} timeout {} ms",
        t["type"].as_str().unwrap_or("?"),
        paused_note(t),
        t["concurrency"],
        t["max_attempts"],
        t["timeout_ms"]
    )
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
        TypesCommand::Pause(p) => change(&c, "pause", p).await?,
        TypesCommand::Resume(p) => change(&c, "resume", p).await?,
    }
    Ok(0)
}

async fn change(c: &Client, action: &str, p: PauseArgs) -> anyhow::Result<()> {
    let query = if p.all_tenants {
        vec![("all_tenants", "true".to_string())]
    } else {
        vec![]
    };
    let path = format!("/v1/types/{}/{action}", p.job_type);
    let v = c.call(reqwest::Method::POST, &path, &query, None).await?;
    c.print(&v, |t| {
        format!("{}: {}", t["type"].as_str().unwrap_or("?"), paused_note(t))
    });
    Ok(())
}
