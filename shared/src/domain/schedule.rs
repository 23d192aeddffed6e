//! Recurring jobs: a schedule's definition, its cadence (cron, rate or one time, in an IANA
//! time zone) and when it is due. No I/O here: the local scheduler and EventBridge Scheduler
//! fire the ticks, `crate::schedules` turns a tick into a job.
//!
//! Time-zone rule (the one EventBridge Scheduler documents, so both backends fire the same
//! ticks): a local time that does not exist (clocks go forward) is skipped; a local time that
//! happens twice (clocks go back) fires once, at its first occurrence.

use super::ids::{JobId, JobType, Tenant, ValidationError};
use super::zones::Zone;
use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A schedule's name, unique within its tenant: 1 to 48 letters, digits, `.`, `_` or `-`
/// (short enough to name an EventBridge schedule with the tenant's digest in front).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScheduleName(String);

impl ScheduleName {
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        if s.is_empty() || s.len() > 48 {
            return Err(ValidationError::new("name", "must be 1 to 48 characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ValidationError::new(
                "name",
                format!("must not contain '{c}'"),
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ScheduleName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<ScheduleName> for String {
    fn from(v: ScheduleName) -> String {
        v.0
    }
}

impl fmt::Display for ScheduleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A five-field cron expression (minute hour day-of-month month day-of-week), as crontab
/// writes it: `*`, lists, ranges, steps, and names (`JAN`, `MON`). Restricting both days at
/// once is refused (crontab would take either, EventBridge Scheduler cannot express that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    any_day: bool,
    any_weekday: bool,
    source: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn cron_error(message: impl Into<String>) -> ValidationError {
    ValidationError::new("cron", message)
}

/// One field as a bit set of the values it takes.
fn parse_field(
    text: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<u64, ValidationError> {
    let value = |s: &str| -> Result<u32, ValidationError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| cron_error(format!("{what}: '{s}' is not a number")))?;
        // (Sunday is 0 or 7.)
        let v = if what == "day of week" && v == 7 {
            0
        } else {
            v
        };
        if v < min || v > max {
            return Err(cron_error(format!("{what}: {v} is outside {min}-{max}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    cron_error(format!("{what}: step '{s}' is not a positive number"))
                })?;
                (r, Some(step))
            }
            None => (part, None),
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if step.is_some() { max } else { a })
        };
        if from > to {
            return Err(cron_error(format!(
                "{what}: range '{range}' runs backwards"
            )));
        }
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step.unwrap_or(1);
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(cron_error(
                "must have five fields: minute hour day-of-month month day-of-week",
            ));
        }
        let cron = Self {
            minutes: parse_field(fields[0], "minute", 0, 59, &[], 0)?,
            hours: parse_field(fields[1], "hour", 0, 23, &[], 0)? as u32,
            days: parse_field(fields[2], "day of month", 1, 31, &[], 0)? as u32,
            months: parse_field(fields[3], "month", 1, 12, &MONTHS, 1)? as u16,
            weekdays: parse_field(fields[4], "day of week", 0, 7, &WEEKDAYS, 0)? as u8,
            any_day: fields[2] == "*",
            any_weekday: fields[4] == "*",
            source: fields.join(" "),
        };
        if !cron.any_day && !cron.any_weekday {
            return Err(cron_error(
                "restrict the day of month or the day of week, not both",
            ));
        }
        if cron.aws_expression().len() > 256 {
            return Err(cron_error(
                "too long once written out (256 characters at most)",
            ));
        }
        Ok(cron)
    }

    fn matches_day(&self, date: NaiveDate) -> bool {
        self.months & (1 << date.month()) != 0
            && self.days & (1 << date.day()) != 0
            && self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0
    }

    /// The first tick strictly after `after`, in `tz` (within eight years).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Zone) -> Option<DateTime<Utc>> {
        let mut date = tz.local_date(after);
        for _ in 0..366 * 8 {
            if self.matches_day(date) {
                for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for minute in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                        let local = date.and_hms_opt(hour, minute, 0)?;
                        if let Some(t) = first_occurrence(tz, local) {
                            if t > after {
                                return Some(t);
                            }
                        }
                    }
                }
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The expression as EventBridge Scheduler writes it: `cron(min hour dom month dow year)`.
    pub fn aws_expression(&self) -> String {
        let (day, weekday) = match (self.any_day, self.any_weekday) {
            (true, true) => ("*".to_string(), "?".to_string()),
            (true, false) => (
                "?".to_string(),
                render(self.weekdays as u64, 0, 6, Some(&WEEKDAYS)),
            ),
            _ => (render(self.days as u64, 1, 31, None), "?".to_string()),
        };
        format!(
            "cron({} {} {} {} {} *)",
            render(self.minutes, 0, 59, None),
            render(self.hours as u64, 0, 23, None),
            day,
            render(self.months as u64, 1, 12, None),
            weekday
        )
    }
}

/// A bit set as a field: `*`, `start/step`, or a list.
fn render(bits: u64, min: u32, max: u32, names: Option<&[&str]>) -> String {
    let values: Vec<u32> = (min..=max).filter(|v| bits & (1 << v) != 0).collect();
    let name = |v: u32| names.map_or(v.to_string(), |n| n[v as usize].to_string());
    if values.len() as u32 == max - min + 1 {
        return "*".into();
    }
    if names.is_none() && values.len() > 1 {
        let step = values[1] - values[0];
        let progression = values.windows(2).all(|w| w[1] - w[0] == step);
        if progression && values.last().unwrap() + step > max {
            return format!("{}/{}", values[0], step);
        }
    }
    values.into_iter().map(name).collect::<Vec<_>>().join(",")
}

/// When the local time `local` happens in `tz`: the first of two, none in a gap.
fn first_occurrence(tz: Zone, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local(local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t),
        LocalResult::None => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateUnit {
    Minutes,
    Hours,
    Days,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    Cron(Cron),
    /// Every `every` units from the schedule's start (its `start_at`, else its creation).
    Rate {
        every: u32,
        unit: RateUnit,
    },
    /// Once, at this local time.
    At(NaiveDateTime),
}

impl Cadence {
    /// `rate` as EventBridge Scheduler writes it: `5 minutes`, `1 hour`, `2 days`.
    pub fn parse_rate(text: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "rate",
                "must be '<n> minutes', '<n> hours' or '<n> days' (n from 1)",
            )
        };
        let (n, unit) = text.trim().split_once(' ').ok_or_else(bad)?;
        let every: u32 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let unit = match unit.trim() {
            "minute" | "minutes" => RateUnit::Minutes,
            "hour" | "hours" => RateUnit::Hours,
            "day" | "days" => RateUnit::Days,
            _ => return Err(bad()),
        };
        if Self::period(every, unit) > MAX_RATE {
            return Err(ValidationError::new(
                "rate",
                format!(
                    "must be at most {} days (or as many hours or minutes)",
                    MAX_RATE.num_days()
                ),
            ));
        }
        Ok(Cadence::Rate { every, unit })
    }

