//! The generic cell rate algorithm (GCRA): a rate as one number per key, the theoretical
//! arrival time (TAT) of the next start, so a store can hold it and change it with one
//! conditional write. Also the limits set on a job type from the environment, and the
//! durations they are written in.

use super::JobType;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A rate: at most `per` starts in any `period` (bursts of up to `per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per: u32,
    pub period: Duration,
}

impl Rate {
    /// The spacing of starts at the steady rate, and the burst allowed.
    pub fn interval_and_burst(&self) -> (Duration, u32) {
        let per = self.per.max(1);
        (self.period / per, per)
    }
}

/// A submit's debounce: later submits with the same `key` (same tenant and type) while its job
/// waits replace that job's payload and push its run time to `window` after the latest submit,
/// but never past `max_wait` after the first; the job then runs once, with the last payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debounce {
    pub key: super::ConcurrencyKey,
    pub window: Duration,
    pub max_wait: Option<Duration>,
}

/// The longest debounce window or wait.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(24 * 3600);

impl Debounce {
    /// When a debounced job first submitted at `first` runs, given a submit at `now`.
    pub fn run_at(&self, first: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let after = |t: DateTime<Utc>, d: Duration| {
            t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        };
        let latest = after(now, self.window);
        match self.max_wait {
            Some(max) => latest.min(after(first, max)).max(now),
            None => latest,
        }
    }
}

/// GCRA at `now`: with the stored TAT (micros; none before the first start), `Ok(new TAT)` to
/// store if a start is admitted, or `Err(when one may be)`.
pub fn gcra(
    stored: Option<i64>,
    now: DateTime<Utc>,
    interval: Duration,
    burst: u32,
) -> Result<i64, DateTime<Utc>> {
    let now_us = now.timestamp_micros();
    let interval_us = interval.as_micros() as i64;
    let tolerance_us = interval_us * (burst.max(1) as i64 - 1);
    let tat = stored.map_or(now_us, |t| t.max(now_us));
    if tat - tolerance_us > now_us {
        return Err(DateTime::from_timestamp_micros(tat - tolerance_us).unwrap_or(now));
    }
    Ok(tat + interval_us)
}

/// Parse `10s`, `500ms`, `15m`, `2h`, `90d` or a bare number of seconds. `None` for anything else,
/// including values too large for a `Duration` (never a panic).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// One limit on a job type, set from the environment (`CONVEYOR_TYPE_LIMITS`).
#[derive(Debug, Clone, PartialEq)]
pub struct TypeLimit {
    pub job_type: String,
    pub limit: Limit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    Rate(Rate),
    RatePerKey(Rate),
    MaxRunningPerKey(u32),
    MinInterval(Duration),
}

impl TypeLimit {
    /// `<type>:<limit>=<value>`, several separated by spaces, commas or semicolons:
    /// `rate=10/1s`, `rate_per_key=1/30s`, `max_running_per_key=2`, `min_interval=500ms`.
    pub fn parse_all(s: &str) -> Option<Vec<TypeLimit>> {
        s.split([' ', ',', ';'])
            .filter(|p| !p.is_empty())
            .map(|part| {
                let (job_type, setting) = part.split_once(':')?;
                let (name, value) = setting.split_once('=')?;
                let rate = |v: &str| -> Option<Rate> {
                    let (per, period) = v.split_once('/')?;
                    let per: u32 = per.parse().ok().filter(|n| *n > 0)?;
                    let period = parse_duration(period).filter(|d| !d.is_zero())?;
                    Some(Rate { per, period })
                };
                let limit = match name {
                    "rate" => Limit::Rate(rate(value)?),
                    "rate_per_key" => Limit::RatePerKey(rate(value)?),
                    "max_running_per_key" => {
                        Limit::MaxRunningPerKey(value.parse().ok().filter(|n| *n > 0)?)
                    }
                    "min_interval" => Limit::MinInterval(parse_duration(value)?),
                    _ => return None,
                };
                JobType::parse(job_type).ok()?;
                Some(TypeLimit {
                    job_type: job_type.to_string(),
                    limit,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debounced_run_moves_with_each_submit_but_not_past_its_max_wait() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let s = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        let mut d = Debounce {
            key: super::super::ConcurrencyKey::parse("k").unwrap(),
            window: Duration::from_secs(2),
            max_wait: None,
        };
        assert_eq!(d.run_at(t0, t0), s(2000));
        assert_eq!(d.run_at(t0, s(1500)), s(3500));
        d.max_wait = Some(Duration::from_secs(3));
        assert_eq!(d.run_at(t0, s(1500)), s(3000));
        // A submit after the cap runs at once.
        assert_eq!(d.run_at(t0, s(4000)), s(4000));
    }

    #[test]
    fn one_a_second_spaces_starts_by_a_second_and_a_burst_lets_that_many_through() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap();
        let s = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        let second = Duration::from_secs(1);
        let tat = gcra(None, t0, second, 1).unwrap();
        assert_eq!(gcra(Some(tat), s(500), second, 1), Err(s(1000)));
        let tat = gcra(Some(tat), s(1000), second, 1).unwrap();
        assert_eq!(tat, s(2000).timestamp_micros());
        // Three per three seconds: three at once, the fourth a second after.
        let (interval, burst) = Rate {
            per: 3,
            period: Duration::from_secs(3),
        }
        .interval_and_burst();
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, t0, interval, burst).unwrap());
        }
        assert_eq!(gcra(tat, t0, interval, burst), Err(s(1000)));
    }
}
