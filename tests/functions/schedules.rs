//! The functions EventBridge Scheduler invokes: `scheduler` at a tick of a user's schedule,
//! and `maintenance` at each sweep.

use crate::harness::{aws_sample, Deployment, Lambda};
use crate::http::{call, caller, submit};
use serde_json::{json, Value};
use shared::ports::QueueConsumer;

/// A deployment whose schedules are EventBridge Scheduler's, in a group of its own, aimed at
/// the `scheduler` function as the template aims them: the deployment, and the group.
async fn scheduled_deployment() -> (Deployment, String) {
    let group = format!("g{}", ulid::Ulid::new().to_string().to_lowercase());
    let deployment = Deployment::new(&[
        ("CONVEYOR_SCHEDULE_GROUP", group.as_str()),
        (
            "CONVEYOR_SCHEDULER_TARGET_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:scheduler",
        ),
        (
            "CONVEYOR_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/scheduler-invoke",
        ),
    ])
    .await;
    (deployment, group)
}

/// Declare `schedule` through the api function as a submitter of acme; checks it was made.
async fn declare(lambda: &mut Lambda, schedule: Value) {
    let (status, made) = call(
        lambda,
        "POST",
        "/v1/schedules",
        Some(&schedule),
        Some(&caller("acme", "submitter reader")),
    )
    .await;
    assert_eq!(status, 201, "{made}");
}

/// `hour`:00 UTC `days` days from today, as Scheduler writes a tick's time: a tick of a
/// schedule declared now (it fires no tick from before its declaration).
fn tick_in(days: i64, hour: u32) -> String {
    let day = (chrono::Utc::now() + chrono::Duration::days(days)).date_naive();
    format!("{}T{hour:02}:00:00Z", day.format("%Y-%m-%d"))
}

/// Invoke maintenance as its sweep's schedule does: its report.
async fn sweep(lambda: &mut Lambda) -> Value {
    lambda
        .invoke(
            "maintenance",
            &aws_sample("example-eventbridge-schedule.json"),
        )
        .await
}

/// What EventBridge Scheduler sends the target of the deployment's one schedule in `group` at
/// `tick`: the input the target holds, with the tick's time filled in where Scheduler fills it.
async fn armed_tick(deployment: &Deployment, group: &str, tick: &str) -> Value {
    let sdk = deployment.sdk().await;
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let listed = scheduler
        .list_schedules()
        .group_name(group)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = listed.schedules().iter().filter_map(|s| s.name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let held = scheduler
        .get_schedule()
        .group_name(group)
        .name(names[0])
        .send()
        .await
        .unwrap();
    let target = held.target().expect("the schedule's target");
    assert_eq!(
        target.arn(),
        "arn:aws:lambda:us-east-1:123456789012:function:scheduler"
    );
    let input = target
        .input()
        .expect("the target's input")
        .replace("<aws.scheduler.scheduled-time>", tick);
    serde_json::from_str(&input).expect("the input is JSON")
}

#[tokio::test]
async fn a_schedules_tick_as_eventbridge_scheduler_sends_it_makes_one_job() {
    // GIVEN the api and scheduler functions, on a deployment whose schedules are EventBridge
    // Scheduler's, and a schedule declared through api
    let (deployment, group) = scheduled_deployment().await;
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);
    lambda.run("scheduler", &deployment, &[]);
    declare(
        &mut lambda,
        json!({ "name": "nightly", "type": "noop", "payload": { "n": 7 }, "cron": "0 3 * * *" }),
    )
    .await;

    // WHEN EventBridge Scheduler fires it: the input its target holds, with the tick's time
    // filled in where Scheduler fills it
    let (tick, later) = (tick_in(1, 3), tick_in(2, 3));
    let event = armed_tick(&deployment, &group, &tick).await;
    let run = lambda.invoke("scheduler", &event).await;
    // THEN one job of the schedule is made for that tick
    let id = run["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a job: {run}"));
    let ports = deployment.ports().await;
    let job = ports
        .store
        .get(shared::domain::JobId::parse(id).unwrap())
        .await
        .unwrap()
        .expect("the tick's job");
    assert_eq!(
        (job.tenant.as_str(), job.job_type.as_str(), &job.payload),
        ("acme", "noop", &json!({ "n": 7 }))
    );
    // AND the same tick delivered again (Scheduler retries) makes no second job
    lambda.invoke("scheduler", &event).await;
    let jobs = deployment.jobs_of("acme").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");

    // WHEN the schedule is deleted through api, and a tick Scheduler sent before that arrives
    let (status, deleted) = call(
        &mut lambda,
        "DELETE",
        "/v1/schedules/nightly",
        None,
        Some(&caller("acme", "submitter reader")),
    )
    .await;
    assert_eq!(
        (status, &deleted["deleted"]),
        (200, &json!("nightly")),
        "{deleted}"
    );
    let late: Value = serde_json::from_str(&event.to_string().replace(&tick, &later)).unwrap();
    let run = lambda.invoke("scheduler", &late).await;
    // THEN it makes no job
    assert!(run["job_id"].is_null(), "{run}");
    let jobs = deployment.jobs_of("acme").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
}

