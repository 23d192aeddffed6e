//! One SQLite database in WAL mode. All writes go through a single writer thread that runs
//! whatever is waiting in one transaction and commits once (group commit): each caller is
//! answered only after the commit that holds its write, so an answer means durable.
//!
//! Nothing here blocks an async thread: the writer's queue is bounded by an async semaphore (a
//! write waits for room without holding a thread; new work is refused with `Busy` when the queue
//! is full), and reads take a connection from a pool behind an async semaphore, so a read never
//! waits on a lock. Scans run on the blocking pool with connections of their own, so a long
//! listing never delays a point lookup.

pub use crate::config::{Durability, WRITE_QUEUE};
use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

const MAX_BATCH: usize = 1024;
/// Compiled statements kept per connection.
const STATEMENT_CACHE: usize = 256;
/// Connections for point lookups (by primary key), run inline once a connection is free.
const POINT_READERS: usize = 2;
/// Connections for scans (listings, maintenance), run on the blocking pool.
const SCAN_READERS: usize = 2;

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
    #[error("the database writer has {0} writes waiting; try again shortly")]
    Busy(usize),
    #[error("{0}")]
    Other(String),
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
    /// Room in the writer's queue: a write holds a permit from when it is queued until the writer
    /// takes it up.
    write_room: Arc<Semaphore>,
    write_queue: usize,
    point: ReaderPool,
    scan: ReaderPool,
    wal: WalStats,
    /// WAL syncs done for power durability (none for process durability).
    wal_syncs: Arc<AtomicU64>,
    _lock: File,
}

/// How big the WAL has been allowed to get.
struct WalStats {
    limit_frames: i64,
    /// The most WAL frames any commit started on top of.
    peak_before_commit: Arc<AtomicI64>,
}

/// Read connections behind an async semaphore with one permit per connection: whoever holds a
/// permit is sure to find a connection free, so taking one never blocks a thread.
struct ReaderPool {
    connections: Vec<Mutex<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    fn open(path: &Path, n: usize, cache_kib: i64) -> rusqlite::Result<Self> {
        Ok(Self {
            connections: (0..n)
                .map(|_| open_conn(path, cache_kib).map(Mutex::new))
                .collect::<Result<_, _>>()?,
            permits: Arc::new(Semaphore::new(n)),
        })
    }

    /// Run `f` on a free connection. The caller holds one of this pool's permits, and gives
    /// it back only after this returns (the connection is unlocked first), so there is one.
    fn with_free<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let free = self.connections.iter().find_map(|c| match c.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        });
        let conn = match free {
            Some(conn) => conn,
            // Unreachable while permits and connections match; never worth a panic.
            None => self.connections[0]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        let result = f(&conn);
        drop(conn);
        result
    }
}

/// Page cache per connection: the writer's holds the hot pages of every write; a reader's
/// only what its reads touch, so it stays small (memory grows with connections, not with data).
const WRITER_CACHE_KIB: i64 = 16_000;
const READER_CACHE_KIB: i64 = 4_000;
/// A point lookup's connection: under writes its cache is emptied before nearly every read (the
/// WAL moved on), and emptying walks the whole cache's table, so a small one is the cheap one.
const POINT_CACHE_KIB: i64 = 256;

