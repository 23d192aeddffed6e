//! The AWS layout where scale shows: how one tenant's jobs spread over partition keys, and
//! writes that really run at once on the emulator (LocalStack's DynamoDB runs them concurrently
//! and cancels transactions that meet on one item; moto serves one request at a time): a
//! batch's members ending together, submits racing for a quota's last places, and a batch too
//! large for one transaction.

use crate::helpers::{job, moto_under, Under};
use serde_json::{json, Value};
use shared::adapters::aws::{AwsBackend, RequestCounter};
use shared::domain::{CallbackSpec, JobStatus, JobType, Outcome, Tenant, TenantLimits};
use shared::jobs::{BuiltinSettings, Registry};
use shared::lifecycle::{Change, Lifecycle};
use shared::service::{BatchSpec, JobService, ServiceError, SubmitRequest};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

fn aws(b: &Under) -> &AwsBackend {
    b.aws().expect("an AWS backend")
}

fn service(b: &Under) -> (JobService, Arc<Registry>) {
    let registry = Arc::new(Registry::builtin("scale-", &BuiltinSettings::default()));
    let service = JobService::new(
        b.ports.clone(),
        registry.clone(),
        shared::config::MAX_PAYLOAD_LIMIT,
    );
    (service, registry)
}

/// Every item of the table (or of its `due` index) as stored, read by a Scan: the test's own
/// look at what the adapters wrote (no code path of theirs scans).
async fn scan(
    b: &Under,
    index: Option<&str>,
) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let (client, table) = (aws(b).dynamodb(), aws(b).settings().table.clone());
    let mut items = vec![];
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(&table)
            .set_index_name(index.map(str::to_string))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return items,
        }
    }
}

