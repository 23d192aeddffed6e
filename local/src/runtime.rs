//! Wiring: open the backend, recover what a previous process left, serve, poll, sweep, and
//! shut down gracefully.

use crate::poller::{health_name, run_poller, stopped, PausedLook, PollerSettings};
use crate::supervise::supervise;
use anyhow::{bail, Context};
use shared::adapters::embedded::EmbeddedQueue;
use shared::adapters::hub::Hub;
use shared::adapters::open_embedded;
use shared::config::{Backend, Config, ConfigError};
use shared::domain::Tenant;
use shared::entrypoints::http::{router, ApiState};
use shared::entrypoints::schedule::handle_maintenance;
use shared::entrypoints::ws::WsRoutes;
use shared::health::Health;
use shared::jobs::Registry;
use shared::live::ChangeFeed;
use shared::maintenance::{reap_stalled_jobs, MaintenanceSettings};
use shared::ports::LivePorts;
use shared::ports::{Ports, QueueConsumer};
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

/// `serve`'s and `bootstrap`'s flags; each, when given, wins over the variable it mirrors.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: CONVEYOR_ADDR, else 127.0.0.1:3000]
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Where the embedded backend keeps its data [default: CONVEYOR_DATA_DIR, else ./.conveyor]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// The backend to run on [default: CONVEYOR_BACKEND, else embedded]
    #[arg(long, value_parser = ["embedded", "aws"])]
    pub backend: Option<String>,
}

impl LocalSettings {
    /// Settings from `CONVEYOR_*` and the command line's flags; every fault is named in one
    /// error.
    pub fn from_env_and_flags(flags: &ServeArgs) -> Result<Self, ConfigError> {
        let mut errors = vec![];
        let mut config = match Config::from_env() {
            Ok(c) => Some(c),
            Err(ConfigError(e)) => {
                errors.extend(e);
                None
            }
        };
        if let Some(c) = config.as_mut() {
            if let Some(dir) = &flags.data_dir {
                c.data_dir = dir.clone();
            }
            match flags.backend.as_deref() {
                Some("embedded") => c.backend = Backend::Embedded,
                Some("aws") => c.backend = Backend::Aws,
                Some(other) => {
                    errors.push(format!("--backend {other:?}: expected embedded or aws"))
                }
                None => {}
            }
        }
        let addr = match flags.addr {
            Some(addr) => Some(addr),
            None => {
                let addr =
                    std::env::var("CONVEYOR_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
                match addr.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        errors.push(format!(
                            "CONVEYOR_ADDR={addr:?} is not HOST:PORT (e.g. 127.0.0.1:3000)"
                        ));
                        None
                    }
                }
            }
        };
        match (config, addr) {
            (Some(config), Some(addr)) if errors.is_empty() => Ok(Self { config, addr }),
            _ => Err(ConfigError(errors)),
        }
    }
}

/// The webhook master key (each tenant's signing keys derive from it):
/// `CONVEYOR_WEBHOOK_SECRET`, else one generated once and kept in the data directory (written
/// atomically, readable by this user only), so signatures stay verifiable across restarts. A
/// kept key that is empty or short is refused, never used.
fn webhook_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(s) = &config.webhook_secret {
        return Ok(s.clone());
    }
    let path = config.data_dir.join("webhook-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if s.len() < shared::auth::MIN_SECRET_BYTES {
            bail!(
                "the webhook key in {} is {} bytes, fewer than {}: refusing it (remove the file to have a new one made, or set CONVEYOR_WEBHOOK_SECRET)",
                path.display(),
                s.len(),
                shared::auth::MIN_SECRET_BYTES
            );
        }
        return Ok(s.to_string());
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    std::fs::create_dir_all(&config.data_dir)?;
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a webhook signing key");
    Ok(secret)
}

