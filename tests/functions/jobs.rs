//! A job's way through the functions: `api` writes it, `stats` reads it from the table's
//! stream (sending its message: the table's outbox) and counts it, a worker runs it from its
//! queue's SQS batch.

use crate::harness::{aws_sample, Deployment, Lambda};
use crate::http::{call, caller, submit};
use serde_json::{json, Value};
use shared::ports::QueueConsumer;
use std::time::Duration;

/// A stream attribute value in the JSON Lambda hands a function (DynamoDB's own JSON).
fn attribute(value: &aws_sdk_dynamodbstreams::types::AttributeValue) -> Value {
    use aws_sdk_dynamodbstreams::types::AttributeValue as A;
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        aws_smithy_types::base64::encode(b.as_ref())
    };
    match value {
        A::S(s) => json!({ "S": s }),
        A::N(n) => json!({ "N": n }),
        A::B(b) => json!({ "B": b64(b) }),
        A::Bool(b) => json!({ "BOOL": b }),
        A::Null(_) => json!({ "NULL": true }),
        A::Ss(s) => json!({ "SS": s }),
        A::Ns(n) => json!({ "NS": n }),
        A::Bs(b) => json!({ "BS": b.iter().map(b64).collect::<Vec<_>>() }),
        A::L(l) => json!({ "L": l.iter().map(attribute).collect::<Vec<_>>() }),
        A::M(m) => json!({ "M": image(m) }),
        other => panic!("an attribute value of an unknown kind: {other:?}"),
    }
}

fn image(
    item: &std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute(v)))
            .collect(),
    )
}

/// Every record of the deployment's table stream so far, as the event-source mapping hands
/// them to a function: AWS's sample record with each real record's name, keys, images and
/// sequence number in it.
pub async fn stream_batch(deployment: &Deployment) -> Value {
    let sdk = deployment.sdk().await;
    let table = aws_sdk_dynamodb::Client::new(&sdk)
        .describe_table()
        .table_name(deployment.get("CONVEYOR_TABLE"))
        .send()
        .await
        .unwrap();
    let arn = table
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("the table has a stream")
        .to_string();
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let described = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let sample = aws_sample("example-dynamodb-event.json")["Records"][0].clone();
    let mut records = vec![];
    for shard in described
        .stream_description()
        .map(|d| d.shards())
        .unwrap_or_default()
    {
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .clone();
        while let Some(it) = iterator.take() {
            let out = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            for r in out.records() {
                let d = r.dynamodb().expect("a change");
                let mut record = sample.clone();
                record["eventID"] = json!(r.event_id());
                record["eventName"] = json!(r.event_name().map(|n| n.as_str()));
                record["eventSourceARN"] = json!(arn);
                let change = &mut record["dynamodb"];
                *change = json!({
                    "ApproximateCreationDateTime": d.approximate_creation_date_time().map(|t| t.secs()),
                    "Keys": image(d.keys().unwrap_or(&Default::default())),
                    "SequenceNumber": d.sequence_number(),
                    "SizeBytes": d.size_bytes(),
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                });
                if let Some(new) = d.new_image() {
                    change["NewImage"] = image(new);
                }
                if let Some(old) = d.old_image() {
                    change["OldImage"] = image(old);
                }
                records.push(record);
            }
            if !out.records().is_empty() {
                iterator = out.next_shard_iterator().map(str::to_string);
            }
        }
    }
    json!({ "Records": records })
}

