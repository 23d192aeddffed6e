//! `KeyStore` and `AuditLog`: keys kept as digests, listed per tenant, revoked for good; the
//! audit trail per tenant in order, with a submit's entry written with its job (and not for a
//! repeat of an idempotent submit).

use crate::helpers::{job, Under};
use chrono::{Duration as Span, Utc};
use shared::domain::{Actor, ApiKey, IdempotencyKey, Role, Tenant};
use shared::ports::{AuditQuery, CreateWith, Created, Ports};
use std::time::Duration;

fn with_audit(entry: &shared::domain::AuditEntry) -> CreateWith {
    CreateWith {
        audit: Some(entry.clone()),
        ..Default::default()
    }
}

fn tenant(t: &str) -> Tenant {
    Tenant::parse(t).unwrap()
}

pub async fn api_keys_are_kept_as_digests_listed_by_tenant_and_revoked_for_good(b: Under) {
    // GIVEN two keys of tenant a and one of tenant b
    let now = Utc::now();
    let keys = &b.ports.keys;
    let mut made = vec![];
    for (t, role) in [
        ("a", Role::Reader),
        ("b", Role::Admin),
        ("a", Role::Submitter),
    ] {
        let (key, token) = ApiKey::generate(tenant(t), vec![role], format!("{t}-key"), None, now);
        keys.put_key(&key).await.unwrap();
        made.push((key, token));
    }
    // THEN each reads back as written, and opens only with its own secret
    for (key, token) in &made {
        let stored = keys.get_key(&key.id).await.unwrap().expect("stored");
        assert_eq!(&stored, key);
        let (_, secret) = ApiKey::split_token(token).unwrap();
        assert!(stored.check(secret, now).is_ok());
        assert!(!stored.secret_hash.contains(secret));
    }
    assert!(keys
        .get_key("01jf0000000000000000000000")
        .await
        .unwrap()
        .is_none());
    // AND a tenant's list holds only its keys, newest first; the full list holds all three
    let of_a: Vec<String> = keys
        .list_keys(Some(&tenant("a")))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(of_a, vec![made[2].0.id.clone(), made[0].0.id.clone()]);
    assert_eq!(keys.list_keys(None).await.unwrap().len(), 3);
    assert!(keys.any_live_key().await.unwrap());

    // WHEN a key is used, then revoked twice
    keys.touch_key(&made[0].0.id, now).await.unwrap();
    let first = keys
        .revoke_key(&made[0].0.id, now)
        .await
        .unwrap()
        .expect("revoked");
    let second = keys
        .revoke_key(&made[0].0.id, now + Span::seconds(5))
        .await
        .unwrap()
        .expect("still there");
    // THEN it stays revoked from the first time, with its use noted
    assert_eq!(first.revoked_at, Some(now));
    assert_eq!(second.revoked_at, Some(now));
    let stored = keys.get_key(&made[0].0.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(now));
    assert_eq!(stored.last_used_at, Some(now));
    assert!(keys
        .revoke_key("01jf0000000000000000000000", now)
        .await
        .unwrap()
        .is_none());
    // AND with every key revoked there is no live key
    for (key, _) in &made[1..] {
        keys.revoke_key(&key.id, now).await.unwrap();
    }
    assert!(!keys.any_live_key().await.unwrap());
}

