//! What ended, per type and minute: how many jobs succeeded and failed, and how long their runs
//! took (counted into buckets, from which the percentiles are read). The console's charts.

use super::{Job, JobStatus};
use chrono::{DateTime, DurationRound, Utc};
use serde::Serialize;

/// Upper bounds of the run-time buckets, in milliseconds; a last bucket holds the longer runs.
pub const RUN_BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];
/// Buckets of a minute's run times.
pub const RUN_BUCKETS: usize = RUN_BOUNDS_MS.len() + 1;

/// How long minutes are kept.
pub const HISTORY_KEPT: chrono::Duration = chrono::Duration::days(2);

/// One type's minute: what ended in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeMinute {
    pub succeeded: u64,
    /// Failed or dead.
    pub failed: u64,
    /// Runs counted per bucket of `RUN_BOUNDS_MS`.
    pub runs: [u64; RUN_BUCKETS],
}

/// The minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(at)
}

/// The bucket a run of `ms` milliseconds is counted in.
pub fn run_bucket(ms: u64) -> usize {
    RUN_BOUNDS_MS
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(RUN_BOUNDS_MS.len())
}

/// What a job's end adds to its type's minute: the minute, and whether it succeeded and how
/// long its run took; `None` for a job that has not ended, or ended cancelled (that is no run's
/// outcome).
pub fn ended(job: &Job) -> Option<(DateTime<Utc>, bool, Option<u64>)> {
    let succeeded = match job.status {
        JobStatus::Succeeded => true,
        JobStatus::Failed | JobStatus::Dead => false,
        _ => return None,
    };
    let finished = job.finished_at?;
    let ran = job
        .started_at
        .map(|started| (finished - started).num_milliseconds().max(0) as u64);
    Some((minute_of(finished), succeeded, ran))
}

impl TypeMinute {
    /// Count one end.
    pub fn note(&mut self, succeeded: bool, ran_ms: Option<u64>) {
        if succeeded {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        if let Some(ms) = ran_ms {
            self.runs[run_bucket(ms)] += 1;
        }
    }

    pub fn add(&mut self, other: &TypeMinute) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        for (mine, theirs) in self.runs.iter_mut().zip(other.runs) {
            *mine += theirs;
        }
    }

    /// The run time below which a share `q` (0 to 1) of the runs took, in milliseconds: the
    /// upper bound of its bucket (the longest bucket's lower bound, for runs past every bound).
    pub fn percentile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.runs.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.runs.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    RUN_BOUNDS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(RUN_BOUNDS_MS[RUN_BOUNDS_MS.len() - 1]),
                );
            }
        }
        None
    }
}

/// A type's minute as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MinuteView {
    pub at: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

impl MinuteView {
    pub fn of(at: DateTime<Utc>, minute: &TypeMinute) -> Self {
        Self {
            at,
            succeeded: minute.succeeded,
            failed: minute.failed,
            p50_ms: minute.percentile_ms(0.5),
            p99_ms: minute.percentile_ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_buckets_runs_fall_in() {
        let mut m = TypeMinute::default();
        for ms in [3, 4, 4, 4, 4, 4, 4, 4, 4, 700] {
            m.note(true, Some(ms));
        }
        m.note(false, None);
        assert_eq!((m.succeeded, m.failed), (10, 1));
        assert_eq!(m.percentile_ms(0.5), Some(5));
        assert_eq!(m.percentile_ms(0.99), Some(1_000));
        assert_eq!(TypeMinute::default().percentile_ms(0.5), None);
        let mut long = TypeMinute::default();
        long.note(true, Some(10_000_000));
        assert_eq!(long.percentile_ms(0.5), Some(300_000));
    }

    #[test]
    fn a_minute_is_its_start() {
        let at = "2030-01-01T10:11:12.5Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(minute_of(at).to_rfc3339(), "2030-01-01T10:11:00+00:00");
    }
}
