//! What every client command shares: the connection flags (`--url`, `--token`, `--json`, each
//! mirroring its variable), the HTTP client that carries them, and how jobs are printed.

use anyhow::{bail, Context};
use serde_json::Value;
use std::time::Duration;

/// Where the API is and who calls it; how to print its answers.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// Print the API's JSON as it is, one value a line, for scripts
    #[arg(long, global = true)]
    pub json: bool,
    /// The deployment's API [default: http://127.0.0.1:3000]
    #[arg(long, global = true, env = "CONVEYOR_URL", value_name = "URL")]
    pub url: Option<String>,
    /// An API key or JWT (none in dev mode); the variable keeps it out of the process list
    #[arg(
        long,
        global = true,
        env = "CONVEYOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// The tenant a command acts on, where it is not the credential's own.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct Scope {
    /// Act on this tenant (an operator's credential acts on any)
    #[arg(long, global = true, value_name = "TENANT")]
    pub tenant: Option<String>,
}

/// A command line that is wrong in a way its parser cannot tell (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `--payload` and the like: a JSON value.
pub fn parse_json(raw: &str) -> Result<Value, String> {
    serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))
}

/// A client of the API: each request with the credential, `?tenant=` where one is given, and
/// an error that says what the API said.
pub struct Client {
    http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub json: bool,
    tenant: Option<String>,
    /// How long one request may take (30 s; longer for the transfer commands' pages).
    pub request_timeout: Duration,
}

impl Client {
    pub fn new(connection: &Connection, scope: Option<&Scope>) -> anyhow::Result<Self> {
        let url = connection
            .url
            .as_deref()
            .filter(|u| !u.is_empty())
            .unwrap_or("http://127.0.0.1:3000")
            .trim_end_matches('/')
            .to_string();
        let token = connection.token.clone().filter(|t| !t.is_empty());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}")
                    .parse()
                    .context("the token (CONVEYOR_TOKEN) is not a header value")?,
            );
        }
        Ok(Self {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
            url,
            token,
            json: connection.json,
            tenant: scope.and_then(|s| s.tenant.clone()),
            request_timeout: Duration::from_secs(30),
        })
    }

    /// One request; the answer's JSON, or an error with the API's message (and, for a batch
    /// refused item by item, each item's).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let writes = method != reqwest::Method::GET;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .timeout(self.request_timeout)
            .query(query);
        if let Some(tenant) = &self.tenant {
            request = request.query(&[("tenant", tenant)]);
        }
        if let Some(body) = body {
            request = request.json(&body);
        } else if writes {
            // (every write says it is JSON, even without a body: dev mode takes no other,
            // since a web page may send any other to this machine without asking first)
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("reaching {} (CONVEYOR_URL)", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let e = &body["error"];
            let mut message = format!(
                "{status}: {}{}",
                e["message"].as_str().unwrap_or("no error message"),
                field_note(e)
            );
            for item in body["results"].as_array().into_iter().flatten() {
                message.push_str(&format!("\n  {}", item_error(item)));
            }
            bail!("{message}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, &[], body).await
    }

    /// Print `v` as JSON (`--json`), or as `human` reads it.
    pub fn print(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", human(v));
        }
    }
}

/// ` (field F)` when an error names its field.
pub fn field_note(error: &Value) -> String {
    error["field"]
        .as_str()
        .map(|f| format!(" (field {f})"))
        .unwrap_or_default()
}

/// An item's error in a batch's or a redrive's answer, in one line.
pub fn item_error(item: &Value) -> String {
    let e = &item["error"];
    let at = match (&item["index"], item["id"].as_str()) {
        (Value::Number(i), _) => format!("#{i}"),
        (_, Some(id)) => id.to_string(),
        _ => "?".into(),
    };
    format!(
        "{at}  {}: {}{}",
        e["code"].as_str().unwrap_or("error"),
        e["message"].as_str().unwrap_or("no error message"),
        field_note(e)
    )
}

/// A job in one line: id, type, status, progress, attempts and error.
pub fn summary_line(j: &Value) -> String {
    let progress = j["progress"]["percent"]
        .as_u64()
        .map(|p| format!(" {p}%"))
        .unwrap_or_default();
    let error = j["error"]["message"]
        .as_str()
        .map(|m| format!(" — {m}"))
        .unwrap_or_default();
    format!(
        "{}  {:<14} {:<10}{progress} attempt {}/{}{error}",
        j["id"].as_str().unwrap_or("?"),
        j["type"].as_str().unwrap_or("?"),
        j["status"].as_str().unwrap_or("?"),
        j["attempt"],
        j["max_attempts"],
    )
}

/// A page of jobs: a line each, and where the next page starts.
pub fn page_lines(page: &Value) -> String {
    let mut lines: Vec<String> = page["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(summary_line)
        .collect();
    if let Some(next) = page["next_cursor"].as_str() {
        lines.push(format!("(more: --cursor {next})"));
    }
    lines.join("\n")
}

/// The job has ended.
pub fn is_finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "dead" | "cancelled")
    )
}