    pub fn parse_at(text: &str) -> Result<Self, ValidationError> {
        let at = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").map_err(|_| {
            ValidationError::new(
                "at",
                "must be a local date and time, yyyy-mm-ddThh:mm:ss (in the schedule's timezone)",
            )
        })?;
        check_year("at", at.and_utc())?;
        Ok(Cadence::At(at))
    }

    /// The stored and displayed form: `cron(…)` in crontab's five fields, `rate(…)`, `at(…)`.
    pub fn expression(&self) -> String {
        match self {
            Cadence::Cron(c) => format!("cron({})", c.source),
            Cadence::Rate { every, unit } => format!("rate({})", rate_text(*every, *unit)),
            Cadence::At(t) => format!("at({})", t.format("%Y-%m-%dT%H:%M:%S")),
        }
    }

    /// The form EventBridge Scheduler takes.
    pub fn aws_expression(&self) -> String {
        match self {
            Cadence::Cron(c) => c.aws_expression(),
            other => other.expression(),
        }
    }

    pub fn parse_expression(text: &str) -> Result<Self, ValidationError> {
        let inner = |prefix: &str| text.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        if let Some(c) = inner("cron(") {
            return Cron::parse(c).map(Cadence::Cron);
        }
        if let Some(r) = inner("rate(") {
            return Self::parse_rate(r);
        }
        if let Some(a) = inner("at(") {
            return Self::parse_at(a);
        }
        Err(ValidationError::new(
            "expression",
            "not a cron(), rate() or at() expression",
        ))
    }

    fn period(every: u32, unit: RateUnit) -> chrono::Duration {
        let n = every as i64;
        match unit {
            RateUnit::Minutes => chrono::Duration::minutes(n),
            RateUnit::Hours => chrono::Duration::hours(n),
            RateUnit::Days => chrono::Duration::days(n),
        }
    }
}

