//! Wiring: open the backend, recover what a previous process left, serve, poll, sweep, and
//! shut down gracefully.

use crate::poller::{run_poller, stopped, PollerSettings};
use anyhow::{bail, Context};
use shared::adapters::open_embedded;
use shared::config::{Backend, Config, ConfigError};
use shared::domain::Tenant;
use shared::entrypoints::http::{router, ApiState};
use shared::entrypoints::schedule::handle_maintenance;
use shared::jobs::Registry;
use shared::maintenance::{reap_stalled_jobs, MaintenanceSettings};
use shared::ports::Ports;
use shared::service::JobService;
use shared::worker::{Worker, WorkerSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub config: Config,
    pub addr: SocketAddr,
}

impl LocalSettings {
    /// Settings from `CONVEYOR_*` and the command line; every fault is named in one error.
    pub fn from_env_and_args(args: &[String]) -> Result<Self, ConfigError> {
        let mut errors = vec![];
        let mut config = match Config::from_env() {
            Ok(c) => Some(c),
            Err(ConfigError(e)) => {
                errors.extend(e);
                None
            }
        };
        let mut addr = std::env::var("CONVEYOR_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let mut addr_source = "CONVEYOR_ADDR";
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(value) = it.next().filter(|_| flag.starts_with("--")) else {
                errors.push(format!(
                    "unknown argument {flag:?}, or a flag without its value; see --help"
                ));
                break;
            };
            match (flag.as_str(), config.as_mut()) {
                ("--addr", _) => {
                    addr = value.clone();
                    addr_source = "--addr";
                }
                ("--data-dir", Some(c)) => c.data_dir = value.into(),
                ("--backend", Some(c)) => match value.as_str() {
                    "embedded" => c.backend = Backend::Embedded,
                    "aws" => c.backend = Backend::Aws,
                    other => errors.push(format!("--backend {other:?}: expected embedded or aws")),
                },
                ("--data-dir" | "--backend", None) => {}
                (other, _) => errors.push(format!("unknown argument {other:?}; see --help")),
            }
        }
        let addr = match addr.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!(
                    "{addr_source}={addr:?} is not HOST:PORT (e.g. 127.0.0.1:3000)"
                ));
                None
            }
        };
        match (config, addr) {
            (Some(config), Some(addr)) if errors.is_empty() => Ok(Self { config, addr }),
            _ => Err(ConfigError(errors)),
        }
    }
}

/// The webhook signing secret: `CONVEYOR_WEBHOOK_SECRET`, else one generated once and kept in
/// the data directory, so signatures stay verifiable across restarts.
fn webhook_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(s) = &config.webhook_secret {
        return Ok(s.clone());
    }
    let path = config.data_dir.join("webhook-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    std::fs::create_dir_all(&config.data_dir)?;
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a webhook signing secret");
    Ok(secret)
}

/// Run until Ctrl-C or SIGTERM.
pub async fn run(settings: LocalSettings) -> anyhow::Result<()> {
    let mut config = settings.config.clone();
    if config.backend != Backend::Embedded {
        bail!("CONVEYOR_BACKEND=aws is not available in this build yet; use embedded");
    }
    config.webhook_secret = Some(webhook_secret(&config)?);
    let registry = Arc::new(Registry::builtin(
        &config.queue_prefix,
        &config.builtin_settings(),
    ));
    let backend = open_embedded(&config, &registry)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let ports = backend.ports();

    // The data directory has one owner: whatever a previous process had running is stalled.
    let recovered =
        reap_stalled_jobs(&ports, &registry, Duration::ZERO, chrono::Utc::now()).await?;
    if recovered > 0 {
        tracing::warn!(recovered, "recovered jobs a previous process left running");
    }

    let service = JobService::new(ports.clone(), registry.clone(), config.max_payload_bytes);
    let app = router(Arc::new(ApiState {
        service,
        default_tenant: Tenant::parse(config.default_tenant.clone())?,
    }));
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let local_addr = listener.local_addr()?;
    println!(
        "conveyor listening on http://{local_addr} (backend embedded, data {})",
        config.data_dir.display()
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = Worker::new(
        ports.clone(),
        registry.clone(),
        WorkerSettings::from_config(&config),
    );
    let mut pollers = vec![];
    for reg in registry.iter() {
        pollers.push(tokio::spawn(run_poller(
            ports.queue.clone(),
            worker.clone(),
            PollerSettings {
                queue: registry.queue_name(&reg.job_type),
                batch_size: reg.options.batch_size,
                concurrency: reg.options.concurrency,
                visibility: reg.options.visibility(),
                grace: settings.config.shutdown_grace,
            },
            stop_rx.clone(),
        )));
    }
    let maintenance = tokio::spawn(maintenance_loop(
        ports.clone(),
        registry.clone(),
        MaintenanceSettings {
            stall_after: config.stall_after,
            orphan_after: config.orphan_after,
        },
        config.maintenance_interval,
        stop_rx.clone(),
    ));

    let mut http_stop = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stopped(&mut http_stop).await;
    });
    let server = tokio::spawn(async move { server.await });

    shutdown_signal().await;
    tracing::info!(
        "shutting down: no new jobs are taken; in-flight jobs get {:?} to finish",
        settings.config.shutdown_grace
    );
    let _ = stop_tx.send(true);
    for p in pollers {
        let _ = p.await;
    }
    let interrupted = worker.interrupt_in_flight().await;
    if interrupted > 0 {
        tracing::warn!(interrupted, "jobs still running after the grace period went back to the queue (their attempt does not count)");
    }
    let _ = maintenance.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    backend.db.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn maintenance_loop(
    ports: Ports,
    registry: Arc<Registry>,
    settings: MaintenanceSettings,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = handle_maintenance(&ports, &registry, settings).await;
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
