//! `conveyor bench`: starts the runtime as a child process on a fresh data directory, drives it
//! over HTTP with concurrent clients, and prints the figures side by side with their targets:
//! submit latency, end-to-end throughput, ready-job start latency, RSS (peak, and with many
//! jobs queued) and restart-to-first-job. Figures, never asserts: this machine is noisy.

use anyhow::{bail, Context};
use clap::builder::RangedU64ValueParser;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `conveyor bench`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// No-op jobs each run submits
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub jobs: usize,
    /// Concurrent HTTP clients
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub clients: usize,
    /// Jobs left waiting for the RSS and restart figures
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub queued: usize,
    /// Single jobs timed from submit to start on an idle runtime
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub pickups: usize,
    /// Also run the Celery + Redis baseline (bench/celery) with the same jobs and clients
    #[arg(long)]
    pub celery: bool,
    /// Connected WebSocket clients to measure push latency with, each a run of its own (0: none)
    #[arg(
        long,
        value_name = "N,N",
        value_delimiter = ',',
        default_value = "100,1000"
    )]
    pub push_clients: Vec<usize>,
    /// Run the runtime under test from this binary instead of this one (to compare two builds
    /// with the same driver, alternating runs)
    #[arg(long, value_name = "PATH")]
    pub server: Option<std::path::PathBuf>,
}

/// `conveyor bench-aws`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchAwsArgs {
    /// No-op jobs to run
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub jobs: usize,
    /// Jobs a submit: 1 submits each on its own (one API request a job); more, through batch
    /// submit (one API request a batch)
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub batch: usize,
    /// Each job's payload, in bytes of JSON (the default: a job whose state item, payload
    /// included, stays within 1 KB)
    #[arg(long, value_name = "B", default_value_t = 256, value_parser = RangedU64ValueParser::<usize>::new().range(12..=380_000))]
    pub payload_bytes: usize,
    /// Jobs started apart from the rest, each beating once, for a heartbeat's write units
    #[arg(long, value_name = "H", default_value_t = 50, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub heartbeats: usize,
}

/// Jobs per request in the batch-submit run.
const BATCH: usize = 100;

/// Keep-alive clients that drive each system in the saturated side-by-side line (`--celery`).
const SATURATED_CLIENTS: usize = 32;

/// The keyed run's concurrency keys, and the running limit per key it runs under.
const KEYS: usize = 64;
const PER_KEY: u32 = 4;