/// Write `text` to `path` atomically (a temporary file beside it, synced, then renamed), with
/// mode 0600 from the start.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Who may call the API. With no JWT secret, no JWKS and no live API key, the runtime runs in
/// dev mode (every caller an admin of the default tenant), and then only on a loopback address.
async fn authenticator(
    config: &Config,
    ports: &Ports,
    addr: SocketAddr,
) -> anyhow::Result<shared::auth::Authenticator> {
    let auth = shared::adapters::authenticator(config, ports).await;
    if auth.jwt_settings().configured()
        || ports
            .keys
            .any_live_key()
            .await
            .context("looking for API keys")?
    {
        return Ok(auth);
    }
    if !addr.ip().is_loopback() {
        bail!(
            "no credentials are configured (CONVEYOR_JWT_SECRET, CONVEYOR_JWT_SECRET_ID, CONVEYOR_JWKS or an API key from `conveyor keys create`): \
             the API would be open to anyone, so it serves only a loopback address (127.0.0.1 or ::1) this way, not {addr}"
        );
    }
    eprintln!(
        "WARNING: DEV MODE: no credentials are configured, so the API asks for none: every caller \
         is an admin of tenant {:?}. Fine on this machine's loopback address ({addr}); set \
         CONVEYOR_JWT_SECRET or create an API key (`conveyor keys create`) before serving anyone else.",
        config.default_tenant
    );
    tracing::warn!(%addr, "dev mode: the API asks for no credentials (loopback only)");
    Ok(auth.open(Tenant::parse(config.default_tenant.clone())?))
}

/// `conveyor bootstrap`: create the AWS backend's resources, then exit.
pub async fn bootstrap(settings: LocalSettings, extend: fn(&mut Registry)) -> anyhow::Result<()> {
    let config = settings.config;
    if config.backend != Backend::Aws {
        bail!("bootstrap is for the aws backend (CONVEYOR_BACKEND=aws or --backend aws); the embedded one needs none");
    }
    let mut registry = Registry::builtin(
        &config.queue_prefix,
        &shared::jobs::BuiltinSettings::from_config(&config),
    );
    extend(&mut registry);
    #[cfg(feature = "aws")]
    {
        crate::aws::bootstrap(&config, &registry).await?;
        println!(
            "created (where missing): table {}, bus {}, {} queues with dead-letter queues",
            config.table,
            config.event_bus,
            registry.iter().count()
        );
        Ok(())
    }
    #[cfg(not(feature = "aws"))]
    bail!("this build has no AWS backend (build with `--features aws`)")
}

