//! One SQLite database in WAL mode. All writes go through a single writer thread that runs
//! whatever is waiting in one transaction and commits once (group commit): each caller is
//! answered only after the commit that holds its write, so an answer means durable.
//! Reads run on a small pool of read connections, beside the writer.

use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

const MAX_BATCH: usize = 1024;
const READERS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another Conveyor process")]
    Locked(PathBuf),
    #[error("the database writer has stopped")]
    Closed,
    #[error("{0}")]
    Other(String),
}

/// How far a commit goes before the writer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash or SIGKILL of the process (WAL, `synchronous=NORMAL`). The default.
    Process,
    /// Also survives power loss: every group commit is fsynced (`synchronous=FULL`).
    Power,
}

impl Durability {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "process" => Some(Self::Process),
            "power" => Some(Self::Power),
            _ => None,
        }
    }
}

type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// A write: given the connection it runs (inside the open transaction); given `None` it does
/// not run at all (there is no transaction to run in) and only reports the failure.
type Command = Box<dyn FnOnce(Option<&Connection>) -> Completion + Send>;

#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    _lock: File,
}

fn open_conn(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        },
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    Ok(conn)
}

impl Db {
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, DbError> {
        Self::open_with(dir, durability, WAL_RESTART_BYTES)
    }

    /// `open`, with the WAL size past which the log is made to start over.
    pub fn open_with(
        dir: &Path,
        durability: Durability,
        wal_restart_bytes: i64,
    ) -> Result<Self, DbError> {
        let io = |source| DbError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::create(dir.join("conveyor.lock")).map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(DbError::Locked(dir.to_path_buf()));
        }
        let path = dir.join("conveyor.db");
        let writer_conn = open_conn(&path, durability)?;
        writer_conn.execute_batch(super::store::SCHEMA)?;
        writer_conn.execute_batch(super::queue::SCHEMA)?;
        let readers = (0..READERS)
            .map(|_| open_conn(&path, durability).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        // Checkpoints run on a connection of their own (see `checkpoint_loop`), so a write never
        // waits for one to copy pages or fsync.
        writer_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // After a restart the WAL file is reused (overwriting beats appending), cut back to the
        // limit; how much log there is comes from the WAL hook, not from the file's size.
        writer_conn.pragma_update(None, "journal_size_limit", wal_restart_bytes)?;
        writer_conn.wal_hook(Some(note_wal_frames));
        let page_size: i64 = writer_conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let checkpointer = open_conn(&path, durability)?;
        let (tx, rx) = mpsc::channel::<Command>();
        let frames = Arc::new(AtomicI64::new(0));
        let limit = (wal_restart_bytes / page_size.max(512)).max(1);
        let cap = WalCap {
            frames: frames.clone(),
            limit,
        };
        let (stop_checkpoints, checkpoint_stopped) = mpsc::channel::<()>();
        let writer_thread = std::thread::Builder::new()
            .name("conveyor-db-writer".into())
            .spawn(move || {
                write_loop(writer_conn, rx, cap);
                drop(stop_checkpoints);
            })
            .map_err(io)?;
        std::thread::Builder::new()
            .name("conveyor-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, checkpoint_stopped, frames, limit))
            .map_err(io)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(writer_thread)),
                readers,
                next_reader: Default::default(),
                _lock: lock,
            }),
        })
    }

    /// Run `f` in the writer's current transaction; answer after it is committed.
    /// An error from `f` rolls back only `f`'s own changes.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |conn: Option<&Connection>| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(DbError::Other("not run: no transaction".into())),
            };
            Box::new(move |commit_error: Option<&str>| {
                let _ = tx.send(match commit_error {
                    None => result,
                    Some(e) => Err(DbError::Other(format!("commit failed: {e}"))),
                });
            })
        });
        {
            let writer = self.inner.writer.lock().unwrap();
            writer
                .as_ref()
                .ok_or(DbError::Closed)?
                .send(command)
                .map_err(|_| DbError::Closed)?;
        }
        rx.await.map_err(|_| DbError::Closed)?
    }

    /// Run a read on one of the read connections.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner.reader()))
            .await
            .map_err(|e| DbError::Other(format!("read task failed: {e}")))?
    }

    /// A short read (a lookup by primary key) run right here on the caller's thread: cheaper
    /// than a hop to the blocking pool and back. Scans go through `read`.
    pub fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        f(&self.inner.reader())
    }

    /// A read from synchronous code (start-up).
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let guard = self.inner.readers[0].lock().unwrap();
        f(&guard)
    }

    /// Stop accepting writes, and wait while the writer commits what is queued, checkpoints the
    /// WAL and exits.
    pub fn close(&self) {
        self.inner.writer.lock().unwrap().take();
        if let Some(thread) = self.inner.writer_thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

impl Inner {
    /// A free read connection if there is one, else wait for one (round robin).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        (0..n)
            .find_map(|i| self.readers[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.readers[start % n]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            })
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    conn.prepare_cached("SAVEPOINT w")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE w")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            conn.prepare_cached("ROLLBACK TO w")?.execute([])?;
            conn.prepare_cached("RELEASE w")?.execute([])?;
            Err(e)
        }
    }
}