/// The runtime under test, as a child process.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(exe: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<(Self, Instant)> {
        Self::start_with(exe, data_dir, &[])
    }

    /// `start`, with `env` besides.
    fn start_with(
        exe: &std::path::Path,
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Self, Instant)> {
        let started = Instant::now();
        let mut child = Command::new(exe)
            .arg("serve")
            .envs(env.iter().copied())
            .env("CONVEYOR_ADDR", "127.0.0.1:0")
            .env("CONVEYOR_DATA_DIR", data_dir)
            .env("CONVEYOR_JWT_SECRET", BENCH_SECRET)
            .env(
                "CONVEYOR_TYPE_LIMITS",
                format!("noop:max_running_per_key={PER_KEY}"),
            )
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the runtime")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .with_context(|| format!("unexpected first line from the runtime: {line:?}"))?;
        Ok((
            Self {
                child,
                base: format!("http://{addr}"),
            },
            started,
        ))
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn submit_many(
    auth: &str,
    base: &str,
    n: usize,
    clients: usize,
    body: Value,
) -> anyhow::Result<Vec<Duration>> {
    submit_keyed(auth, base, n, clients, body, 0).await
}

/// `submit_many`, the i-th job with `concurrency_key` `k<i % keys>` (none when `keys` is 0).
async fn submit_keyed(
    auth: &str,
    base: &str,
    n: usize,
    clients: usize,
    body: Value,
    keys: usize,
) -> anyhow::Result<Vec<Duration>> {
    // Every request written before the clock starts: the line measures the runtime, not the
    // client's JSON.
    let bodies = match keys {
        0 => vec![body.to_string()],
        keys => (0..keys)
            .map(|k| {
                let mut keyed = body.clone();
                keyed["concurrency_key"] = json!(format!("k{k}"));
                keyed.to_string()
            })
            .collect(),
    };
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        bodies
            .iter()
            .map(|b| client::post(base, "/v1/jobs", auth, b))
            .collect::<Result<_, _>>()?,
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..clients {
        let (mut conn, requests, next) = (
            client::Conn::open(base).await?,
            requests.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = vec![];
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                let status = conn.send(&requests[i % requests.len()]).await?;
                if status != 202 {
                    bail!("submit answered {status}");
                }
                latencies.push(t.elapsed());
            }
            Ok(latencies)
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(all)
}

/// `n` no-op jobs through `POST /v1/jobs/batch`, `per` a request, from `clients` clients.
async fn submit_batches(
    auth: &str,
    base: &str,
    n: usize,
    clients: usize,
    per: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = json!({ "jobs": vec![json!({"type": "noop"}); per] }).to_string();
    let request = Arc::new(client::post(base, "/v1/jobs/batch", auth, &body)?);
    let mut tasks = vec![];
    for _ in 0..clients {
        let (mut conn, request, next) = (
            client::Conn::open(base).await?,
            request.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(per, std::sync::atomic::Ordering::Relaxed) < n {
                let status = conn.send(&request).await?;
                if status != 200 {
                    bail!("batch submit answered {status}");
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn succeeded(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let stats: Value = http
        .get(format!("{base}/v1/stats"))
        .send()
        .await?
        .json()
        .await?;
    Ok(stats["by_status"]["succeeded"].as_u64().unwrap_or(0))
}

async fn wait_succeeded(http: &reqwest::Client, base: &str, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while succeeded(http, base).await? < n {
        if Instant::now() > deadline {
            bail!("jobs did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn at(job: &Value, field: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    job[field].as_str()?.parse().ok()
}

/// Submit one job and wait for it; the server's own clock says how long it waited to start.
async fn one_job(http: &reqwest::Client, base: &str) -> anyhow::Result<Duration> {
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"type": "noop"}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().context("job id")?.to_string();
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if job["status"] == "succeeded" {
            let (created, started) = (at(&job, "created_at"), at(&job, "started_at"));
            return Ok(match (created, started) {
                (Some(c), Some(s)) => (s - c).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The bench's runtime checks credentials as a deployment does: every request carries a JWT.
const BENCH_SECRET: &str = "bench-secret-of-at-least-thirty-two-bytes";

pub async fn run(o: BenchArgs) -> anyhow::Result<()> {
    let push_clients: Vec<usize> = o.push_clients.iter().copied().filter(|n| *n > 0).collect();
    let exe = match &o.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let dir = std::env::temp_dir().join(format!("conveyor-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let token = shared::auth::issue_token(
        BENCH_SECRET,
        &shared::domain::Tenant::parse("bench").expect("a tenant name"),
        "bench",
        // (an admin: the external-handler line declares its type)
        &[shared::domain::Role::Admin],
        Duration::from_secs(24 * 3600),
        None,
        None,
        chrono::Utc::now(),
    )
    .map_err(anyhow::Error::msg)?;
    let auth = format!("Bearer {token}");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, auth.parse()?);
    let http_for = |clients: usize| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .default_headers(headers.clone())
            .build()
    };
    let http = http_for(o.clients)?;
    let mut rows: Vec<(String, String, &str)> = vec![];

    // 1. Throughput and submit latency: N no-op jobs from C concurrent clients. Each throughput
    // line runs on a runtime of its own over a fresh data directory, so the lines compare like
    // for like (none starts on the jobs another left).
    let main_dir = dir.join("main");
    let (server, _) = Server::start(&exe, &main_dir)?;
    one_job(&http, &server.base).await?; // warm-up
    let t0 = Instant::now();
    let lat = submit_many(
        &auth,
        &server.base,
        o.jobs,
        o.clients,
        json!({"type": "noop"}),
    )
    .await?;
    let submit_done = t0.elapsed();
    wait_succeeded(&http, &server.base, o.jobs as u64 + 1).await?;
    let elapsed = t0.elapsed();
    let ours = Headline {
        submit_p50_ms: percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        submit_p99_ms: percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        throughput: o.jobs as f64 / elapsed.as_secs_f64(),
        peak_rss_mb: server.status_kib("VmHWM:") as f64 / 1024.0,
    };
    rows.push((
        "jobs submitted (no-op), concurrent clients".into(),
        format!("{} jobs, {} clients", o.jobs, o.clients),
        "",
    ));
    rows.push(("submit latency p50".into(), ms(percentile(&lat, 0.50)), ""));
    rows.push((
        "submit latency p99".into(),
        ms(percentile(&lat, 0.99)),
        "<= 5 ms",
    ));
    rows.push((
        "submit rate".into(),
        format!("{:.0} jobs/s", o.jobs as f64 / submit_done.as_secs_f64()),
        "",
    ));
    rows.push((
        "end-to-end throughput (first submit to last success)".into(),
        format!("{:.0} jobs/s", o.jobs as f64 / elapsed.as_secs_f64()),
        ">= 5000 jobs/s",
    ));
    rows.push((
        "peak RSS after the run".into(),
        format!("{:.1} MB", server.status_kib("VmHWM:") as f64 / 1024.0),
        "",
    ));

    server.stop();

    // 1b. The cost of a per-key running limit: the same jobs again, each with one of
    // `KEYS` concurrency keys, under the runtime's `noop:max_running_per_key` (every start
    // takes a running slot and every end gives it back), on a runtime like the one without.
    let server = Server::start(&exe, &dir.join("keys"))?.0;
    one_job(&http, &server.base).await?; // warm-up
    let t0 = Instant::now();
    let before = succeeded(&http, &server.base).await?;
    submit_keyed(
        &auth,
        &server.base,
        o.jobs,
        o.clients,
        json!({"type": "noop"}),
        KEYS,
    )
    .await?;
    wait_succeeded(&http, &server.base, before + o.jobs as u64).await?;
    let keyed = o.jobs as f64 / t0.elapsed().as_secs_f64();
    rows.push((
        format!("end-to-end throughput, {KEYS} keys, at most {PER_KEY} running per key"),
        format!(
            "{keyed:.0} jobs/s ({:.2}x of without)",
            keyed / ours.throughput
        ),
        "",
    ));

    server.stop();

    // 1c. Batch submit: the same number of jobs, `BATCH` a request.
    let server = Server::start(&exe, &dir.join("batch"))?.0;
    one_job(&http, &server.base).await?; // warm-up
    let t0 = Instant::now();
    let before = succeeded(&http, &server.base).await?;
    let batched = o.jobs.div_ceil(BATCH) * BATCH;
    submit_batches(&auth, &server.base, batched, o.clients, BATCH).await?;
    wait_succeeded(&http, &server.base, before + batched as u64).await?;
    let batch_throughput = batched as f64 / t0.elapsed().as_secs_f64();
    rows.push((
        format!("end-to-end throughput, batch submit ({BATCH} a request)"),
        format!("{batch_throughput:.0} jobs/s"),
        ">= 12000 jobs/s",
    ));
    server.stop();
    let (server, _) = Server::start(&exe, &main_dir)?;

    // 2. Ready-job start latency on an idle runtime.
    let mut pickups = vec![];
    for _ in 0..o.pickups {
        pickups.push(one_job(&http, &server.base).await?);
    }
    pickups.sort();
    rows.push((
        "ready job start latency p50 (idle)".into(),
        ms(percentile(&pickups, 0.5)),
        "",
    ));
    rows.push((
        "ready job start latency p99 (idle)".into(),
        ms(percentile(&pickups, 0.99)),
        "<= 10 ms",
    ));

    // 3. Push latency: N WebSocket clients subscribed to all of the tenant's jobs, a job
    // submitted every 10 ms; for each change each client receives, the time from the change
    // (its `updated_at`, set just before the write commits) to its arrival. And what an idle
    // subscribed connection costs the server in RSS.
    for &n in &push_clients {
        let p = push_latency(&server, &http, &token, n, 200).await?;
        rows.push((
            format!("push latency p50, {n} clients (change -> client)"),
            ms(p.p50),
            "",
        ));
        rows.push((
            format!("push latency p99, {n} clients (change -> client)"),
            ms(p.p99),
            if n >= 1000 { "<= 50 ms" } else { "" },
        ));
        rows.push((
            format!("RSS per idle connection ({n} connected)"),
            format!("{:.1} KiB", p.rss_per_connection_kib),
            "",
        ));
        eprintln!("push with {n} clients: {} messages received", p.received);
    }

    // 4. Memory with many jobs queued, measured at 100,000 and at `--queued`: delayed 10
    // minutes, so they stay queued with their messages waiting (not `scheduled`, which jobs
    // due past the queue's 15-minute delay limit are, with no message at all).
    let delayed = json!({"type": "noop", "delay_seconds": 600});
    let mut queued = 0;
    for (step, target) in [(100_000, "<= 200 MB"), (o.queued, "<= 150 MB")] {
        let step = step.min(o.queued);
        if step <= queued {
            continue;
        }
        let t = Instant::now();
        submit_many(
            &auth,
            &server.base,
            step - queued,
            o.clients,
            delayed.clone(),
        )
        .await?;
        queued = step;
        rows.push((
            format!("RSS with {queued} jobs queued"),
            format!("{:.1} MB", server.status_kib("VmRSS:") as f64 / 1024.0),
            target,
        ));
        eprintln!("queued {queued} jobs ({:.0} s)", t.elapsed().as_secs_f64());
    }

    // 5. SIGKILL with everything queued, restart, first job processed.
    server.kill9();
    let (server, started) = Server::start(&exe, &main_dir)?;
    let ready = started.elapsed();
    one_job(&http, &server.base).await?;
    rows.push((
        format!("restart after SIGKILL ({queued} queued) to listening"),
        ms(ready),
        "",
    ));
    rows.push((
        format!("restart after SIGKILL ({queued} queued) to first job processed"),
        ms(started.elapsed()),
        "<= 1 s",
    ));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);

    // (The runtime under test reads the same variable.)
    let durability = std::env::var("CONVEYOR_DURABILITY").unwrap_or_else(|_| "process".into());
    let survives = match durability.as_str() {
        "power" => "a power cut",
        _ => "a crash or SIGKILL of the process",
    };
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let v = rows.iter().map(|r| r.1.len()).max().unwrap_or(10);
    println!(
        "\nconveyor bench — embedded backend, durable (WAL, CONVEYOR_DURABILITY={durability}: a 202 survives {survives}), {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| {:w$} | {:v$} | target |", "metric", "value");
    println!("|{}|{}|--------|", "-".repeat(w + 2), "-".repeat(v + 2));
    for (name, value, target) in rows {
        println!("| {name:w$} | {value:v$} | {target} |");
    }
    if o.celery {
        // Saturated: each system driven by as many keep-alive clients as it can take, each on
        // a fresh start, one after the other in this run.
        let saturated = {
            let http = http_for(SATURATED_CLIENTS)?;
            let server = Server::start(&exe, &dir.join("saturated"))?.0;
            one_job(&http, &server.base).await?; // warm-up
            let t0 = Instant::now();
            submit_many(
                &auth,
                &server.base,
                o.jobs,
                SATURATED_CLIENTS,
                json!({"type": "noop"}),
            )
            .await?;
            wait_succeeded(&http, &server.base, o.jobs as u64 + 1).await?;
            let throughput = o.jobs as f64 / t0.elapsed().as_secs_f64();
            server.stop();
            let _ = std::fs::remove_dir_all(&dir);
            throughput
        };
        let external = external_handler(&exe, &dir, &http, &auth, o.jobs, o.clients).await?;
        let theirs_saturated = celery_baseline(o.jobs, SATURATED_CLIENTS)?;
        let theirs = celery_baseline(o.jobs, o.clients)?;
        println!(
            "\nsame {} no-op jobs, {} clients, side by side ({}):\n",
            o.jobs, o.clients, theirs.label
        );
        println!("| metric | conveyor | celery + redis | conveyor / celery |");
        println!("|---|---|---|---|");
        let row = |name: &str, a: f64, b: f64, unit: &str| {
            println!("| {name} | {a:.2} {unit} | {b:.2} {unit} | {:.2}x |", a / b);
        };
        row(
            "submit latency p50",
            ours.submit_p50_ms,
            theirs.h.submit_p50_ms,
            "ms",
        );
        row(
            "submit latency p99",
            ours.submit_p99_ms,
            theirs.h.submit_p99_ms,
            "ms",
        );
        row(
            "end-to-end throughput",
            ours.throughput,
            theirs.h.throughput,
            "jobs/s",
        );
        row(
            &format!("end-to-end throughput, saturated ({SATURATED_CLIENTS} clients each)"),
            saturated,
            theirs_saturated.h.throughput,
            "jobs/s",
        );
        row(
            "end-to-end throughput, external handler (py.echo in examples/python-worker, over HTTP; celery: its no-op task)",
            external,
            theirs.h.throughput,
            "jobs/s",
        );
        row(
            "peak RSS (all processes)",
            ours.peak_rss_mb,
            theirs.h.peak_rss_mb,
            "MB",
        );
    }
    Ok(())
}

struct PushFigures {
    p50: Duration,
    p99: Duration,
    rss_per_connection_kib: f64,
    received: usize,
}

/// `clients` WebSocket clients subscribed to all jobs, `jobs` no-op jobs submitted 10 ms apart;
/// per message received, now minus the job's `updated_at`.
async fn push_latency(
    server: &Server,
    http: &reqwest::Client,
    token: &str,
    clients: usize,
    jobs: usize,
) -> anyhow::Result<PushFigures> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let before = server.status_kib("VmRSS:");
    let url = format!("{}/ws?token={token}", server.base.replacen("http", "ws", 1));
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .context("connecting a WebSocket client")?;
        socket
            .send(Message::Text(r#"{"action":"subscribe","all":true}"#.into()))
            .await?;
        let reply = socket.next().await.context("no reply to subscribe")??;
        if !reply.to_text().unwrap_or("").contains("subscribed") {
            bail!("subscribe was answered {reply:?}");
        }
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.status_kib("VmRSS:");
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut seen = vec![];
                while let Ok(Some(Ok(frame))) =
                    tokio::time::timeout(Duration::from_secs(2), socket.next()).await
                {
                    let now = chrono::Utc::now();
                    let text = frame.to_text().unwrap_or("");
                    for part in text.split("\"updated_at\":\"").skip(1) {
                        let Some(end) = part.find('"') else { continue };
                        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&part[..end]) {
                            seen.push(
                                (now - t.with_timezone(&chrono::Utc))
                                    .to_std()
                                    .unwrap_or_default(),
                            );
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let start = succeeded(http, &server.base).await?;
    for _ in 0..jobs {
        let r = http
            .post(format!("{}/v1/jobs", server.base))
            .json(&json!({"type": "noop"}))
            .send()
            .await?;
        if r.status() != 202 {
            bail!("submit answered {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_succeeded(http, &server.base, start + jobs as u64).await?;
    let mut all = vec![];
    for r in readers {
        all.extend(r.await?);
    }
    all.sort();
    if all.is_empty() {
        bail!("no pushes arrived");
    }
    Ok(PushFigures {
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        rss_per_connection_kib: after.saturating_sub(before) as f64 / clients as f64,
        received: all.len(),
    })
}

struct Headline {
    submit_p50_ms: f64,
    submit_p99_ms: f64,
    throughput: f64,
    peak_rss_mb: f64,
}

// The systems it is measured against, and the external-handler line.
#[path = "bench_versus.rs"]
mod versus;
// The submit lines' HTTP client.
#[path = "bench_client.rs"]
mod client;
use versus::{celery_baseline, external_handler};
