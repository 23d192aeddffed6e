//! The client commands: `conveyor submit|get|list|cancel|retry|logs|stats|watch|schedules`,
//! talking HTTP
//! (and, for `watch`, the WebSocket) to any deployment: `CONVEYOR_URL` (default
//! `http://127.0.0.1:3000`), `CONVEYOR_TOKEN` (an API key or a JWT; none in dev mode), and
//! `CONVEYOR_WS_URL` where live updates are not at the API's own `/ws` (AWS: the stack's
//! `WebSocketUrl`). `--json` prints the API's JSON as it is, for scripts.
//!
//! Exit codes: 0 done (for `watch`: every job succeeded), 1 the request failed, 2 the command
//! line is wrong; `watch` also 3 when a job failed, 4 dead, 5 cancelled (the worst one).

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

pub const COMMANDS: [&str; 9] = [
    "submit",
    "get",
    "list",
    "cancel",
    "retry",
    "logs",
    "stats",
    "watch",
    "schedules",
];

const SCHEDULES_USAGE: &str = "usage: conveyor schedules list | get NAME | runs NAME | pause NAME | resume NAME | delete NAME | create NAME TYPE (--cron EXPR | --rate EXPR | --at TIME) [--timezone TZ] [--payload JSON] [--overlap skip|allow|queue_one] [--catch-up latest|none] [--start-at TIME] [--end-at TIME] [--paused] (update: the same as create, replacing the definition) [--json]";

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

async fn schedules(args: &[String]) -> anyhow::Result<u8> {
    use reqwest::Method;
    let a = parse(
        args,
        &["json", "paused"],
        &[
            "cron",
            "rate",
            "at",
            "timezone",
            "payload",
            "overlap",
            "catch-up",
            "start-at",
            "end-at",
            "priority",
            "max-attempts",
            "tenant",
        ],
    )?;
    let c = Client::from_env(a.switches.iter().any(|s| s == "json"))?;
    let query = a
        .flags
        .get("tenant")
        .map(|t| format!("?tenant={t}"))
        .unwrap_or_default();
    let positional: Vec<&str> = a.positional.iter().map(String::as_str).collect();
    match positional.as_slice() {
        ["list"] => {
            let all = c.get(&format!("/v1/schedules{query}")).await?;
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
        ["get", name] => {
            let s = c.get(&format!("/v1/schedules/{name}{query}")).await?;
            c.print(&s, schedule_line);
        }
        ["runs", name] => {
            let runs = c.get(&format!("/v1/schedules/{name}/runs{query}")).await?;
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
        [action @ ("pause" | "resume"), name] => {
            let s = c
                .call(
                    Method::POST,
                    &format!("/v1/schedules/{name}/{action}{query}"),
                    None,
                )
                .await?;
            c.print(&s, schedule_line);
        }
        ["delete", name] => {
            let v = c
                .call(
                    Method::DELETE,
                    &format!("/v1/schedules/{name}{query}"),
                    None,
                )
                .await?;
            c.print(&v, |v| {
                format!("deleted {}", v["deleted"].as_str().unwrap_or("?"))
            });
        }
        [action @ ("create" | "update"), name, job_type] => {
            let mut body = json!({ "name": name, "type": job_type });
            for (flag, field) in [
                ("cron", "cron"),
                ("rate", "rate"),
                ("at", "at"),
                ("timezone", "timezone"),
                ("overlap", "overlap"),
                ("catch-up", "catch_up"),
                ("start-at", "start_at"),
                ("end-at", "end_at"),
            ] {
                if let Some(v) = a.flags.get(flag) {
                    body[field] = json!(v);
                }
            }
            for (flag, field) in [("priority", "priority"), ("max-attempts", "max_attempts")] {
                if let Some(v) = a.flags.get(flag) {
                    body[field] = json!(v
                        .parse::<i64>()
                        .map_err(|_| Usage(format!("--{flag} needs a whole number")))?);
                }
            }
            if let Some(p) = a.flags.get("payload") {
                body["payload"] = serde_json::from_str(p)
                    .map_err(|e| Usage(format!("--payload is not JSON: {e}")))?;
            }
            if a.switches.iter().any(|s| s == "paused") {
                body["paused"] = json!(true);
            }
            let (method, path) = if *action == "create" {
                (Method::POST, format!("/v1/schedules{query}"))
            } else {
                (Method::PUT, format!("/v1/schedules/{name}{query}"))
            };
            let s = c.call(method, &path, Some(body)).await?;
            c.print(&s, schedule_line);
        }
        _ => return Err(Usage(SCHEDULES_USAGE.into()).into()),
    }
    Ok(0)
}

/// A command line that is wrong (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

struct Client {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    json: bool,
}

impl Client {
    fn from_env(json: bool) -> anyhow::Result<Self> {
        let url = std::env::var("CONVEYOR_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:3000".into())
            .trim_end_matches('/')
            .to_string();
        let token = std::env::var("CONVEYOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}")
                    .parse()
                    .context("CONVEYOR_TOKEN is not a header value")?,
            );
        }
        Ok(Self {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(30))
                .build()?,
            url,
            token,
            json,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let writes = method != reqwest::Method::GET;
        let mut request = self.http.request(method, format!("{}{path}", self.url));
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
            let field = e["field"]
                .as_str()
                .map(|f| format!(" (field {f})"))
                .unwrap_or_default();
            bail!(
                "{status}: {}{field}",
                e["message"].as_str().unwrap_or("no error message")
            );
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    fn print(&self, v: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{}", human(v));
        }
    }
}

/// Flags after the command: `--name value` pairs, bare `--json`/`--follow`, and positionals.
struct Args {
    flags: BTreeMap<String, String>,
    switches: Vec<String>,
    positional: Vec<String>,
}

fn parse(args: &[String], switches: &[&str], flags: &[&str]) -> Result<Args, Usage> {
    let mut out = Args {
        flags: BTreeMap::new(),
        switches: vec![],
        positional: vec![],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            if switches.contains(&name) {
                out.switches.push(name.to_string());
            } else if flags.contains(&name) {
                let v = it
                    .next()
                    .ok_or_else(|| Usage(format!("--{name} needs a value")))?;
                out.flags.insert(name.to_string(), v.clone());
            } else {
                return Err(Usage(format!("unknown flag --{name}")));
            }
        } else {
            out.positional.push(a.clone());
        }
    }
    Ok(out)
}

