//! Background tasks that are never silent: a supervised task that panics or ends before it is
//! told to stop is logged, shown as down in `/healthz`, and started again after a backoff.

use crate::poller::stopped;
use shared::health::{panic_message, Health};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Run the task `make` builds until `stop`; restart it whenever it panics or ends early.
pub async fn supervise<F, Fut>(
    name: String,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
    make: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        health.up(&name);
        let ended = tokio::spawn(make()).await;
        if *stop.borrow() {
            return;
        }
        let why = match ended {
            Ok(()) => "ended before it was told to stop".to_string(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(e) => format!("failed: {e}"),
        };
        tracing::error!(task = %name, error = %why, "background task stopped; restarting it in {backoff:?}");
        health.restarting(&name, why);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_task_that_panics_or_ends_early_is_restarted_and_shown() {
        // GIVEN a task that panics on its first run, ends at once on its second, and then runs
        let health = Arc::new(Health::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let (third_tx, mut third) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise("maintenance".into(), health.clone(), stop_rx, {
            let runs = runs.clone();
            move || {
                let (runs, third_tx) = (runs.clone(), third_tx.clone());
                async move {
                    match runs.fetch_add(1, Ordering::SeqCst) {
                        0 => panic!("sweep bug"),
                        1 => {}
                        _ => {
                            let _ = third_tx.send(());
                            std::future::pending::<()>().await
                        }
                    }
                }
            }
        }));

        // WHEN it is running for the third time
        tokio::time::timeout(Duration::from_secs(30), third.recv())
            .await
            .expect("the task was started a third time");

        // THEN health shows it up, restarted twice, with the last failure on record
        let report = health.report();
        let state = &report.components["maintenance"];
        assert!(state.ok, "{state:?}");
        assert_eq!(state.restarts, 2);
        assert_eq!(
            state.error.as_deref(),
            Some("ended before it was told to stop")
        );
        // AND told to stop, the supervisor ends without another restart
        stop_tx.send(true).unwrap();
        // (the running task is pending forever: the supervisor returns once it is aborted by
        // the runtime's end; here it is enough that no fourth run starts)
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        supervisor.abort();
    }
}
