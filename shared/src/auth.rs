//! Who is calling: a bearer credential, an API key (`cvk_…`, looked up in the `KeyStore`) or a
//! JWT (HS256 with `CONVEYOR_JWT_SECRET`, RS/PS/ES with the keys of `CONVEYOR_JWKS`), verified
//! into a `Principal`: the tenant, the subject and the roles. The tenant comes from nowhere else.
//! The same code runs in the local runtime's HTTP layer and in the Lambda authorizer.

use crate::domain::{parse_roles, ApiKey, KeyRefusal, Role, Tenant, KEY_PREFIX};
use crate::ports::{KeyStore, SigningKey, StoreError};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest HS256 secret accepted: 32 bytes, the hash's own size.
pub const MIN_SECRET_BYTES: usize = 32;
/// A key's `last_used_at` is written at most this often per key and process.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How long a JWKS is kept before it is read again, and how soon an unknown `kid` may cause a
/// read (a key rotated at the identity provider is picked up; garbage cannot hammer it).
const JWKS_KEEP: Duration = Duration::from_secs(600);
const JWKS_RETRY: Duration = Duration::from_secs(30);
/// Most verified tokens remembered (past it, the expired ones are forgotten, or all).
const VERIFIED_KEPT: usize = 10_000;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub tenant: Tenant,
    /// `key:<id>`, `jwt:<sub>`, or `local` (dev mode): the actor in the audit trail.
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has(&self, needed: Role) -> bool {
        self.roles.iter().any(|r| r.grants(needed))
    }

    /// Dev mode's caller, on this machine's loopback address with nothing configured: the
    /// deployment's one user, an operator (the default tenant its own).
    pub fn local(tenant: Tenant) -> Self {
        Self {
            tenant,
            subject: "local".into(),
            roles: vec![Role::Operator],
        }
    }

    /// Whether this caller may act on `tenant`: its own, or any for an operator.
    pub fn may_act_on(&self, tenant: &Tenant) -> bool {
        tenant == &self.tenant || self.has(Role::Operator)
    }
}

/// Why a caller is not let in. `Missing` and `Invalid` are a 401, `Unavailable` a 503.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no credential: send `Authorization: Bearer <API key or token>`")]
    Missing,
    /// The credential was refused; the message says why, without echoing it. `actor` names
    /// the key when the credential named one (for the audit trail).
    #[error("{message}")]
    Invalid {
        message: String,
        actor: Option<String>,
    },
    #[error("credentials cannot be checked now: {0}")]
    Unavailable(String),
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::Invalid {
        message: message.into(),
        actor: None,
    }
}

/// Where JWT verification keys come from: a JWKS file or URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl JwksSource {
    pub fn parse(s: &str) -> Self {
        if s.starts_with("https://") || s.starts_with("http://") {
            Self::Url(s.to_string())
        } else {
            Self::File(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }

    /// Whether keys may be fetched from `url`: over https, or over http from a loopback
    /// address only (nothing between to swap them).
    pub fn fetched_safely(url: &str) -> bool {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return false;
        };
        match parsed.scheme() {
            "https" => true,
            "http" => {
                let host = parsed.host_str().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            _ => false,
        }
    }
}

/// The JWT settings.
#[derive(Clone, Default)]
pub struct JwtSettings {
    /// The HS256 secret (from `CONVEYOR_JWT_SECRET`, or a Secrets Manager secret on AWS).
    pub secret: Option<Arc<dyn SigningKey>>,
    pub jwks: Option<JwksSource>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Whether a token verified with the JWKS may carry `operator` (`CONVEYOR_JWKS_OPERATOR`).
    pub jwks_operator: bool,
}

impl JwtSettings {
    pub fn configured(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RolesClaim {
    List(Vec<String>),
    Spaced(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    tenant: String,
    roles: RolesClaim,
    exp: i64,
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    tenant: &'a str,
    roles: Vec<&'static str>,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What `conveyor token` prints: an HS256 token for `secret`.
#[allow(clippy::too_many_arguments)]
pub fn issue_token(
    secret: &str,
    tenant: &Tenant,
    subject: &str,
    roles: &[Role],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
    now: DateTime<Utc>,
) -> Result<String, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the JWT secret is {} bytes: at least {MIN_SECRET_BYTES} are needed",
            secret.len()
        ));
    }
    let claims = IssuedClaims {
        sub: subject,
        tenant: tenant.as_str(),
        roles: roles.iter().map(|r| r.as_str()).collect(),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: now.timestamp() + ttl.as_secs() as i64,
        iss: issuer,
        aud: audience,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("signing the token: {e}"))
}

struct CachedJwks {
    read_at: Instant,
    set: Arc<JwkSet>,
}

/// What turns a request's `Authorization` header into a caller.
#[async_trait::async_trait]
pub trait Verify: Send + Sync {
    async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError>;

    /// Whether every caller is let in without a credential (the local runtime's dev mode).
    fn is_open(&self) -> bool {
        false
    }
}

#[async_trait::async_trait]
impl Verify for Authenticator {
    async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        Authenticator::authenticate(self, authorization).await
    }

    fn is_open(&self) -> bool {
        Authenticator::is_open(self)
    }
}

