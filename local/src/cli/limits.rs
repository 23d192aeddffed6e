//! `conveyor limits get|set TENANT`: a tenant's limits (an admin reads its own; an operator
//! sets any).

use super::client::{Client, Connection};
use reqwest::Method;
use serde_json::{json, Value};

/// `conveyor limits`.
#[derive(Debug, clap::Args)]
pub struct LimitsArgs {
    #[command(subcommand)]
    pub command: LimitsCommand,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
pub enum LimitsCommand {
    /// A tenant's limits: as set, as they apply, and its active jobs
    Get {
        /// The tenant
        tenant: String,
    },
    /// Change some of a tenant's limits (the others stay as they are); prints them all
    Set(SetArgs),
}

/// The limits `set` changes: each a whole number, or `default` for the deployment's.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("limits").required(true).multiple(true)))]
pub struct SetArgs {
    /// The tenant
    pub tenant: String,
    /// Unfinished jobs at once
    #[arg(long, value_name = "N|default", value_parser = parse_limit, group = "limits")]
    pub max_active: Option<Value>,
    /// Submits a second
    #[arg(long, value_name = "N|default", value_parser = parse_limit, group = "limits")]
    pub submits_per_second: Option<Value>,
    /// A payload's size in bytes
    #[arg(long, value_name = "N|default", value_parser = parse_limit, group = "limits")]
    pub max_payload_bytes: Option<Value>,
    /// Jobs running at once
    #[arg(long, value_name = "N|default", value_parser = parse_limit, group = "limits")]
    pub max_running: Option<Value>,
    /// Schedules declared
    #[arg(long, value_name = "N|default", value_parser = parse_limit, group = "limits")]
    pub max_schedules: Option<Value>,
}

/// A whole number from 1, or `default` (JSON null: the deployment's default).
fn parse_limit(raw: &str) -> Result<Value, String> {
    if raw == "default" {
        return Ok(Value::Null);
    }
    raw.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| json!(n))
        .ok_or_else(|| format!("{raw:?}: a whole number from 1, or default"))
}

const NAMES: [&str; 5] = [
    "max_active",
    "submits_per_second",
    "max_payload_bytes",
    "max_running",
    "max_schedules",
];

fn limits_lines(v: &Value) -> String {
    let shown = |n: &Value| match n {
        Value::Null => "none".to_string(),
        n => n.to_string(),
    };
    let mut lines = vec![format!(
        "tenant {}: {} active jobs",
        v["tenant"].as_str().unwrap_or("?"),
        v["active_jobs"]
    )];
    for name in NAMES {
        let set = match &v["limits"][name] {
            Value::Null => "default".to_string(),
            n => n.to_string(),
        };
        lines.push(format!(
            "  {name:<20} {set:<12} (applies: {})",
            shown(&v["effective"][name])
        ));
    }
    lines.join("\n")
}

pub async fn run(a: LimitsArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.connection, None)?;
    match a.command {
        LimitsCommand::Get { tenant } => {
            let v = c.get(&format!("/v1/tenants/{tenant}/limits"), &[]).await?;
            c.print(&v, limits_lines);
        }
        LimitsCommand::Set(s) => {
            let path = format!("/v1/tenants/{}/limits", s.tenant);
            // (a PUT replaces every limit: the ones not given are sent as they are)
            let current = c.get(&path, &[]).await?;
            let mut body = json!({});
            for name in NAMES {
                body[name] = current["limits"][name].clone();
            }
            for (name, value) in NAMES.into_iter().zip([
                s.max_active,
                s.submits_per_second,
                s.max_payload_bytes,
                s.max_running,
                s.max_schedules,
            ]) {
                if let Some(v) = value {
                    body[name] = v;
                }
            }
            let v = c.call(Method::PUT, &path, &[], Some(body)).await?;
            c.print(&v, limits_lines);
        }
    }
    Ok(0)
}
