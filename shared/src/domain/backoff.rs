//! Retry delays: exponential backoff with full jitter, capped.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `delay = random(0, min(cap, base * 2^(attempt-1)))` — "full jitter", which spreads retries
/// of jobs that failed together instead of sending them back in one wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base_ms: base.as_millis() as u64,
            cap_ms: cap.as_millis() as u64,
        }
    }

    /// The ceiling of the delay before retry number `attempt` (1 = after the first failure).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(40);
        let ms = self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms);
        Duration::from_millis(ms)
    }

    /// A jittered delay for retry number `attempt`, given a uniform sample in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit_sample: f64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as f64;
        Duration::from_millis((ceiling * unit_sample.clamp(0.0, 1.0)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ceilings: Vec<u128> = (1..=6).map(|a| b.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_zero_and_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        assert!(b.delay(3, 0.999) < Duration::from_millis(400));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }
}
