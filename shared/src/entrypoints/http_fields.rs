//! The fields of request bodies as types that parse: each is read from its JSON or refused with
//! what it must be, and a body is read with the path of the field at fault
//! (`jobs[3].payload.url`, `debounce.window_seconds`) into the API's 400. With the `openapi`
//! feature each also says its JSON Schema, from which the description is generated. A child of
//! `http`.

use super::{ApiError, ApiResult};
use crate::domain::{
    Cadence, CatchUp, Cron, DependencyFailure, JobId, JobStatus, Overlap, Role, ValidationError,
};
#[cfg(feature = "openapi")]
use crate::domain::{ConcurrencyKey, IdempotencyKey, JobType, ScheduleName, Tenant};
use crate::jobs::BulkAction;
use axum::http::StatusCode;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::time::Duration;

/// A request body: JSON (else `malformed_json`), an object (else `malformed_json`), then `T`
/// (else `invalid_field` naming the field).
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    object(json_of(body)?, "request body must be a JSON object")
}

/// A request body as JSON, else `malformed_json`.
pub(crate) fn json_of(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// `value` as `T` if it is a JSON object (else `malformed_json` with `not_object`).
pub(crate) fn object<T: DeserializeOwned>(value: Value, not_object: &str) -> ApiResult<T> {
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            not_object,
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        refusal(&path, &e.into_inner().to_string())
    })
}

/// The 400 for what serde said at `path` (`.` is the body itself), in the API's words: the
/// field named in full, and what it must be.
fn refusal(path: &str, said: &str) -> ApiError {
    let within = |name: &str| match path {
        "." => name.to_string(),
        _ => format!("{path}.{name}"),
    };
    let quoted = |s: &str| s.split('`').nth(1).unwrap_or_default().to_string();
    let (field, message) = if let Some(rest) = said.strip_prefix("missing field ") {
        (within(&quoted(rest)), "is required".to_string())
    } else if said.starts_with("unknown field ") {
        // (the path already ends with the unknown field's name)
        (path.to_string(), "unknown field".to_string())
    } else if let Some((_, expected)) = said
        .strip_prefix("unknown variant ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        (
            path.to_string(),
            format!("must be {}", expected.replace('`', "")),
        )
    } else if let Some((_, expected)) = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .find_map(|p| said.strip_prefix(p))
        .and_then(|rest| rest.rsplit_once(", expected "))
    {
        (path.to_string(), format!("must be {expected}"))
    } else {
        (path.to_string(), said.to_string())
    };
    let refused = ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message);
    match field.as_str() {
        "." => refused,
        _ => refused.field(field),
    }
}

/// The JSON Schema of a field type, said once beside it (with the `openapi` feature).
macro_rules! schema {
    ($ty:ty, $name:expr, $schema:tt) => {
        #[cfg(feature = "openapi")]
        impl schemars::JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

/// A domain name type read from a JSON string (`JobType`, `Tenant`, `IdempotencyKey`, …): its
/// own parse decides, and its refusal is the message.
#[derive(Debug, Clone)]
pub(crate) struct Text<T>(pub T);

impl<'de, T: TryFrom<String, Error = ValidationError>> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::try_from(s)
            .map(Text)
            .map_err(|e| D::Error::custom(e.message))
    }
}

schema!(Text<JobType>, "JobType", {
    "type": "string", "description": "a registered job type (GET /v1/types)"
});
schema!(Text<Tenant>, "Tenant", { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" });
schema!(Text<ConcurrencyKey>, "ConcurrencyKey", {
    "type": "string", "minLength": 1, "maxLength": 128
});
schema!(Text<IdempotencyKey>, "IdempotencyKey", { "type": "string", "maxLength": 255 });
schema!(Text<ScheduleName>, "ScheduleName", {
    "type": "string", "pattern": "^[A-Za-z0-9._-]{1,48}$"
});

/// A whole number from `MIN` to `MAX` (a fraction, a string or overflow is refused).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Whole<const MIN: i64, const MAX: i64>(pub i64);

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Whole<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole(&Value::deserialize(d)?, MIN, MAX)
            .map(Whole)
            .map_err(D::Error::custom)
    }
}

