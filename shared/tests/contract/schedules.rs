//! Schedules on every backend, with the scheduler driven by the test's own clock (no real
//! minute passes): each tick fires once across a daylight-saving change, `skip` and `queue_one`
//! hold while a run is active, a restart fires the tick that came due meanwhile exactly once,
//! and a paused schedule fires nothing.

use crate::helpers::Under;
use chrono::{DateTime, Duration, Timelike, Utc};
use serde_json::json;
use shared::domain::{
    Cadence, CatchUp, JobId, JobType, Outcome, Overlap, RateUnit, RunOutcome, ScheduleName, Tenant,
};
use shared::jobs::{BuiltinSettings, Registry};
use shared::ports::{ListQuery, Started};
use shared::schedules::{self, ScheduleSpec};
use shared::service::JobService;
use std::sync::Arc;

pub(crate) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub(crate) fn service(b: &Under) -> JobService {
    let registry = Arc::new(Registry::builtin("sched-", &BuiltinSettings::default()));
    JobService::new(b.ports.clone(), registry, shared::config::MAX_PAYLOAD_LIMIT)
}

fn spec(name: &str, cron: &str, tz: &str, overlap: Overlap) -> ScheduleSpec {
    ScheduleSpec {
        name: ScheduleName::parse(name).unwrap(),
        job_type: JobType::parse("noop").unwrap(),
        payload: json!({ "from": name }),
        priority: 0,
        max_attempts: None,
        expression: Cadence::parse_expression(&format!("cron({cron})")).unwrap(),
        timezone: tz.into(),
        start_at: None,
        end_at: None,
        overlap,
        catch_up: CatchUp::Latest,
        paused: false,
    }
}

fn tenant() -> Tenant {
    Tenant::parse(format!("sched-{}", crate::helpers::unique())).unwrap()
}

