//! Schedules: parsing each form, and the times each fires at across zones and clock changes.

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn schedule(expression: &str, tz: &str, created: &str) -> Schedule {
    Schedule {
        tenant: Tenant::parse("t").unwrap(),
        name: ScheduleName::parse("s").unwrap(),
        job_type: JobType::parse("noop").unwrap(),
        payload: Value::Null,
        priority: 0,
        max_attempts: None,
        expression: Cadence::parse_expression(expression).unwrap(),
        timezone: tz.into(),
        start_at: None,
        end_at: None,
        overlap: Overlap::Skip,
        catch_up: CatchUp::Latest,
        paused: false,
        created_at: utc(created),
        updated_at: utc(created),
        fires_after: utc(created),
        last_tick: None,
        last_job: None,
        waiting_tick: None,
        runs: vec![],
        version: 0,
    }
}

#[test]
fn a_rate_past_ten_years_is_refused_and_times_past_what_a_time_holds_have_no_tick() {
    // (the rate that stopped the scheduler: its period overflowed a time)
    let refused = Cadence::parse_rate("4294967295 days").unwrap_err();
    assert_eq!(refused.field, "rate");
    assert!(Cadence::parse_rate("3650 days").is_ok());
    assert!(Cadence::parse_rate("87601 hours").is_err());
    assert!(Cadence::parse_expression("at(10000-01-01T00:00:00)").is_err());
    // A stored schedule whose every tick is past the end of time: none, and no panic
    let mut end = schedule("rate(1 day)", "UTC", "2026-01-01T00:00:00Z");
    end.created_at = DateTime::<Utc>::MAX_UTC - chrono::Duration::hours(1);
    assert_eq!(end.next_tick_after(utc("2026-01-02T00:00:00Z")), None);
    end.start_at = Some(DateTime::<Utc>::MIN_UTC);
    assert_eq!(end.next_tick_after(DateTime::<Utc>::MAX_UTC), None);
    end.expression = Cadence::parse_expression("cron(0 3 * * *)").unwrap();
    end.timezone = "Pacific/Chatham".into();
    assert_eq!(end.next_tick_after(DateTime::<Utc>::MAX_UTC), None);
    // (a scheduler asked at the end of time walks its bounded number of ticks, no further)
    assert!(end.due_tick(DateTime::<Utc>::MAX_UTC).is_some());
}

fn ticks(s: &Schedule, from: &str, until: &str) -> Vec<DateTime<Utc>> {
    let (mut t, until) = (utc(from), utc(until));
    let mut out = vec![];
    while let Some(next) = s.next_tick_after(t).filter(|n| *n <= until) {
        out.push(next);
        t = next;
    }
    out
}

#[test]
fn cron_fields_parse_and_refuse_what_they_cannot_mean() {
    assert!(Cron::parse("*/5 * * * *").is_ok());
    assert!(Cron::parse("0 9 * JAN-MAR MON-FRI").is_ok());
    let e = Cron::parse("* * *").unwrap_err();
    assert_eq!(e.field, "cron");
    assert!(Cron::parse("61 * * * *")
        .unwrap_err()
        .message
        .contains("0-59"));
    assert!(Cron::parse("0 0 1 * MON")
        .unwrap_err()
        .message
        .contains("not both"));
    assert!(Cron::parse("*/0 * * * *").is_err());
    assert!(Cron::parse("5-1 * * * *").is_err());
}

#[test]
fn cron_is_written_for_eventbridge_scheduler() {
    let c = |s: &str| Cron::parse(s).unwrap().aws_expression();
    assert_eq!(c("*/5 * * * *"), "cron(0/5 * * * ? *)");
    assert_eq!(c("0 9 * * MON-FRI"), "cron(0 9 ? * MON,TUE,WED,THU,FRI *)");
    assert_eq!(c("30 2 1,15 * *"), "cron(30 2 1,15 * ? *)");
    assert_eq!(c("0 0 * * 0"), "cron(0 0 ? * SUN *)");
    assert_eq!(c("0 0 * * 7"), "cron(0 0 ? * SUN *)");
    assert_eq!(c("15 */6 * */3 *"), "cron(15 0/6 * 1/3 ? *)");
}

