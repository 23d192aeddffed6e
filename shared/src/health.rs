//! What `/healthz` reports: the state of each part of a deployment that can fail on its own
//! (the storage writer, each queue poller, the maintenance loop). Parts report themselves
//! (`up`, `down`, `restarted`); some are asked when the report is made (`probe`). No part here
//! names a backend: the Lambda `api` function serves the same report with what it has.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One part's state as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentState {
    pub ok: bool,
    /// Why it is down, or the last failure it recovered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Times its task was restarted after a panic or an unexpected end.
    pub restarts: u32,
    pub since: DateTime<Utc>,
}

type Probe = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Default)]
pub struct Health {
    parts: Mutex<BTreeMap<String, ComponentState>>,
    probes: Mutex<BTreeMap<String, Probe>>,
}

/// The whole report: `ok` only when every part is.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub ok: bool,
    pub components: BTreeMap<String, ComponentState>,
}

impl HealthReport {
    /// The parts that are down, by name.
    pub fn down(&self) -> Vec<&str> {
        self.components
            .iter()
            .filter(|(_, c)| !c.ok)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// A part whose state is asked for at each report (e.g. "is the writer thread alive").
    pub fn probe(
        &self,
        name: &str,
        probe: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.probes
            .lock()
            .unwrap()
            .insert(name.to_string(), Box::new(probe));
    }

    /// The part works (again). Keeps its restart count and last error for the record.
    pub fn up(&self, name: &str) {
        self.update(name, |state| {
            if !state.ok {
                state.ok = true;
                state.since = Utc::now();
            }
        });
    }

    /// The part is not working: `error` says why.
    pub fn down(&self, name: &str, error: impl Into<String>) {
        let error = error.into();
        self.update(name, |state| {
            if state.ok {
                state.since = Utc::now();
            }
            state.ok = false;
            state.error = Some(error);
        });
    }

    /// The part's task ended unexpectedly (`error`): down until it is started again (`up`).
    pub fn restarting(&self, name: &str, error: impl Into<String>) {
        let error = error.into();
        self.update(name, |state| {
            state.restarts += 1;
            state.error = Some(error);
            state.ok = false;
            state.since = Utc::now();
        });
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ComponentState)) {
        let mut parts = self.parts.lock().unwrap();
        // (No allocation on the hot path: pollers report after every receive.)
        if let Some(state) = parts.get_mut(name) {
            return change(state);
        }
        let mut state = ComponentState {
            ok: true,
            error: None,
            restarts: 0,
            since: Utc::now(),
        };
        change(&mut state);
        parts.insert(name.to_string(), state);
    }

    pub fn report(&self) -> HealthReport {
        let mut components = self.parts.lock().unwrap().clone();
        for (name, probe) in self.probes.lock().unwrap().iter() {
            let (ok, error) = match probe() {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e)),
            };
            components.insert(
                name.clone(),
                ComponentState {
                    ok,
                    error,
                    restarts: 0,
                    since: Utc::now(),
                },
            );
        }
        HealthReport {
            ok: components.values().all(|c| c.ok),
            components,
        }
    }
}

/// The message a panic carried, for logs and reports.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_ok_only_while_every_part_is() {
        // GIVEN a poller that is up and a writer probe
        let health = Health::new();
        health.up("poller:q");
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let probe = alive.clone();
        health.probe("writer", move || {
            if probe.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("stopped".into())
            }
        });
        assert!(health.report().ok);

        // WHEN maintenance fails and the writer stops
        health.down("maintenance", "storage unavailable");
        alive.store(false, std::sync::atomic::Ordering::Relaxed);

        // THEN the report is not ok and names both
        let report = health.report();
        assert!(!report.ok);
        assert_eq!(report.down(), vec!["maintenance", "writer"]);

        // WHEN maintenance works again and the poller was restarted after a panic
        health.up("maintenance");
        health.restarting("poller:q", "panicked: boom");
        assert_eq!(health.report().down(), vec!["poller:q", "writer"]);
        health.up("poller:q");
        let report = health.report();
        // THEN only the writer is down, and the restart is on record
        assert_eq!(report.down(), vec!["writer"]);
        assert_eq!(report.components["poller:q"].restarts, 1);
        assert_eq!(
            report.components["maintenance"].error.as_deref(),
            Some("storage unavailable")
        );
    }
}