/// Every job of `tenant`, as (idempotency key, id).
async fn jobs_of(b: &Under, tenant: &Tenant) -> Vec<(String, JobId)> {
    let mut out = vec![];
    let mut before = None;
    loop {
        let page = b
            .ports
            .store
            .list(&ListQuery {
                tenant: tenant.clone(),
                status: None,
                job_type: None,
                before,
                limit: 100,
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|j| j.id);
        out.extend(page.into_iter().map(|j| {
            (
                j.idempotency_key
                    .map(|k| k.as_str().to_string())
                    .unwrap_or_default(),
                j.id,
            )
        }));
    }
    out
}

/// Run the job `id` to success, as a worker would.
async fn finish(b: &Under, id: JobId) {
    let now = Utc::now();
    let Started::Running(job) = b.ports.store.start(id, now, now).await.unwrap() else {
        panic!("the job starts")
    };
    let done = job
        .finish(Outcome::Succeeded(json!(null)), now, 0.0)
        .unwrap();
    b.ports
        .store
        .transition(job.expected(), &done)
        .await
        .unwrap();
}

pub async fn a_schedule_fires_once_per_tick_across_a_daylight_saving_change(b: Under) {
    // GIVEN */5 in Europe/Berlin, declared just before clocks go back (2026-10-25 03:00 CEST
    // becomes 02:00 CET, at 01:00 UTC), and two schedulers (two processes) evaluating it
    let s = service(&b);
    let other = JobService::new(
        b.another_process().await,
        Arc::new(Registry::builtin("sched-", &BuiltinSettings::default())),
        shared::config::MAX_PAYLOAD_LIMIT,
    );
    let t = tenant();
    let name = ScheduleName::parse("every-five").unwrap();
    schedules::create(
        &s,
        &t,
        spec(
            name.as_str(),
            "*/5 * * * *",
            "Europe/Berlin",
            Overlap::Allow,
        ),
        utc("2026-10-24T23:50:00Z"),
    )
    .await
    .unwrap();
    // WHEN the clock moves a minute at a time until 02:10 UTC, each minute evaluated twice by
    // one scheduler and once by the other
    let mut now = utc("2026-10-24T23:51:00Z");
    while now <= utc("2026-10-25T02:10:30Z") {
        schedules::evaluate(&s, now, true).await.unwrap();
        schedules::evaluate(&other, now, true).await.unwrap();
        schedules::evaluate(&s, now + Duration::seconds(20), true)
            .await
            .unwrap();
        now += Duration::minutes(1);
    }
    // THEN one job per local tick: every five minutes up to 02:55 CEST (00:55 UTC), none for
    // the repeated 02:00–02:55 (CET), then 03:00 CET (02:00 UTC) on
    let mut want: Vec<DateTime<Utc>> = vec![];
    let mut tick = utc("2026-10-24T23:55:00Z");
    while tick <= utc("2026-10-25T00:55:00Z") {
        want.push(tick);
        tick += Duration::minutes(5);
    }
    want.extend(
        [
            "2026-10-25T02:00:00Z",
            "2026-10-25T02:05:00Z",
            "2026-10-25T02:10:00Z",
        ]
        .map(utc),
    );
    let mut keys: Vec<String> = jobs_of(&b, &t).await.into_iter().map(|(k, _)| k).collect();
    keys.sort();
    let mut expected: Vec<String> = want
        .iter()
        .map(|t| format!("schedule:every-five:{}", t.timestamp()))
        .collect();
    expected.sort();
    assert_eq!(keys, expected, "one job per tick, none twice");
    let stored = schedules::get(&s, &t, &name).await.unwrap();
    let fired: Vec<_> = stored.runs.iter().map(|r| r.tick).collect();
    assert_eq!(fired, want);
    assert!(stored
        .runs
        .iter()
        .all(|r| r.outcome == RunOutcome::Submitted));
}

pub async fn skip_and_queue_one_hold_while_the_previous_run_is_active(b: Under) {
    let s = service(&b);
    let t = tenant();
    let at = |m: u32| utc(&format!("2026-01-01T10:{m:02}:01Z"));
    // GIVEN two every-minute schedules, one skipping and one keeping one tick waiting
    for (name, overlap) in [("skips", Overlap::Skip), ("queues", Overlap::QueueOne)] {
        schedules::create(
            &s,
            &t,
            spec(name, "* * * * *", "UTC", overlap),
            utc("2026-01-01T10:00:30Z"),
        )
        .await
        .unwrap();
    }
    let skips = ScheduleName::parse("skips").unwrap();
    let queues = ScheduleName::parse("queues").unwrap();
    // WHEN 10:01 fires (a job each, still queued), then 10:02 and 10:03 while they are active
    schedules::evaluate(&s, at(1), true).await.unwrap();
    let first_skip = schedules::get(&s, &t, &skips)
        .await
        .unwrap()
        .last_job
        .unwrap();
    let first_queue = schedules::get(&s, &t, &queues)
        .await
        .unwrap()
        .last_job
        .unwrap();
    schedules::evaluate(&s, at(2), true).await.unwrap();
    schedules::evaluate(&s, at(3), true).await.unwrap();
    // THEN no new job: `skips` skipped both; `queues` keeps 10:03 waiting (10:02 replaced)
    assert_eq!(jobs_of(&b, &t).await.len(), 2);
    let runs = |s: &shared::domain::Schedule| {
        s.runs
            .iter()
            .map(|r| (r.tick.format("%H:%M").to_string(), r.outcome))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        runs(&schedules::get(&s, &t, &skips).await.unwrap()),
        vec![
            ("10:01".into(), RunOutcome::Submitted),
            ("10:02".into(), RunOutcome::Skipped),
            ("10:03".into(), RunOutcome::Skipped)
        ]
    );
    let q = schedules::get(&s, &t, &queues).await.unwrap();
    assert_eq!(q.waiting_tick, Some(utc("2026-01-01T10:03:00Z")));
    assert_eq!(
        runs(&q),
        vec![
            ("10:01".into(), RunOutcome::Submitted),
            ("10:02".into(), RunOutcome::Skipped),
            ("10:03".into(), RunOutcome::Waiting)
        ]
    );
    // WHEN the first runs end, and the scheduler passes again within the same minute
    finish(&b, first_skip).await;
    finish(&b, first_queue).await;
    schedules::evaluate(&s, at(3) + Duration::seconds(30), true)
        .await
        .unwrap();
    // THEN the waiting tick is submitted; the skipping schedule waits for its next tick
    let q = schedules::get(&s, &t, &queues).await.unwrap();
    assert_eq!(q.waiting_tick, None);
    assert_eq!(
        q.runs.last().map(|r| r.outcome),
        Some(RunOutcome::Submitted)
    );
    let keys: Vec<String> = jobs_of(&b, &t).await.into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&format!(
        "schedule:queues:{}",
        utc("2026-01-01T10:03:00Z").timestamp()
    )));
    assert_eq!(keys.len(), 3);
    schedules::evaluate(&s, at(4), true).await.unwrap();
    assert_eq!(
        schedules::get(&s, &t, &skips)
            .await
            .unwrap()
            .runs
            .last()
            .map(|r| r.outcome),
        Some(RunOutcome::Submitted)
    );
}

