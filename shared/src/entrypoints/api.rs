//! The HTTP API's state, built one way for every runtime that serves it (the `api` function and
//! the local runtime): from the configuration, the opened ports and the way callers are verified.

use super::http::{ApiState, HttpLimits};
use crate::auth::Verify;
use crate::config::Config;
use crate::health::Health;
use crate::jobs::Registry;
use crate::live::FollowChanges;
use crate::ports::Ports;
use crate::service::JobService;
use std::sync::Arc;

impl ApiState {
    /// The API over `ports` and `registry` with the settings `config` gives, verifying callers
    /// with `auth`. It has a health report of its own and no change feed (each `/v1/events`
    /// request answers what changed since the client's last event); `with_health` and
    /// `with_live` give it the process's.
    pub async fn from_config(
        config: &Config,
        ports: Ports,
        registry: Arc<Registry>,
        auth: Arc<dyn Verify>,
    ) -> Self {
        Self {
            service: JobService::from_config(config, ports, registry),
            auth,
            audit_retention: config.audit_retention,
            audit_submits: config.audit_submits,
            webhook_master: crate::adapters::builtin_settings(config)
                .await
                .webhook_secret,
            limits: HttpLimits::from_config(config),
            health: Default::default(),
            live: None,
            ws_url: config.ws_url.clone(),
        }
    }

    /// The same API, reporting `health` (the process's parts) at `/healthz`.
    pub fn with_health(self, health: Arc<Health>) -> Self {
        Self { health, ..self }
    }

    /// The same API, streaming `/v1/events` from the process's change feed.
    pub fn with_live(self, live: Arc<dyn FollowChanges>) -> Self {
        Self {
            live: Some(live),
            ..self
        }
    }
}
