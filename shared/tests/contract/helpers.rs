use serde_json::json;
use shared::adapters::aws::{AwsBackend, AwsSettings, QueueSpec};
use shared::adapters::embedded::{Durability, EmbeddedBackend, QueueSettings};
use shared::domain::{Backoff, Job, JobType, NewJob, Tenant};
use shared::ports::{JobQueue, Ports};
use std::sync::Arc;
use std::time::Duration;

/// A backend under test, as the backend-neutral tests see it: its ports, with resources of
/// its own (a directory; a table and queues of its own on the emulator).
pub struct Under {
    pub ports: Ports,
    /// Both sides of the queues (the ports only send).
    pub queues: Arc<dyn JobQueue>,
    /// Whether `JobStore::delete_expired` deletes (the embedded backend); on DynamoDB TTL does.
    pub deletes_expired: bool,
    /// Whether a receipt from an earlier receive of a message is refused (embedded).
    pub refuses_stale_receipts: bool,
    /// Whether `JobStore::due` finds `running` and `queued` jobs (embedded). DynamoDB keeps no
    /// index of them: a stalled run is found by its message coming back, and the table's outbox
    /// leaves no queued job without its message.
    pub indexes_unfinished: bool,
    /// A queue whose dead-letter queue is `dlq` after `MAX_RECEIVES` receives.
    pub queue: String,
    pub dlq: String,
    /// A queue without a dead-letter queue.
    pub plain: String,
    /// Where counts are kept from the table's stream (the `stats` function's work on AWS): the
    /// reader that stands in for it. `None`: counts are exact at once (embedded).
    pub counts: Option<shared::adapters::aws::StreamReader>,
    /// Live-update connections: the local gateway's hub, or the table's items.
    pub connections: Arc<dyn shared::ports::ConnectionStore>,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Under {
    /// Let eventually consistent counts catch up with the writes made so far.
    pub async fn settle_counts(&self) {
        if let Some(reader) = &self.counts {
            reader.catch_up().await.expect("reading the table's stream");
        }
    }

    /// The same backend as a second process sees it (AWS: new clients on the same table and
    /// queues). An embedded store has one owning process (a second is refused its data
    /// directory), so there it is the owner's ports again: the tests named for processes run on
    /// AWS alone (`across_processes!`).
    pub async fn another_process(&self) -> Ports {
        match self._keep.downcast_ref::<AwsBackend>() {
            Some(b) => AwsBackend::new(&moto_sdk().await, b.settings().clone()).ports(),
            None => self.ports.clone(),
        }
    }

    /// The AWS backend under test (`None`: embedded).
    pub fn aws(&self) -> Option<&AwsBackend> {
        self._keep.downcast_ref::<AwsBackend>()
    }

    /// A second reader of the same stream, as a restarted process makes (AWS only).
    pub fn another_counts_reader(&self) -> Option<shared::adapters::aws::StreamReader> {
        self._keep
            .downcast_ref::<AwsBackend>()
            .map(|b| b.stream_reader())
    }
}

pub fn embedded_under() -> Under {
    let b = embedded();
    Under {
        ports: b.ports.clone(),
        queues: b.embedded.queue.clone(),
        deletes_expired: true,
        indexes_unfinished: true,
        refuses_stale_receipts: true,
        queue: QUEUE.into(),
        dlq: DLQ.into(),
        plain: "plain".into(),
        counts: None,
        connections: shared::adapters::hub::Hub::new(8),
        _keep: Box::new(b),
    }
}

/// The AWS adapters against a moto server (started once for this test binary, on a free
/// loopback port, and stopped when the binary exits), with a table, queues and a bus of this
/// test's own.
pub async fn moto_under() -> Under {
    let sdk = moto_sdk().await;
    let unique = unique();
    let backend = AwsBackend::new(
        &sdk,
        AwsSettings {
            table: format!("jobs-{unique}"),
            event_bus: format!("bus-{unique}"),
            shards: 16,
            events: shared::domain::EventSelection::All,
            scheduler: None,
        },
    );
    let (queue, dlq, plain) = (
        format!("q-{unique}"),
        format!("q-{unique}-dlq"),
        format!("plain-{unique}"),
    );
    backend
        .bootstrap(&[QueueSpec {
            name: queue.clone(),
            dead_letter_queue: dlq.clone(),
            max_receive_count: MAX_RECEIVES,
            visibility: Duration::from_secs(30),
        }])
        .await
        .expect("bootstrap on moto");
    backend
        .create_plain_queue(&plain)
        .await
        .expect("a queue on moto");
    Under {
        ports: backend.ports(),
        queues: backend.queue.clone(),
        deletes_expired: false,
        indexes_unfinished: false,
        refuses_stale_receipts: false,
        queue,
        dlq,
        plain,
        counts: Some(backend.stream_reader()),
        connections: Arc::new(backend.connections()),
        _keep: Box::new(backend),
    }
}

/// SDK settings for the moto server this test binary started.
pub async fn moto_sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(shared::adapters::aws::http_client())
        .endpoint_url(moto::endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "contract",
        ))
        .load()
        .await
}

/// A suffix that keeps one test's resources apart from every other's on the shared server.
pub fn unique() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

#[path = "../support/moto.rs"]
mod moto;

/// A backend under test with its own isolated resources.
pub struct TestBackend {
    pub ports: Ports,
    pub embedded: EmbeddedBackend,
    pub dir: tempfile::TempDir,
}

pub const QUEUE: &str = "contract-q";
pub const DLQ: &str = "contract-q-dlq";
pub const MAX_RECEIVES: u32 = 2;
pub const DLQ_RETENTION: Duration = Duration::from_secs(3600);

pub fn embedded() -> TestBackend {
    let dir = tempfile::tempdir().unwrap();
    open_embedded(dir)
}

pub fn open_embedded(dir: tempfile::TempDir) -> TestBackend {
    let embedded = EmbeddedBackend::open(
        dir.path(),
        Durability::Process,
        vec![(
            QUEUE.to_string(),
            QueueSettings {
                max_receive_count: MAX_RECEIVES,
                dead_letter_queue: Some(DLQ.to_string()),
                dead_letter_retention: DLQ_RETENTION,
            },
        )],
    )
    .unwrap();
    TestBackend {
        ports: embedded.ports(),
        embedded,
        dir,
    }
}

/// Close a backend and open a new one on the same directory: what a restart sees.
pub fn reopen(backend: TestBackend) -> TestBackend {
    backend.embedded.db.close_blocking();
    let TestBackend {
        dir,
        embedded,
        ports,
    } = backend;
    drop(ports);
    drop(embedded);
    // The writer thread releases the database once it drains; retry the lock briefly.
    for _ in 0..100 {
        match EmbeddedBackend::open(dir.path(), Durability::Process, vec![]) {
            Ok(_) => break,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    open_embedded(dir)
}

pub fn job(tenant: &str, job_type: &str) -> Job {
    Job::create(
        NewJob {
            tenant: Tenant::parse(tenant).unwrap(),
            job_type: JobType::parse(job_type).unwrap(),
            priority: 0,
            payload: json!({"n": 1}),
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(1)),
            timeout: Duration::from_secs(5),
            retention: Duration::from_secs(60),
            idempotency_key: None,
            request_fingerprint: None,
            run_at: chrono::Utc::now(),
        },
        chrono::Utc::now(),
    )
}