#[test]
fn every_five_minutes_in_berlin_across_the_autumn_change_fires_each_local_time_once() {
    // 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET. Local 02:00-02:55 happen twice.
    let s = schedule("cron(*/5 * * * *)", "Europe/Berlin", "2026-10-24T23:50:00Z");
    let t = ticks(&s, "2026-10-24T23:50:00Z", "2026-10-25T02:10:00Z");
    // Every five minutes until 00:55 UTC (02:55 CEST); the repeated 02:xx (CET, 01:00-01:55
    // UTC) does not fire again; 03:00 CET is 02:00 UTC.
    assert_eq!(t.first(), Some(&utc("2026-10-24T23:55:00Z")));
    assert!(t.contains(&utc("2026-10-25T00:55:00Z")));
    assert!(!t
        .iter()
        .any(|x| *x > utc("2026-10-25T00:55:00Z") && *x < utc("2026-10-25T02:00:00Z")));
    assert!(t.contains(&utc("2026-10-25T02:00:00Z")));
    assert_eq!(t.len(), 13 + 3);
    let mut unique = t.clone();
    unique.dedup();
    assert_eq!(unique, t);
}

#[test]
fn every_five_minutes_in_berlin_across_the_spring_change_skips_the_missing_hour() {
    // 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
    let s = schedule("cron(*/5 * * * *)", "Europe/Berlin", "2026-03-29T00:00:00Z");
    let t = ticks(&s, "2026-03-29T00:40:00Z", "2026-03-29T01:10:00Z");
    let want: Vec<_> = [
        "2026-03-29T00:45:00Z",
        "2026-03-29T00:50:00Z",
        "2026-03-29T00:55:00Z",
        "2026-03-29T01:00:00Z", // 03:00 CEST
        "2026-03-29T01:05:00Z",
        "2026-03-29T01:10:00Z",
    ]
    .iter()
    .map(|s| utc(s))
    .collect();
    assert_eq!(t, want);
}

#[test]
fn a_daily_time_in_the_missing_hour_is_skipped_that_day() {
    let s = schedule("cron(30 2 * * *)", "Europe/Berlin", "2026-03-27T00:00:00Z");
    let t = ticks(&s, "2026-03-27T00:00:00Z", "2026-03-31T00:00:00Z");
    assert_eq!(
        t,
        vec![
            utc("2026-03-27T01:30:00Z"),
            utc("2026-03-28T01:30:00Z"),
            utc("2026-03-30T00:30:00Z")
        ]
    );
}

#[test]
fn rate_and_at_tick_from_their_anchor() {
    let s = schedule("rate(10 minutes)", "UTC", "2026-01-01T00:00:00Z");
    assert_eq!(
        ticks(&s, "2026-01-01T00:00:00Z", "2026-01-01T00:30:00Z"),
        vec![
            utc("2026-01-01T00:10:00Z"),
            utc("2026-01-01T00:20:00Z"),
            utc("2026-01-01T00:30:00Z")
        ]
    );
    let s = schedule(
        "at(2026-07-01T09:00:00)",
        "Europe/Berlin",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(
        ticks(&s, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        vec![utc("2026-07-01T07:00:00Z")]
    );
}

#[test]
fn the_due_tick_is_the_latest_missed_one_and_none_while_paused() {
    let mut s = schedule("cron(*/5 * * * *)", "UTC", "2026-01-01T00:00:00Z");
    assert_eq!(s.due_tick(utc("2026-01-01T00:04:59Z")), None);
    assert_eq!(
        s.due_tick(utc("2026-01-01T00:17:00Z")),
        Some(utc("2026-01-01T00:15:00Z"))
    );
    s.last_tick = Some(utc("2026-01-01T00:15:00Z"));
    assert_eq!(s.due_tick(utc("2026-01-01T00:19:00Z")), None);
    s.catch_up = CatchUp::None;
    assert_eq!(s.due_tick(utc("2026-01-01T00:21:30Z")), None);
    assert_eq!(
        s.due_tick(utc("2026-01-01T00:20:30Z")),
        Some(utc("2026-01-01T00:20:00Z"))
    );
    s.paused = true;
    assert_eq!(s.due_tick(utc("2026-01-01T00:20:30Z")), None);
}

#[test]
fn names_and_timezones_are_checked() {
    assert!(ScheduleName::parse("nightly-report.v2").is_ok());
    assert_eq!(ScheduleName::parse("a b").unwrap_err().field, "name");
    assert!(ScheduleName::parse("x".repeat(49)).is_err());
    assert!(parse_timezone("Europe/Berlin").is_ok());
    assert_eq!(
        parse_timezone("Mars/Olympus").unwrap_err().field,
        "timezone"
    );
}