pub async fn a_restart_fires_the_tick_that_came_due_once(b: Under) {
    let s = service(&b);
    let t = tenant();
    let name = ScheduleName::parse("five").unwrap();
    // GIVEN */5 declared at 10:00:30, the scheduler last passing at 10:04:59
    schedules::create(
        &s,
        &t,
        spec("five", "*/5 * * * *", "UTC", Overlap::Allow),
        utc("2026-01-01T10:00:30Z"),
    )
    .await
    .unwrap();
    schedules::evaluate(&s, utc("2026-01-01T10:04:59Z"), true)
        .await
        .unwrap();
    assert!(jobs_of(&b, &t).await.is_empty());
    // WHEN it was down at 10:05:00 and a new process passes at 10:05:03
    let restarted = JobService::new(
        b.another_process().await,
        Arc::new(Registry::builtin("sched-", &BuiltinSettings::default())),
        shared::config::MAX_PAYLOAD_LIMIT,
    );
    schedules::evaluate(&restarted, utc("2026-01-01T10:05:03Z"), true)
        .await
        .unwrap();
    // THEN 10:05 fires, once
    let jobs = jobs_of(&b, &t).await;
    assert_eq!(jobs.len(), 1);
    // WHEN the process died after submitting 10:10's job but before recording the run (the
    // schedule as stored before the tick is put back), and its successor passes at 10:10:02
    let before = schedules::get(&s, &t, &name).await.unwrap();
    schedules::evaluate(&s, utc("2026-01-01T10:10:00Z"), true)
        .await
        .unwrap();
    let after = schedules::get(&s, &t, &name).await.unwrap();
    let mut rewound = before.clone();
    rewound.version = after.version + 1;
    b.ports
        .schedules
        .put_schedule(&rewound, Some(after.version))
        .await
        .unwrap();
    schedules::evaluate(&restarted, utc("2026-01-01T10:10:02Z"), true)
        .await
        .unwrap();
    // THEN the tick fires again but finds its job: still one job for 10:10
    let jobs = jobs_of(&b, &t).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let now = schedules::get(&s, &t, &name).await.unwrap();
    assert_eq!(now.last_tick, Some(utc("2026-01-01T10:10:00Z")));
    assert_eq!(now.last_job, after.last_job);
    // AND passing again later in the same minute fires nothing more
    schedules::evaluate(&s, utc("2026-01-01T10:10:40Z"), true)
        .await
        .unwrap();
    assert_eq!(jobs_of(&b, &t).await.len(), 2);
}