fn heaviest(
    items: &[HashMap<String, aws_sdk_dynamodb::types::AttributeValue>],
    key: &str,
    prefix: &str,
) -> (usize, usize, usize) {
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for item in items {
        if let Some(v) = item.get(key).and_then(|v| v.as_s().ok()) {
            if v.starts_with(prefix) {
                *per_key.entry(v.clone()).or_default() += 1;
            }
        }
    }
    let total = per_key.values().sum();
    (
        total,
        per_key.len(),
        per_key.values().copied().max().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_jobs_spread_so_that_no_partition_key_holds_more_than_an_eighth() {
    // GIVEN 1,000 jobs of one tenant, written as a batch submit writes them: 800 to run now,
    // 200 scheduled for tomorrow (those are in the `due` index)
    let b = moto_under().await;
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let jobs: Vec<_> = (0..1000)
        .map(|i| {
            let mut j = job("one-tenant", "noop");
            if i % 5 == 0 {
                j.run_at = later;
                j.status = JobStatus::Scheduled;
            }
            j
        })
        .collect();
    for chunk in jobs.chunks(250) {
        b.ports
            .store
            .create_batch(chunk, None, false)
            .await
            .unwrap();
    }

    // WHEN the table and its index are read back as stored
    let (in_table, table_keys, table_max) = heaviest(&scan(&b, None).await, "pk", "J#");
    let (in_index, index_keys, index_max) = heaviest(&scan(&b, Some("due")).await, "due_pk", "");

    // THEN every job is in the table, spread over the shards so that no partition key value
    // holds more than 1/8 of them; and likewise the scheduled ones in the index
    assert_eq!(in_table, 1000);
    assert!(
        table_max <= 1000 / 8,
        "{table_max} of 1,000 jobs under one key ({table_keys} keys)"
    );
    assert!(table_keys >= 8, "{table_keys} keys");
    assert_eq!(in_index, 200);
    assert!(
        index_max <= 1000 / 8,
        "{index_max} under one index key ({index_keys} keys)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_batch_ending_at_once_give_exact_counts_and_one_on_complete() {
    // GIVEN a batch of 50 members with an on_complete callback, every member running
    let b = moto_under().await;
    let (service, registry) = service(&b);
    let tenant = Tenant::parse("batch-at-once").unwrap();
    let noop = JobType::parse("noop").unwrap();
    let batch = service
        .open_batch(
            &tenant,
            BatchSpec {
                on_complete: Some(CallbackSpec {
                    job_type: noop.clone(),
                    payload: Value::Null,
                    priority: 0,
                    max_attempts: None,
                }),
                on_success: None,
            },
        )
        .await
        .unwrap();
    let members = service
        .submit_batch_in(
            tenant.clone(),
            (0..50)
                .map(|_| SubmitRequest::new(noop.clone(), json!({})))
                .collect(),
            false,
            None,
            Some(batch.id),
        )
        .await
        .unwrap();
    let mut running = vec![];
    for member in members {
        let (job, _) = member.unwrap();
        let now = chrono::Utc::now();
        match b.ports.store.start(job.id, now, now).await.unwrap() {
            shared::ports::Started::Running(job) => running.push(*job),
            other => panic!("not started: {other:?}"),
        }
    }

    // WHEN all 50 end at the same moment
    let lifecycle = Lifecycle::new(&b.ports, &registry);
    let now = chrono::Utc::now();
    let ends = running.iter().map(|job| {
        let done = job
            .finish(Outcome::Succeeded(Value::Null), now, 0.5)
            .unwrap();
        let change = Change::of(job, done);
        async move { lifecycle.apply(&change, now).await }
    });
    for ended in futures::future::join_all(ends).await {
        ended.expect("each member's end is written");
    }

    // THEN the batch counts them exactly, has ended, and submitted its callback once
    let batch = b.ports.store.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!(
        (batch.total, batch.pending, batch.succeeded, batch.failed),
        (50, 0, 50, 0),
        "{batch:?}"
    );
    assert!(batch.finished_at.is_some(), "{batch:?}");
    let callback = batch
        .callbacks
        .get("on_complete")
        .expect("on_complete submitted");
    let listed = b
        .ports
        .store
        .list(&shared::ports::ListQuery {
            tenant: tenant.clone(),
            status: None,
            job_type: None,
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 51, "the members and one callback");
    assert!(listed.iter().any(|j| j.id == *callback));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_racing_for_a_quota_never_pass_it() {
    // GIVEN a tenant that may have 50 unfinished jobs
    let b = moto_under().await;
    let (service, _) = service(&b);
    let tenant = Tenant::parse("quota-race").unwrap();
    b.ports
        .tenants
        .set_limits(
            &tenant,
            &TenantLimits {
                max_active: Some(50),
                ..TenantLimits::default()
            },
        )
        .await
        .unwrap();

    // WHEN 200 submits race for those places
    let noop = JobType::parse("noop").unwrap();
    let submits = (0..200)
        .map(|_| service.submit(tenant.clone(), SubmitRequest::new(noop.clone(), json!({}))));
    let outcomes = futures::future::join_all(submits).await;

    // THEN exactly 50 are accepted and every other one is refused for the quota (none fails
    // for the race itself), and the tenant has 50 jobs
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok((_, true))))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Err(ServiceError::QuotaExceeded { max: 50 })))
        .count();
    let others: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .filter(|e| !matches!(e, ServiceError::QuotaExceeded { .. }))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!((accepted, refused), (50, 150));
    assert_eq!(b.ports.tenants.active_jobs(&tenant).await.unwrap(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_large_payloads_is_stored_in_transactions_within_dynamodbs_limits() {
    // GIVEN 100 jobs with 60 KB payloads each (6 MB in all: DynamoDB takes at most 4 MB in
    // one transaction), counted by request
    let b = moto_under().await;
    let counter = RequestCounter::default();
    let counted = AwsBackend::counted(
        &crate::helpers::moto_sdk().await,
        aws(&b).settings().clone(),
        Some(counter.clone()),
    );
    let registry = Arc::new(Registry::builtin("scale-", &BuiltinSettings::default()));
    let service = JobService::new(counted.ports(), registry, shared::config::MAX_PAYLOAD_LIMIT);
    let tenant = Tenant::parse("large").unwrap();
    let noop = JobType::parse("noop").unwrap();
    let payload = json!({ "pad": "x".repeat(60 * 1024) });
    let items = || {
        (0..100)
            .map(|_| SubmitRequest::new(noop.clone(), payload.clone()))
            .collect::<Vec<_>>()
    };

    // WHEN they are submitted as members of a batch (written in transactions, with their
    // counts), and again as a plain batch submit (batch writes)
    let batch = service
        .open_batch(
            &tenant,
            BatchSpec {
                on_complete: None,
                on_success: None,
            },
        )
        .await
        .unwrap();
    counter.reset();
    let members = service
        .submit_batch_in(tenant.clone(), items(), false, None, Some(batch.id))
        .await
        .unwrap();
    let transactions = counter
        .counts()
        .get(&("DynamoDB".to_string(), "TransactWriteItems".to_string()))
        .copied()
        .unwrap_or(0);
    let plain = service
        .submit_batch(tenant.clone(), items(), false, None)
        .await
        .unwrap();

    // THEN every job is stored with its payload whole, the members in at least two
    // transactions, and the batch counts all 100
    for outcome in members.iter().chain(plain.iter()) {
        let (job, created) = outcome.as_ref().expect("stored");
        assert!(created);
        let stored = b.ports.store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.payload, payload);
    }
    assert!(transactions >= 2, "{transactions} transactions for 6 MB");
    let batch = b.ports.store.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!((batch.total, batch.pending), (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_another_layout_or_shard_count_is_refused_with_what_to_do() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let sdk = crate::helpers::moto_sdk().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    // GIVEN a table as an earlier release made it (its jobs under a `by_tenant` index)
    let old = format!("old-{}", crate::helpers::unique());
    client
        .create_table()
        .table_name(&old)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("tenant"))
        .attribute_definitions(attr("id"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_tenant")
                .key_schema(key("tenant", KeyType::Hash))
                .key_schema(key("id", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let settings = |table: &str, shards: u64| shared::adapters::aws::AwsSettings {
        table: table.to_string(),
        event_bus: format!("bus-{}", crate::helpers::unique()),
        shards,
        events: shared::domain::EventSelection::None,
        scheduler: None,
    };

    // WHEN this release is pointed at it
    let refused = AwsBackend::new(&sdk, settings(&old, 16))
        .check_model()
        .await
        .expect_err("an old table is refused");

    // THEN it is refused, saying why and what to do, and nothing is written to it
    let said = refused.to_string();
    assert!(
        said.contains("earlier release") && said.contains("by_tenant"),
        "{said}"
    );
    assert!(said.contains("CONVEYOR_TABLE"), "{said}");
    let items = client.scan().table_name(&old).send().await.unwrap();
    assert_eq!(items.count(), 0);

    // AND a table made for 16 shards is refused to a deployment that says 8, naming the count
    let b = moto_under().await;
    let table = aws(&b).settings().table.clone();
    assert!(AwsBackend::new(&sdk, settings(&table, 16))
        .check_model()
        .await
        .is_ok());
    let said = AwsBackend::new(&sdk, settings(&table, 8))
        .check_model()
        .await
        .expect_err("another shard count is refused")
        .to_string();
    assert!(said.contains("CONVEYOR_SHARDS=16"), "{said}");
}