/// `v` if it is a whole number from `min` to `max` (one body for every `Whole`).
fn whole(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    v.as_i64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
}

#[cfg(feature = "openapi")]
impl<const MIN: i64, const MAX: i64> schemars::JsonSchema for Whole<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Whole_{MIN}_{MAX}").into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": MIN, "maximum": MAX })
    }
}

/// A job's priority: -1000 to 1000, higher first.
pub(crate) type Priority = Whole<-1000, 1000>;
/// A job's attempts before it dies: 1 to 100.
pub(crate) type MaxAttempts = Whole<1, 100>;
/// Milliseconds of a backoff: up to one day.
pub(crate) type Millis = Whole<0, 86_400_000>;

/// `v` as a duration if it is a number of seconds from 0 (or above it, without `zero`) to `max`.
fn seconds(v: &Value, zero: bool, max: f64) -> Option<Duration> {
    v.as_f64()
        .filter(|s| if zero { *s >= 0.0 } else { *s > 0.0 })
        .filter(|s| *s <= max)
        .map(Duration::from_secs_f64)
}

/// Longest `delay_seconds` accepted: one year.
pub(crate) const MAX_DELAY_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// A number of seconds above `0` (or from `0`, where `ZERO` is allowed) up to `MAX`, as a
/// duration; `EXPECTED` says it in words.
macro_rules! seconds {
    ($(#[$doc:meta])* $name:ident, zero: $zero:literal, max: $max:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name(pub Duration);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                seconds(&Value::deserialize(d)?, $zero, $max as f64)
                    .map($name)
                    .ok_or_else(|| D::Error::custom(concat!("must be ", $expected)))
            }
        }

        #[cfg(feature = "openapi")]
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut schema = schemars::json_schema!({ "type": "number", "maximum": $max as u64 });
                schema.insert((if $zero { "minimum" } else { "exclusiveMinimum" }).into(), 0.into());
                schema
            }
        }
    };
}

seconds!(
    /// How long a submit waits before it is queued.
    DelaySeconds, zero: true, max: MAX_DELAY_SECS, "a number of seconds from 0 to one year"
);
seconds!(
    /// A debounce's window or longest wait.
    DebounceSeconds, zero: false, max: crate::domain::MAX_DEBOUNCE.as_secs(),
    "a number of seconds above 0, up to one day"
);

/// A point in time: RFC 3339.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Time(pub chrono::DateTime<chrono::Utc>);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&s)
            .map(|t| Time(t.with_timezone(&chrono::Utc)))
            .map_err(|_| D::Error::custom("must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z"))
    }
}

schema!(Time, "Time", { "type": "string", "format": "date-time" });

/// A job's id (`JobRef`) or a batch's (`BatchRef`): a ULID.
macro_rules! id {
    ($name:ident, $expected:literal) => {
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name(pub JobId);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                JobId::parse(&s)
                    .map($name)
                    .map_err(|_| D::Error::custom(concat!("must be ", $expected)))
            }
        }

        schema!($name, "Ulid", {
            "type": "string", "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$"
        });
    };
}

id!(JobRef, "a job id");
id!(BatchRef, "a batch id");

/// A list of at most `MAX` items (each read as `T`, with its index when at fault).
#[derive(Debug, Clone)]
pub(crate) struct AtMost<T, const MAX: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for AtMost<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        match items.len() <= MAX {
            true => Ok(AtMost(items)),
            false => Err(D::Error::custom(format!("must hold at most {MAX} items"))),
        }
    }
}

#[cfg(feature = "openapi")]
impl<T: schemars::JsonSchema, const MAX: usize> schemars::JsonSchema for AtMost<T, MAX> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("AtMost_{MAX}_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "array", "items": generator.subschema_for::<T>(), "maxItems": MAX,
        })
    }
}

