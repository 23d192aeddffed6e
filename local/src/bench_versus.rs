//! What the bench measures Conveyor against, in the same run: Celery + Redis on the same no-op
//! jobs (`bench/celery`), and an external type served by the Python example over HTTP. A child
//! of `bench`.

use super::*;

/// The external-handler line: `n` jobs of an external type, `py.echo`, each attempt a signed
/// call to the Python example (`examples/python-worker`) on this machine, submitted by `clients`
/// clients; jobs a second, end to end.
pub(super) async fn external_handler(
    exe: &std::path::Path,
    dir: &std::path::Path,
    http: &reqwest::Client,
    auth: &str,
    n: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let server = Server::start_with(
        exe,
        &dir.join("external"),
        &[("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1")],
    )?
    .0;
    let secrets: Value = http
        .get(format!("{}/v1/webhook-secret", server.base))
        .send()
        .await?
        .json()
        .await?;
    let secret = secrets["secrets"][0]["secret"]
        .as_str()
        .context("the tenant's signing secret")?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python-worker/worker.py");
    let mut handler = Command::new("python3")
        .arg(script)
        .env("SIGNING_SECRET", secret)
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting examples/python-worker/worker.py with python3")?;
    let mut line = String::new();
    BufReader::new(handler.stdout.take().context("its stdout")?).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from the handler: {line:?}"))?
        .to_string();
    let declared = http
        .put(format!("{}/v1/types/py.echo", server.base))
        .json(&json!({ "handler": { "url": format!("{url}/") }, "concurrency": 64 }))
        .send()
        .await?;
    if !declared.status().is_success() {
        bail!("declaring py.echo answered {}", declared.status());
    }
    let t0 = Instant::now();
    submit_many(
        auth,
        &server.base,
        n,
        clients,
        json!({"type": "py.echo", "payload": {}}),
    )
    .await?;
    wait_succeeded(http, &server.base, n as u64).await?;
    let throughput = n as f64 / t0.elapsed().as_secs_f64();
    let _ = handler.kill();
    let _ = handler.wait();
    server.stop();
    Ok(throughput)
}

pub(super) struct Baseline {
    pub(super) label: String,
    pub(super) h: Headline,
}

/// Run bench/celery (installing Redis and Celery on first use) and read its JSON line.
pub(super) fn celery_baseline(jobs: usize, clients: usize) -> anyhow::Result<Baseline> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/celery");
    let venv = std::env::var("CONVEYOR_BENCH_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/conveyor-bench/celery-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let setup = Command::new("bash").arg(root.join("setup.sh")).status()?;
    if !setup.success() {
        bail!("bench/celery/setup.sh failed");
    }
    let out = Command::new(format!("{venv}/bin/python"))
        .arg(root.join("run.py"))
        .args([
            "--jobs",
            &jobs.to_string(),
            "--clients",
            &clients.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("bench/celery/run.py failed");
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.lines().last().unwrap_or_default())
        .context("bench/celery/run.py printed no JSON line")?;
    let num = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("{k} missing from the baseline"))
    };
    Ok(Baseline {
        label: format!(
            "celery {} {} pool, redis {}",
            v["celery_version"].as_str().unwrap_or("?"),
            v["pool"].as_str().unwrap_or("?"),
            v["redis_version"].as_str().unwrap_or("?")
        ),
        h: Headline {
            submit_p50_ms: num("submit_p50_ms")?,
            submit_p99_ms: num("submit_p99_ms")?,
            throughput: num("throughput_jobs_per_s")?,
            peak_rss_mb: num("peak_rss_mb")?,
        },
    })
}
