//! Who may do what: roles, the API keys services call with, and the audit trail's entries.
//! No I/O and no secrets here: a key is kept only as the digest of its secret.

use super::{JobId, Tenant};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a caller may do. `reader` may read its tenant's jobs, schedules and stats;
/// `submitter` may also submit, cancel and retry them; `admin` may also administer its tenant
/// (its keys, its audit trail, its webhook secret); `operator` may do all of that for every
/// tenant (`tenant=`), set tenants' limits, and read the deployment's metrics and the refusals no
/// tenant could be told for. No tenant credential carries `operator` unless one was made so (a
/// key by an operator or `conveyor keys create`, a token by `conveyor token`; an identity
/// provider's token only where `CONVEYOR_JWKS_OPERATOR` allows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Submitter,
    Admin,
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Operator, Role::Admin, Role::Submitter, Role::Reader];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            "submitter" => Some(Self::Submitter),
            "reader" => Some(Self::Reader),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Submitter => "submitter",
            Self::Reader => "reader",
        }
    }

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse a list of roles (`operator`, `admin`, `submitter`, `reader`); at least one, none
/// unknown.
pub fn parse_roles<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Role>, String> {
    let mut roles = vec![];
    for name in names {
        let role = Role::parse(name.trim()).ok_or_else(|| {
            format!("unknown role {name:?}: roles are operator, admin, submitter and reader")
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err("at least one role is required (operator, admin, submitter or reader)".into());
    }
    roles.sort_unstable_by(|a, b| b.cmp(a));
    Ok(roles)
}

/// The prefix of every API key, so a leaked one is easy to find in code and logs.
pub const KEY_PREFIX: &str = "cvk_";

/// An API key as stored: its secret only as a SHA-256 digest (the secret is 256 random bits, so
/// a slow hash would add nothing but latency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public part of the key (a ULID, lower case): names it in lists, logs and the audit trail.
    pub id: String,
    pub tenant: Tenant,
    pub roles: Vec<Role>,
    pub name: String,
    /// Hex SHA-256 of the secret part (never shown: `ApiKey::view` leaves it out).
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a key does not let its caller in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    WrongSecret,
    Revoked,
    Expired,
}

impl ApiKey {
    /// A new key and the token to hand out once: `cvk_<id>_<secret>`.
    pub fn generate(
        tenant: Tenant,
        roles: Vec<Role>,
        name: String,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (ApiKey, String) {
        let id = super::ids::monotonic_ulid().to_string().to_lowercase();
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let token = format!("{KEY_PREFIX}{id}_{secret}");
        let key = ApiKey {
            id,
            tenant,
            roles,
            name,
            secret_hash: digest(&secret),
            created_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
        };
        (key, token)
    }

    /// Split a presented token into `(id, secret)`; `None` if it is not shaped like a key.
    pub fn split_token(token: &str) -> Option<(&str, &str)> {
        let (id, secret) = token.strip_prefix(KEY_PREFIX)?.split_once('_')?;
        let ok = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        };
        (ok(id, 26) && ok(secret, 64)).then_some((id, secret))
    }

    /// The key as the API shows it: everything but the digest.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenant": self.tenant,
            "roles": self.roles,
            "name": self.name,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        })
    }

    /// Whether `secret` opens this key at `now`.
    pub fn check(&self, secret: &str, now: DateTime<Utc>) -> Result<(), KeyRefusal> {
        if !constant_time_eq(digest(secret).as_bytes(), self.secret_hash.as_bytes()) {
            return Err(KeyRefusal::WrongSecret);
        }
        if self.revoked_at.is_some() {
            return Err(KeyRefusal::Revoked);
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One line of the audit trail: who did what to which job, from where, and how it ended.
/// Append-only; kept for `CONVEYOR_AUDIT_RETENTION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Time-ordered (ULID): the trail reads in the order things happened.
    pub id: String,
    pub at: DateTime<Utc>,
    /// The tenant acted on; `None` when the caller could not be identified (an auth failure).
    pub tenant: Option<Tenant>,
    /// `key:<id>`, `jwt:<sub>`, `local` (dev mode), or `anonymous`.
    pub actor: String,
    /// e.g. `job.submit`, `job.cancel`, `job.retry`, `key.create`, `key.revoke`, `auth`.
    pub action: String,
    pub job_id: Option<JobId>,
    pub source_ip: Option<String>,
    /// `ok`, or the error code the caller was answered with (`unauthorized`, `forbidden`, …).
    pub outcome: String,
    /// When the entry may be deleted.
    pub expires_at: DateTime<Utc>,
    /// How many times it happened: refusals (a credential refused, a rate or quota hit) are
    /// recorded once a minute for each caller, action and outcome, the first at once and the
    /// rest of that minute in one more entry counting them.
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// An audit entry's id: a ULID ordered by `at` to the nanosecond (the millisecond, then the
/// nanoseconds within it in the top 20 bits of the random part), so the trail sorts by time.
fn audit_id(at: DateTime<Utc>) -> String {
    let ms = at.timestamp_millis().max(0) as u64;
    let within = (at.timestamp_subsec_nanos() % 1_000_000) as u128;
    let random = rand::random::<u64>() as u128 & ((1u128 << 60) - 1);
    ulid::Ulid::from_parts(ms, (within << 60) | random).to_string()
}

/// Who is asking and from where: what every audit entry of one request shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub actor: String,
    pub source_ip: Option<String>,
}

impl Actor {
    /// The entry for `action` by this actor.
    pub fn entry(
        &self,
        tenant: Option<Tenant>,
        action: &str,
        job_id: Option<JobId>,
        outcome: &str,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> AuditEntry {
        AuditEntry {
            id: audit_id(now),
            at: now,
            tenant,
            actor: self.actor.clone(),
            action: action.to_string(),
            job_id,
            source_ip: self.source_ip.clone(),
            outcome: outcome.to_string(),
            expires_at: now
                + chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX),
            count: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_only_with_its_secret_and_not_once_revoked_or_expired() {
        let now = Utc::now();
        let tenant = Tenant::parse("acme").unwrap();
        let (mut key, token) = ApiKey::generate(
            tenant,
            vec![Role::Submitter],
            "ci".into(),
            Some(now + chrono::Duration::hours(1)),
            now,
        );
        let (id, secret) = ApiKey::split_token(&token).expect("a key's own token splits");
        assert_eq!(id, key.id);
        assert_eq!(key.check(secret, now), Ok(()));
        let mut wrong = secret.to_string();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert_eq!(key.check(&wrong, now), Err(KeyRefusal::WrongSecret));
        assert_eq!(
            key.check(secret, now + chrono::Duration::hours(2)),
            Err(KeyRefusal::Expired)
        );
        key.revoked_at = Some(now);
        assert_eq!(key.check(secret, now), Err(KeyRefusal::Revoked));
        assert!(!token.contains(&key.secret_hash));
    }

    #[test]
    fn tokens_not_shaped_like_keys_do_not_split() {
        for bad in [
            "",
            "cvk_",
            "cvk_abc_def",
            "eyJhbGciOi.x.y",
            "cvk_01ARZ3NDEKTSV4RRFFQ69G5FAV_xyz",
        ] {
            assert_eq!(ApiKey::split_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn roles_parse_and_rank() {
        assert_eq!(
            parse_roles(["reader", "admin", "reader"]).unwrap(),
            vec![Role::Admin, Role::Reader]
        );
        assert!(parse_roles(["root"]).unwrap_err().contains("root"));
        assert!(parse_roles([]).is_err());
        assert!(Role::Admin.grants(Role::Submitter));
        assert!(Role::Submitter.grants(Role::Reader));
        assert!(!Role::Reader.grants(Role::Submitter));
    }
}

/// A tenant's limits as stored by an admin; `None` takes the deployment's default
/// (`CONVEYOR_TENANT_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Jobs not yet finished (scheduled, queued, running) at once.
    pub max_active: Option<u64>,
    /// Submissions accepted per second (a one-second window).
    pub submits_per_second: Option<u32>,
    /// Largest payload, at most the deployment's `CONVEYOR_MAX_PAYLOAD_BYTES`.
    pub max_payload_bytes: Option<usize>,
    /// Jobs running at once, of every type (for jobs submitted while it is set).
    #[serde(default)]
    pub max_running: Option<u32>,
    /// Schedules the tenant may have.
    #[serde(default)]
    pub max_schedules: Option<u64>,
}

impl TenantLimits {
    /// These limits, each unset one taken from `defaults`.
    pub fn or(&self, defaults: &TenantLimits) -> TenantLimits {
        TenantLimits {
            max_active: self.max_active.or(defaults.max_active),
            submits_per_second: self.submits_per_second.or(defaults.submits_per_second),
            max_payload_bytes: self.max_payload_bytes.or(defaults.max_payload_bytes),
            max_running: self.max_running.or(defaults.max_running),
            max_schedules: self.max_schedules.or(defaults.max_schedules),
        }
    }
}

/// What a job's creation must fit in, checked by the store in the same write as the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    pub max_active: Option<u64>,
    /// Submissions allowed in the one-second window `window` (unix seconds).
    pub per_second: Option<u32>,
    pub window: i64,
}

/// A tenant's webhook signing keys, as generations of a key derived from the deployment's
/// master key (`jobs::tenant_secret`): after a rotation the previous generation stays valid
/// until `previous_until`, and deliveries carry a signature for each valid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookGenerations {
    pub current: u32,
    pub previous: Option<u32>,
    pub previous_until: Option<DateTime<Utc>>,
}

impl Default for WebhookGenerations {
    fn default() -> Self {
        Self {
            current: 1,
            previous: None,
            previous_until: None,
        }
    }
}

impl WebhookGenerations {
    /// The generations that sign at `now`: the current one first.
    pub fn valid(&self, now: DateTime<Utc>) -> Vec<u32> {
        let mut gens = vec![self.current];
        if let (Some(p), Some(until)) = (self.previous, self.previous_until) {
            if until > now {
                gens.push(p);
            }
        }
        gens
    }

    /// The next generation; this one stays valid until `overlap_until`.
    pub fn rotated(&self, overlap_until: DateTime<Utc>) -> Self {
        Self {
            current: self.current + 1,
            previous: Some(self.current),
            previous_until: Some(overlap_until),
        }
    }
}
