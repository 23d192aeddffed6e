//! Settings, read once at start from `CONVEYOR_*` environment variables. Every setting has a
//! documented default (README, "Configuration"); a malformed value is an error naming the
//! variable.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Embedded,
    Aws,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Embedded backend: WAL size past which the log is made to start over.
    pub wal_limit_bytes: u64,
    /// Embedded backend: writes that may wait for the writer; past it new jobs get 503.
    pub write_queue: usize,
    pub default_tenant: String,
    pub max_payload_bytes: usize,
    /// Messages a live-update client (WebSocket) may have waiting before it is dropped as too
    /// slow.
    pub ws_outbox: usize,
    pub queue_prefix: String,
    /// AWS backend: the DynamoDB table.
    pub table: String,
    /// AWS backend: the EventBridge bus lifecycle events go to.
    pub event_bus: String,
    pub max_receive_count: u32,
    pub heartbeat_interval: Duration,
    pub stall_after: Duration,
    pub orphan_after: Duration,
    /// A job of a paused type goes back to its queue for this long before it is looked at
    /// again (`CONVEYOR_PAUSE_RECHECK`): how soon a resumed type's jobs start.
    pub pause_recheck: Duration,
    /// How long a worker keeps the paused types it read (`CONVEYOR_PAUSE_CACHE`; AWS: a
    /// pause or resume takes effect within it; the embedded backend keeps them in memory).
    pub pause_cache: Duration,
    pub maintenance_interval: Duration,
    /// Local runtime: how long in-flight jobs get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Longest an HTTP request may take before it is answered 504.
    pub http_timeout: Duration,
    /// HTTP requests in flight at once; past it, 503 with Retry-After.
    pub http_max_in_flight: usize,
    pub webhook_secret: Option<String>,
    /// A Secrets Manager secret holding the signing key (AWS backend; read on first use).
    pub webhook_secret_id: Option<String>,
    pub fetch_max_bytes: usize,
    /// Networks the shipped types may reach besides public addresses.
    pub outbound_allow: crate::outbound::OutboundPolicy,
    /// HS256 secret for users' JWTs (at least 32 bytes).
    pub jwt_secret: Option<String>,
    /// A Secrets Manager secret holding the HS256 secret (AWS; read on first use).
    pub jwt_secret_id: Option<String>,
    /// A JWKS file or URL whose keys verify RS/PS/ES tokens from an identity provider.
    pub jwks: Option<crate::auth::JwksSource>,
    pub jwt_issuer: Option<String>,
    /// On AWS: the WebSocket API stage's URL (`https://<api>.execute-api.<region>.amazonaws.com/<stage>`),
    /// where `notify` posts to connections.
    pub ws_endpoint: Option<String>,
    /// Where the dashboard connects for live updates (`None`: its own origin's `/ws`).
    pub ws_url: Option<String>,
    /// Where external handlers reach the API with their job tokens (`CONVEYOR_PUBLIC_URL`);
    /// none: the local runtime's own address.
    pub public_url: Option<String>,
    /// AWS: the Lambda functions external types may name (`CONVEYOR_LAMBDA_HANDLERS`, ARN
    /// patterns; the worker's role may invoke these only).
    pub lambda_handlers: String,
    /// AWS: the EventBridge Scheduler group users' schedules are created in.
    pub schedule_group: String,
    /// AWS: the function a schedule's tick invokes (the `scheduler` function), and the role
    /// EventBridge Scheduler invokes it with. Both set: the API arms EventBridge Scheduler with
    /// every schedule; unset: the local runtime's scheduler fires ticks itself.
    pub scheduler_target_arn: Option<String>,
    pub scheduler_role_arn: Option<String>,
    /// AWS: the queue where Lambda records a tick the scheduler function failed after its
    /// retries (its on-failure destination); maintenance fires those ticks again.
    pub tick_failures_queue: Option<String>,
    /// How often the local runtime's scheduler looks for due ticks.
    pub scheduler_interval: Duration,
    pub jwt_audience: Option<String>,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Whether each accepted submit writes an audit entry of its own (`CONVEYOR_AUDIT_SUBMITS`,
    /// default off). Like CloudTrail's data events, it costs a write a job; refused submits,
    /// batch submits and every administrative action are audited either way, and a job always
    /// says when it was created.
    pub audit_submits: bool,
    /// Whether a token from the JWKS (an identity provider, which may sign for other
    /// applications and their users) may carry the `operator` role (`CONVEYOR_JWKS_OPERATOR`,
    /// default off: such a token is refused).
    pub jwks_operator: bool,
    /// AWS backend: shards a tenant's jobs spread over in the table (`CONVEYOR_SHARDS`,
    /// default 64), fixed when the table is made. Each shard takes at most ~1,000 write units a
    /// second, and a job three: 64 shards hold one tenant at 10,000 jobs a second at under 500
    /// a shard. A listing reads every shard.
    pub shards: u64,
    /// AWS backend: which lifecycle events go to the EventBridge bus (`CONVEYOR_EVENTS`:
    /// `none`, the default, `all`, or a comma-separated list of job types). Each event is
    /// billed ($1 a million) whether or not a rule listens.
    pub events: crate::domain::EventSelection,
    /// Limits of a tenant an operator set none for (unset: no limit; schedules: 1,000).
    pub tenant_defaults: crate::domain::TenantLimits,
    /// Live readers (server-sent-event streams and WebSockets) a process holds at most, and of
    /// one tenant (`CONVEYOR_LIVE_MAX_CONNECTIONS`, `CONVEYOR_LIVE_MAX_PER_TENANT`).
    pub live_max_connections: usize,
    pub live_max_per_tenant: usize,
    /// Limits set on job types from the environment (`CONVEYOR_TYPE_LIMITS`), over the ones
    /// they were registered with.
    pub type_limits: Vec<crate::domain::TypeLimit>,
}

