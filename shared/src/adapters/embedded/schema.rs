//! The embedded database's tables, and the steps that bring a database made by an earlier
//! version up to them, applied in order on every open (each step a no-op once done).

/// Create what is missing and migrate what an earlier version made.
pub(super) fn apply(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(JOBS)?;
    migrate_jobs(conn)?;
    count_jobs(conn)?;
    list_members(conn)?;
    conn.execute_batch(MESSAGES)?;
    migrate_messages(conn)?;
    conn.execute_batch(ACCESS)?;
    migrate_access(conn)
}

// Jobs, their logs, steps, batches and waiters (`EmbeddedStore`).

const JOBS: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    version INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    doc TEXT NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    heartbeat_at INTEGER, -- nanoseconds
    progress TEXT,
    updated_at INTEGER NOT NULL DEFAULT 0 -- microseconds
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, id);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (tenant, status, id);
CREATE INDEX IF NOT EXISTS jobs_by_type ON jobs (tenant, type, id);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, due_at);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_steps (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    at INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_waiters (
    parent TEXT NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (parent, waiter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL, -- the batch as opened, then with its callbacks (counts: the columns)
    look_at INTEGER, -- microseconds; NULL once finished
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_due ON batches (look_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS quarantine_by_tenant ON quarantine (tenant);
";

/// Bring a database made by an earlier version up to `JOBS`: the worker-owned fields and the
/// run counter get columns of their own, filled from the documents.
fn migrate_jobs(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has = |column: &str| {
        conn.prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1")?
            .exists([column])
    };
    if !has("updated_at")? {
        // When each job last changed, for `updated_since`: taken from the document where it
        // has the time, else its creation (the document's `created_at` is always there).
        conn.execute_batch(
            "ALTER TABLE jobs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
             UPDATE jobs SET updated_at = COALESCE(
                 CAST(strftime('%s', json_extract(doc, '$.updated_at')) AS INTEGER) * 1000000,
                 CAST(strftime('%s', json_extract(doc, '$.created_at')) AS INTEGER) * 1000000, 0)
             WHERE json_valid(doc);",
        )?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (tenant, updated_at);")?;
    if has("runs")? {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE jobs ADD COLUMN heartbeat_at INTEGER;
         ALTER TABLE jobs ADD COLUMN progress TEXT;
         UPDATE jobs SET
             runs = COALESCE(json_extract(doc, '$.runs'), 0),
             heartbeat_at = CASE WHEN status = 'running' THEN due_at * 1000 END,
             progress = json_extract(doc, '$.progress')
         WHERE json_valid(doc);",
    )
}

/// Jobs counted per tenant, type and status, kept by triggers in the same commit as the job's
/// own change: a stats read is a few rows, and a status change moves two counters on one hot
/// page instead of an index entry among the jobs.
const COUNTS: &str = "
CREATE TABLE job_counts (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tenant, type, status)
) WITHOUT ROWID;
INSERT INTO job_counts (tenant, type, status, n)
    SELECT tenant, type, status, COUNT(*) FROM jobs GROUP BY tenant, type, status;
CREATE TRIGGER job_counted AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (tenant, type, status, n) VALUES (NEW.tenant, NEW.type, NEW.status, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER job_recounted AFTER UPDATE OF tenant, type, status ON jobs
    WHEN OLD.status IS NOT NEW.status OR OLD.type IS NOT NEW.type OR OLD.tenant IS NOT NEW.tenant
BEGIN
    UPDATE job_counts SET n = n - 1
        WHERE tenant = OLD.tenant AND type = OLD.type AND status = OLD.status;
    INSERT INTO job_counts (tenant, type, status, n) VALUES (NEW.tenant, NEW.type, NEW.status, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER job_uncounted AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1
        WHERE tenant = OLD.tenant AND type = OLD.type AND status = OLD.status;
END;
DROP INDEX IF EXISTS jobs_stats;
";

/// Make `job_counts` (filled from the jobs there are, with its triggers) where an earlier
/// version counted with an index: all of it in one transaction, so it is made whole or not.
fn count_jobs(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let counted = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'job_counts'")?
        .exists([])?;
    if counted {
        return Ok(());
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {COUNTS} COMMIT;"))
}

/// Batches' members, a row each, written with the member (`batch_members`).
const MEMBERS: &str = "
CREATE TABLE batch_members (
    batch TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (batch, job_id)
) WITHOUT ROWID;
INSERT INTO batch_members (batch, job_id)
    SELECT json_extract(doc, '$.batch_id'), id FROM jobs
    WHERE json_valid(doc) AND json_extract(doc, '$.batch_id') IS NOT NULL;
";

/// Make `batch_members` (filled from the members there are) where an earlier version kept none:
/// in one transaction, so it is made whole or not.
fn list_members(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let listed = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batch_members'")?
        .exists([])?;
    if listed {
        return Ok(());
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {MEMBERS} COMMIT;"))
}

// The queues' messages (`EmbeddedQueue`).

const MESSAGES: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    priority INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_since INTEGER
);
";

/// Bring an earlier version's `messages` table up to `MESSAGES`: dead letters get the time they
/// entered their dead-letter queue (taken as now for those already there), and an index on it.
fn migrate_messages(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has_dead_since: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'dead_since'")?
        .exists([])?;
    if !has_dead_since {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN dead_since INTEGER;")?;
        conn.execute(
            "UPDATE messages SET dead_since = ?1 WHERE queue LIKE '%-dlq'",
            [chrono::Utc::now().timestamp_micros()],
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_dead ON messages (queue, dead_since)
         WHERE dead_since IS NOT NULL;",
    )
}

// Keys, the audit trail, tenants' settings and usage, and schedules (`EmbeddedAccess`, `schedules`).

const ACCESS: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, -- time-ordered: a new entry is appended at the end
    tenant TEXT NOT NULL, -- '' for callers who could not be identified
    at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
CREATE TABLE IF NOT EXISTS tenant_limits (
    tenant TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenant_usage (
    tenant TEXT PRIMARY KEY,
    active INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_keys (
    tenant TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    due_at INTEGER, -- micros: when the scheduler next has something to do for it; NULL unknown
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS start_rates (
    key TEXT PRIMARY KEY,
    tat INTEGER NOT NULL -- micros: the theoretical arrival time of the next start (GCRA)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS debounces (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires INTEGER NOT NULL -- micros: forgotten after this
) WITHOUT ROWID;
-- Running slots are kept in memory now (`slots.rs`); an earlier version kept them here.
DROP TABLE IF EXISTS slot_line;
DROP TABLE IF EXISTS running_slots;
CREATE TABLE IF NOT EXISTS submit_windows (
    tenant TEXT NOT NULL,
    second INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tenant, second)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paused_types (
    scope TEXT NOT NULL, -- the tenant, or '*' for every tenant
    type TEXT NOT NULL,
    since INTEGER NOT NULL, -- micros
    by TEXT NOT NULL,
    PRIMARY KEY (scope, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS external_types (
    scope TEXT NOT NULL, -- the tenant, or '*' for every tenant
    name TEXT NOT NULL,
    doc TEXT NOT NULL, -- the declaration (domain::ExternalType) as JSON
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS type_minutes (
    tenant TEXT NOT NULL,
    minute INTEGER NOT NULL, -- the minute's start, seconds since the epoch
    type TEXT NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL, -- failed or dead
    runs TEXT NOT NULL, -- JSON array: runs per bucket of RUN_BOUNDS_MS
    PRIMARY KEY (tenant, minute, type)
) WITHOUT ROWID;
";

/// Bring an earlier version's `schedules` table up to `ACCESS`: each row's `due_at` unknown
/// (read by the next pass, and set as it is written again), and an index on it.
fn migrate_access(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has_due_at: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('schedules') WHERE name = 'due_at'")?
        .exists([])?;
    if !has_due_at {
        conn.execute_batch("ALTER TABLE schedules ADD COLUMN due_at INTEGER;")?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS schedules_due ON schedules (due_at);")
}
