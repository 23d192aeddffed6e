//! `scan.domain`: the shipped example of a workflow, built of durable steps and fan-out.
//!
//! A scan (`{"domain": "example.com", "paths": ["/", "/robots.txt"], "scheme": "https",
//! "port": 443}`, all but `domain` optional) runs three steps: **resolve** the domain's
//! addresses; **fetch pages**, one `http.fetch` job per path; **summarise**, a job of this type
//! that depends on those fetches (and runs whatever they ended with) and reads their results.
//! Each step is recorded when it completes, and each job it submits has an idempotency key of
//! its own, so a scan cut short (a crash, a retry) resumes after its last completed step and
//! never submits a page twice. The summary's result is `{"domain", "pages": [{"url",
//! "status", "bytes"} | {"url", "error"}], "reachable", "bytes"}`.

use super::{field, JobContext, JobHandler};
use crate::domain::SubmitRequest;
use crate::domain::{DependencyFailure, IdempotencyKey, JobError, JobId, JobType, ValidationError};
use async_trait::async_trait;
use serde_json::{json, Value};

/// The type's name.
pub const SCAN_TYPE: &str = "scan.domain";
/// Most pages one scan fetches.
const MAX_PATHS: usize = 50;
const DEFAULT_PATHS: [&str; 3] = ["/", "/robots.txt", "/sitemap.xml"];

/// Resolves its domain under the shipped types' outbound policy: addresses that may not be
/// reached are neither used nor told (a scan is no way to learn what a name resolves to inside
/// the deployment's network).
pub struct ScanDomain {
    outbound: std::sync::Arc<super::Outbound>,
}

impl ScanDomain {
    pub fn new(outbound: std::sync::Arc<super::Outbound>) -> Self {
        Self { outbound }
    }
}

/// The scan's domain, checked: a host name or an address (letters, digits, `.`, `-`).
fn domain_of(payload: &Value) -> Result<&str, ValidationError> {
    let domain = field(payload, "domain")
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::new("payload.domain", "is required (a host name)"))?;
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid {
        return Err(ValidationError::new(
            "payload.domain",
            "must be a host name (letters, digits, '.' and '-')",
        ));
    }
    Ok(domain)
}

/// The URLs a scan fetches, in order.
fn urls_of(payload: &Value) -> Result<Vec<String>, ValidationError> {
    let domain = domain_of(payload)?;
    let scheme = match field(payload, "scheme") {
        None | Some(Value::Null) => "https",
        Some(Value::String(s)) if s == "http" || s == "https" => s.as_str(),
        Some(_) => {
            return Err(ValidationError::new(
                "payload.scheme",
                "must be http or https",
            ))
        }
    };
    let port = match field(payload, "port") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| ValidationError::new("payload.port", "must be a port number"))?,
        ),
    };
    let paths: Vec<String> = match field(payload, "paths") {
        None | Some(Value::Null) => DEFAULT_PATHS.iter().map(|p| p.to_string()).collect(),
        Some(Value::Array(paths)) if (1..=MAX_PATHS).contains(&paths.len()) => paths
            .iter()
            .map(|p| {
                p.as_str()
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ValidationError::new("payload.paths", "each must start with '/'")
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ValidationError::new(
                "payload.paths",
                format!("must be a list of 1 to {MAX_PATHS} paths"),
            ))
        }
    };
    let host = match port {
        Some(port) => format!("{domain}:{port}"),
        None => domain.to_string(),
    };
    Ok(paths
        .iter()
        .map(|p| format!("{scheme}://{host}{p}"))
        .collect())
}

fn key(ctx: &JobContext, what: &str) -> Result<IdempotencyKey, JobError> {
    IdempotencyKey::parse(format!("scan:{}:{what}", ctx.job_id()))
        .map_err(|e| JobError::permanent(e.message))
}

fn job_type(name: &str) -> JobType {
    JobType::parse(name).expect("a shipped type's name")
}

#[async_trait]
impl JobHandler for ScanDomain {
    fn validate(&self, payload: &Value) -> Result<(), ValidationError> {
        match field(payload, "summarise") {
            Some(s) => domain_of(s).map(|_| ()),
            None => urls_of(payload).map(|_| ()),
        }
    }

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        if let Some(summarise) = field(&payload, "summarise") {
            return summarise_pages(&ctx, summarise).await;
        }
        let invalid = |e: ValidationError| JobError::permanent(e.to_string());
        let domain = domain_of(&payload).map_err(invalid)?.to_string();
        let urls = urls_of(&payload).map_err(invalid)?;
        ctx.plan_steps(3);
        let addresses: Vec<String> = ctx
            .step("resolve", async {
                let port = field(&payload, "port")
                    .and_then(Value::as_u64)
                    .unwrap_or(443) as u16;
                let found = self
                    .outbound
                    .policy()
                    .resolve(&domain, port)
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::PermissionDenied => JobError::permanent(e.to_string()),
                        _ => JobError::retryable(format!("resolving {domain}: {e}")),
                    })?;
                let mut addresses: Vec<String> = found.iter().map(|ip| ip.to_string()).collect();
                addresses.sort();
                addresses.dedup();
                if addresses.is_empty() {
                    return Err(JobError::permanent(format!("{domain} has no address")));
                }
                Ok(addresses)
            })
            .await?;
        let pages: Vec<JobId> = ctx
            .step("fetch pages", async {
                let mut pages = Vec::with_capacity(urls.len());
                for (i, url) in urls.iter().enumerate() {
                    let mut fetch =
                        SubmitRequest::new(job_type("http.fetch"), json!({ "url": url }));
                    fetch.idempotency_key = Some(key(&ctx, &format!("page:{i}"))?);
                    pages.push(ctx.submit(fetch).await?);
                }
                Ok(pages)
            })
            .await?;
        let summary: JobId = ctx
            .step("summarise", async {
                let mut summary = SubmitRequest::new(
                    job_type(SCAN_TYPE),
                    json!({ "summarise": { "domain": domain, "urls": urls } }),
                );
                summary.depends_on = pages.clone();
                summary.on_dependency_failure = DependencyFailure::Run;
                summary.idempotency_key = Some(key(&ctx, "summary")?);
                ctx.submit(summary).await
            })
            .await?;
        Ok(json!({
            "domain": domain,
            "addresses": addresses,
            "pages": pages,
            "summary": summary,
        }))
    }
}

/// The summary job: each page's fetch as it ended.
async fn summarise_pages(ctx: &JobContext, summarise: &Value) -> Result<Value, JobError> {
    let urls: Vec<&str> = field(summarise, "urls")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let results = ctx.dependency_results().await?;
    let mut reachable = 0;
    let mut bytes = 0;
    let pages: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, (_, result))| {
            let url = urls.get(i).copied().unwrap_or_default();
            match result {
                Some(r) => {
                    let status = r.get("status").and_then(Value::as_u64).unwrap_or(0);
                    let size = r.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                    reachable += usize::from((200..400).contains(&status));
                    bytes += size;
                    json!({ "url": url, "status": status, "bytes": size })
                }
                None => json!({ "url": url, "error": "the fetch did not succeed" }),
            }
        })
        .collect();
    Ok(json!({
        "domain": field(summarise, "domain"),
        "pages": pages,
        "reachable": reachable,
        "bytes": bytes,
    }))
}