/// One of a few words, each a value of a domain enum.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident($ty:ty) { $($word:literal => $value:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let words: &[&str] = &[$($word),+];
                match String::deserialize(d)?.as_str() {
                    $($word => Ok($name($value)),)+
                    _ => Err(D::Error::custom(format!("must be one of {}", words.join(", ")))),
                }
            }
        }

        schema!($name, stringify!($name), { "type": "string", "enum": [$($word),+] });
    };
}

choice!(OverlapChoice(Overlap) {
    "skip" => Overlap::Skip, "allow" => Overlap::Allow, "queue_one" => Overlap::QueueOne,
});
choice!(CatchUpChoice(CatchUp) { "latest" => CatchUp::Latest, "none" => CatchUp::None });
choice!(DependencyFailureChoice(DependencyFailure) {
    "cancel" => DependencyFailure::Cancel, "run" => DependencyFailure::Run,
});
choice!(BulkActionChoice(BulkAction) {
    "retry" => BulkAction::Retry, "cancel" => BulkAction::Cancel,
});
choice!(StatusChoice(JobStatus) {
    "waiting" => JobStatus::Waiting, "scheduled" => JobStatus::Scheduled,
    "queued" => JobStatus::Queued, "running" => JobStatus::Running,
    "succeeded" => JobStatus::Succeeded, "failed" => JobStatus::Failed,
    "dead" => JobStatus::Dead, "cancelled" => JobStatus::Cancelled,
});

/// A schedule's expression of one kind (`cron`, `rate` or `at`), parsed by the domain.
macro_rules! expression {
    ($(#[$doc:meta])* $name:ident, $parse:expr, $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub(crate) struct $name(pub Cadence);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let parse: fn(&str) -> Result<Cadence, ValidationError> = $parse;
                parse(&s).map($name).map_err(|e| D::Error::custom(e.message))
            }
        }

        schema!($name, stringify!($name), $schema);
    };
}

expression!(CronText, |s| Cron::parse(s).map(Cadence::Cron), {
    "type": "string",
    "description": "five fields: minute hour day-of-month month day-of-week (names like MON, JAN allowed; restrict one of the two days, not both)",
    "examples": ["*/5 * * * *"]
});
expression!(RateText, Cadence::parse_rate, {
    "type": "string", "description": "'<n> minutes', '<n> hours' or '<n> days'",
    "examples": ["10 minutes"]
});
expression!(AtText, Cadence::parse_at, {
    "type": "string", "description": "one time, local in timezone: yyyy-mm-ddThh:mm:ss"
});

/// An IANA time zone's name.
#[derive(Debug, Clone)]
pub(crate) struct TimeZone(pub String);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match crate::domain::parse_timezone(&s) {
            Ok(_) => Ok(TimeZone(s)),
            Err(e) => Err(D::Error::custom(e.message)),
        }
    }
}

schema!(TimeZone, "TimeZone", {
    "type": "string",
    "description": "an IANA time zone (default UTC). A local time that does not exist (clocks forward) is skipped; one that happens twice fires once"
});

/// Role names (`reader`, `submitter`, `admin`, `operator`), as a credential holds them.
#[derive(Debug, Clone)]
pub(crate) struct Roles(pub Vec<Role>);

impl<'de> Deserialize<'de> for Roles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<Value>::deserialize(d)?;
        let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
        let names = names.ok_or_else(|| D::Error::custom("must be a list of role names"))?;
        crate::domain::parse_roles(names)
            .map(Roles)
            .map_err(D::Error::custom)
    }
}

schema!(Roles, "Roles", {
    "type": "array",
    "items": { "type": "string", "enum": ["operator", "admin", "submitter", "reader"] }
});

/// A name for people: 1 to 100 characters.
#[derive(Debug, Clone)]
pub(crate) struct Label(pub String);

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match (1..=100).contains(&s.chars().count()) {
            true => Ok(Label(s)),
            false => Err(D::Error::custom("must be a string of 1 to 100 characters")),
        }
    }
}

schema!(Label, "Label", { "type": "string", "minLength": 1, "maxLength": 100 });

/// Any JSON a job type takes as its payload (its own checks run at submit).
pub(crate) fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}
