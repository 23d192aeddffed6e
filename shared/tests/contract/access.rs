//! `KeyStore` and `AuditLog`: keys kept as digests, listed per tenant, revoked for good; the
//! audit trail per tenant in order, with a submit's entry written with its job (and not for a
//! repeat of an idempotent submit).

use crate::helpers::{job, Under};
use chrono::{Duration as Span, Utc};
use shared::domain::{Actor, ApiKey, IdempotencyKey, Role, Tenant};
use shared::ports::{AuditQuery, Created};
use std::time::Duration;

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
            .create_audited(&keyed, Some(&entry))
            .await
            .unwrap(),
        Created::New
    ));
    let again = job("c", "noop");
    let mut again = shared::domain::Job {
        idempotency_key: keyed.idempotency_key.clone(),
        ..again
    };
    again.id = shared::domain::JobId::new();
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
            .create_audited(&again, Some(&repeat))
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
        .create_audited(&plain, Some(&plain_entry))
        .await
        .unwrap();
    // THEN the trail holds the first submit and the plain one, not the repeat
    let trail = audit.audit(&query(Some("c"), t0, 100)).await.unwrap();
    entry.job_id = Some(keyed.id);
    assert_eq!(trail, vec![entry, plain_entry]);
}