pub async fn the_audit_trail_is_per_tenant_in_order_and_a_submit_is_written_with_its_job(b: Under) {
    // GIVEN entries of tenant a over three seconds, one of tenant b, one of nobody
    let audit = &b.ports.audit;
    let actor = Actor {
        actor: "jwt:alice".into(),
        source_ip: Some("192.0.2.1".into()),
    };
    let keep = Duration::from_secs(3600);
    let t0 = Utc::now() - Span::seconds(10);
    let mut of_a = vec![];
    for (i, action) in ["job.cancel", "job.retry", "key.create"].iter().enumerate() {
        let entry = actor.entry(
            Some(tenant("a")),
            action,
            None,
            "ok",
            t0 + Span::seconds(i as i64),
            keep,
        );
        audit.record(&entry).await.unwrap();
        of_a.push(entry);
    }
    audit
        .record(&actor.entry(Some(tenant("b")), "job.cancel", None, "ok", t0, keep))
        .await
        .unwrap();
    let refused = Actor {
        actor: "anonymous".into(),
        source_ip: None,
    }
    .entry(None, "auth", None, "unauthorized", t0, keep);
    audit.record(&refused).await.unwrap();
    // AND one already past its retention
    let mut old = actor.entry(Some(tenant("a")), "job.cancel", None, "ok", t0, keep);
    old.expires_at = Utc::now() - Span::seconds(1);
    audit.record(&old).await.unwrap();

    let query = |t: Option<&str>, since, limit| AuditQuery {
        tenant: t.map(tenant),
        since,
        limit,
    };
    // THEN a's trail is its three entries in order (the expired one left out)
    let read = audit
        .audit(&query(Some("a"), t0 - Span::seconds(1), 100))
        .await
        .unwrap();
    assert_eq!(read, of_a);
    // AND `since` and `limit` narrow it
    let later = audit
        .audit(&query(Some("a"), t0 + Span::milliseconds(500), 100))
        .await
        .unwrap();
    assert_eq!(later, of_a[1..]);
    let first = audit
        .audit(&query(Some("a"), t0 - Span::seconds(1), 1))
        .await
        .unwrap();
    assert_eq!(first, of_a[..1]);
    // AND refusals with no tenant are apart
    let anonymous = audit
        .audit(&query(None, t0 - Span::seconds(1), 100))
        .await
        .unwrap();
    assert_eq!(anonymous, vec![refused]);

    // WHEN a keyed job is created with its submit's entry, then submitted again
    let mut keyed = job("c", "noop");
    keyed.idempotency_key = Some(IdempotencyKey::parse("order-1").unwrap());
    let mut entry = actor.entry(
        Some(tenant("c")),
        "job.submit",
        Some(keyed.id),
        "ok",
        Utc::now(),
        keep,
    );
    assert!(matches!(
        b.ports
            .store
            .create_with(&keyed, &with_audit(&entry))
            .await
            .unwrap(),
        Created::New
    ));
    let again = job("c", "noop");
    let mut again = shared::domain::Job {
        idempotency_key: keyed.idempotency_key.clone(),
        ..again
    };
    again.id = shared::domain::JobId::for_tenant(&again.tenant);
    let repeat = actor.entry(
        Some(tenant("c")),
        "job.submit",
        Some(again.id),
        "ok",
        Utc::now(),
        keep,
    );
    assert!(matches!(
        b.ports
            .store
            .create_with(&again, &with_audit(&repeat))
            .await
            .unwrap(),
        Created::Existing(_)
    ));
    // AND a job without a key is created with its entry too
    let plain = job("c", "noop");
    let plain_entry = actor.entry(
        Some(tenant("c")),
        "job.submit",
        Some(plain.id),
        "ok",
        Utc::now(),
        keep,
    );
    b.ports
        .store
        .create_with(&plain, &with_audit(&plain_entry))
        .await
        .unwrap();
    // THEN the trail holds the first submit and the plain one, not the repeat
    let trail = audit.audit(&query(Some("c"), t0, 100)).await.unwrap();
    entry.job_id = Some(keyed.id);
    assert_eq!(trail, vec![entry, plain_entry]);
}

fn admit(max_active: Option<u64>, per_second: Option<u32>, window: i64) -> CreateWith {
    CreateWith {
        admission: shared::domain::Admission {
            max_active,
            per_second,
            window,
        },
        ..Default::default()
    }
}

fn slotted(t: &str) -> shared::domain::Job {
    let mut j = job(t, "noop");
    j.holds_slot = true;
    j
}