fn summary_line(j: &Value) -> String {
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

fn one_id(a: &Args, command: &str) -> Result<String, Usage> {
    match a.positional.as_slice() {
        [id] => Ok(id.clone()),
        _ => Err(Usage(format!("usage: conveyor {command} JOB_ID [--json]"))),
    }
}

/// Run a client command; the process's exit code.
pub fn run(command: &str, args: &[String]) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(dispatch(command, args)));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("conveyor {command}: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("conveyor {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: &str, args: &[String]) -> anyhow::Result<u8> {
    use reqwest::Method;
    let json_only = ["json"];
    match command {
        "submit" => {
            let a = parse(
                args,
                &json_only,
                &[
                    "payload",
                    "delay",
                    "run-at",
                    "priority",
                    "max-attempts",
                    "idempotency-key",
                ],
            )?;
            let [job_type] = a.positional.as_slice() else {
                return Err(Usage("usage: conveyor submit TYPE [--payload JSON] [--delay SECONDS] [--run-at TIME] [--priority N] [--max-attempts N] [--idempotency-key K] [--json]".into()).into());
            };
            let c = Client::from_env(!a.switches.is_empty())?;
            let mut body = json!({ "type": job_type });
            if let Some(p) = a.flags.get("payload") {
                body["payload"] = serde_json::from_str(p)
                    .map_err(|e| Usage(format!("--payload is not JSON: {e}")))?;
            }
            for (flag, field) in [
                ("delay", "delay_seconds"),
                ("priority", "priority"),
                ("max-attempts", "max_attempts"),
            ] {
                if let Some(v) = a.flags.get(flag) {
                    body[field] = json!(v
                        .parse::<i64>()
                        .map_err(|_| Usage(format!("--{flag} needs a whole number")))?);
                }
            }
            if let Some(t) = a.flags.get("run-at") {
                body["run_at"] = json!(t);
            }
            if let Some(k) = a.flags.get("idempotency-key") {
                body["idempotency_key"] = json!(k);
            }
            let job = c.call(Method::POST, "/v1/jobs", Some(body)).await?;
            c.print(&job, summary_line);
            Ok(0)
        }
        "get" | "cancel" | "retry" => {
            let a = parse(args, &json_only, &[])?;
            let id = one_id(&a, command)?;
            let c = Client::from_env(!a.switches.is_empty())?;
            let job = match command {
                "get" => c.get(&format!("/v1/jobs/{id}")).await?,
                action => {
                    c.call(Method::POST, &format!("/v1/jobs/{id}/{action}"), None)
                        .await?
                }
            };
            c.print(&job, |j| {
                let mut out = summary_line(j);
                if command == "get" && !j["result"].is_null() {
                    out.push_str(&format!("\nresult: {}", j["result"]));
                }
                out
            });
            Ok(0)
        }
        "list" => {
            let a = parse(
                args,
                &json_only,
                &["status", "type", "limit", "cursor", "tenant"],
            )?;
            let c = Client::from_env(!a.switches.is_empty())?;
            let query: Vec<String> = a.flags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let page = c.get(&format!("/v1/jobs?{}", query.join("&"))).await?;
            c.print(&page, |p| {
                let mut lines: Vec<String> = p["jobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(summary_line)
                    .collect();
                if let Some(next) = p["next_cursor"].as_str() {
                    lines.push(format!("(more: --cursor {next})"));
                }
                lines.join("\n")
            });
            Ok(0)
        }
        "stats" => {
            let a = parse(args, &json_only, &["tenant"])?;
            let c = Client::from_env(!a.switches.is_empty())?;
            let stats = c.get("/v1/stats").await?;
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
        "logs" => {
            let a = parse(args, &["json", "follow"], &[])?;
            let id = one_id(&a, "logs")?;
            let json = a.switches.iter().any(|s| s == "json");
            let follow = a.switches.iter().any(|s| s == "follow");
            let c = Client::from_env(json)?;
            let mut after = 0u64;
            loop {
                let page = c.get(&format!("/v1/jobs/{id}/logs?after={after}")).await?;
                for line in page["logs"].as_array().into_iter().flatten() {
                    after = after.max(line["seq"].as_u64().unwrap_or(after));
                    c.print(line, |l| {
                        format!(
                            "[attempt {}] {}",
                            l["attempt"],
                            l["line"].as_str().unwrap_or("")
                        )
                    });
                }
                if !follow {
                    return Ok(0);
                }
                let job = c.get(&format!("/v1/jobs/{id}")).await?;
                if is_finished(&job) {
                    // (one more read for lines written just before the end)
                    let page = c.get(&format!("/v1/jobs/{id}/logs?after={after}")).await?;
                    for line in page["logs"].as_array().into_iter().flatten() {
                        c.print(line, |l| {
                            format!(
                                "[attempt {}] {}",
                                l["attempt"],
                                l["line"].as_str().unwrap_or("")
                            )
                        });
                    }
                    return Ok(0);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        "watch" => {
            let a = parse(args, &json_only, &[])?;
            if a.positional.is_empty() {
                return Err(
                    Usage("usage: conveyor watch JOB_ID [JOB_ID …] [--json]".into()).into(),
                );
            }
            let c = Client::from_env(!a.switches.is_empty())?;
            watch(&c, &a.positional).await
        }
        "schedules" => schedules(args).await,
        other => Err(Usage(format!("unknown command {other}")).into()),
    }
}

fn is_finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "dead" | "cancelled")
    )
}

/// The exit code a finished job stands for.
fn outcome_code(job: &Value) -> u8 {
    match job["status"].as_str() {
        Some("succeeded") => 0,
        Some("failed") => 3,
        Some("dead") => 4,
        _ => 5,
    }
}

/// Follow `ids` to their ends: a progress bar each, fed by the WebSocket (or, when it cannot be
/// reached, by reading the jobs every half second).
async fn watch(c: &Client, ids: &[String]) -> anyhow::Result<u8> {
    use futures::{SinkExt, StreamExt};
    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
    use tokio_tungstenite::tungstenite::Message;
    let bars = MultiProgress::with_draw_target(if c.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}% {msg}")
        .expect("a template")
        .progress_chars("=> ");
    let mut jobs: BTreeMap<String, (ProgressBar, Value)> = BTreeMap::new();
    for id in ids {
        let job = c.get(&format!("/v1/jobs/{id}")).await?;
        let bar = bars.add(ProgressBar::new(100).with_style(style.clone()));
        bar.set_prefix(id.clone());
        jobs.insert(id.clone(), (bar, Value::Null));
        show(c, &mut jobs, &job);
    }
    let ws_url = std::env::var("CONVEYOR_WS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("{}/ws", c.url.replacen("http", "ws", 1)));
    let ws_url = match &c.token {
        Some(t) => format!("{ws_url}?token={t}"),
        None => ws_url,
    };
    let socket = match tokio_tungstenite::connect_async(&ws_url).await {
        Ok((socket, _)) => Some(socket),
        Err(e) => {
            tracing::debug!(error = %e, "no WebSocket; reading the jobs instead");
            None
        }
    };
    if let Some(mut socket) = socket {
        for id in ids {
            socket
                .send(Message::Text(
                    json!({ "action": "subscribe", "job_id": id })
                        .to_string()
                        .into(),
                ))
                .await?;
        }
        // (Subscribing answers with each job as it is: nothing between the read and the
        // subscription is missed.)
        while !jobs.values().all(|(_, j)| is_finished(j)) {
            let Some(frame) = socket.next().await else {
                break;
            };
            let Ok(Message::Text(text)) = frame else {
                continue;
            };
            let m: Value = serde_json::from_str(&text).unwrap_or_default();
            let messages = match m["type"].as_str() {
                Some("batch") => m["messages"].as_array().cloned().unwrap_or_default(),
                _ => vec![m],
            };
            for m in messages {
                match m["type"].as_str() {
                    Some("job") => show(c, &mut jobs, &m["job"]),
                    Some("subscribed") if m["job"].is_object() => show(c, &mut jobs, &m["job"]),
                    Some("error") => bail!("{}: {}", m["code"], m["message"]),
                    _ => {}
                }
            }
        }
    }
    while !jobs.values().all(|(_, j)| is_finished(j)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for id in ids {
            let job = c.get(&format!("/v1/jobs/{id}")).await?;
            show(c, &mut jobs, &job);
        }
    }
    Ok(jobs
        .values()
        .map(|(_, j)| outcome_code(j))
        .max()
        .unwrap_or(0))
}

/// Show a job's new state (an older one, by version, is ignored).
fn show(c: &Client, jobs: &mut BTreeMap<String, (ProgressBarRef, Value)>, job: &Value) {
    let Some(id) = job["id"].as_str() else { return };
    let Some((bar, seen)) = jobs.get_mut(id) else {
        return;
    };
    if seen["version"].as_u64() > job["version"].as_u64() {
        return;
    }
    if c.json {
        println!("{job}");
    }
    *seen = job.clone();
    let status = job["status"].as_str().unwrap_or("?");
    let percent = if status == "succeeded" {
        100
    } else {
        job["progress"]["percent"].as_u64().unwrap_or(0)
    };
    bar.set_position(percent);
    let note = job["progress"]["message"]
        .as_str()
        .or(job["error"]["message"].as_str())
        .unwrap_or("");
    bar.set_message(format!("{status} {note}"));
    if is_finished(job) {
        bar.finish();
    }
}

type ProgressBarRef = indicatif::ProgressBar;