/// The `api` function's verifier: API Gateway's Lambda authorizer has verified every request
/// before it arrives (its answer reaches the router as `entrypoints::http::Verified`), so a
/// request without that answer is refused, never verified here (and the function carries no
/// token code).
#[derive(Debug, Clone, Copy)]
pub struct GatewayVerified;

#[async_trait::async_trait]
impl Verify for GatewayVerified {
    async fn authenticate(&self, _: Option<&str>) -> Result<Principal, AuthError> {
        Err(invalid(
            "the request did not come through the API's authorizer",
        ))
    }
}

/// Verifies credentials. Dev mode (`open`) lets every request in as an admin of one tenant;
/// the local runtime turns it on only on a loopback address, when nothing else is configured.
pub struct Authenticator {
    jwt: JwtSettings,
    keys: Arc<dyn KeyStore>,
    open: Option<Tenant>,
    jwks: tokio::sync::Mutex<Option<CachedJwks>>,
    /// Tokens verified before, with their expiry: a client sends the same token on every
    /// request, and a token's validity cannot change before it expires (a signature, once
    /// checked, stays good), so it is checked once, not on every request.
    verified: Mutex<HashMap<String, (Principal, i64)>>,
    touched: Mutex<HashMap<String, Instant>>,
    http: reqwest::Client,
}

impl Authenticator {
    pub fn new(jwt: JwtSettings, keys: Arc<dyn KeyStore>) -> Self {
        Self {
            jwt,
            keys,
            open: None,
            jwks: tokio::sync::Mutex::new(None),
            touched: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// Dev mode: no credential is asked for; every caller is an admin of `tenant`.
    pub fn open(mut self, tenant: Tenant) -> Self {
        self.open = Some(tenant);
        self
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    pub fn jwt_settings(&self) -> &JwtSettings {
        &self.jwt
    }

    /// The caller an `Authorization` header value names.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if let Some(tenant) = &self.open {
            return Ok(Principal::local(tenant.clone()));
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                invalid("the Authorization header must be `Bearer <API key or token>`")
            })?;
        if token.starts_with(KEY_PREFIX) {
            self.by_key(token).await
        } else {
            self.by_jwt(token).await
        }
    }

