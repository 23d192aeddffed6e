//! The database's tests: the writer, its queue, the reader pools, the WAL's limit and power durability.

use super::*;
use std::time::Duration;

#[tokio::test]
async fn with_power_durability_a_write_is_answered_only_after_a_sync_that_covers_it() {
    for (durability, synced) in [(Durability::Power, true), (Durability::Process, false)] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), durability).unwrap();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x)")?))
            .await
            .unwrap();
        for i in 1..=5u64 {
            // WHEN a write is answered
            db.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [i])?))
                .await
                .unwrap();
            // THEN (power) a sync started after its commit has ended: one more at least
            // than the writes answered before it; (process) none is made
            let syncs = db.wal_syncs();
            if synced {
                assert!(syncs > i, "write {i} answered after {syncs} syncs");
            } else {
                assert_eq!(syncs, 0);
            }
        }
        db.close().await;
    }
}

/// Hold `n` scan connections with reads that wait until the returned sender is dropped.
async fn hold_scans(db: &Db, n: usize) -> (mpsc::Sender<()>, Vec<tokio::task::JoinHandle<()>>) {
    let (release, wait) = mpsc::channel::<()>();
    let wait = Arc::new(Mutex::new(wait));
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut reads = vec![];
    for _ in 0..n {
        let (db, wait, held_tx) = (db.clone(), wait.clone(), held_tx.clone());
        reads.push(tokio::spawn(async move {
            db.read(move |_| {
                let _ = held_tx.send(());
                let _ = wait.lock().unwrap().recv();
                Ok(())
            })
            .await
            .unwrap();
        }));
    }
    for _ in 0..n {
        held_rx.recv().await.unwrap();
    }
    (release, reads)
}

#[tokio::test(flavor = "current_thread")]
async fn long_scans_do_not_hold_up_point_reads_or_writes() {
    // GIVEN every scan connection held by a long read (a listing that takes its time)
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Durability::Process).unwrap();
    let (release, reads) = hold_scans(&db, SCAN_READERS).await;

    // WHEN point reads and writes run meanwhile, on the one async thread there is
    let work = async {
        db.write(|c| {
            c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")?;
            Ok(())
        })
        .await
        .unwrap();
        let n: i64 = db
            .read_point(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        n
    };

    // THEN they finish while the long reads are still held (a blocked thread would hang here)
    let n = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("point reads and writes finish while scans are held");
    assert_eq!(n, 0);
    assert!(
        reads.iter().all(|r| !r.is_finished()),
        "the scans were held throughout"
    );
    drop(release);
    for r in reads {
        r.await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_scan_waits_for_a_connection_without_blocking_the_thread() {
    // GIVEN every scan connection held
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Durability::Process).unwrap();
    let (release, reads) = hold_scans(&db, SCAN_READERS).await;

    // WHEN one more scan is asked for, and meanwhile a timer should fire on this thread
    let extra = tokio::spawn({
        let db = db.clone();
        async move { db.read(|_| Ok(())).await.unwrap() }
    });
    let timer_fired = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::time::sleep(Duration::from_millis(10)),
    )
    .await;

    // THEN the thread stayed free (the timer fired) and the scan is still waiting its turn
    assert!(timer_fired.is_ok());
    assert!(!extra.is_finished());
    drop(release);
    extra.await.unwrap();
    for r in reads {
        r.await.unwrap();
    }
}

#[tokio::test]
async fn a_full_writer_refuses_new_work_and_keeps_what_it_accepted() {
    // GIVEN a writer with room for 4 waiting writes, held up by a slow write
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Durability::Process, WAL_RESTART_BYTES, 4).unwrap();
    db.write(|c| {
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)")?;
        Ok(())
    })
    .await
    .unwrap();
    let (release, wait) = mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let slow = tokio::spawn({
        let db = db.clone();
        async move {
            db.write(move |_| {
                let _ = started_tx.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        }
    });
    started.await.unwrap();
    // AND 4 accepted writes waiting behind it
    let accepted: Vec<_> = (0..4)
        .map(|k| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write_new(move |c| {
                    c.execute("INSERT INTO t (k) VALUES (?1)", [k])?;
                    Ok(())
                })
                .await
            })
        })
        .collect();
    while db.inner.write_room.available_permits() > 0 {
        tokio::task::yield_now().await;
    }

    // WHEN one more new write comes
    let refused = db
        .write_new(|c| {
            c.execute("INSERT INTO t (k) VALUES (99)", [])?;
            Ok(())
        })
        .await;

    // THEN it is refused at once as busy
    assert!(matches!(refused, Err(DbError::Busy(4))), "{refused:?}");
    // AND once the writer moves on, every accepted write is committed and the refused one
    // is nowhere
    drop(release);
    slow.await.unwrap().unwrap();
    for a in accepted {
        a.await.unwrap().unwrap();
    }
    let keys: Vec<i64> = db
        .read(|c| {
            let mut s = c.prepare("SELECT k FROM t ORDER BY k")?;
            let keys = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(keys)
        })
        .await
        .unwrap();
    assert_eq!(keys, vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_starts_over_after_the_commit_that_passes_its_limit() {
    // GIVEN a database whose WAL should start over past 256 KiB, its checkpointer running
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Durability::Process, 256 * 1024, WRITE_QUEUE).unwrap();
    db.write(|c| {
        c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")?;
        Ok(())
    })
    .await
    .unwrap();

    // WHEN 8 writers commit 2,000 rows of 4 KiB without pause (about 40 times the limit)
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    db.write(move |c| {
                        c.execute(
                            "INSERT INTO t (k, v) VALUES (?1, zeroblob(4096))",
                            [w * 1000 + i],
                        )?;
                        Ok(())
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }

    // THEN no commit ever started on a log already past the limit: each time one passed
    // it, the log started over before the next commit, checkpointer or not
    let (limit, peak) = db.wal_frames();
    assert!(peak > 0, "the log grew");
    assert!(
        peak < limit,
        "a commit started on {peak} frames; the limit is {limit}"
    );
}