/// An SQS batch as the event-source mapping hands it to a worker: AWS's sample record with
/// each message's id, receipt handle and body in it.
pub fn sqs_batch(messages: &[(String, String, String)], queue: &str) -> Value {
    let sample = aws_sample("example-sqs-event.json")["Records"][0].clone();
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, handle, body)| {
            let mut record = sample.clone();
            record["messageId"] = json!(id);
            record["receiptHandle"] = json!(handle);
            record["body"] = json!(body);
            record["eventSourceARN"] = json!(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"));
            record["awsRegion"] = json!("us-east-1");
            record["attributes"]["ApproximateReceiveCount"] = json!("1");
            if let Some(a) = record.as_object_mut() {
                a.insert("messageAttributes".into(), json!({}));
            }
            record
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn a_job_written_by_api_is_dispatched_and_counted_by_stats_and_run_by_its_worker() {
    // GIVEN the api, stats and worker functions running as Lambda runs them
    let deployment = Deployment::new(&[]).await;
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);
    lambda.run("stats", &deployment, &[]);
    lambda.run("worker", &deployment, &[]);
    let ports = deployment.ports().await;

    // WHEN a job is submitted through api
    let id = submit(
        &mut lambda,
        "acme",
        &json!({ "type": "noop", "payload": { "hello": "lambda" } }),
    )
    .await;

    // AND the table's stream so far is handed to stats, as the event-source mapping does
    let batch = stream_batch(&deployment).await;
    assert!(
        batch["Records"].as_array().is_some_and(|r| !r.is_empty()),
        "{batch}"
    );
    let answer = lambda.invoke("stats", &batch).await;
    // THEN every record is taken
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{answer}");
    // AND the job is counted, as /v1/stats shows
    let (status, stats) = call(
        &mut lambda,
        "GET",
        "/v1/stats",
        None,
        Some(&caller("acme", "reader")),
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    assert!(stats.to_string().contains("noop"), "{stats}");
    // AND its message is on the noop queue
    let queue = format!("{}noop", deployment.get("CONVEYOR_QUEUE_PREFIX"));
    let backend = deployment.backend().await;
    let mut messages = vec![];
    for _ in 0..10 {
        messages = backend
            .queue
            .receive(&queue, 10, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .unwrap();
        if !messages.is_empty() {
            break;
        }
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].body.contains(&id.to_string()), "{messages:?}");

    // WHEN the noop worker gets it in an SQS batch beside a message that is no job's
    let batch = sqs_batch(
        &[
            (
                "job-message".into(),
                messages[0].receipt_handle.clone(),
                messages[0].body.clone(),
            ),
            ("not-a-job".into(), "handle-2".into(), "Message Body".into()),
        ],
        &queue,
    );
    let answer = lambda.invoke("worker", &batch).await;
    // THEN only that one is reported failed (SQS delivers it again; the rest of the batch is
    // done)
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [{ "itemIdentifier": "not-a-job" }] }),
        "{answer}"
    );
    // AND the job ran: succeeded in the table, on its first attempt
    let ran = ports.store.get(id).await.unwrap().expect("the job");
    assert_eq!(
        (ran.status.as_str(), ran.attempt),
        ("succeeded", 1),
        "{ran:?}"
    );
}

/// Hand the table's stream so far to `stats`, as the event-source mapping does: the messages
/// of the jobs written are sent (a record handed over again sends a message a worker drops).
async fn dispatch(lambda: &mut Lambda, deployment: &Deployment) {
    let batch = stream_batch(deployment).await;
    let answer = lambda.invoke("stats", &batch).await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{answer}");
}

/// The messages on `job_type`'s queue, received until one for each of `jobs` has come (a job's
/// message may come more than once), handed to the worker function in one SQS batch, as the
/// event-source mapping hands them.
async fn work(lambda: &mut Lambda, deployment: &Deployment, job_type: &str, jobs: &[&str]) {
    let queue = format!(
        "{}{}",
        deployment.get("CONVEYOR_QUEUE_PREFIX"),
        job_type.replace('.', "-")
    );
    let backend = deployment.backend().await;
    let mut messages: Vec<shared::ports::ReceivedMessage> = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !jobs
        .iter()
        .all(|id| messages.iter().any(|m| m.body.contains(id)))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message on {queue} for some of {jobs:?}: {messages:?}"
        );
        messages.extend(
            backend
                .queue
                .receive(
                    &queue,
                    10,
                    Duration::from_secs(60),
                    Duration::from_millis(500),
                )
                .await
                .unwrap(),
        );
    }
    let batch: Vec<(String, String, String)> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("m-{i}"), m.receipt_handle.clone(), m.body.clone()))
        .collect();
    let answer = lambda.invoke("worker", &sqs_batch(&batch, &queue)).await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{answer}");
}

