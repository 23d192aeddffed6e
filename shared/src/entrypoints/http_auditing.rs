//! The audit trail as the HTTP API writes it: each entry, and refusals aggregated a minute at a
//! time. A child of `http`.

use super::*;

/// Append to the audit trail; a failure is logged, never the request's failure. A request
/// refused because the service was saturated or down (`unavailable`, `timeout`) changed nothing
/// and is not recorded: the store could not take the entry either, and waiting for it would
/// hold up the answer.
pub(super) async fn record(state: &ApiState, entry: AuditEntry) {
    if matches!(entry.outcome.as_str(), "unavailable" | "timeout") {
        return;
    }
    let log = state.service.ports().audit.clone();
    if REFUSALS.contains(&entry.outcome.as_str()) {
        for entry in refusals().note(entry, log.clone()) {
            write_audit(log.as_ref(), &entry).await;
        }
        return;
    }
    write_audit(log.as_ref(), &entry).await;
}

pub(super) async fn write_audit(log: &dyn crate::ports::AuditLog, entry: &AuditEntry) {
    if let Err(e) = log.record(entry).await {
        tracing::error!(error = %e, action = %entry.action, actor = %entry.actor, "could not write an audit entry");
    }
}

/// The outcomes a refused caller is answered with, which anyone can cause at any rate: each is
/// recorded once a minute for a caller, action and outcome (the first at once, the rest of the
/// minute as one entry with their `count`), so a flood of them costs the operator a few rows.
pub(super) const REFUSALS: [&str; 4] = [
    "unauthorized",
    "rate_limited",
    "quota_exceeded",
    "too_many_connections",
];

/// The refusals of this process in the current minute, by caller, action and outcome.
#[derive(Default)]
pub(super) struct Refusals {
    minutes: std::sync::Mutex<HashMap<RefusalKey, Counted>>,
}

pub(super) type RefusalKey = (Option<Tenant>, String, Option<String>, String, String);

pub(super) struct Counted {
    minute: i64,
    /// The latest refusal after the first, and how many there were.
    rest: Option<(AuditEntry, u64)>,
}

/// Most callers counted at once; past it, the oldest minutes are written out early.
pub(super) const REFUSALS_KEPT: usize = 10_000;

pub(super) fn refusals() -> &'static Refusals {
    static ONE: std::sync::OnceLock<Refusals> = std::sync::OnceLock::new();
    ONE.get_or_init(Refusals::default)
}

impl Refusals {
    /// Note a refusal: the entries to write now (its own if it is the first of its minute, and
    /// the counts of minutes that are over). The rest of its minute is written when the minute
    /// is over: by the next refusal after it, or by a task that waits for the minute's end.
    fn note(
        &'static self,
        entry: AuditEntry,
        log: Arc<dyn crate::ports::AuditLog>,
    ) -> Vec<AuditEntry> {
        let minute = entry.at.timestamp().div_euclid(60);
        let key = (
            entry.tenant.clone(),
            entry.actor.clone(),
            entry.source_ip.clone(),
            entry.action.clone(),
            entry.outcome.clone(),
        );
        let mut out = self.over(minute);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        match minutes.get_mut(&key) {
            Some(counted) if counted.minute == minute => {
                let first_of_rest = counted.rest.is_none();
                let n = counted.rest.as_ref().map_or(0, |r| r.1) + 1;
                counted.rest = Some((entry, n));
                if first_of_rest {
                    // (written at the minute's end even if no refusal comes after it)
                    let wait = (minute + 1) * 60 - chrono::Utc::now().timestamp() + 1;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(wait.clamp(1, 61) as u64)).await;
                        for entry in refusals().over(minute + 1) {
                            write_audit(log.as_ref(), &entry).await;
                        }
                    });
                }
            }
            _ => {
                if minutes.len() >= REFUSALS_KEPT {
                    drop(minutes);
                    out.extend(self.over(i64::MAX));
                    minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
                }
                minutes.insert(key, Counted { minute, rest: None });
                out.push(entry);
            }
        }
        out
    }

    /// The counted rest of every minute before `minute`, taken out to be written.
    fn over(&self, minute: i64) -> Vec<AuditEntry> {
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![];
        minutes.retain(|_, counted| {
            if counted.minute >= minute {
                return true;
            }
            if let Some((mut entry, n)) = counted.rest.take() {
                entry.count = n;
                out.push(entry);
            }
            false
        });
        out
    }
}

/// The outcome an audit entry records: `ok`, or the error code answered.
pub(super) fn outcome_of<T>(result: &ApiResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code,
    }
}

/// Record what a caller did to a job (or tried to), with the outcome it was answered.
pub(super) async fn audit(
    state: &ApiState,
    caller: &Caller,
    tenant: &Tenant,
    action: &str,
    job_id: Option<JobId>,
    outcome: &'static str,
) {
    let entry = caller.actor().entry(
        Some(tenant.clone()),
        action,
        job_id,
        outcome,
        chrono::Utc::now(),
        state.audit_retention,
    );
    record(state, entry).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Actor;

    /// An audit log in memory.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<AuditEntry>>);

    #[async_trait::async_trait]
    impl crate::ports::AuditLog for Kept {
        async fn record(&self, entry: &AuditEntry) -> Result<(), crate::ports::StoreError> {
            self.0.lock().unwrap().push(entry.clone());
            Ok(())
        }
        async fn audit(
            &self,
            _: &crate::ports::AuditQuery,
        ) -> Result<Vec<AuditEntry>, crate::ports::StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    fn refusal(actor: &str, at: chrono::DateTime<chrono::Utc>) -> AuditEntry {
        Actor {
            actor: actor.into(),
            source_ip: Some("203.0.113.7".into()),
        }
        .entry(
            None,
            "auth",
            None,
            "unauthorized",
            at,
            Duration::from_secs(3600),
        )
    }

    #[tokio::test]
    async fn a_callers_refusals_of_one_minute_are_written_as_the_first_and_one_count_of_the_rest() {
        let log: Arc<dyn crate::ports::AuditLog> = Arc::new(Kept::default());
        let actor = format!("key:{}", ulid::Ulid::new());
        let minute = chrono::DateTime::from_timestamp(1_800_000_000 / 60 * 60, 0).unwrap();
        // WHEN one caller is refused 50 times within a minute
        let mut written = vec![];
        for i in 0..50 {
            let at = minute + chrono::Duration::milliseconds(i * 100);
            written.extend(refusals().note(refusal(&actor, at), log.clone()));
        }
        // THEN only the first was written then
        let ours = |w: &[AuditEntry]| -> Vec<AuditEntry> {
            w.iter().filter(|e| e.actor == actor).cloned().collect()
        };
        assert_eq!(ours(&written).len(), 1, "{written:?}");
        assert_eq!(ours(&written)[0].count, 1);
        // AND once the minute is over, the rest is one entry counting them
        let rest = ours(&refusals().over(minute.timestamp() / 60 + 1));
        assert_eq!(rest.len(), 1, "{rest:?}");
        assert_eq!(rest[0].count, 49);
        // AND a refusal of the next minute is written at once again
        let next = minute + chrono::Duration::seconds(60);
        let written = refusals().note(refusal(&actor, next), log.clone());
        assert_eq!(ours(&written).len(), 1, "{written:?}");
    }
}
