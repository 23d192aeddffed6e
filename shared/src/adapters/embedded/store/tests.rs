//! The embedded store's own tests: what only its rows can show (an unreadable document).

use super::*;
use crate::domain::{Backoff, JobType, NewJob};
use std::time::Duration;

fn job_at(tenant: &str, at: DateTime<Utc>) -> Job {
    Job::create(
        NewJob {
            tenant: Tenant::parse(tenant).unwrap(),
            job_type: JobType::parse("noop").unwrap(),
            priority: 0,
            payload: serde_json::json!({}),
            max_attempts: 1,
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
            timeout: Duration::from_secs(1),
            retention: Duration::from_secs(1),
            idempotency_key: None,
            request_fingerprint: None,
            run_at: at,
        },
        at,
    )
}

fn store() -> (tempfile::TempDir, Db, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), super::super::Durability::Process).unwrap();
    let store = EmbeddedStore::new(db.clone());
    (dir, db, store)
}

/// Write `n` rows that cannot be read, for `tenant`, with ids `<prefix><n>`, in `status`,
/// due at `due_at`.
async fn insert_unreadable(
    db: &Db,
    tenant: &str,
    prefix: &str,
    n: usize,
    status: &str,
    due_at: i64,
) {
    let (tenant, prefix, status) = (tenant.to_string(), prefix.to_string(), status.to_string());
    db.write(move |c| {
        for i in 0..n {
            c.execute(
                "INSERT INTO jobs (id, tenant, type, status, attempt, version, due_at, doc)
                 VALUES (?1, ?2, 'noop', ?3, 1, 1, ?4, 'not json')",
                params![format!("{prefix}{i:05}"), tenant, status, due_at],
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unreadable_rows_never_end_a_sweep_early() {
    // GIVEN 3 stalled running jobs, due after more unreadable running rows than a sweep's
    // page (the old sweep stopped at the first short page and never reached them)
    let (_dir, db, store) = store();
    let long_ago = Utc::now() - chrono::Duration::seconds(600);
    let mut stalled = vec![];
    for _ in 0..3 {
        let job = job_at("t", long_ago);
        store.create(&job).await.unwrap();
        let running = job.start(long_ago).unwrap();
        store.transition(job.expected(), &running).await.unwrap();
        stalled.push(job.id);
    }
    insert_unreadable(&db, "t", "bad", 600, "running", micros(long_ago) - 1).await;

    // WHEN maintenance asks for stalled jobs a page of 500 at a time
    let due = store
        .due(JobStatus::Running, Utc::now(), 500)
        .await
        .unwrap();

    // THEN the page holds every readable stalled job
    let mut found: Vec<_> = due.iter().map(|j| j.id).collect();
    found.sort();
    stalled.sort();
    assert_eq!(found, stalled);
}

#[tokio::test]
async fn unreadable_rows_are_quarantined_counted_and_kept() {
    // GIVEN two readable jobs and, between them in listing order, 5 unreadable rows
    let (_dir, db, store) = store();
    let now = Utc::now();
    let older = job_at("t", now);
    store.create(&older).await.unwrap();
    // (`<older id>~…` sorts right after `older`, and before any later id)
    let prefix = format!("{}~", older.id);
    insert_unreadable(&db, "t", &prefix, 5, "queued", micros(now)).await;
    insert_unreadable(&db, "u", "other", 1, "queued", micros(now)).await;
    let newer = job_at("t", now);
    store.create(&newer).await.unwrap();

    // WHEN the tenant's jobs are listed two to a page
    let query = |before| ListQuery {
        tenant: Tenant::parse("t").unwrap(),
        status: None,
        job_type: None,
        before,
        limit: 2,
    };
    let page = store.list(&query(None)).await.unwrap();

    // THEN the page is full: both readable jobs, none of the unreadable rows
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![newer.id, older.id]
    );
    // AND the unreadable rows are kept in quarantine, counted in the tenant's stats
    let stats = store.stats(&Tenant::parse("t").unwrap()).await.unwrap();
    assert_eq!(stats.quarantined, 5);
    assert_eq!(stats.rows.iter().map(|r| r.count).sum::<u64>(), 2);
    let kept: i64 = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM quarantine WHERE doc = 'not json'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(kept, 5);
    // AND another tenant's unreadable row, never read, is neither moved nor counted for `t`
    assert_eq!(store.stats_of(None).await.unwrap().quarantined, 5);
    let all = store
        .list(&ListQuery {
            limit: 10,
            ..query(None)
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
}

#[tokio::test]
async fn get_of_an_unreadable_row_quarantines_it() {
    // GIVEN a job whose document was damaged
    let (_dir, db, store) = store();
    let job = job_at("t", Utc::now());
    store.create(&job).await.unwrap();
    let id = job.id.to_string();
    db.write(move |c| {
        c.execute("UPDATE jobs SET doc = '{\"id\": 1' WHERE id = ?1", [&id])?;
        Ok(())
    })
    .await
    .unwrap();

    // WHEN it is read
    let got = store.get(job.id).await.unwrap();

    // THEN it is not returned, and it is counted as quarantined, not lost
    assert!(got.is_none());
    let stats = store.stats(&job.tenant).await.unwrap();
    assert_eq!((stats.quarantined, stats.rows.len()), (1, 0));
}

#[tokio::test]
async fn a_database_counted_by_index_opens_with_its_jobs_counted() {
    // GIVEN a database as an earlier version left it: jobs counted through an index, no
    // counters table
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, store) = {
            let db = Db::open(dir.path(), super::super::Durability::Process).unwrap();
            (db.clone(), EmbeddedStore::new(db))
        };
        let now = Utc::now();
        for tenant in ["a", "a", "b"] {
            store.create(&job_at(tenant, now)).await.unwrap();
        }
        let job = job_at("a", now);
        store.create(&job).await.unwrap();
        store
            .transition(job.expected(), &job.start(now).unwrap())
            .await
            .unwrap();
        db.write(|c| {
            c.execute_batch(
                "DROP TRIGGER job_counted; DROP TRIGGER job_recounted; DROP TRIGGER job_uncounted;
                 DROP TABLE job_counts;
                 CREATE INDEX jobs_stats ON jobs (tenant, type, status);",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        db.close().await;
    }

    // WHEN this version opens it
    let db = Db::open(dir.path(), super::super::Durability::Process).unwrap();
    let store = EmbeddedStore::new(db.clone());

    // THEN its jobs are counted as they are, the index is gone, and changes are counted on
    let counts = |stats: StoreStats| {
        stats
            .rows
            .iter()
            .map(|r| (r.status, r.count))
            .collect::<Vec<_>>()
    };
    let a = Tenant::parse("a").unwrap();
    assert_eq!(
        counts(store.stats(&a).await.unwrap()),
        vec![(JobStatus::Queued, 2), (JobStatus::Running, 1)]
    );
    assert_eq!(
        counts(store.stats_of(None).await.unwrap()),
        vec![(JobStatus::Queued, 3), (JobStatus::Running, 1)]
    );
    let index: bool = db
        .read(|c| {
            Ok(
                c.prepare("SELECT 1 FROM sqlite_master WHERE name = 'jobs_stats'")?
                    .exists([])?,
            )
        })
        .await
        .unwrap();
    assert!(!index, "the counting index was dropped");
    store.create(&job_at("a", Utc::now())).await.unwrap();
    assert_eq!(
        counts(store.stats(&a).await.unwrap()),
        vec![(JobStatus::Queued, 3), (JobStatus::Running, 1)]
    );
}

#[tokio::test]
async fn a_database_without_member_rows_opens_with_its_batches_members_listed() {
    // GIVEN a database as an earlier version left it: a batch's members known only from their
    // documents
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let batch = Batch::new(Tenant::parse("a").unwrap(), None, None, now);
    let mut members = vec![];
    {
        let db = Db::open(dir.path(), super::super::Durability::Process).unwrap();
        let store = EmbeddedStore::new(db.clone());
        store.open_batch(&batch).await.unwrap();
        for _ in 0..3 {
            let mut job = job_at("a", now);
            job.batch_id = Some(batch.id);
            store.create(&job).await.unwrap();
            members.push(job.id);
        }
        store.create(&job_at("a", now)).await.unwrap();
        db.write(|c| {
            c.execute_batch("DROP TABLE batch_members;")?;
            Ok(())
        })
        .await
        .unwrap();
        db.close().await;
    }

    // WHEN this version opens it
    let store =
        EmbeddedStore::new(Db::open(dir.path(), super::super::Durability::Process).unwrap());

    // THEN the batch lists those members, and the ones that join from now on after them
    let mut later = job_at("a", Utc::now());
    later.batch_id = Some(batch.id);
    store.create(&later).await.unwrap();
    members.push(later.id);
    let page = store.batch_members(batch.id, None, 10).await.unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), members);
    assert_eq!(page.next, None);
}