pub use crate::domain::parse_duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn parsed<T>(&mut self, name: &str, default: T, parse: impl Fn(&str) -> Option<T>) -> T {
        match (self.get)(name) {
            None => default,
            Some(v) if v.trim().is_empty() => default,
            Some(v) => parse(&v).unwrap_or_else(|| {
                self.errors.push(format!("{name}={v:?} is not valid"));
                default
            }),
        }
    }

    fn string(&mut self, name: &str, default: &str) -> String {
        self.parsed(name, default.to_string(), |v| Some(v.to_string()))
    }

    /// A duration within `[min, max]`: zero or huge values would panic or turn a safety off.
    fn duration(
        &mut self,
        name: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let value = self.parsed(name, default, parse_duration);
        if value < min || value > max {
            self.errors.push(format!(
                "{name}={value:?} is out of range: it must be from {min:?} to {max:?}"
            ));
            return default;
        }
        value
    }

    /// An optional whole number within `[min, max]` (unset or empty: `None`).
    fn optional_number<T>(&mut self, name: &str, min: T, max: T) -> Option<T>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let raw = (self.get)(name).filter(|v| !v.trim().is_empty())?;
        match raw.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => Some(v),
            _ => {
                self.errors.push(format!(
                    "{name}={raw:?} is not valid: a whole number from {min} to {max}, or unset for no limit"
                ));
                None
            }
        }
    }

    /// A whole number within `[min, max]` (a limit of 0 would stop everything).
    fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let value = self.parsed(name, default, |v| v.trim().parse().ok());
        if value < min || value > max {
            self.errors.push(format!(
                "{name}={value} is out of range: it must be from {min} to {max}"
            ));
            return default;
        }
        value
    }
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            get,
            errors: vec![],
        };
        let config = Config {
            backend: r.parsed("CONVEYOR_BACKEND", Backend::Embedded, |v| match v {
                "embedded" => Some(Backend::Embedded),
                "aws" => Some(Backend::Aws),
                _ => None,
            }),
            data_dir: PathBuf::from(r.string("CONVEYOR_DATA_DIR", ".conveyor")),
            durability: r.parsed(
                "CONVEYOR_DURABILITY",
                Durability::Process,
                Durability::parse,
            ),
            wal_limit_bytes: r.number(
                "CONVEYOR_WAL_LIMIT_BYTES",
                64 * 1024 * 1024,
                64 * 1024,
                64 * 1024 * 1024 * 1024,
            ),
            write_queue: r.number("CONVEYOR_WRITE_QUEUE", WRITE_QUEUE, 1, 1_000_000),
            default_tenant: r.parsed("CONVEYOR_DEFAULT_TENANT", "default".to_string(), |v| {
                crate::domain::Tenant::parse(v).ok().map(|t| t.to_string())
            }),
            ws_outbox: r.number("CONVEYOR_WS_OUTBOX", 1024, 1, 1_000_000),
            max_payload_bytes: r.number(
                "CONVEYOR_MAX_PAYLOAD_BYTES",
                256 * 1024,
                1,
                MAX_PAYLOAD_LIMIT,
            ),
            queue_prefix: r.parsed("CONVEYOR_QUEUE_PREFIX", "conveyor-".to_string(), |v| {
                (v.len() <= 40
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .then(|| v.to_string())
            }),
            table: r.parsed("CONVEYOR_TABLE", "conveyor-jobs".to_string(), aws_name),
            event_bus: r.parsed("CONVEYOR_EVENT_BUS", "conveyor".to_string(), aws_name),
            max_receive_count: r.number("CONVEYOR_MAX_RECEIVE_COUNT", 5, 1, 1000),
            heartbeat_interval: r.duration(
                "CONVEYOR_HEARTBEAT_INTERVAL",
                Duration::from_secs(10),
                10 * MS,
                HOUR,
            ),
            stall_after: r.duration(
                "CONVEYOR_STALL_AFTER",
                Duration::from_secs(60),
                100 * MS,
                DAY,
            ),
            orphan_after: r.duration(
                "CONVEYOR_ORPHAN_AFTER",
                Duration::from_secs(15 * 60),
                SECOND,
                7 * DAY,
            ),
            pause_recheck: r.duration(
                "CONVEYOR_PAUSE_RECHECK",
                Duration::from_secs(10),
                10 * MS,
                15 * 60 * SECOND,
            ),
            pause_cache: r.duration(
                "CONVEYOR_PAUSE_CACHE",
                Duration::from_secs(5),
                Duration::ZERO,
                5 * 60 * SECOND,
            ),
            maintenance_interval: r.duration(
                "CONVEYOR_MAINTENANCE_INTERVAL",
                Duration::from_secs(10),
                10 * MS,
                HOUR,
            ),
            shutdown_grace: r.duration(
                "CONVEYOR_SHUTDOWN_GRACE",
                Duration::from_secs(30),
                Duration::ZERO,
                HOUR,
            ),
            http_timeout: r.duration(
                "CONVEYOR_HTTP_TIMEOUT",
                Duration::from_secs(30),
                100 * MS,
                HOUR,
            ),
            http_max_in_flight: r.number("CONVEYOR_HTTP_MAX_IN_FLIGHT", 1024, 1, 100_000),
            webhook_secret: get("CONVEYOR_WEBHOOK_SECRET").filter(|s| !s.is_empty()),
            webhook_secret_id: get("CONVEYOR_WEBHOOK_SECRET_ID").filter(|s| !s.is_empty()),
            fetch_max_bytes: r.number(
                "CONVEYOR_FETCH_MAX_BYTES",
                1024 * 1024,
                1,
                1024 * 1024 * 1024,
            ),
            outbound_allow: r.parsed(
                "CONVEYOR_OUTBOUND_ALLOW",
                crate::outbound::OutboundPolicy::default(),
                |v| crate::outbound::OutboundPolicy::parse(v).ok(),
            ),
            jwt_secret: get("CONVEYOR_JWT_SECRET").filter(|s| !s.is_empty()),
            jwt_secret_id: get("CONVEYOR_JWT_SECRET_ID").filter(|s| !s.is_empty()),
            jwks: get("CONVEYOR_JWKS")
                .filter(|s| !s.trim().is_empty())
                .map(|s| crate::auth::JwksSource::parse(s.trim())),
            jwt_issuer: get("CONVEYOR_JWT_ISSUER").filter(|s| !s.is_empty()),
            ws_endpoint: get("CONVEYOR_WS_ENDPOINT").filter(|s| !s.is_empty()),
            ws_url: get("CONVEYOR_WS_URL").filter(|s| !s.is_empty()),
            public_url: get("CONVEYOR_PUBLIC_URL")
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_end_matches('/').to_string()),
            lambda_handlers: r.string("CONVEYOR_LAMBDA_HANDLERS", LAMBDA_HANDLERS),
            schedule_group: r.string("CONVEYOR_SCHEDULE_GROUP", "conveyor"),
            scheduler_target_arn: get("CONVEYOR_SCHEDULER_TARGET_ARN").filter(|s| !s.is_empty()),
            scheduler_role_arn: get("CONVEYOR_SCHEDULER_ROLE_ARN").filter(|s| !s.is_empty()),
            tick_failures_queue: get("CONVEYOR_TICK_FAILURES_QUEUE").filter(|s| !s.is_empty()),
            scheduler_interval: r.duration(
                "CONVEYOR_SCHEDULER_INTERVAL",
                Duration::from_secs(1),
                Duration::from_millis(50),
                Duration::from_secs(60),
            ),
            jwt_audience: get("CONVEYOR_JWT_AUDIENCE").filter(|s| !s.is_empty()),
            audit_retention: r.duration("CONVEYOR_AUDIT_RETENTION", 90 * DAY, HOUR, 3650 * DAY),
            jwks_operator: r.parsed("CONVEYOR_JWKS_OPERATOR", false, |v| match v.trim() {
                "true" | "1" | "on" => Some(true),
                "false" | "0" | "off" => Some(false),
                _ => None,
            }),
            audit_submits: r.parsed("CONVEYOR_AUDIT_SUBMITS", false, |v| match v.trim() {
                "true" | "1" | "on" => Some(true),
                "false" | "0" | "off" => Some(false),
                _ => None,
            }),
            shards: r.number("CONVEYOR_SHARDS", 64, 1, 256),
            events: r.parsed(
                "CONVEYOR_EVENTS",
                crate::domain::EventSelection::None,
                crate::domain::EventSelection::parse,
            ),
            tenant_defaults: crate::domain::TenantLimits {
                max_active: r.optional_number("CONVEYOR_TENANT_MAX_ACTIVE", 1, 1_000_000_000),
                submits_per_second: r.optional_number(
                    "CONVEYOR_TENANT_SUBMITS_PER_SECOND",
                    1,
                    10_000_000,
                ),
                max_payload_bytes: None,
                max_running: r.optional_number("CONVEYOR_TENANT_MAX_RUNNING", 1, 1_000_000),
                max_schedules: Some(r.number("CONVEYOR_TENANT_MAX_SCHEDULES", 1_000, 1, 1_000_000)),
            },
            live_max_connections: r.number(
                "CONVEYOR_LIVE_MAX_CONNECTIONS",
                crate::live::LIVE_MAX as u64,
                1,
                1_000_000,
            ) as usize,
            live_max_per_tenant: r.number(
                "CONVEYOR_LIVE_MAX_PER_TENANT",
                crate::live::LIVE_MAX_PER_TENANT as u64,
                1,
                1_000_000,
            ) as usize,
            type_limits: r.parsed(
                "CONVEYOR_TYPE_LIMITS",
                vec![],
                crate::domain::TypeLimit::parse_all,
            ),
        };
        if let Some(secret) = &config.webhook_secret {
            if secret.len() < crate::auth::MIN_SECRET_BYTES {
                r.errors.push(format!(
                    "CONVEYOR_WEBHOOK_SECRET is {} bytes: at least {} are needed (e.g. `openssl rand -hex 32`)",
                    secret.len(),
                    crate::auth::MIN_SECRET_BYTES
                ));
            }
        }
        if let Some(secret) = &config.jwt_secret {
            if secret.len() < crate::auth::MIN_SECRET_BYTES {
                r.errors.push(format!(
                    "CONVEYOR_JWT_SECRET is {} bytes: at least {} are needed (e.g. `openssl rand -hex 32`)",
                    secret.len(),
                    crate::auth::MIN_SECRET_BYTES
                ));
            }
        }
        if let Some(crate::auth::JwksSource::Url(url)) = &config.jwks {
            if !crate::auth::JwksSource::fetched_safely(url) {
                r.errors.push(format!(
                    "CONVEYOR_JWKS={url:?}: keys fetched over http:// can be swapped on the way; give an https:// URL (http:// only for a loopback address) or a file"
                ));
            }
        }
        if config.jwks.is_some() {
            for (name, given) in [
                ("CONVEYOR_JWT_ISSUER", &config.jwt_issuer),
                ("CONVEYOR_JWT_AUDIENCE", &config.jwt_audience),
            ] {
                if given.is_none() {
                    r.errors.push(format!(
                        "{name} is required with CONVEYOR_JWKS: an identity provider signs tokens for every application it serves, and only the issuer and audience say a token is for this one"
                    ));
                }
            }
        }
        if config.heartbeat_interval >= config.stall_after {
            r.errors.push(format!(
                "CONVEYOR_HEARTBEAT_INTERVAL ({:?}) must be shorter than CONVEYOR_STALL_AFTER ({:?}), or live jobs would be taken as stalled",
                config.heartbeat_interval, config.stall_after
            ));
        }
        if r.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(r.errors))
        }
    }
}

