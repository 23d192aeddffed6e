//! Paused job types: a paused type keeps taking submits and starts none of its jobs, for one
//! tenant or for every tenant of the deployment.

use super::{JobType, Tenant};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Whose jobs of a type a pause holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PauseScope {
    Tenant(Tenant),
    /// Every tenant's (the operator's pause).
    All,
}

impl PauseScope {
    /// How the scope is stored: the tenant, or `*` (no tenant is named `*`).
    pub fn key(&self) -> &str {
        match self {
            Self::Tenant(t) => t.as_str(),
            Self::All => "*",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "*" => Some(Self::All),
            t => Tenant::parse(t).ok().map(Self::Tenant),
        }
    }

    /// Whether the scope holds `tenant`'s jobs.
    pub fn covers(&self, tenant: &Tenant) -> bool {
        match self {
            Self::Tenant(t) => t == tenant,
            Self::All => true,
        }
    }

    /// The scope's name in the API: `tenant` or `all_tenants`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tenant(_) => "tenant",
            Self::All => "all_tenants",
        }
    }
}

/// One pause: a type held for a scope since a moment, by someone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub scope: PauseScope,
    pub job_type: JobType,
    pub since: DateTime<Utc>,
    /// Who paused it (an API key's id, a token's subject).
    pub by: String,
}

/// A pause as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PauseView {
    pub scope: &'static str,
    pub since: DateTime<Utc>,
    pub by: String,
}

impl Pause {
    /// A pause as a store keeps it (the scope's `key`, the type's name); `None` for one no
    /// version could have written (left out, not an error for every worker that reads them).
    pub fn stored(
        scope: &str,
        job_type: &str,
        since: Option<DateTime<Utc>>,
        by: &str,
    ) -> Option<Self> {
        Some(Self {
            scope: PauseScope::from_key(scope)?,
            job_type: JobType::parse(job_type).ok()?,
            since: since?,
            by: by.to_string(),
        })
    }

    pub fn view(&self) -> PauseView {
        PauseView {
            scope: self.scope.kind(),
            since: self.since,
            by: self.by.clone(),
        }
    }
}

/// Every pause of a deployment (there are few: one per type and scope at most).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pauses(pub Vec<Pause>);

impl Pauses {
    /// The pauses that hold `tenant`'s jobs of `job_type`.
    pub fn holding<'a>(
        &'a self,
        tenant: &'a Tenant,
        job_type: &'a str,
    ) -> impl Iterator<Item = &'a Pause> + 'a {
        self.0
            .iter()
            .filter(move |p| p.job_type.as_str() == job_type && p.scope.covers(tenant))
    }

    pub fn holds(&self, tenant: &Tenant, job_type: &str) -> bool {
        self.holding(tenant, job_type).next().is_some()
    }

    /// Whether any pause names `job_type` (if none does, no job of it needs its tenant looked up).
    pub fn names(&self, job_type: &str) -> bool {
        self.0.iter().any(|p| p.job_type.as_str() == job_type)
    }

    /// Whether the type is paused for every tenant.
    pub fn everywhere(&self, job_type: &str) -> bool {
        self.0
            .iter()
            .any(|p| p.job_type.as_str() == job_type && p.scope == PauseScope::All)
    }

    /// The types paused for `tenant`, each once, in order.
    pub fn types_for(&self, tenant: &Tenant) -> Vec<JobType> {
        let mut types: Vec<JobType> = self
            .0
            .iter()
            .filter(|p| p.scope.covers(tenant))
            .map(|p| p.job_type.clone())
            .collect();
        types.sort();
        types.dedup();
        types
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(scope: PauseScope, t: &str) -> Pause {
        Pause {
            scope,
            job_type: JobType::parse(t).unwrap(),
            since: Utc::now(),
            by: "x".into(),
        }
    }

    #[test]
    fn a_pause_holds_its_tenant_or_every_tenant() {
        let acme = Tenant::parse("acme").unwrap();
        let other = Tenant::parse("other").unwrap();
        let p = Pauses(vec![
            pause(PauseScope::Tenant(acme.clone()), "sleep"),
            pause(PauseScope::All, "noop"),
        ]);
        assert!(p.holds(&acme, "sleep"));
        assert!(!p.holds(&other, "sleep"));
        assert!(p.holds(&other, "noop") && p.holds(&acme, "noop"));
        assert!(!p.holds(&acme, "http.fetch"));
        assert!(p.everywhere("noop") && !p.everywhere("sleep"));
        assert!(p.names("sleep") && !p.names("http.fetch"));
        assert_eq!(p.types_for(&other), vec![JobType::parse("noop").unwrap()]);
        assert_eq!(p.types_for(&acme).len(), 2);
    }

    #[test]
    fn scopes_are_stored_as_the_tenant_or_a_star() {
        let acme = PauseScope::Tenant(Tenant::parse("acme").unwrap());
        assert_eq!(PauseScope::from_key(acme.key()), Some(acme));
        assert_eq!(PauseScope::from_key("*"), Some(PauseScope::All));
        assert_eq!(PauseScope::from_key("a b"), None);
    }
}