fn rate_text(every: u32, unit: RateUnit) -> String {
    let unit = match unit {
        RateUnit::Minutes => "minute",
        RateUnit::Hours => "hour",
        RateUnit::Days => "day",
    };
    format!("{every} {unit}{}", if every == 1 { "" } else { "s" })
}

impl Serialize for Cadence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expression())
    }
}

impl<'de> Deserialize<'de> for Cadence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cadence::parse_expression(&text).map_err(serde::de::Error::custom)
    }
}

/// What a tick does while the schedule's previous run has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Nothing: the tick is recorded as skipped.
    #[default]
    Skip,
    /// Submit anyway: runs may overlap.
    Allow,
    /// Keep one tick waiting (a later one replaces it), submitted when the previous run ends.
    QueueOne,
}

/// Which missed ticks fire when the scheduler was not running at their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// The latest missed tick fires (once); earlier ones are skipped.
    #[default]
    Latest,
    /// A tick more than a minute late is skipped.
    None,
}

/// How late a tick may fire under `CatchUp::None`.
pub const ON_TIME: chrono::Duration = chrono::Duration::minutes(1);

/// The longest rate: ten years.
pub const MAX_RATE: chrono::Duration = chrono::Duration::days(3650);

/// The years a schedule's times (`at`, `start_at`, `end_at`) may fall in: every tick, and
/// every sum the scheduler makes from them, then stays far inside what a time can hold.
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// `field` refused unless `t` falls in [`YEARS`].
pub fn check_year(field: &str, t: DateTime<Utc>) -> Result<(), ValidationError> {
    if YEARS.contains(&t.year()) {
        return Ok(());
    }
    Err(ValidationError::new(
        field,
        format!(
            "must fall in the years {} to {}",
            YEARS.start(),
            YEARS.end()
        ),
    ))
}
/// Runs kept in a schedule's history.
pub const RUNS_KEPT: usize = 50;

/// What became of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// A job was submitted (or found, for a repeated tick).
    Submitted,
    /// The previous run was still going (`Overlap::Skip`), or a newer tick replaced this one.
    Skipped,
    /// Waiting for the previous run to end (`Overlap::QueueOne`).
    Waiting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    pub tick: DateTime<Utc>,
    pub outcome: RunOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    pub at: DateTime<Utc>,
}

/// A recurring job, as declared and as it went so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub tenant: Tenant,
    pub name: ScheduleName,
    #[serde(rename = "type")]
    pub job_type: JobType,
    pub payload: Value,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    pub expression: Cadence,
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default)]
    pub paused: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Ticks at or before this are never fired (set when the schedule is created, changed or
    /// resumed: a paused schedule does not make up for its pause).
    pub fires_after: DateTime<Utc>,
    /// The latest tick that fired (submitted, skipped or left waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<DateTime<Utc>>,
    /// The job of the latest submitted run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobId>,
    /// A tick waiting for the previous run to end (`Overlap::QueueOne`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_tick: Option<DateTime<Utc>>,
    /// The latest runs, newest last.
    #[serde(default)]
    pub runs: Vec<ScheduleRun>,
    pub version: u64,
}

/// The prefix of the idempotency keys of jobs a schedule submits (refused on other submits).
pub const TICK_KEY_PREFIX: &str = "schedule:";