pub async fn a_paused_schedule_fires_nothing_and_resumes_from_then_on(b: Under) {
    let s = service(&b);
    let t = tenant();
    let name = ScheduleName::parse("paused").unwrap();
    schedules::create(
        &s,
        &t,
        spec("paused", "* * * * *", "UTC", Overlap::Allow),
        utc("2026-01-01T10:00:30Z"),
    )
    .await
    .unwrap();
    schedules::evaluate(&s, utc("2026-01-01T10:01:01Z"), true)
        .await
        .unwrap();
    assert_eq!(jobs_of(&b, &t).await.len(), 1);
    // WHEN it is paused, and ten minutes pass
    let paused = schedules::set_paused(&s, &t, &name, true, utc("2026-01-01T10:01:30Z"))
        .await
        .unwrap();
    assert!(paused.paused);
    for m in 2..12 {
        let now = utc(&format!("2026-01-01T10:{m:02}:01Z"));
        schedules::evaluate(&s, now, true).await.unwrap();
        // (a tick delivered anyway, as EventBridge might in flight, is not fired either)
        let fired = schedules::fire(&s, &t, &name, now - Duration::seconds(1), now)
            .await
            .unwrap();
        assert!(fired.is_none());
    }
    // THEN nothing fired
    assert_eq!(jobs_of(&b, &t).await.len(), 1);
    // WHEN resumed at 10:11:30: the paused ticks are not made up, 10:12 fires
    schedules::set_paused(&s, &t, &name, false, utc("2026-01-01T10:11:30Z"))
        .await
        .unwrap();
    schedules::evaluate(&s, utc("2026-01-01T10:11:45Z"), true)
        .await
        .unwrap();
    assert_eq!(jobs_of(&b, &t).await.len(), 1);
    schedules::evaluate(&s, utc("2026-01-01T10:12:01Z"), true)
        .await
        .unwrap();
    assert_eq!(jobs_of(&b, &t).await.len(), 2);
    // AND a deleted schedule fires nothing, its jobs stay
    schedules::delete(&s, &t, &name).await.unwrap();
    let fired = schedules::fire(
        &s,
        &t,
        &name,
        utc("2026-01-01T10:13:00Z"),
        utc("2026-01-01T10:13:00Z"),
    )
    .await
    .unwrap();
    assert!(fired.is_none());
    assert_eq!(jobs_of(&b, &t).await.len(), 2);
    assert!(matches!(
        schedules::get(&s, &t, &name).await,
        Err(shared::service::ServiceError::ScheduleNotFound(_))
    ));
}

/// On AWS each schedule is an EventBridge Scheduler schedule (on moto, which holds it but never
/// fires it): armed with the expression in its form, the time zone and the tick's input;
/// disabled while paused; gone once deleted. The input it would send, with the tick filled in,
/// submits the tick's job once however often it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_scheduler_holds_each_schedule_and_its_tick_makes_one_job() {
    use shared::adapters::aws::{AwsBackend, AwsSettings, EventBridgeScheduler, SchedulerSettings};
    use shared::entrypoints::schedule::{handle_tick, ScheduleTickEvent};
    let id = crate::helpers::unique();
    let aws = AwsBackend::new(
        &crate::helpers::moto_sdk().await,
        AwsSettings {
            table: format!("jobs-{id}"),
            event_bus: format!("bus-{id}"),
            shards: 16,
            events: shared::domain::EventSelection::All,
            scheduler: Some(SchedulerSettings {
                group: format!("g-{id}"),
                target_arn: "arn:aws:lambda:us-east-1:123456789012:function:scheduler".into(),
                role_arn: "arn:aws:iam::123456789012:role/scheduler-invoke".into(),
            }),
        },
    );
    aws.bootstrap(&[]).await.expect("bootstrap on moto");
    let scheduler = aws.scheduler.clone().unwrap();
    let s = JobService::new(
        aws.ports(),
        Arc::new(Registry::builtin("sched-", &BuiltinSettings::default())),
        shared::config::MAX_PAYLOAD_LIMIT,
    );
    let t = tenant();
    let name = ScheduleName::parse("berlin").unwrap();
    // WHEN a schedule is declared
    schedules::create(
        &s,
        &t,
        spec("berlin", "*/5 * * * *", "Europe/Berlin", Overlap::Skip),
        Utc::now(),
    )
    .await
    .unwrap();
    // THEN EventBridge Scheduler holds it as its own expression, in the time zone, enabled
    let (expression, tz, state, input) = scheduler.armed(&t, &name).await.unwrap().unwrap();
    assert_eq!(expression, "cron(0/5 * * * ? *)");
    assert_eq!(tz, "Europe/Berlin");
    assert_eq!(state, "ENABLED");
    assert_eq!(input, EventBridgeScheduler::input_of(&t, &name));
    // WHEN paused: disabled there too; resumed: enabled
    schedules::set_paused(&s, &t, &name, true, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        scheduler.armed(&t, &name).await.unwrap().unwrap().2,
        "DISABLED"
    );
    schedules::set_paused(&s, &t, &name, false, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        scheduler.armed(&t, &name).await.unwrap().unwrap().2,
        "ENABLED"
    );
    // WHEN the tick's input arrives (twice, as a retried delivery) with its time filled in
    let tick = Utc::now() + Duration::minutes(5);
    let tick_text = tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event: ScheduleTickEvent =
        serde_json::from_str(&input.replace("<aws.scheduler.scheduled-time>", &tick_text)).unwrap();
    let first = handle_tick(&s, event.clone()).await.unwrap().unwrap();
    let again = handle_tick(&s, event).await.unwrap().unwrap();
    // THEN one job, for that tick
    assert_eq!(first.outcome, RunOutcome::Submitted);
    assert_eq!(first.job_id, again.job_id);
    let job = s
        .ports()
        .store
        .get(first.job_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.tenant, t);
    assert_eq!(
        job.idempotency_key.unwrap().as_str(),
        format!("schedule:berlin:{}", tick.timestamp())
    );
    // WHEN deleted: gone from EventBridge Scheduler
    schedules::delete(&s, &t, &name).await.unwrap();
    assert!(scheduler.armed(&t, &name).await.unwrap().is_none());
}