pub async fn a_quota_holds_across_processes_and_a_finished_job_gives_its_slot_back(
    b: Under,
    other: Ports,
) {
    // GIVEN a tenant allowed 3 unfinished jobs, and two processes sharing the store
    let stores = [b.ports.store.clone(), other.store.clone()];
    let with = admit(Some(3), None, 0);

    // WHEN 12 jobs are created through both, at once
    let jobs: Vec<_> = (0..12).map(|_| slotted("q")).collect();
    let runs = jobs.iter().enumerate().map(|(i, j)| {
        let (store, with) = (stores[i % 2].clone(), with.clone());
        async move { store.create_with(j, &with).await.unwrap() }
    });
    let outcomes = futures::future::join_all(runs).await;

    // THEN exactly 3 are stored and the rest refused, naming the quota
    let new: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Created::New))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(new.len(), 3, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Created::New | Created::OverQuota { max: 3 })));
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(
            b.ports.store.get(j.id).await.unwrap().is_some(),
            new.contains(&i)
        );
    }
    assert_eq!(b.ports.tenants.active_jobs(&tenant("q")).await.unwrap(), 3);

    // WHEN one of them is cancelled (it finishes)
    let held = &jobs[new[0]];
    let cancelled = held.cancel(Utc::now()).unwrap();
    b.ports
        .store
        .transition(held.expected(), &cancelled)
        .await
        .unwrap();
    // THEN its slot is free for exactly one more job
    assert_eq!(b.ports.tenants.active_jobs(&tenant("q")).await.unwrap(), 2);
    let (one, two) = (slotted("q"), slotted("q"));
    assert!(matches!(
        other.store.create_with(&one, &with).await.unwrap(),
        Created::New
    ));
    assert!(matches!(
        b.ports.store.create_with(&two, &with).await.unwrap(),
        Created::OverQuota { max: 3 }
    ));
    // AND a retry brings the cancelled job back into the count
    let retried = cancelled.retry(Utc::now()).unwrap();
    b.ports
        .store
        .transition(cancelled.expected(), &retried)
        .await
        .unwrap();
    assert_eq!(b.ports.tenants.active_jobs(&tenant("q")).await.unwrap(), 4);

    // AND a repeat of a keyed submit finds its job even with the quota used up
    let mut keyed = slotted("r");
    keyed.idempotency_key = Some(IdempotencyKey::parse("once").unwrap());
    let one_slot = admit(Some(1), None, 0);
    assert!(matches!(
        b.ports.store.create_with(&keyed, &one_slot).await.unwrap(),
        Created::New
    ));
    let mut again = slotted("r");
    again.idempotency_key = keyed.idempotency_key.clone();
    assert!(matches!(
        b.ports.store.create_with(&again, &one_slot).await.unwrap(),
        Created::Existing(_)
    ));
    assert!(matches!(
        b.ports
            .store
            .create_with(&slotted("r"), &one_slot)
            .await
            .unwrap(),
        Created::OverQuota { max: 1 }
    ));
}

pub async fn submissions_are_counted_per_second_and_refused_past_the_rate(b: Under) {
    // GIVEN a tenant allowed 2 submissions a second
    let window = Utc::now().timestamp();
    let with = admit(None, Some(2), window);
    // WHEN 5 jobs are created in one second
    let mut outcomes = vec![];
    for _ in 0..5 {
        outcomes.push(
            b.ports
                .store
                .create_with(&job("s", "noop"), &with)
                .await
                .unwrap(),
        );
    }
    // THEN 2 are stored, 3 refused; the next second takes 2 more
    let new = outcomes
        .iter()
        .filter(|o| matches!(o, Created::New))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Created::RateLimited { per_second: 2 }))
        .count();
    assert_eq!((new, refused), (2, 3), "{outcomes:?}");
    let next = admit(None, Some(2), window + 1);
    assert!(matches!(
        b.ports
            .store
            .create_with(&job("s", "noop"), &next)
            .await
            .unwrap(),
        Created::New
    ));
    // AND a job with no slot to hold leaves the active count alone
    assert_eq!(b.ports.tenants.active_jobs(&tenant("s")).await.unwrap(), 0);
}

