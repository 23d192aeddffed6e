//! Flow control on every backend: a start rate shared by every process, running slots given
//! back or expired, debounced submits replacing the waiting job, and jobs waiting for a slot
//! getting it in submit order.

use crate::helpers::Under;
use crate::schedules::{service, utc};
use chrono::{Duration, Utc};
use serde_json::json;
use shared::domain::{JobId, JobType, Tenant};
use shared::jobs::{BuiltinSettings, Registry};
use shared::ports::{ListQuery, Ports, Started};
use shared::service::JobService;
use std::sync::Arc;

pub async fn a_start_rate_is_shared_by_every_process_and_admits_no_start_past_it(
    b: Under,
    other: Ports,
) {
    use shared::ports::RateDecision::{Admitted, WaitUntil};
    let t0 = utc("2030-01-01T00:00:00Z");
    let ms = |n: i64| t0 + Duration::milliseconds(n);
    let second = std::time::Duration::from_secs(1);
    let key = format!("type:rated-{}", crate::helpers::unique());
    // GIVEN one start a second: one process starts at t0
    assert_eq!(
        b.ports.rates.admit(&key, second, 1, t0).await.unwrap(),
        Admitted
    );
    // THEN the other may not until t0 + 1 s, and then may
    assert_eq!(
        other.rates.admit(&key, second, 1, ms(500)).await.unwrap(),
        WaitUntil(ms(1000))
    );
    assert_eq!(
        other.rates.admit(&key, second, 1, ms(1000)).await.unwrap(),
        Admitted
    );
    assert_eq!(
        b.ports
            .rates
            .admit(&key, second, 1, ms(1500))
            .await
            .unwrap(),
        WaitUntil(ms(2000))
    );
    // AND three a three seconds lets three through at once, the fourth a second later
    let burst = format!("type:burst-{}", crate::helpers::unique());
    for _ in 0..3 {
        assert_eq!(
            b.ports.rates.admit(&burst, second, 3, t0).await.unwrap(),
            Admitted
        );
    }
    assert_eq!(
        other.rates.admit(&burst, second, 3, t0).await.unwrap(),
        WaitUntil(ms(1000))
    );
    // AND eight processes asking at the same moment: one is admitted
    let raced = format!("type:raced-{}", crate::helpers::unique());
    let asks: Vec<_> = (0..8)
        .map(|i| {
            let ports = if i % 2 == 0 {
                b.ports.clone()
            } else {
                other.clone()
            };
            let key = raced.clone();
            tokio::spawn(async move { ports.rates.admit(&key, second, 1, t0).await })
        })
        .collect();
    let mut admitted = 0;
    for ask in asks {
        if matches!(ask.await.unwrap(), Ok(Admitted)) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 1);
}

pub async fn running_slots_are_shared_by_every_process_and_free_when_given_back_or_expired(
    b: Under,
    other: Ports,
) {
    let t0 = utc("2030-01-01T00:00:00Z");
    let key = format!("type:keyed#key:t/{}", crate::helpers::unique());
    let (one, two, three) = (JobId::new(), JobId::new(), JobId::new());
    let lease = t0 + Duration::seconds(60);
    use shared::ports::SlotTake::{AlreadyHeld, Full, Taken};
    // GIVEN two slots a key: two jobs take them from two processes
    assert_eq!(
        b.ports.slots.take(&key, one, 2, lease, t0).await.unwrap(),
        Taken
    );
    assert_eq!(
        other.slots.take(&key, two, 2, lease, t0).await.unwrap(),
        Taken
    );
    // THEN a third is refused, and a holder asking again (a duplicate delivery) is told it
    // holds one already
    assert_eq!(
        b.ports.slots.take(&key, three, 2, lease, t0).await.unwrap(),
        Full
    );
    assert_eq!(
        other.slots.take(&key, one, 2, lease, t0).await.unwrap(),
        AlreadyHeld
    );
    // WHEN one is given back, the third gets it
    b.ports.slots.release(&key, one).await.unwrap();
    assert_eq!(
        other.slots.take(&key, three, 2, lease, t0).await.unwrap(),
        Taken
    );
    // AND a slot whose lease ran out (its worker died) is free again
    let later = lease + Duration::seconds(1);
    assert_eq!(
        b.ports
            .slots
            .take(&key, one, 2, later + Duration::seconds(60), later)
            .await
            .unwrap(),
        Taken
    );
    // AND giving back a slot not held changes nothing
    b.ports.slots.release(&key, JobId::new()).await.unwrap();
}

fn debounced(key: &str, n: u64) -> shared::service::SubmitRequest {
    shared::service::SubmitRequest {
        debounce: Some(shared::domain::Debounce {
            key: shared::domain::ConcurrencyKey::parse(key).unwrap(),
            window: std::time::Duration::from_secs(2),
            max_wait: None,
        }),
        ..shared::service::SubmitRequest::new(JobType::parse("noop").unwrap(), json!({ "n": n }))
    }
}

