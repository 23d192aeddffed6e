//! Job types served outside Conveyor: a tenant (or, for every tenant, an operator) declares a
//! type whose attempts are calls to the team's own code, in any language, where it runs: a URL
//! POSTed once an attempt, or on AWS a Lambda function invoked directly. The declaration carries
//! the type's options as the shipped types have them.

use super::{Backoff, JobType, PauseScope, ValidationError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Types whose names start with this are the deployment's own.
pub const RESERVED_PREFIX: &str = "conveyor.";
/// Longest attempt of an external type (a Lambda invocation's limit, less room to record it).
pub const EXTERNAL_TIMEOUT_MAX: Duration = Duration::from_secs(890);
/// Most attempts an external type may have.
pub const EXTERNAL_ATTEMPTS_MAX: u32 = 100;
/// Most of an external type's jobs running at once, per tenant.
pub const EXTERNAL_CONCURRENCY_MAX: u32 = 1000;

/// Where an external type's attempts go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HandlerTarget {
    /// POSTed once an attempt, signed (as `webhook.deliver` signs), through the outbound guard.
    Url(String),
    /// A Lambda function (its ARN), invoked directly with the same request (AWS backend only).
    Lambda(String),
}

impl HandlerTarget {
    /// The target checked for form: a URL with a scheme and host, or a Lambda function's ARN.
    /// (Whether a URL may be reached is the outbound guard's to say, at registration and again
    /// at each call.)
    pub fn parse(self) -> Result<Self, ValidationError> {
        match &self {
            Self::Url(url) => {
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    ValidationError::new("handler.url", format!("is not a URL: {e}"))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(ValidationError::new(
                        "handler.url",
                        "must be an http or https URL with a host",
                    ));
                }
            }
            Self::Lambda(arn) => {
                let parts: Vec<&str> = arn.split(':').collect();
                if parts.len() < 7
                    || parts[0] != "arn"
                    || parts[2] != "lambda"
                    || parts[5] != "function"
                {
                    return Err(ValidationError::new(
                        "handler.lambda",
                        "must be a Lambda function's ARN (arn:aws:lambda:<region>:<account>:function:<name>)",
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// A declared external type, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalType {
    pub name: JobType,
    /// The tenant it is declared for, or `*` for every tenant (`PauseScope::key`).
    pub scope: String,
    pub handler: HandlerTarget,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Most of its jobs running at once for one tenant.
    pub concurrency: u32,
    /// At most `per` starts each `period_ms`, across the deployment, for one tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<(u32, u64)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who declared it last (an API key's id, a token's subject).
    pub by: String,
}

impl ExternalType {
    pub fn scope(&self) -> Option<PauseScope> {
        PauseScope::from_key(&self.scope)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// A name an external type may take: not a shipped type's (`builtin`), and not in the
    /// deployment's own namespace.
    pub fn check_name(name: &JobType, builtin: &[&str]) -> Result<(), ValidationError> {
        if name.as_str().starts_with(RESERVED_PREFIX) || builtin.contains(&name.as_str()) {
            return Err(ValidationError::new(
                "name",
                format!(
                    "'{name}' is a type of the deployment's own; choose another name (names starting with '{RESERVED_PREFIX}' are reserved)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_is_a_url_with_a_host_or_a_functions_arn() {
        assert!(HandlerTarget::Url("https://jobs.example.com/run".into())
            .parse()
            .is_ok());
        for bad in ["ftp://example.com", "not a url", "https://"] {
            let e = HandlerTarget::Url(bad.into()).parse().unwrap_err();
            assert_eq!(e.field, "handler.url", "{bad}");
        }
        assert!(HandlerTarget::Lambda(
            "arn:aws:lambda:eu-west-1:123456789012:function:py-echo".into()
        )
        .parse()
        .is_ok());
        let e = HandlerTarget::Lambda("py-echo".into()).parse().unwrap_err();
        assert_eq!(e.field, "handler.lambda");
    }

    #[test]
    fn the_deployments_own_names_are_not_taken() {
        let builtin = ["noop", "http.fetch"];
        assert!(ExternalType::check_name(&JobType::parse("py.echo").unwrap(), &builtin).is_ok());
        for taken in ["noop", "http.fetch", "conveyor.anything"] {
            let e =
                ExternalType::check_name(&JobType::parse(taken).unwrap(), &builtin).unwrap_err();
            assert_eq!(e.field, "name", "{taken}");
        }
    }
}