pub async fn a_schedule_whose_times_are_out_of_range_fails_alone(b: Under) {
    // GIVEN a sound schedule, and beside it (sorting before it) one stored with a creation time
    // an hour before the end of what a time can hold and a daily rate (its first tick past
    // it), as a schedule stored before its times were bounded could be
    let s = service(&b);
    let t = tenant();
    let sound = schedules::create(
        &s,
        &t,
        spec("sound", "* * * * *", "UTC", Overlap::Allow),
        utc("2026-01-01T09:59:00Z"),
    )
    .await
    .unwrap();
    let mut broken = sound.clone();
    broken.name = ScheduleName::parse("broken").unwrap();
    broken.expression = Cadence::Rate {
        every: 1,
        unit: RateUnit::Days,
    };
    broken.created_at = DateTime::<Utc>::MAX_UTC
        .with_nanosecond(0)
        .expect("a time chrono holds")
        - Duration::hours(1);
    b.ports.schedules.put_schedule(&broken, None).await.unwrap();

    // WHEN the scheduler passes at a minute's tick
    let done = schedules::evaluate(&s, utc("2026-01-01T10:00:10Z"), true)
        .await
        .unwrap();
    // THEN the sound one fired, and the other, which has no tick, stopped nothing
    assert_eq!(done.fired, 1, "{done:?}");
    let jobs = jobs_of(&b, &t).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0].0.contains("sound"), "{jobs:?}");
    // AND both are listed
    let listed = schedules::list(&s, &t).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

pub async fn a_schedulers_pass_reads_the_schedules_due_and_fires_them(b: Under) {
    // GIVEN a schedule due at 10:00 and one that starts tomorrow
    let s = service(&b);
    let t = tenant();
    let created = utc("2026-01-01T09:59:00Z");
    schedules::create(
        &s,
        &t,
        spec("hourly", "0 * * * *", "UTC", Overlap::Allow),
        created,
    )
    .await
    .unwrap();
    let mut later = spec("later", "0 * * * *", "UTC", Overlap::Allow);
    later.start_at = Some(utc("2026-01-02T00:00:00Z"));
    schedules::create(&s, &t, later, created).await.unwrap();
    // WHEN the scheduler asks for what is due at 10:00:30
    let now = utc("2026-01-01T10:00:30Z");
    let due: Vec<String> = b
        .ports
        .schedules
        .due_schedules(now)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.tenant == t)
        .map(|d| d.name.to_string())
        .collect();
    // THEN the one due is there; on the embedded store, where the scheduler reads each second,
    // the one not due is not even read
    assert!(due.contains(&"hourly".to_string()), "{due:?}");
    if b.aws().is_none() {
        assert_eq!(due, ["hourly"]);
    }
    // AND the pass fires it, after which it is not due again until 11:00
    let done = schedules::evaluate(&s, now, true).await.unwrap();
    assert_eq!(done.fired, 1, "{done:?}");
    if b.aws().is_none() {
        let again = b.ports.schedules.due_schedules(now).await.unwrap();
        assert!(again.iter().all(|d| d.tenant != t), "{again:?}");
        let at_eleven = b
            .ports
            .schedules
            .due_schedules(utc("2026-01-01T11:00:00Z"))
            .await
            .unwrap();
        assert!(at_eleven
            .iter()
            .any(|d| d.tenant == t && d.name.as_str() == "hourly"));
    }
}