/// WAL size past which the log is made to start over.
pub const WAL_RESTART_BYTES: i64 = 64 * 1024 * 1024;

thread_local! {
    /// Frames in the WAL after the last commit on this thread (set by the WAL hook, which
    /// SQLite calls on the committing thread: the writer).
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(i64::from(frames)));
    Ok(())
}

/// Copy WAL pages back into the database beside the writer (PASSIVE: never blocks it; this is
/// where the copying and fsyncs happen). A passive checkpoint alone never lets the log start
/// over while the writer keeps appending, so past the size limit this thread stands back and
/// the writer makes the log start over (`WalCap`); only one of them checkpoints at a time.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>, frames: Arc<AtomicI64>, limit: i64) {
    while let Err(mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(50))
    {
        if frames.load(Ordering::Relaxed) >= limit {
            continue;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// The writer's side: past the size limit, after a commit, make the log start over. RESTART
/// waits only for readers (the writer is this thread) and finds little left to copy.
struct WalCap {
    /// WAL frames after the last commit, shared with the checkpointer.
    frames: Arc<AtomicI64>,
    limit: i64,
}

impl WalCap {
    fn after_commit(&self, conn: &Connection) {
        let frames = WAL_FRAMES.with(|f| f.get());
        self.frames.store(frames, Ordering::Relaxed);
        if frames < self.limit {
            return;
        }
        // Busy (the checkpointer was mid-copy) is fine: the next commit tries again.
        match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => self.frames.store(0, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL restart failed"),
        }
    }
}

/// Run a statement without parameters through the statement cache (no re-parse per batch).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn write_loop(conn: Connection, rx: mpsc::Receiver<Command>, cap: WalCap) {
    while let Ok(first) = rx.recv() {
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            first(None)(Some(&e.to_string()));
            continue;
        }
        let mut done = Vec::with_capacity(64);
        let mut next = Some(first);
        while let Some(command) = next.take() {
            // An error that makes SQLite roll back the whole transaction (disk full, I/O) leaves
            // autocommit mode on: then nothing more may run, or it would commit on its own.
            if conn.is_autocommit() {
                done.push(command(None));
            } else {
                done.push(command(Some(&conn)));
            }
            if done.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let outcome = if conn.is_autocommit() {
            Err("the transaction was rolled back".to_string())
        } else {
            run_cached(&conn, "COMMIT").map_err(|e| e.to_string())
        };
        match outcome {
            Ok(()) => {
                done.into_iter().for_each(|d| d(None));
                cap.after_commit(&conn);
            }
            Err(msg) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::error!(error = %msg, "group commit failed");
                done.into_iter().for_each(|d| d(Some(&msg)));
            }
        }
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}