pub async fn debounced_submits_replace_the_waiting_job_until_it_starts(b: Under) {
    let svc = service(&b);
    let tenant = Tenant::parse(format!("t{}", crate::helpers::unique())).unwrap();
    // GIVEN 50 submits with one debounce key (a 2 s window)
    let mut ids = vec![];
    let mut last_submit = Utc::now();
    for n in 0..50 {
        last_submit = Utc::now();
        let (job, new) = svc.submit(tenant.clone(), debounced("k", n)).await.unwrap();
        assert_eq!(new, n == 0, "only the first submit makes a job");
        ids.push(job.id);
    }
    // THEN they are one job, with the last payload, due 2 s after the last submit
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let job = svc.get(&tenant, ids[0]).await.unwrap();
    assert_eq!(job.payload, json!({ "n": 49 }));
    assert_eq!(job.status, shared::domain::JobStatus::Queued);
    assert!(job.run_at >= last_submit + Duration::seconds(2), "{job:?}");
    let listed = b
        .ports
        .store
        .list(&ListQuery {
            tenant: tenant.clone(),
            status: None,
            job_type: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "one job: {listed:?}");
    // AND another key is a job of its own
    let (other, new) = svc
        .submit(tenant.clone(), debounced("k2", 0))
        .await
        .unwrap();
    assert!(new && other.id != job.id);
    // WHEN the job starts, the next submit with the key makes a new job
    let started = b
        .ports
        .store
        .start(job.id, job.run_at, job.run_at)
        .await
        .unwrap();
    assert!(matches!(started, Started::Running(_)), "{started:?}");
    let (next, new) = svc
        .submit(tenant.clone(), debounced("k", 50))
        .await
        .unwrap();
    assert!(
        new && next.id != job.id,
        "a started job takes no more payloads"
    );
    assert_eq!(
        svc.get(&tenant, job.id).await.unwrap().payload,
        json!({ "n": 49 })
    );
    // AND submits at once from two processes make one job between them
    let other_svc = JobService::new(
        b.another_process().await,
        Arc::new(Registry::builtin("sched-", &BuiltinSettings::default())),
        shared::config::MAX_PAYLOAD_LIMIT,
    );
    let (svc, other_svc) = (Arc::new(svc), Arc::new(other_svc));
    let submits = (0..8).map(|n| {
        let s = if n % 2 == 0 {
            svc.clone()
        } else {
            other_svc.clone()
        };
        let tenant = tenant.clone();
        tokio::spawn(async move { s.submit(tenant, debounced("together", n)).await })
    });
    let mut made = std::collections::BTreeSet::new();
    for t in futures::future::join_all(submits).await {
        made.insert(t.unwrap().unwrap().0.id);
    }
    assert_eq!(made.len(), 1, "concurrent submits made {made:?}");
}

pub async fn jobs_waiting_for_a_slot_get_it_in_submit_order(b: Under) {
    use shared::ports::SlotTake::{Full, Taken};
    let other = b.another_process().await;
    let t0 = utc("2030-01-01T00:00:00Z");
    let key = format!("type:keyed#key:t/{}", crate::helpers::unique());
    let lease = t0 + Duration::seconds(60);
    // (Ids sort in the order they were made: the order of submits.)
    let [zero, one, two, three, four] = [(); 5].map(|()| JobId::new());
    // GIVEN the key's one slot held, and three jobs asking for it, the newest first
    assert_eq!(
        b.ports.slots.take(&key, one, 1, lease, t0).await.unwrap(),
        Taken
    );
    assert_eq!(
        other.slots.take(&key, four, 1, lease, t0).await.unwrap(),
        Full
    );
    assert_eq!(
        b.ports.slots.take(&key, three, 1, lease, t0).await.unwrap(),
        Full
    );
    assert_eq!(
        other.slots.take(&key, two, 1, lease, t0).await.unwrap(),
        Full
    );
    // WHEN the slot is given back
    b.ports.slots.release(&key, one).await.unwrap();
    // THEN a newer job asking first is still refused: the slot is kept for the oldest in line
    let t1 = t0 + Duration::seconds(1);
    assert_eq!(
        other.slots.take(&key, four, 1, lease, t1).await.unwrap(),
        Full
    );
    assert_eq!(
        b.ports.slots.take(&key, three, 1, lease, t1).await.unwrap(),
        Full
    );
    assert_eq!(
        other.slots.take(&key, two, 1, lease, t1).await.unwrap(),
        Taken
    );
    b.ports.slots.release(&key, two).await.unwrap();
    assert_eq!(
        b.ports.slots.take(&key, three, 1, lease, t1).await.unwrap(),
        Taken
    );
    b.ports.slots.release(&key, three).await.unwrap();
    // AND a place in line not asked for again within its lease is gone: an older job that
    // asked once and went away does not hold the slot back
    assert_eq!(
        other.slots.take(&key, zero, 1, lease, t1).await.unwrap(),
        Taken
    );
    b.ports.slots.release(&key, zero).await.unwrap();
    let t2 = t1 + Duration::seconds(1);
    let gone = t2 + Duration::from_std(shared::ports::SLOT_LINE_LEASE).unwrap();
    assert_eq!(
        b.ports
            .slots
            .take(&key, one, 1, gone + Duration::seconds(60), t2)
            .await
            .unwrap(),
        Taken
    );
    assert_eq!(
        other.slots.take(&key, zero, 1, lease, t2).await.unwrap(),
        Full
    );
    b.ports.slots.release(&key, one).await.unwrap();
    let later = gone + Duration::seconds(1);
    assert_eq!(
        b.ports
            .slots
            .take(&key, four, 1, later + Duration::seconds(60), later)
            .await
            .unwrap(),
        Taken
    );
}
