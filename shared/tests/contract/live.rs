//! Live updates: the connection store's contract on every backend, and `notify` on AWS as the
//! `notify` function runs it: a real record of the table's stream (read from the emulator's
//! DynamoDB Streams) pushed through API Gateway's management API.

use crate::helpers::{job, moto_sdk, unique, Under};
use serde_json::{json, Map, Value};
use shared::adapters::aws::{notify_stream_event, ApiGatewayPusher, AwsBackend, AwsSettings};
use shared::domain::{JobId, Tenant};
use shared::live::Topic;
use shared::ports::{Connection, JobStore, LivePorts};
use std::sync::{Arc, Mutex};

fn connection(id: &str, tenant: &str) -> Connection {
    let now = chrono::Utc::now();
    Connection {
        id: id.into(),
        tenant: Tenant::parse(tenant).unwrap(),
        subject: "jwt:test".into(),
        connected_at: now,
        expires_at: now + chrono::Duration::hours(2),
    }
}

pub async fn connections_are_subscribed_per_tenant_and_forgotten_with_their_subscriptions(
    under: Under,
) {
    let store = &under.connections;
    let (a, b, other) = (
        connection("conn-a", "acme"),
        connection("conn-b", "acme"),
        connection("conn-o", "other"),
    );
    let acme = a.tenant.clone();
    let job_id = JobId::new();

    // GIVEN three connections, two of them acme's
    for c in [&a, &b, &other] {
        store.connect(c).await.unwrap();
    }
    assert_eq!(store.connection("conn-a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.connection("nobody").await.unwrap(), None);

    // WHEN a subscribes to one job and to everything, b to the job, and other to everything
    store.subscribe(&a, Topic::Job(job_id)).await.unwrap();
    store.subscribe(&a, Topic::All).await.unwrap();
    store.subscribe(&b, Topic::Job(job_id)).await.unwrap();
    store.subscribe(&other, Topic::All).await.unwrap();

    // THEN each topic lists its subscribers, within the tenant only
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(store.subscribers(&acme, Topic::Job(job_id)).await.unwrap()),
        ["conn-a", "conn-b"]
    );
    assert_eq!(
        store.subscribers(&acme, Topic::All).await.unwrap(),
        ["conn-a"]
    );
    assert_eq!(
        store.subscribers(&other.tenant, Topic::All).await.unwrap(),
        ["conn-o"]
    );

    // AND unsubscribing takes one topic away; disconnecting takes the connection and all of
    // its subscriptions
    store.unsubscribe(&b, Topic::Job(job_id)).await.unwrap();
    assert_eq!(
        store.subscribers(&acme, Topic::Job(job_id)).await.unwrap(),
        ["conn-a"]
    );
    store.disconnect("conn-a").await.unwrap();
    assert!(store
        .subscribers(&acme, Topic::Job(job_id))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .subscribers(&acme, Topic::All)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.connection("conn-a").await.unwrap(), None);
    store.disconnect("conn-a").await.unwrap(); // (again: nothing to do)
}

/// What the stand-in for API Gateway's management endpoint was asked: (connection, body).
type Posted = Arc<Mutex<Vec<(String, String)>>>;

/// API Gateway's management endpoint as the pusher sees it: posts go on to the emulator's
/// (moto records them), except to `gone`, which is answered 410 Gone as API Gateway answers
/// for a closed connection (no emulator can make one).
async fn management_endpoint(upstream: String, gone: &'static str) -> (String, Posted) {
    use axum::extract::{Path, State};
    let posted: Posted = Arc::default();
    let app = axum::Router::new()
        .route(
            "/@connections/{id}",
            axum::routing::post(
                move |State((posted, upstream)): State<(Posted, String)>,
                      Path(id): Path<String>,
                      headers: axum::http::HeaderMap,
                      body: String| async move {
                    posted.lock().unwrap().push((id.clone(), body.clone()));
                    if id == gone {
                        return (
                            axum::http::StatusCode::GONE,
                            [("x-amzn-errortype", "GoneException")],
                            "{\"message\":\"gone\"}".to_string(),
                        );
                    }
                    let mut forward = reqwest::Client::new()
                        .post(format!("{upstream}/@connections/{id}"))
                        .body(body);
                    for (k, v) in &headers {
                        if k != "host" && k != "content-length" {
                            forward = forward.header(k, v);
                        }
                    }
                    let answer = forward.send().await.expect("the emulator answers");
                    let status = answer.status().as_u16();
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("x-amzn-errortype", "")],
                        answer.text().await.unwrap_or_default(),
                    )
                },
            ),
        )
        .with_state((posted.clone(), upstream));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), posted)
}