fn open_conn(path: &Path, cache_kib: i64) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in both modes: a commit is written to the WAL (a SIGKILL loses nothing) and SQLite
    // fsyncs only around checkpoints. Power durability syncs the WAL beside the writer
    // (`Syncer`) and answers a write once the sync that covers its commit is done.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    // Room for every statement the writer runs: past the cache's capacity, statements would be
    // compiled again and again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Db {
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, DbError> {
        Self::open_with(dir, durability, WAL_RESTART_BYTES, WRITE_QUEUE)
    }

    /// `open`, with the WAL size past which the log is made to start over and the number of
    /// writes that may wait for the writer.
    pub fn open_with(
        dir: &Path,
        durability: Durability,
        wal_restart_bytes: i64,
        write_queue: usize,
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
        let writer_conn = open_conn(&path, WRITER_CACHE_KIB)?;
        super::schema::apply(&writer_conn)?;
        let point = ReaderPool::open(&path, POINT_READERS, POINT_CACHE_KIB)?;
        let scan = ReaderPool::open(&path, SCAN_READERS, READER_CACHE_KIB)?;
        // Checkpoints run on a connection of their own (see `checkpoint_loop`), so a write never
        // waits for one to copy pages or fsync.
        writer_conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // After a restart the WAL file is reused (overwriting beats appending), cut back to the
        // limit; how much log there is comes from the WAL hook, not from the file's size.
        writer_conn.pragma_update(None, "journal_size_limit", wal_restart_bytes)?;
        writer_conn.wal_hook(Some(note_wal_frames));
        let page_size: i64 = writer_conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let checkpointer = open_conn(&path, READER_CACHE_KIB)?;
        let (tx, rx) = mpsc::channel::<Command>();
        let frames = Arc::new(AtomicI64::new(0));
        let limit = (wal_restart_bytes / page_size.max(512)).max(1);
        let passes = Arc::new(Mutex::new(()));
        let peak_before_commit = Arc::new(AtomicI64::new(0));
        let cap = WalCap {
            frames: frames.clone(),
            limit,
            passes: passes.clone(),
            peak_before_commit: peak_before_commit.clone(),
        };
        let (stop_checkpoints, checkpoint_stopped) = mpsc::channel::<()>();
        let wal_syncs = Arc::new(AtomicU64::new(0));
        let syncer = match durability {
            Durability::Process => None,
            Durability::Power => Some(Syncer::start(dir, wal_syncs.clone()).map_err(io)?),
        };
        let writer_thread = std::thread::Builder::new()
            .name("conveyor-db-writer".into())
            .spawn(move || {
                write_loop(writer_conn, rx, cap, syncer);
                drop(stop_checkpoints);
            })
            .map_err(io)?;
        std::thread::Builder::new()
            .name("conveyor-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, checkpoint_stopped, frames, limit, passes))
            .map_err(io)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(writer_thread)),
                write_room: Arc::new(Semaphore::new(write_queue.max(1))),
                write_queue: write_queue.max(1),
                point,
                scan,
                wal: WalStats {
                    limit_frames: limit,
                    peak_before_commit,
                },
                wal_syncs,
                _lock: lock,
            }),
        })
    }

    /// Run `f` in the writer's current transaction; answer after it is committed.
    /// An error from `f` rolls back only `f`'s own changes. Waits (asynchronously) for room in
    /// the writer's queue: for work already accepted, which must not be dropped.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.write_then(f, |_: &T| {}).await
    }

    /// `write`, and `after_commit` with its result once it is committed, on the writer thread
    /// in commit order (before the caller is answered): for what must see commits in their
    /// order (the change feed). It must be quick and must not block.
    pub async fn write_then<T, F, A>(&self, f: F, after_commit: A) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let room = self.room().await?;
        self.queue_write(room, true, f, after_commit).await
    }

    /// Room in the writer's queue, waited for.
    async fn room(&self) -> Result<OwnedSemaphorePermit, DbError> {
        self.inner
            .write_room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Closed)
    }

    /// `write` for NEW work: refused at once with `Busy` when the writer's queue is full, having
    /// done nothing (backpressure at the edge; the caller answers 503 with Retry-After).
    pub async fn write_new<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        self.write_new_then(f, |_: &T| {}).await
    }

    /// `write_new`, with `after_commit` as in `write_then`.
    pub async fn write_new_then<T, F, A>(&self, f: F, after_commit: A) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let room = match self.inner.write_room.clone().try_acquire_owned() {
            Ok(room) => room,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                return Err(DbError::Busy(self.inner.write_queue))
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(DbError::Closed),
        };
        self.queue_write(room, true, f, after_commit).await
    }

    /// `write_then` for a write of one statement: SQLite undoes a failed statement on its own,
    /// so it runs without the savepoint around it (and the copy of each page it touches that
    /// a savepoint keeps).
    pub async fn write_statement_then<T, F, A>(&self, f: F, after_commit: A) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let room = self.room().await?;
        self.queue_write(room, false, f, after_commit).await
    }

    async fn queue_write<T, F, A>(
        &self,
        room: OwnedSemaphorePermit,
        savepoint: bool,
        f: F,
        after_commit: A,
    ) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
        A: FnOnce(&T) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |conn: Option<&Connection>| {
            // The writer has taken this write up: its place in the queue is free again.
            drop(room);
            let result = match conn {
                Some(conn) if savepoint => in_savepoint(conn, f),
                Some(conn) => f(conn),
                None => Err(DbError::Other("not run: no transaction".into())),
            };
            Box::new(move |commit_error: Option<&str>| {
                let _ = tx.send(match commit_error {
                    None => {
                        if let Ok(v) = &result {
                            after_commit(v);
                        }
                        result
                    }
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

    /// The WAL's limit in frames, and the most frames any commit has started on top of: the
    /// writer restarts the log after the commit that passes the limit, so the second never
    /// exceeds the first (unless a reader held the log's start for a long time).
    pub fn wal_frames(&self) -> (i64, i64) {
        (
            self.inner.wal.limit_frames,
            self.inner.wal.peak_before_commit.load(Ordering::Relaxed),
        )
    }

    /// WAL syncs done so far for power durability (always 0 for process durability).
    pub fn wal_syncs(&self) -> u64 {
        self.inner.wal_syncs.load(Ordering::Relaxed)
    }

    /// True while the writer thread runs and takes writes.
    pub fn writer_alive(&self) -> bool {
        self.inner.writer.lock().unwrap().is_some()
            && self
                .inner
                .writer_thread
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|t| !t.is_finished())
    }

    /// A scan (listing, maintenance query): on the blocking pool, on a connection of the scan
    /// pool, taken once one is free (waiting asynchronously).
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let permit = self
            .inner
            .scan
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let result = inner.scan.with_free(f);
            drop(permit);
            result
        })
        .await
        .map_err(|e| DbError::Other(format!("read task failed: {e}")))?
    }

    /// A point lookup (by primary key): waits asynchronously for a free connection of the point
    /// pool (scans never take these), then runs right here, which is cheaper than a hop to the
    /// blocking pool and back for a read of microseconds that waits on no lock.
    pub async fn read_point<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let permit = self
            .inner
            .point
            .permits
            .acquire()
            .await
            .map_err(|_| DbError::Closed)?;
        let result = self.inner.point.with_free(f);
        drop(permit);
        result
    }

    /// A read from synchronous code (start-up), not on an async thread.
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let guard = self.inner.scan.connections[0]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Stop accepting writes; the writer commits what is queued, checkpoints the WAL and exits.
    /// Waits for that on the blocking pool, not on an async thread.
    pub async fn close(&self) {
        let db = self.clone();
        let _ = tokio::task::spawn_blocking(move || db.close_blocking()).await;
    }

    /// `close` from synchronous code: blocks the calling thread until the writer has exited.
    pub fn close_blocking(&self) {
        self.inner.writer.lock().unwrap().take();
        self.inner.write_room.close();
        if let Some(thread) = self.inner.writer_thread.lock().unwrap().take() {
            let _ = thread.join();
        }
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
/// the writer makes the log start over (`WalCap`). A pass holds `passes`, which the writer
/// takes before it restarts the log: it waits for a pass under way to end instead of being
/// refused by it, so the log always starts over right after the commit that passed the limit.
fn checkpoint_loop(
    conn: Connection,
    stop: mpsc::Receiver<()>,
    frames: Arc<AtomicI64>,
    limit: i64,
    passes: Arc<Mutex<()>>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(50))
    {
        if frames.load(Ordering::Relaxed) >= limit {
            continue;
        }
        let _pass = passes.lock().unwrap_or_else(|p| p.into_inner());
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
    /// Held by a checkpoint pass; the writer waits for it before it restarts the log.
    passes: Arc<Mutex<()>>,
    peak_before_commit: Arc<AtomicI64>,
}

impl WalCap {
    fn before_commit(&self) {
        self.peak_before_commit
            .fetch_max(self.frames.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn after_commit(&self, conn: &Connection) {
        let frames = WAL_FRAMES.with(|f| f.get());
        self.frames.store(frames, Ordering::Relaxed);
        if frames < self.limit {
            return;
        }
        // Wait for a checkpoint pass under way, then restart: RESTART then waits only for
        // readers still on the old log (busy timeout), and finds little left to copy. Busy
        // (a reader held on past the timeout) is retried after the next commit.
        let _pass = self.passes.lock().unwrap_or_else(|p| p.into_inner());
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

/// Power durability: the writer hands each committed group's answers here and goes on with the
/// next group; this thread fsyncs the WAL (one `fdatasync` covers every commit written before
/// it, however many groups waited meanwhile) and only then answers them, in commit order. The
/// fsync of one group overlaps the next group's work, so it costs latency, not throughput.
///
/// `synchronous=NORMAL` keeps the WAL consistent after a power cut (a torn tail is dropped by
/// its checksums); what it does not do is make a commit durable before the answer, which is
/// what this adds. The data directory is synced once, after the first WAL sync, so the WAL's
/// own directory entry survives too (as SQLite does for a new WAL).
struct Syncer {
    groups: mpsc::Sender<Vec<Completion>>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    fn start(dir: &Path, syncs: Arc<AtomicU64>) -> std::io::Result<Self> {
        let (groups, rx) = mpsc::channel::<Vec<Completion>>();
        let (dir, wal) = (dir.to_path_buf(), dir.join("conveyor.db-wal"));
        let thread = std::thread::Builder::new()
            .name("conveyor-db-sync".into())
            .spawn(move || sync_loop(&dir, &wal, rx, &syncs))?;
        Ok(Self { groups, thread })
    }

    /// Answer `done` once the WAL is synced; at once with the error if the syncer has stopped.
    fn after_sync(&self, done: Vec<Completion>) {
        if let Err(mpsc::SendError(done)) = self.groups.send(done) {
            done.into_iter()
                .for_each(|d| d(Some("the WAL sync thread has stopped")));
        }
    }

    fn stop(self) {
        drop(self.groups);
        let _ = self.thread.join();
    }
}

fn sync_loop(dir: &Path, wal: &Path, rx: mpsc::Receiver<Vec<Completion>>, syncs: &AtomicU64) {
    let mut dir_synced = false;
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        // The file is opened for each sync: SQLite may cut it back, never replace it while it
        // is open, and an open costs little beside an fsync.
        let synced = std::fs::File::open(wal)
            .and_then(|f| f.sync_data())
            .and_then(|()| {
                if !dir_synced {
                    std::fs::File::open(dir)?.sync_all()?;
                    dir_synced = true;
                }
                Ok(())
            });
        if synced.is_ok() {
            syncs.fetch_add(1, Ordering::Relaxed);
        }
        let error = synced.err().map(|e| {
            tracing::error!(error = %e, "WAL sync failed; the writes it covered are answered with an error");
            format!("WAL sync failed: {e}")
        });
        for group in waiting {
            group.into_iter().for_each(|d| d(error.as_deref()));
        }
    }
}

fn write_loop(conn: Connection, rx: mpsc::Receiver<Command>, cap: WalCap, syncer: Option<Syncer>) {
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
            cap.before_commit();
            run_cached(&conn, "COMMIT").map_err(|e| e.to_string())
        };
        match outcome {
            Ok(()) => {
                match &syncer {
                    Some(syncer) => syncer.after_sync(done),
                    None => done.into_iter().for_each(|d| d(None)),
                }
                cap.after_commit(&conn);
            }
            Err(msg) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::error!(error = %msg, "group commit failed");
                done.into_iter().for_each(|d| d(Some(&msg)));
            }
        }
    }
    if let Some(syncer) = syncer {
        syncer.stop();
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

#[cfg(test)]
mod tests;