/// A DynamoDB table or EventBridge bus name: 3 to 200 letters, digits, `-`, `_`, `.`.
fn aws_name(v: &str) -> Option<String> {
    ((3..=200).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    .then(|| v.to_string())
}

/// The highest payload limit allowed: a job is one DynamoDB item, at most 400 KB with its other
/// fields, so no backend may accept a job the other would refuse.
/// The Lambda functions external types may name unless `CONVEYOR_LAMBDA_HANDLERS` says
/// otherwise: those named `conveyor-handler-…`, in any region and account.
pub const LAMBDA_HANDLERS: &str = "arn:aws:lambda:*:*:function:conveyor-handler-*";

pub const MAX_PAYLOAD_LIMIT: usize = 350 * 1024;

/// Writes that may wait for the writer by default (`CONVEYOR_WRITE_QUEUE`).
pub const WRITE_QUEUE: usize = 8192;

/// How far a commit goes before the writer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash or SIGKILL of the process (WAL, `synchronous=NORMAL`). The default.
    Process,
    /// Also survives a power cut: each group commit is answered after an `fdatasync` of the
    /// WAL that covers it, made beside the writer while it goes on with the next group.
    Power,
}

impl Durability {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "process" => Some(Self::Process),
            "power" => Some(Self::Power),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_limits_name_a_type_a_limit_and_its_value() {
        use crate::domain::{Limit, TypeLimit};
        let parsed = TypeLimit::parse_all(
            "http.fetch:rate=10/1s noop:max_running_per_key=64;x:min_interval=250ms",
        )
        .unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].job_type, "http.fetch");
        assert_eq!(
            parsed[0].limit,
            Limit::Rate(crate::domain::Rate {
                per: 10,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(parsed[1].limit, Limit::MaxRunningPerKey(64));
        assert_eq!(
            parsed[2].limit,
            Limit::MinInterval(Duration::from_millis(250))
        );
        for bad in [
            "noop",
            "noop:rate=10",
            "noop:rate=0/1s",
            "noop:speed=1",
            "noop:max_running_per_key=0",
        ] {
            assert_eq!(TypeLimit::parse_all(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn defaults_apply_and_bad_values_are_named() {
        let c = Config::from_lookup(&|_| None).unwrap();
        assert_eq!(c.max_payload_bytes, 262_144);
        assert_eq!(c.backend, Backend::Embedded);
        let err = Config::from_lookup(&|name| match name {
            "CONVEYOR_STALL_AFTER" => Some("forever".into()),
            "CONVEYOR_BACKEND" => Some("cloud".into()),
            _ => None,
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("CONVEYOR_STALL_AFTER") && text.contains("CONVEYOR_BACKEND"),
            "{text}"
        );
    }

    #[test]
    fn a_heartbeat_slower_than_the_stall_window_is_refused() {
        let err = Config::from_lookup(&|name| match name {
            "CONVEYOR_HEARTBEAT_INTERVAL" => Some("2m".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("must be shorter than CONVEYOR_STALL_AFTER"));
    }
}