impl Schedule {
    pub fn tz(&self) -> Zone {
        Zone::named(&self.timezone).unwrap_or(Zone::UTC)
    }

    /// The first tick strictly after `after`, within the schedule's window.
    pub fn next_tick_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tick = match &self.expression {
            Cadence::Cron(c) => c.next_after(after, self.tz())?,
            Cadence::Rate { every, unit } => {
                let period = Cadence::period(*every, *unit);
                // From the start (a tick there), else one period after the creation. (Every
                // sum checked: a stored schedule with a time out of range has no next tick;
                // it does not stop the scheduler.)
                let anchor = match self.start_at {
                    Some(start) => start,
                    None => self.created_at.checked_add_signed(period)?,
                };
                if after < anchor {
                    anchor
                } else {
                    let secs = period.num_seconds().max(1);
                    let n = (after - anchor).num_seconds() / secs + 1;
                    let since = chrono::Duration::try_seconds(n.checked_mul(secs)?)?;
                    anchor.checked_add_signed(since)?
                }
            }
            Cadence::At(local) => {
                let t = first_occurrence(self.tz(), *local)?;
                (t > after).then_some(t)?
            }
        };
        let tick = match self.start_at {
            Some(start) if tick < start => {
                return self
                    .next_tick_after(start.checked_sub_signed(chrono::Duration::seconds(1))?)
            }
            _ => tick,
        };
        match self.end_at {
            Some(end) if tick > end => None,
            _ => Some(tick),
        }
    }

    /// The tick to fire at `now`, if one is due: the latest tick after the last one handled
    /// (and after `fires_after`), at or before `now`; under `CatchUp::None` only if it is at
    /// most `ON_TIME` late. `None` while paused.
    pub fn due_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.paused {
            return None;
        }
        let from = self
            .last_tick
            .map_or(self.fires_after, |t| t.max(self.fires_after));
        let mut due = None;
        let mut after = from;
        // (Bounded: a scheduler down for years skips to the latest tick within the bound.)
        for _ in 0..100_000 {
            match self.next_tick_after(after) {
                Some(t) if t <= now => {
                    due = Some(t);
                    after = t;
                }
                _ => break,
            }
        }
        let due = due?;
        match self.catch_up {
            CatchUp::None if now - due > ON_TIME => None,
            _ => Some(due),
        }
    }

    /// From when the scheduler has something to do for this schedule: a waiting tick (at
    /// once), else its next tick after the last one handled; `None`: never (paused, or no tick
    /// left in its window).
    pub fn due_from(&self) -> Option<DateTime<Utc>> {
        if self.waiting_tick.is_some() {
            return Some(DateTime::<Utc>::MIN_UTC);
        }
        if self.paused {
            return None;
        }
        let from = self
            .last_tick
            .map_or(self.fires_after, |t| t.max(self.fires_after));
        self.next_tick_after(from)
    }

    /// The idempotency key of the job this schedule submits for `tick`: a tick fired twice
    /// (a retried delivery, a restart) finds the job the first made.
    pub fn tick_key(&self, tick: DateTime<Utc>) -> String {
        format!("{TICK_KEY_PREFIX}{}:{}", self.name, tick.timestamp())
    }

    /// Record what became of `tick` (a run already recorded for it is replaced).
    pub fn record_run(&mut self, run: ScheduleRun) {
        self.runs.retain(|r| r.tick != run.tick);
        if self.last_tick.is_none_or(|t| t < run.tick) {
            self.last_tick = Some(run.tick);
        }
        if let Some(id) = run.job_id {
            self.last_job = Some(id);
        }
        self.runs.push(run);
        self.runs.sort_by_key(|r| r.tick);
        if self.runs.len() > RUNS_KEPT {
            let extra = self.runs.len() - RUNS_KEPT;
            self.runs.drain(..extra);
        }
    }
}

/// Parse an IANA time-zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Zone, ValidationError> {
    Zone::named(name).ok_or_else(|| {
        ValidationError::new(
            "timezone",
            format!("'{name}' is not an IANA time zone (e.g. Europe/Berlin, UTC)"),
        )
    })
}

#[cfg(test)]
mod tests;