/// A record as the Lambda event-source mapping delivers it (DynamoDB JSON images).
fn lambda_record(record: &aws_sdk_dynamodbstreams::types::Record) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    fn attr(v: &A) -> Value {
        match v {
            A::S(s) => json!({ "S": s }),
            A::N(n) => json!({ "N": n }),
            A::Bool(b) => json!({ "BOOL": b }),
            A::Null(_) => json!({ "NULL": true }),
            A::Ss(v) => json!({ "SS": v }),
            A::Ns(v) => json!({ "NS": v }),
            A::L(v) => json!({ "L": v.iter().map(attr).collect::<Vec<_>>() }),
            A::M(m) => json!({ "M": image(m) }),
            other => panic!("unexpected attribute {other:?}"),
        }
    }
    fn image(m: &std::collections::HashMap<String, A>) -> Value {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), attr(v)))
                .collect::<Map<_, _>>(),
        )
    }
    let d = record.dynamodb().unwrap();
    let mut dynamodb = json!({ "SequenceNumber": d.sequence_number() });
    if let Some(old) = d.old_image() {
        dynamodb["OldImage"] = image(old);
    }
    if let Some(new) = d.new_image() {
        dynamodb["NewImage"] = image(new);
    }
    json!({ "eventName": record.event_name().map(|e| e.as_str()), "dynamodb": dynamodb })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_posts_a_stream_record_to_its_subscribers_and_removes_a_gone_connection() {
    // GIVEN a table on the emulator with three connections: two subscribed to a job (one of
    // them closed since, which API Gateway answers 410 Gone), one to another job
    let sdk = moto_sdk().await;
    let unique = unique();
    let backend = AwsBackend::new(
        &sdk,
        AwsSettings {
            table: format!("jobs-{unique}"),
            event_bus: format!("bus-{unique}"),
            shards: 16,
            events: shared::domain::EventSelection::All,
            scheduler: None,
        },
    );
    backend.bootstrap(&[]).await.unwrap();
    let upstream = sdk.endpoint_url().unwrap().to_string();
    let (endpoint, posted) = management_endpoint(upstream, "conn-gone").await;
    let live = LivePorts {
        connections: Arc::new(backend.connections()),
        pusher: Arc::new(ApiGatewayPusher::new(&sdk, &endpoint)),
    };
    let job = job("acme", "noop");
    let (live_one, gone, elsewhere) = (
        connection("conn-live", "acme"),
        connection("conn-gone", "acme"),
        connection("conn-else", "acme"),
    );
    for c in [&live_one, &gone, &elsewhere] {
        live.connections.connect(c).await.unwrap();
    }
    live.connections
        .subscribe(&live_one, Topic::Job(job.id))
        .await
        .unwrap();
    live.connections
        .subscribe(&gone, Topic::Job(job.id))
        .await
        .unwrap();
    live.connections
        .subscribe(&elsewhere, Topic::Job(JobId::new()))
        .await
        .unwrap();

    // AND the job's creation, as the table's stream recorded it
    backend.store.create(&job).await.unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let arn = backend
        .dynamodb()
        .describe_table()
        .table_name(&backend.settings().table)
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .latest_stream_arn()
        .unwrap()
        .to_string();
    let shards = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let mut records = vec![];
    for shard in shards.stream_description().unwrap().shards() {
        let it = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let out = streams
            .get_records()
            .shard_iterator(it.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        records.extend(
            out.records()
                .iter()
                .filter(|r| {
                    r.dynamodb()
                        .and_then(|d| d.keys())
                        .and_then(|k| k.get("sk"))
                        .is_some_and(|sk| sk.as_s().is_ok_and(|s| s == &job.id.to_string()))
                })
                .map(lambda_record),
        );
    }
    assert!(!records.is_empty(), "the stream has the job's record");

    // WHEN the notify function's handler gets it
    let answer = notify_stream_event(&live, &json!({ "Records": records })).await;

    // THEN it reports no failure, posted the job to both of its subscribers and to no one else
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let posted = posted.lock().unwrap().clone();
    let mut to: Vec<&str> = posted.iter().map(|(c, _)| c.as_str()).collect();
    to.sort();
    assert_eq!(to, ["conn-gone", "conn-live"], "{posted:?}");
    let message: Value = serde_json::from_str(&posted[0].1).unwrap();
    assert_eq!(message["type"], "job", "{message}");
    assert_eq!(message["job"]["id"], job.id.to_string());
    assert_eq!(message["job"]["status"], "queued");

    // AND the connection that answered 410 is gone from the table, with its subscription
    assert_eq!(
        live.connections.connection("conn-gone").await.unwrap(),
        None
    );
    assert_eq!(
        live.connections
            .subscribers(&job.tenant, Topic::Job(job.id))
            .await
            .unwrap(),
        ["conn-live"]
    );
    assert!(live
        .connections
        .connection("conn-live")
        .await
        .unwrap()
        .is_some());
}
