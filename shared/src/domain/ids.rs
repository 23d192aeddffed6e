//! Newtypes that can only hold valid values: parse at the edge, trust everywhere else.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value that failed to parse, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A job's id: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(ulid::Ulid);

/// A ULID strictly greater than every one this process made before with this function.
pub fn monotonic_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let next = GENERATOR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .generate();
    next.unwrap_or_else(|_| ulid::Ulid::new())
}

impl JobId {
    /// A new id, strictly greater than every id this process made before (monotonic within a
    /// millisecond), so "newest first" holds even for jobs submitted in the same millisecond.
    pub fn new() -> Self {
        Self(monotonic_ulid())
    }

    /// A new id for a job of `tenant`, which says where the job is kept: after the creation
    /// time (48 bits) come the tenant's bucket (16 bits, `tenant_bucket`) and a counter of this
    /// process (64 bits, from a random start), so the id alone gives the job's partition (the
    /// bucket and, from the counter's low bits, a shard dealt round-robin), and ids made in one
    /// millisecond still increase.
    pub fn for_tenant(tenant: &Tenant) -> Self {
        static LAST: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));
        let ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let (last_ms, counter) = *last;
        // (one counter per process from a random start below 2^63, so it never wraps; the time
        // never goes back within the process)
        let counter = if counter == 0 {
            rand::random::<u64>() >> 1
        } else {
            counter + 1
        };
        let ms = ms.max(last_ms);
        *last = (ms, counter);
        let bits = ((ms as u128) << 80) | ((tenant_bucket(tenant) as u128) << 64) | counter as u128;
        Self(ulid::Ulid(bits))
    }

    /// The tenant bucket the id was made in (`for_tenant`).
    pub fn bucket(&self) -> u16 {
        (self.0 .0 >> 64) as u16
    }

    /// The id's counter bits: its shard is these modulo the shard count.
    pub fn spread(&self) -> u64 {
        self.0 .0 as u64
    }

    /// When the id was made (to the millisecond).
    pub fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(self.0.timestamp_ms() as i64).unwrap_or_default()
    }

    /// The least id made at `at` (to the millisecond): every id made at or after it is at
    /// least this, every one made before is less.
    pub fn first_at(at: chrono::DateTime<chrono::Utc>) -> Self {
        Self(ulid::Ulid::from_parts(
            at.timestamp_millis().max(0) as u64,
            0,
        ))
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        ulid::Ulid::from_str(s).map(Self).map_err(|_| {
            ValidationError::new("id", format!("'{s}' is not a job id (a 26-character ULID)"))
        })
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn check_name(field: &str, s: &str, max: usize, extra: &[char]) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(c)))
    {
        return Err(ValidationError::new(
            field,
            format!("must not contain '{c}'"),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
                let s = s.into();
                check_name($field, &s, $max, $extra)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A job type's registered name, e.g. `http.fetch`.
    JobType, "type", 64, &['.', '_', '-']
);
name_type!(
    /// The tenant a job belongs to; every query is scoped by it.
    Tenant, "tenant", 64, &['.', '_', '-']
);
name_type!(
    /// What a job's per-key limits count it under (a customer, a domain): a type's
    /// `rate_per_key` holds for each key of each tenant on its own.
    ConcurrencyKey, "concurrency_key", 128, &['.', '_', '-', ':', '/', '+', '=', '@']
);
name_type!(
    /// A client-chosen key: submitting twice with it yields the same job.
    IdempotencyKey, "idempotency_key", 255, &['.', '_', '-', ':', '/', '+', '=']
);

/// A tenant's bucket: 16 bits of a stable hash of its name (FNV-1a), the same in every process
/// and every release.
pub fn tenant_bucket(tenant: &Tenant) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in tenant.as_str().bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ h) as u16
}

/// What a connection listens to, within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Job(JobId),
    All,
}

impl Topic {
    /// As stored: the job id, or `*`.
    pub fn key(&self) -> String {
        match self {
            Topic::Job(id) => id.to_string(),
            Topic::All => "*".into(),
        }
    }

    pub fn parse_key(key: &str) -> Option<Self> {
        match key {
            "*" => Some(Topic::All),
            id => JobId::parse(id).ok().map(Topic::Job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()).unwrap(), id);
        let err = JobId::parse("nope").unwrap_err();
        assert_eq!(err.field, "id");
    }

    #[test]
    fn ids_made_in_one_millisecond_still_increase() {
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tenant_ids_carry_the_bucket_increase_and_deal_shards_in_turn() {
        let acme = Tenant::parse("acme").unwrap();
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::for_tenant(&acme)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id.bucket() == tenant_bucket(&acme)));
        let mut per_shard = [0u32; 64];
        for id in &ids {
            per_shard[(id.spread() % 64) as usize] += 1;
        }
        assert!(
            per_shard.iter().all(|n| (15..=16).contains(n)),
            "{per_shard:?}"
        );
        assert_ne!(
            tenant_bucket(&Tenant::parse("acme").unwrap()),
            tenant_bucket(&Tenant::parse("acmf").unwrap())
        );
    }

    #[test]
    fn names_reject_empty_long_and_odd_characters() {
        assert!(JobType::parse("http.fetch").is_ok());
        assert_eq!(JobType::parse("").unwrap_err().field, "type");
        assert!(JobType::parse("a b").unwrap_err().message.contains("' '"));
        assert!(JobType::parse("x".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("order:42/charge").is_ok());
    }
}