/// Run until Ctrl-C or SIGTERM.
pub async fn run(settings: LocalSettings, extend: fn(&mut Registry)) -> anyhow::Result<()> {
    let mut config = settings.config.clone();
    // On the AWS backend a key kept in Secrets Manager is used where no value is given.
    let in_secrets_manager = config.backend == Backend::Aws && config.webhook_secret_id.is_some();
    if !in_secrets_manager {
        config.webhook_secret = Some(webhook_secret(&config)?);
    }
    let builtin = shared::adapters::builtin_settings(&config).await;
    let mut registry = Registry::builtin(&config.queue_prefix, &builtin);
    extend(&mut registry);
    registry
        .limit(&config.type_limits)
        .map_err(anyhow::Error::msg)?;
    let registry = Arc::new(registry);
    let health = Arc::new(Health::new());
    let opened = open(&config, &registry, &health).await?;
    opened.feed.set_limits(shared::live::LiveLimits::new(
        config.live_max_connections,
        config.live_max_per_tenant,
    ));
    let ports = opened.ports.clone();
    // The external types, declared in the store just opened.
    let external = Arc::new(shared::jobs::ExternalCalls::new(
        ports.types.clone(),
        builtin.webhook_secret.clone(),
        builtin.outbound.clone(),
        config.public_url.clone(),
    ));
    registry.with_external(external.clone());
    #[cfg(feature = "aws")]
    if config.backend == Backend::Aws {
        external.allow_lambda(
            shared::jobs::LambdaHandlers::parse(&config.lambda_handlers),
            shared::adapters::function_caller(&shared::adapters::aws::sdk_config_from_env().await),
        );
    }
    let auth = authenticator(&config, &ports, settings.addr).await?;
    if auth.is_open() {
        // (dev mode serves only loopback: a handler on this machine is the one it would call)
        external.allow_loopback();
    }
    let auth: Arc<dyn shared::auth::Verify> = Arc::new(auth);
    let hub = Hub::new(config.ws_outbox);
    let gateway = crate::live::Gateway {
        hub: hub.clone(),
        feed: opened.feed.clone(),
        routes: WsRoutes {
            live: LivePorts {
                connections: hub.clone(),
                pusher: hub.clone(),
            },
            store: ports.store.clone(),
        },
        auth: auth.clone(),
    };
    let auth_for_metrics = auth.clone();
    let api = ApiState::from_config(&config, ports.clone(), registry.clone(), auth)
        .await
        .with_health(health.clone())
        .with_live(Arc::new(opened.feed.clone()));
    let app = router(Arc::new(api))
        .merge(
            axum::Router::new()
                .route("/ws", axum::routing::get(crate::live::upgrade))
                .with_state(gateway),
        )
        .merge(
            axum::Router::new()
                .route("/metrics", axum::routing::get(crate::metrics::serve))
                .with_state(crate::metrics::MetricsSource {
                    auth: auth_for_metrics,
                    store: opened.embedded_store.clone(),
                    queue: opened.dead_letters.clone(),
                    hub: hub.clone(),
                }),
        );
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let local_addr = listener.local_addr()?;
    external.api_at(format!("http://{local_addr}"));
    println!(
        "conveyor listening on http://{local_addr} (backend {})",
        opened.describe
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let embedded = settings.config.backend != Backend::Aws;
    let worker = Worker::new(ports.clone(), registry.clone(), {
        let mut w = WorkerSettings::from_config(&config);
        if embedded {
            // (the embedded backend keeps the pauses in memory: a worker asks for every job)
            w.pause_cache = Duration::ZERO;
        }
        w
    });
    // Every part is on the health report before the first request can ask for it.
    health.up(MAINTENANCE);
    let mut pollers = vec![];
    for reg in registry.iter() {
        let settings = PollerSettings {
            queue: registry.queue_name(&reg.job_type),
            high: registry
                .high_queue_name(&reg.job_type)
                .zip(reg.options.high_priority_ratio),
            batch_size: reg.options.batch_size,
            concurrency: reg.options.concurrency,
            visibility: reg.options.visibility(),
            lease: (settings.config.backend == Backend::Aws)
                .then(|| settings.config.stall_after.max(Duration::from_secs(1))),
            grace: settings.config.shutdown_grace,
            // On one machine, a type paused for every tenant is not polled at all (on AWS the
            // worker sends its jobs back, as Lambda's event-source mapping would deliver them).
            paused: embedded.then(|| PausedLook {
                pauses: ports.pauses.clone(),
                job_type: reg.job_type.clone(),
            }),
        };
        health.up(&health_name(&settings.queue));
        let (queue, worker, stop, health) = (
            opened.consumer.clone(),
            worker.clone(),
            stop_rx.clone(),
            health.clone(),
        );
        pollers.push(tokio::spawn(supervise(
            health_name(&settings.queue),
            health.clone(),
            stop_rx.clone(),
            move || {
                run_poller(
                    queue.clone(),
                    worker.clone(),
                    settings.clone(),
                    stop.clone(),
                    health.clone(),
                )
            },
        )));
    }
    let maintenance = {
        let sweeps = MaintenanceLoop {
            ports: ports.clone(),
            registry: registry.clone(),
            settings: MaintenanceSettings {
                stall_after: config.stall_after,
                orphan_after: config.orphan_after,
            },
            every: config.maintenance_interval,
            health: health.clone(),
            dead_letters: opened.dead_letters.clone(),
        };
        let stop = stop_rx.clone();
        tokio::spawn(supervise(
            MAINTENANCE.into(),
            health.clone(),
            stop_rx.clone(),
            move || sweeps.clone().run(stop.clone()),
        ))
    };

    let scheduler = {
        let service = Arc::new(JobService::from_config(
            &config,
            ports.clone(),
            registry.clone(),
        ));
        let (every, stop, health_) = (config.scheduler_interval, stop_rx.clone(), health.clone());
        health.up(SCHEDULER);
        tokio::spawn(supervise(
            SCHEDULER.into(),
            health.clone(),
            stop_rx.clone(),
            move || run_scheduler(service.clone(), every, health_.clone(), stop.clone()),
        ))
    };

    let push = {
        let (feed, hub, stop) = (opened.feed.clone(), hub.clone(), stop_rx.clone());
        health.up(PUSH);
        tokio::spawn(supervise(
            PUSH.into(),
            health.clone(),
            stop_rx.clone(),
            move || crate::live::push_changes(feed.clone(), hub.clone(), stop.clone()),
        ))
    };

    #[cfg(feature = "aws")]
    let counts = opened.counts.clone().map(|reader| {
        health.up(crate::aws::COUNTS);
        let (stop, health) = (stop_rx.clone(), health.clone());
        tokio::spawn(supervise(
            crate::aws::COUNTS.into(),
            health.clone(),
            stop_rx.clone(),
            move || crate::aws::count_stream(reader.clone(), health.clone(), stop.clone()),
        ))
    });

    let mut http_stop = stop_rx.clone();
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
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
    let _ = scheduler.await;
    let _ = push.await;
    #[cfg(feature = "aws")]
    if let Some(counts) = counts {
        let _ = counts.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    if let Some(db) = &opened.db {
        db.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The backend the runtime runs on, with what only the embedded one has.
struct Opened {
    ports: Ports,
    /// What the pollers receive from (the event-source mapping's side of the queues).
    consumer: Arc<dyn QueueConsumer>,
    describe: String,
    /// Every committed change of a job (live updates).
    feed: Arc<ChangeFeed>,
    /// The embedded store (its all-tenant counts, for `/metrics`).
    embedded_store: Option<Arc<shared::adapters::embedded::EmbeddedStore>>,
    db: Option<shared::adapters::embedded::Db>,
    dead_letters: Option<Arc<EmbeddedQueue>>,
    /// The reader that keeps the counts from the table's stream (aws).
    #[cfg(feature = "aws")]
    counts: Option<Arc<shared::adapters::aws::StreamReader>>,
}

/// Open `config.backend`. Embedded: the data directory has one owner, so whatever a previous
/// process left running is stalled at once. AWS: resources are created where missing (an
/// emulator; on AWS the template made them), and running jobs are never reaped at start (a
/// fleet of workers may share the table).
async fn open(
    config: &Config,
    registry: &Arc<Registry>,
    health: &Health,
) -> anyhow::Result<Opened> {
    match config.backend {
        Backend::Embedded => {
            let backend = open_embedded(config, registry).with_context(|| {
                format!("opening the data directory {}", config.data_dir.display())
            })?;
            let ports = backend.ports();
            let recovered =
                reap_stalled_jobs(&ports, registry, Duration::ZERO, chrono::Utc::now()).await?;
            if recovered > 0 {
                tracing::warn!(recovered, "recovered jobs a previous process left running");
            }
            let db = backend.db.clone();
            health.probe("writer", move || {
                if db.writer_alive() {
                    Ok(())
                } else {
                    Err("the database writer has stopped".into())
                }
            });
            Ok(Opened {
                ports,
                consumer: backend.queue.clone(),
                describe: format!("embedded, data {}", config.data_dir.display()),
                feed: backend.feed.clone(),
                embedded_store: Some(backend.store.clone()),
                db: Some(backend.db.clone()),
                dead_letters: Some(backend.queue.clone()),
                #[cfg(feature = "aws")]
                counts: None,
            })
        }
        #[cfg(feature = "aws")]
        Backend::Aws => {
            let backend = crate::aws::bootstrap(config, registry).await?;
            let feed = ChangeFeed::new(shared::live::REPLAY);
            Ok(Opened {
                ports: backend.ports(),
                consumer: backend.queue.clone(),
                describe: format!(
                    "aws, table {}, endpoint {}",
                    config.table,
                    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".into())
                ),
                feed: feed.clone(),
                embedded_store: None,
                db: None,
                dead_letters: None,
                // (what the `stats` function does on AWS: counts, and the table's outbox)
                counts: Some(Arc::new(
                    backend
                        .stream_reader()
                        .with_feed(feed)
                        .with_outbox(Arc::new(shared::lifecycle::Messages::new(
                            backend.queue.clone(),
                            registry.clone(),
                        ))),
                )),
            })
        }
        #[cfg(not(feature = "aws"))]
        Backend::Aws => {
            bail!(
                "CONVEYOR_BACKEND=aws: this build has no AWS backend (build with `--features aws`)"
            )
        }
    }
}

/// The name maintenance goes by in `/healthz`.
const MAINTENANCE: &str = "maintenance";
/// The name the live-update pusher goes by in `/healthz`.
const PUSH: &str = "live-updates";
/// The name the schedules' scheduler goes by in `/healthz`.
const SCHEDULER: &str = "scheduler";

/// The local stand-in for EventBridge Scheduler: every `every`, each schedule's due tick fires
/// (`schedules::evaluate`, from the stored definitions; a restart fires the tick that came due
/// while it was down, once). A failed pass shows in `/healthz` until one succeeds.
pub async fn run_scheduler(
    service: Arc<JobService>,
    every: Duration,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match shared::schedules::evaluate(&service, chrono::Utc::now(), true).await {
                    // (A schedule whose tick cannot be submitted, e.g. over its tenant's
                    // quota, is logged and tried again: the scheduler itself is healthy.)
                    Ok(_) => health.up(SCHEDULER),
                    Err(e) => {
                        tracing::error!(error = %e, "schedules could not be read; the next pass tries again");
                        health.down(SCHEDULER, format!("schedules could not be read: {e}"));
                    }
                }
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// The local stand-in for the maintenance schedule: a sweep every `every`; a failed sweep is
/// logged and shown in `/healthz` until one succeeds, and the loop goes on.
#[derive(Clone)]
pub struct MaintenanceLoop {
    pub ports: Ports,
    pub registry: Arc<Registry>,
    pub settings: MaintenanceSettings,
    pub every: Duration,
    pub health: Arc<Health>,
    /// The embedded queue, whose dead letters past their retention each sweep deletes.
    pub dead_letters: Option<Arc<EmbeddedQueue>>,
}

impl MaintenanceLoop {
    /// One sweep, its outcome recorded.
    pub async fn sweep_once(&self) {
        let swept = handle_maintenance(&self.ports, &self.registry, self.settings)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let expired = match &self.dead_letters {
            Some(queue) => queue
                .delete_expired_dead_letters(chrono::Utc::now(), 10_000)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        match swept.and(expired) {
            Ok(()) => self.health.up(MAINTENANCE),
            Err(e) => {
                tracing::error!(error = %e, "maintenance sweep failed; the next one tries again");
                self.health.down(MAINTENANCE, format!("sweep failed: {e}"));
            }
        }
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep_once().await,
                _ = stopped(&mut stop) => return,
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::adapters::embedded::{Durability, EmbeddedBackend};
    use shared::jobs::BuiltinSettings;

    #[tokio::test]
    async fn a_failing_sweep_is_shown_and_the_loop_goes_on() {
        // GIVEN a maintenance loop over a store whose writer has stopped
        let dir = tempfile::tempdir().unwrap();
        let backend = EmbeddedBackend::open(dir.path(), Durability::Process, vec![]).unwrap();
        let health = Arc::new(Health::new());
        let sweeps = MaintenanceLoop {
            ports: backend.ports(),
            registry: Arc::new(Registry::builtin("conveyor-", &BuiltinSettings::default())),
            settings: MaintenanceSettings {
                stall_after: Duration::from_secs(60),
                orphan_after: Duration::from_secs(60),
            },
            every: Duration::from_millis(10),
            health: health.clone(),
            dead_letters: Some(backend.queue.clone()),
        };
        sweeps.sweep_once().await;
        assert!(health.report().ok, "a working sweep is ok");
        backend.db.close().await;

        // WHEN it runs for a while
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = tokio::spawn(sweeps.clone().run(stop_rx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while health.report().ok {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the failure never showed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // THEN health shows maintenance down with why, and the loop is still going
        let report = health.report();
        let error = report.components["maintenance"].error.clone().unwrap();
        assert!(error.starts_with("sweep failed"), "{error}");
        assert!(!running.is_finished());
        stop_tx.send(true).unwrap();
        running.await.unwrap();
    }
}