pub async fn tenant_limits_are_stored_per_tenant(b: Under) {
    // GIVEN no limits stored
    let t = tenant("lim");
    assert_eq!(
        b.ports.tenants.limits(&t).await.unwrap(),
        Default::default()
    );
    // WHEN an admin sets some
    let limits = shared::domain::TenantLimits {
        max_active: Some(5),
        submits_per_second: None,
        max_payload_bytes: Some(1000),
        max_running: Some(3),
        max_schedules: Some(7),
    };
    b.ports.tenants.set_limits(&t, &limits).await.unwrap();
    // THEN they read back for that tenant only, and can be changed
    assert_eq!(b.ports.tenants.limits(&t).await.unwrap(), limits);
    assert_eq!(
        b.ports.tenants.limits(&tenant("other")).await.unwrap(),
        Default::default()
    );
    b.ports
        .tenants
        .set_limits(&t, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        b.ports.tenants.limits(&t).await.unwrap(),
        Default::default()
    );
}

pub async fn types_are_paused_per_tenant_or_for_all_and_resumed(b: Under) {
    use shared::domain::{JobType, Pause, PauseScope};
    let sleep = JobType::parse("sleep").unwrap();
    let noop = JobType::parse("noop").unwrap();
    let pause = |scope: PauseScope, t: &JobType, by: &str| Pause {
        scope,
        job_type: t.clone(),
        since: Utc::now(),
        by: by.into(),
    };
    // GIVEN nothing paused
    assert!(b.ports.pauses.pauses().await.unwrap().0.is_empty());
    // WHEN one tenant's admin pauses `sleep`, and an operator `noop` for every tenant
    let mine = PauseScope::Tenant(tenant("pa"));
    assert!(b
        .ports
        .pauses
        .pause(&pause(mine.clone(), &sleep, "admin"))
        .await
        .unwrap());
    assert!(b
        .ports
        .pauses
        .pause(&pause(PauseScope::All, &noop, "operator"))
        .await
        .unwrap());
    // THEN both read back, each holding whom it names
    let now = b.ports.pauses.pauses().await.unwrap();
    assert_eq!(now.0.len(), 2);
    assert!(now.holds(&tenant("pa"), "sleep"));
    assert!(!now.holds(&tenant("other"), "sleep"));
    assert!(now.holds(&tenant("other"), "noop") && now.everywhere("noop"));
    let first = now.holding(&tenant("pa"), "sleep").next().unwrap().clone();
    assert_eq!(first.by, "admin");
    // AND pausing again keeps the first pause (its moment and who)
    assert!(!b
        .ports
        .pauses
        .pause(&pause(mine.clone(), &sleep, "someone else"))
        .await
        .unwrap());
    let again = b.ports.pauses.pauses().await.unwrap();
    let pa = tenant("pa");
    let kept = again.holding(&pa, "sleep").next().unwrap();
    assert_eq!(
        (kept.by.as_str(), kept.since.timestamp()),
        ("admin", first.since.timestamp())
    );
    // WHEN the tenant's pause is resumed (and one that was never there)
    assert!(b.ports.pauses.resume(&mine, &sleep).await.unwrap());
    assert!(!b.ports.pauses.resume(&mine, &sleep).await.unwrap());
    assert!(!b
        .ports
        .pauses
        .resume(&PauseScope::Tenant(tenant("other")), &noop)
        .await
        .unwrap());
    // THEN only the operator's pause is left
    let left = b.ports.pauses.pauses().await.unwrap();
    assert!(!left.holds(&tenant("pa"), "sleep"));
    assert_eq!(left.0.len(), 1);
    assert!(left.everywhere("noop"));
}
