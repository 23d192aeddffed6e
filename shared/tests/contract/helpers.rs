use serde_json::json;
use shared::adapters::embedded::{Durability, EmbeddedBackend, QueueSettings};
use shared::domain::{Backoff, Job, JobType, NewJob, Tenant};
use shared::ports::Ports;
use std::time::Duration;

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