#[tokio::test]
async fn a_maintenance_sweep_on_its_schedule_event_settles_dead_letters() {
    // GIVEN the api and maintenance functions, and a job whose run was started by a worker
    // that then died, its message since moved to the type's dead-letter queue by SQS; and a
    // job that never started, whose message went there too (its receives throttled)
    let deployment = Deployment::new(&[]).await;
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);
    lambda.run("maintenance", &deployment, &[]);
    let id = submit(
        &mut lambda,
        "acme",
        &json!({ "type": "noop", "max_attempts": 1 }),
    )
    .await;
    let ports = deployment.ports().await;
    let now = chrono::Utc::now();
    let started = ports.store.start(id, now, now).await.unwrap();
    assert!(
        matches!(started, shared::ports::Started::Running(_)),
        "{started:?}"
    );
    let job = ports.store.get(id).await.unwrap().unwrap();
    let dlq = format!("{}noop-dlq", deployment.get("CONVEYOR_QUEUE_PREFIX"));
    ports
        .queue
        .send(
            &dlq,
            &shared::service::JobMessage::of(&job).to_body(),
            std::time::Duration::ZERO,
            0,
        )
        .await
        .unwrap();

    let unstarted = submit(&mut lambda, "acme", &json!({ "type": "noop" })).await;
    let waiting = ports.store.get(unstarted).await.unwrap().unwrap();
    ports
        .queue
        .send(
            &dlq,
            &shared::service::JobMessage::of(&waiting).to_body(),
            std::time::Duration::ZERO,
            0,
        )
        .await
        .unwrap();

    // WHEN the sweep's schedule invokes maintenance
    let report = sweep(&mut lambda).await;
    // THEN its report counts the dead letter of the job that ran, and that job is dead
    assert_eq!(report["dead_lettered"], 1, "{report}");
    let job = ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status.as_str(), "dead", "{job:?}");
    // AND the job that never started is still queued, its message back on its queue (once
    // sent back) for a worker to start it
    let job = ports.store.get(unstarted).await.unwrap().unwrap();
    assert_eq!(job.status.as_str(), "queued", "{job:?}");
    let queue = format!("{}noop", deployment.get("CONVEYOR_QUEUE_PREFIX"));
    let backend = deployment.backend().await;
    let mine = |m: &shared::ports::ReceivedMessage| m.body.contains(&unstarted.to_string());
    let mut back = vec![];
    for _ in 0..10 {
        back.extend(
            backend
                .queue
                .receive(
                    &queue,
                    10,
                    std::time::Duration::from_secs(60),
                    std::time::Duration::from_secs(1),
                )
                .await
                .unwrap(),
        );
        if back.iter().any(mine) {
            break;
        }
    }
    let resent: Vec<_> = back.iter().filter(|m| mine(m)).collect();
    assert_eq!(resent.len(), 1, "{back:?}");
    let message: Value = serde_json::from_str(&resent[0].body).unwrap();
    assert_eq!(message["resent"], 1, "{message}");
}

#[tokio::test]
async fn a_tick_the_scheduler_function_failed_is_fired_again_by_the_next_sweep() {
    // GIVEN the api, scheduler and maintenance functions, a schedule declared through api, and
    // the scheduler function's on-failure destination (a queue, as the template makes it)
    let (deployment, group) = scheduled_deployment().await;
    let failures = format!(
        "{}schedule-tick-failures",
        deployment.get("CONVEYOR_QUEUE_PREFIX")
    );
    let sqs = aws_sdk_sqs::Client::new(&deployment.sdk().await);
    let url = sqs
        .create_queue()
        .queue_name(&failures)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);
    lambda.run(
        "maintenance",
        &deployment,
        &[("CONVEYOR_TICK_FAILURES_QUEUE", failures.as_str())],
    );
    declare(
        &mut lambda,
        json!({ "name": "hourly", "type": "noop", "cron": "0 * * * *" }),
    )
    .await;

    // WHEN a tick failed the scheduler function through Lambda's retries: Lambda records the
    // invocation on the destination (its documented record: the request's payload, and why)
    let at = tick_in(1, 5);
    let tick = armed_tick(&deployment, &group, &at).await;
    let record = json!({
        "version": "1.0",
        "timestamp": at.replace(":00Z", ":03.120Z"),
        "requestContext": {
            "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:scheduler:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "requestPayload": tick,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled"
        },
        "responsePayload": {
            "errorMessage": "storage unavailable: the table is throttled",
            "errorType": "ServiceError"
        }
    });
    sqs.send_message()
        .queue_url(&url)
        .message_body(record.to_string())
        .send()
        .await
        .unwrap();
    // AND the next sweep runs
    let report = sweep(&mut lambda).await;
    // THEN the tick fired: its job is made, and the record is gone
    assert_eq!(report["ticks_refired"], 1, "{report}");
    let jobs = deployment.jobs_of("acme").await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let left = sqs
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    assert!(left.messages().is_empty(), "{left:?}");
    // AND a sweep after that fires nothing more
    let report = sweep(&mut lambda).await;
    assert_eq!(report["ticks_refired"], 0, "{report}");
}
