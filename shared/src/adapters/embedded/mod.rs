//! The embedded backend: SQLite on local disk (WAL, one group-commit writer), so a restart or a
//! SIGKILL loses no accepted job; an in-process event channel.

mod access;
mod batches;
mod by_id;
mod counts;
mod db;
mod events;
mod history;
mod logs;
mod pauses;
mod queue;
mod rows;
mod schedules;
mod schema;
mod slots;
mod store;
mod types;

pub use access::EmbeddedAccess;
pub use db::{Db, DbError, Durability, WAL_RESTART_BYTES, WRITE_QUEUE};
pub use events::InProcessEvents;
pub use queue::{EmbeddedQueue, QueueSettings};
pub use slots::MemorySlots;
pub use store::{EmbeddedStore, LOG_CAP};

use std::path::Path;
use std::sync::Arc;

/// The three embedded adapters over one database in `data_dir`.
#[derive(Clone)]
pub struct EmbeddedBackend {
    pub db: Db,
    pub store: Arc<EmbeddedStore>,
    pub queue: Arc<EmbeddedQueue>,
    pub events: Arc<InProcessEvents>,
    pub access: Arc<EmbeddedAccess>,
    /// Running slots, in memory (see `MemorySlots`).
    pub slots: Arc<MemorySlots>,
    /// Every committed change of a job, in commit order (live updates).
    pub feed: Arc<crate::live::ChangeFeed>,
    /// What ended per type and minute.
    pub history: Arc<history::EmbeddedHistory>,
}

impl EmbeddedBackend {
    pub fn ports(&self) -> crate::ports::Ports {
        crate::ports::Ports {
            store: self.store.clone(),
            queue: self.queue.clone(),
            events: self.events.clone(),
            dead_letters: self.queue.clone(),
            keys: self.access.clone(),
            audit: self.access.clone(),
            tenants: self.access.clone(),
            schedules: self.access.clone(),
            triggers: std::sync::Arc::new(crate::ports::StoredDefinitionsOnly),
            rates: self.access.clone(),
            slots: self.slots.clone(),
            debounces: self.access.clone(),
            pauses: self.access.clone(),
            types: self.access.clone(),
            history: self.history.clone(),
            dispatch: crate::ports::Dispatch::AfterWrite,
        }
    }

    /// Open (or create) the backend. Takes an exclusive lock on the data directory: the
    /// embedded backend has one owner, which is also why in-flight messages of a previous
    /// process are made visible again at once.
    pub fn open(
        data_dir: &Path,
        durability: Durability,
        queues: Vec<(String, QueueSettings)>,
    ) -> Result<Self, DbError> {
        Self::open_with(
            data_dir,
            durability,
            db::WAL_RESTART_BYTES,
            db::WRITE_QUEUE,
            queues,
        )
    }

    /// `open`, with the WAL size past which the log is made to start over and the number of
    /// writes that may wait for the writer (past it, new jobs are refused with `Busy`).
    pub fn open_with(
        data_dir: &Path,
        durability: Durability,
        wal_limit_bytes: i64,
        write_queue: usize,
        queues: Vec<(String, QueueSettings)>,
    ) -> Result<Self, DbError> {
        let db = Db::open_with(data_dir, durability, wal_limit_bytes, write_queue)?;
        let queue = Arc::new(EmbeddedQueue::open(db.clone(), queues)?);
        let feed = crate::live::ChangeFeed::new(crate::live::REPLAY);
        Ok(Self {
            store: Arc::new(
                EmbeddedStore::new(db.clone())
                    .with_feed(feed.clone())
                    .with_queue(queue.clone()),
            ),
            feed,
            queue,
            events: Arc::new(InProcessEvents::new(1024)),
            access: Arc::new(EmbeddedAccess::new(db.clone())),
            slots: Arc::new(MemorySlots::new()),
            history: Arc::new(history::EmbeddedHistory::new(db.clone())),
            db,
        })
    }
}