/// `method` `path` through the api function as a submitter and reader of acme: the status and
/// body.
async fn acme(lambda: &mut Lambda, method: &str, path: &str, body: Option<Value>) -> (u64, Value) {
    let context = caller("acme", "submitter reader");
    call(lambda, method, path, body.as_ref(), Some(&context)).await
}

#[tokio::test]
async fn the_worker_function_settles_dependents_and_batches_and_runs_jobs_that_submit_and_log() {
    // GIVEN api, stats and the worker function, with a web server on this machine the
    // deployment's jobs may reach
    let site = axum::Router::new().route("/", axum::routing::get(|| async { "a page" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, site).await });
    let deployment = Deployment::new(&[("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1/32")]).await;
    let mut lambda = Lambda::start().await;
    for function in ["api", "stats", "worker"] {
        lambda.run(function, &deployment, &[]);
    }
    let ports = deployment.ports().await;
    // (a job's status, and what else it says, to tell why it has another)
    let status_of = |id: &str| {
        let store = ports.store.clone();
        let id = shared::domain::JobId::parse(id).unwrap();
        async move {
            let job = store.get(id).await.unwrap().expect("the job");
            (job.status.as_str().to_string(), format!("{job:?}"))
        }
    };

    // WHEN acme submits a job, one that depends on it, and a batch of two
    let parent = submit(&mut lambda, "acme", &json!({ "type": "noop" }))
        .await
        .to_string();
    let (status, child) = acme(
        &mut lambda,
        "POST",
        "/v1/jobs",
        Some(json!({ "type": "noop", "depends_on": [parent] })),
    )
    .await;
    assert_eq!(status, 202, "{child}");
    let child = child["id"].as_str().unwrap().to_string();
    let (status, job) = status_of(&child).await;
    assert_eq!(status, "waiting", "{job}");
    let (status, batch) = acme(
        &mut lambda,
        "POST",
        "/v1/jobs/batch",
        Some(json!({ "jobs": [{ "type": "noop" }, { "type": "noop" }], "batch": {} })),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["batch"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a batch: {batch}"))
        .to_string();
    let members: Vec<String> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job"]["id"].as_str().unwrap().to_string())
        .collect();
    // AND the noop worker gets what was dispatched
    dispatch(&mut lambda, &deployment).await;
    work(
        &mut lambda,
        &deployment,
        "noop",
        &[&parent, &members[0], &members[1]],
    )
    .await;
    // THEN the parent ran, and its dependent is released to the queue
    let (status, job) = status_of(&parent).await;
    assert_eq!(status, "succeeded", "{job}");
    let (status, job) = status_of(&child).await;
    assert_eq!(status, "queued", "{job}");
    // AND the batch is done, both its jobs succeeded
    let (status, read) = acme(&mut lambda, "GET", &format!("/v1/batches/{batch_id}"), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["counts"]["succeeded"], 2, "{read}");

    // WHEN a scan of this machine's site is submitted and its worker runs it
    let (status, scan) = acme(
        &mut lambda,
        "POST",
        "/v1/jobs",
        Some(json!({ "type": "scan.domain", "payload": {
            "domain": "127.0.0.1", "scheme": "http", "port": port, "paths": ["/"] } })),
    )
    .await;
    assert_eq!(status, 202, "{scan}");
    let scan = scan["id"].as_str().unwrap().to_string();
    dispatch(&mut lambda, &deployment).await;
    work(&mut lambda, &deployment, "scan.domain", &[&scan]).await;
    // THEN it succeeded, having submitted a fetch of the page and a summary waiting on it
    let (status, job) = status_of(&scan).await;
    assert_eq!(status, "succeeded", "{job}");
    let (_, result) = acme(&mut lambda, "GET", &format!("/v1/jobs/{scan}/result"), None).await;
    let page = result["result"]["pages"][0]
        .as_str()
        .unwrap_or_else(|| panic!("a page's job: {result}"))
        .to_string();
    let summary = result["result"]["summary"].as_str().unwrap().to_string();
    let (status, job) = status_of(&summary).await;
    assert_eq!(status, "waiting", "{job}");

    // WHEN the page's fetch runs
    dispatch(&mut lambda, &deployment).await;
    work(&mut lambda, &deployment, "http.fetch", &[&page]).await;
    // THEN it fetched the page and logged it, and the summary is released
    let (status, job) = status_of(&page).await;
    assert_eq!(status, "succeeded", "{job}");
    let (status, logs) = acme(&mut lambda, "GET", &format!("/v1/jobs/{page}/logs"), None).await;
    assert_eq!(status, 200, "{logs}");
    assert!(logs.to_string().contains("200"), "{logs}");
    let (status, job) = status_of(&summary).await;
    assert_eq!(status, "queued", "{job}");
}

#[tokio::test]
async fn an_external_type_declared_through_api_is_called_by_the_worker_function() {
    // GIVEN a handler on this machine that answers each call with the job's payload (and keeps
    // the calls), and api, stats and the worker function, which may reach it
    type Calls = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>;
    let calls: Calls = Default::default();
    let kept = calls.clone();
    let handler = axum::Router::new().route(
        "/run",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                let call: Value = serde_json::from_str(&body).unwrap();
                kept.lock().unwrap().push((headers, body));
                axum::Json(json!({ "echo": call["job"]["payload"] }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, handler).await });
    let deployment = Deployment::new(&[("CONVEYOR_OUTBOUND_ALLOW", "127.0.0.1/32")]).await;
    let mut lambda = Lambda::start().await;
    for function in ["api", "stats", "worker"] {
        lambda.run(function, &deployment, &[]);
    }
    let ports = deployment.ports().await;

    // WHEN acme's admin declares py.echo through api, and a job of it is submitted, dispatched
    // and handed to the worker function from the external types' queue
    let (status, declared) = call(
        &mut lambda,
        "PUT",
        "/v1/types/py.echo",
        Some(&json!({ "handler": { "url": format!("http://127.0.0.1:{port}/run") } })),
        Some(&caller("acme", "admin")),
    )
    .await;
    assert_eq!(status, 201, "{declared}");
    let id = submit(
        &mut lambda,
        "acme",
        &json!({ "type": "py.echo", "payload": { "n": 7 } }),
    )
    .await;
    dispatch(&mut lambda, &deployment).await;
    work(
        &mut lambda,
        &deployment,
        "conveyor.external",
        &[&id.to_string()],
    )
    .await;

    // THEN the job succeeded with the handler's answer, on its first attempt
    let ran = ports.store.get(id).await.unwrap().expect("the job");
    assert_eq!(
        (ran.status.as_str(), ran.attempt),
        ("succeeded", 1),
        "{ran:?}"
    );
    assert_eq!(ran.result, Some(json!({ "echo": { "n": 7 } })));
    // AND the handler was called once, signed with acme's own secret, with the job and a token
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (headers, body) = &calls[0];
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    let t: i64 = header("x-conveyor-signature")
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    let secret = shared::jobs::tenant_secret(
        "functions-test-master-key-of-32-bytes",
        &shared::domain::Tenant::parse("acme").unwrap(),
        1,
    );
    let signed = shared::jobs::sign(
        &secret,
        shared::jobs::Signed {
            timestamp: t,
            job_id: &id.to_string(),
            attempt: 1,
            body: body.as_bytes(),
        },
    );
    assert_eq!(header("x-conveyor-signature"), signed);
    let call_body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(call_body["job"]["id"], id.to_string());
    let token = call_body["token"].as_str().unwrap();
    assert!(token.starts_with("cjt_"), "{call_body}");
    // AND api refuses that token now that its attempt has ended
    let mut event = crate::http::http_event(
        "POST",
        &format!("/v1/jobs/{id}/handler/heartbeat"),
        Some(&json!({})),
        None,
    );
    event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    let (status, body) = crate::http::answer_of(&lambda.invoke("api", &event).await);
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn an_external_type_served_by_a_lambda_function_is_invoked_by_the_worker_function() {
    // GIVEN the team's own Lambda function (the Python example), which the worker function
    // reaches as it reaches Lambda, and api, stats and the worker function
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:conveyor-handler-py";
    let function = crate::user_function::UserFunction::python_example("conveyor-handler-py").await;
    let deployment = Deployment::new(&[]).await;
    let mut lambda = Lambda::start().await;
    for name in ["api", "stats"] {
        lambda.run(name, &deployment, &[]);
    }
    lambda.run(
        "worker",
        &deployment,
        &[("AWS_ENDPOINT_URL_LAMBDA", &function.endpoint)],
    );
    let ports = deployment.ports().await;
    let admin = caller("acme", "admin");

    // WHEN acme's admin declares py.echo served by that function (and tries one the
    // deployment may not invoke: refused, naming the field)
    let declare = |arn: &str| {
        json!({
            "handler": { "lambda": arn },
            "max_attempts": 3,
            "backoff": { "base_ms": 100, "cap_ms": 200 },
        })
    };
    let (status, body) = call(
        &mut lambda,
        "PUT",
        "/v1/types/py.other",
        Some(&declare(
            "arn:aws:lambda:us-east-1:000000000000:function:billing",
        )),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "handler.lambda", "{body}");
    let (status, declared) = call(
        &mut lambda,
        "PUT",
        "/v1/types/py.echo",
        Some(&declare(arn)),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{declared}");
    // AND three jobs are submitted: one it answers, one it refuses, one it raises on at first
    let mut ids = vec![];
    for payload in [
        json!({ "n": 7 }),
        json!({ "reject": "no such customer" }),
        json!({ "fail_first": true }),
    ] {
        ids.push(
            submit(
                &mut lambda,
                "acme",
                &json!({ "type": "py.echo", "payload": payload }),
            )
            .await,
        );
    }
    dispatch(&mut lambda, &deployment).await;
    let all: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    work(&mut lambda, &deployment, "conveyor.external", &all).await;

    // THEN the answered job succeeded with the function's result, on its first attempt
    let job = |id| {
        let ports = &ports;
        async move { ports.store.get(id).await.unwrap().expect("the job") }
    };
    let answered = job(ids[0]).await;
    assert_eq!(
        (answered.status.as_str(), answered.attempt),
        ("succeeded", 1),
        "{answered:?}\n{}",
        function.log()
    );
    assert_eq!(answered.result, Some(json!({ "echo": { "n": 7 } })));
    // AND the refused one failed for good, with the function's message
    let refused = job(ids[1]).await;
    assert_eq!(refused.status.as_str(), "failed", "{refused:?}");
    let error = refused.error.expect("the function's error");
    assert_eq!(
        (error.message.as_str(), error.retryable),
        ("no such customer", false)
    );
    // AND the one it raised on is retried, with what it raised, and its next attempt succeeds
    let raised = job(ids[2]).await;
    assert_eq!(raised.attempt, 1, "{raised:?}");
    assert_ne!(raised.status.as_str(), "failed", "{raised:?}");
    let error = raised.error.clone().expect("what the function raised");
    assert!(
        error.retryable
            && error.message.contains("failing the first attempt")
            && error.message.contains("Unhandled"),
        "{error:?}"
    );
    // (its retry is sent as its first message was: from the table's stream, by stats)
    dispatch(&mut lambda, &deployment).await;
    work(&mut lambda, &deployment, "conveyor.external", &[all[2]]).await;
    let retried = job(ids[2]).await;
    assert_eq!(
        (retried.status.as_str(), retried.attempt),
        ("succeeded", 2),
        "{retried:?}"
    );
    assert_eq!(
        retried.result,
        Some(json!({ "echo": { "fail_first": true } }))
    );
}