    async fn by_key(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, secret) =
            ApiKey::split_token(token).ok_or_else(|| invalid("not a valid API key"))?;
        let refused = |message: &str| AuthError::Invalid {
            message: message.to_string(),
            actor: Some(format!("key:{id}")),
        };
        let key = self
            .keys
            .get_key(id)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?
            .ok_or_else(|| refused("no such API key"))?;
        let now = Utc::now();
        key.check(secret, now).map_err(|why| match why {
            KeyRefusal::WrongSecret => refused("no such API key"),
            KeyRefusal::Revoked => refused("this API key was revoked"),
            KeyRefusal::Expired => refused("this API key has expired"),
        })?;
        self.note_use(&key.id, now);
        Ok(Principal {
            tenant: key.tenant,
            subject: format!("key:{}", key.id),
            roles: key.roles,
        })
    }

    /// Write `last_used_at` now and then, off the request's path.
    fn note_use(&self, id: &str, now: DateTime<Utc>) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched.get(id).is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(id.to_string(), Instant::now());
        }
        let (keys, id) = (self.keys.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = keys.touch_key(&id, now).await {
                tracing::debug!(key = %id, error = %e, "could not note an API key's use");
            }
        });
    }

    async fn by_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let now = Utc::now().timestamp();
        if let Some((principal, exp)) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            if *exp > now {
                return Ok(principal.clone());
            }
        }
        let (principal, exp) = self.verify_jwt(token).await?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_KEPT {
            verified.retain(|_, (_, exp)| *exp > now);
            if verified.len() >= VERIFIED_KEPT {
                verified.clear();
            }
        }
        verified.insert(token.to_string(), (principal.clone(), exp));
        Ok(principal)
    }

    async fn verify_jwt(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("not a valid token: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 => {
                let source = self.jwt.secret.as_ref().ok_or_else(|| {
                    invalid("HS256 tokens are not accepted here (no JWT secret is configured)")
                })?;
                let secret = source.key().await.map_err(AuthError::Unavailable)?;
                DecodingKey::from_secret(secret.as_bytes())
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384 => self.jwk_for(&header).await?,
            other => {
                return Err(invalid(format!(
                    "tokens signed with {other:?} are not accepted"
                )))
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.jwt.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.jwt.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_string(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                ErrorKind::InvalidSignature => "the token's signature does not verify".to_string(),
                ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted".to_string(),
                ErrorKind::InvalidAudience => {
                    "the token's audience (aud) is not accepted".to_string()
                }
                ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                _ => format!("the token is not valid: {e}"),
            })
        })?;
        let claims = data.claims;
        let tenant = Tenant::parse(&claims.tenant)
            .map_err(|e| invalid(format!("the token's tenant claim: {}", e.message)))?;
        let roles = match &claims.roles {
            RolesClaim::List(list) => parse_roles(list.iter().map(String::as_str)),
            RolesClaim::Spaced(s) => parse_roles(s.split_whitespace()),
        }
        .map_err(|e| invalid(format!("the token's roles claim: {e}")))?;
        if header.alg != Algorithm::HS256
            && roles.contains(&Role::Operator)
            && !self.jwt.jwks_operator
        {
            return Err(invalid(
                "a token from the identity provider may not carry the operator role here \
                 (CONVEYOR_JWKS_OPERATOR is off)",
            ));
        }
        Ok((
            Principal {
                tenant,
                subject: format!("jwt:{}", claims.sub),
                roles,
            },
            claims.exp,
        ))
    }

    /// The JWKS key for a token's header: by `kid` (or the only key, when there is one), of the
    /// family its `alg` names, so a key can never be used with another algorithm.
    async fn jwk_for(&self, header: &Header) -> Result<DecodingKey, AuthError> {
        if self.jwt.jwks.is_none() {
            return Err(invalid(format!(
                "{:?} tokens are not accepted here (no JWKS is configured)",
                header.alg
            )));
        }
        let mut set = self.jwks(false).await?;
        let find = |set: &JwkSet| match &header.kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&set) {
            Some(jwk) => jwk,
            None => {
                set = self.jwks(true).await?;
                find(&set).ok_or_else(|| invalid("the token's key (kid) is not in the JWKS"))?
            }
        };
        let family_fits = matches!(
            (&jwk.algorithm, header.alg),
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512,
            ) | (
                AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            )
        );
        let alg_fits = jwk
            .common
            .key_algorithm
            .is_none_or(|ka| format!("{ka:?}") == format!("{:?}", header.alg));
        if !family_fits || !alg_fits {
            return Err(invalid(format!(
                "the token's algorithm {:?} does not match its key",
                header.alg
            )));
        }
        DecodingKey::from_jwk(&jwk).map_err(|e| invalid(format!("the JWKS key is unusable: {e}")))
    }

    /// The JWKS, read at most every `JWKS_KEEP` (or, asked to `refresh`, `JWKS_RETRY`).
    async fn jwks(&self, refresh: bool) -> Result<Arc<JwkSet>, AuthError> {
        let mut cached = self.jwks.lock().await;
        if let Some(c) = cached.as_ref() {
            let age = c.read_at.elapsed();
            if age < JWKS_RETRY || (!refresh && age < JWKS_KEEP) {
                return Ok(c.set.clone());
            }
        }
        let set = match self.jwt.jwks.as_ref().expect("checked by the caller") {
            JwksSource::File(path) => {
                let read = path.clone();
                let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(read))
                    .await
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?
                    .map_err(|e| {
                        AuthError::Unavailable(format!("reading the JWKS {}: {e}", path.display()))
                    })?;
                serde_json::from_str::<JwkSet>(&text).map_err(|e| {
                    AuthError::Unavailable(format!("the JWKS {}: {e}", path.display()))
                })?
            }
            JwksSource::Url(url) => self
                .http
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| AuthError::Unavailable(format!("fetching the JWKS: {e}")))?
                .json::<JwkSet>()
                .await
                .map_err(|e| AuthError::Unavailable(format!("the JWKS at {url}: {e}")))?,
        };
        let set = Arc::new(set);
        *cached = Some(CachedJwks {
            read_at: Instant::now(),
            set: set.clone(),
        });
        Ok(set)
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Unavailable(e.to_string())
    }
}

/// The Lambda functions refuse to start with nothing to verify credentials with.
#[derive(Debug, thiserror::Error)]
#[error("no credentials are configured: set CONVEYOR_JWT_SECRET_ID (or CONVEYOR_JWT_SECRET) or CONVEYOR_JWKS; the functions never run open")]
pub struct NotConfigured;

pub fn require_configured(settings: &JwtSettings) -> Result<(), NotConfigured> {
    if settings.configured() {
        Ok(())
    } else {
        Err(NotConfigured)
    }
}
