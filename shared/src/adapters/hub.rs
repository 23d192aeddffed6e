//! The local runtime's WebSocket gateway, in process: `ConnectionStore` and `ClientPusher` over
//! maps in memory (a connection lives as long as the process). Each connection has a bounded
//! outbox; a client that lets it fill up is dropped (its socket is closed), so a slow reader
//! never slows the others or the jobs.

use crate::domain::Tenant;
use crate::live::Topic;
use crate::ports::{ClientPusher, Connection, ConnectionStore, PushError, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    connections: HashMap<String, Entry>,
    subscribers: HashMap<(Tenant, Topic), BTreeSet<String>>,
}

struct Entry {
    connection: Option<Connection>,
    outbox: Option<mpsc::Sender<Arc<str>>>,
    topics: BTreeSet<Topic>,
}

pub struct Hub {
    state: Mutex<State>,
    outbox_room: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("outbox_room", &self.outbox_room)
            .finish()
    }
}

impl Hub {
    /// A hub whose connections may have `outbox_room` messages waiting before they are dropped.
    pub fn new(outbox_room: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            outbox_room: outbox_room.max(1),
        })
    }

    /// Attach a socket: what is pushed to `id` comes out of the returned receiver. The
    /// receiver ends when the connection is dropped.
    pub fn attach(&self, id: &str) -> mpsc::Receiver<Arc<str>> {
        let (tx, rx) = mpsc::channel(self.outbox_room);
        let mut state = self.state.lock().unwrap();
        let entry = state.connections.entry(id.to_string()).or_insert(Entry {
            connection: None,
            outbox: None,
            topics: BTreeSet::new(),
        });
        entry.outbox = Some(tx);
        rx
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.lock().unwrap().connections.len()
    }

    fn remove(state: &mut State, id: &str) {
        if let Some(entry) = state.connections.remove(id) {
            if let Some(c) = &entry.connection {
                for topic in entry.topics {
                    let key = (c.tenant.clone(), topic);
                    if let Some(subs) = state.subscribers.get_mut(&key) {
                        subs.remove(id);
                        if subs.is_empty() {
                            state.subscribers.remove(&key);
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl ConnectionStore for Hub {
    async fn connect(&self, connection: &Connection) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        let entry = state
            .connections
            .entry(connection.id.clone())
            .or_insert(Entry {
                connection: None,
                outbox: None,
                topics: BTreeSet::new(),
            });
        entry.connection = Some(connection.clone());
        Ok(())
    }

    async fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .connections
            .get(id)
            .and_then(|e| e.connection.clone())
            .filter(|c| c.expires_at > Utc::now()))
    }

    async fn disconnect(&self, id: &str) -> Result<(), StoreError> {
        Self::remove(&mut self.state.lock().unwrap(), id);
        Ok(())
    }

    async fn subscribe(&self, connection: &Connection, topic: Topic) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        let Some(entry) = state.connections.get_mut(&connection.id) else {
            return Ok(());
        };
        if entry.topics.len() >= crate::live::MAX_SUBSCRIPTIONS && !entry.topics.contains(&topic) {
            return Err(StoreError::Rejected(format!(
                "a connection follows at most {} subscriptions",
                crate::live::MAX_SUBSCRIPTIONS
            )));
        }
        entry.topics.insert(topic);
        state
            .subscribers
            .entry((connection.tenant.clone(), topic))
            .or_default()
            .insert(connection.id.clone());
        Ok(())
    }

    async fn unsubscribe(&self, connection: &Connection, topic: Topic) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        if let Some(entry) = state.connections.get_mut(&connection.id) {
            entry.topics.remove(&topic);
        }
        let key = (connection.tenant.clone(), topic);
        if let Some(subs) = state.subscribers.get_mut(&key) {
            subs.remove(&connection.id);
            if subs.is_empty() {
                state.subscribers.remove(&key);
            }
        }
        Ok(())
    }

    async fn subscribers(&self, tenant: &Tenant, topic: Topic) -> Result<Vec<String>, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .subscribers
            .get(&(tenant.clone(), topic))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn subscriptions(&self, tenant: &Tenant) -> Result<Vec<(Topic, String)>, StoreError> {
        let state = self.state.lock().unwrap();
        Ok(state
            .subscribers
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .flat_map(|((_, topic), conns)| conns.iter().map(|c| (*topic, c.clone())))
            .collect())
    }
}

#[async_trait]
impl ClientPusher for Hub {
    async fn push(&self, connection: &str, messages: &[Arc<str>]) -> Result<(), PushError> {
        let mut state = self.state.lock().unwrap();
        let Some(outbox) = state
            .connections
            .get(connection)
            .and_then(|e| e.outbox.clone())
        else {
            return Err(PushError::Gone);
        };
        for m in messages {
            if outbox.try_send(m.clone()).is_err() {
                // Full (too slow) or closed: dropping the sender closes the socket.
                tracing::info!(
                    connection,
                    "a live-update client fell behind or left; dropped"
                );
                Self::remove(&mut state, connection);
                return Err(PushError::Gone);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{notify, JobChange};

    fn connection(id: &str) -> Connection {
        Connection {
            id: id.into(),
            tenant: Tenant::parse("acme").unwrap(),
            subject: "test".into(),
            connected_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(2),
        }
    }

    fn change(tenant: &str) -> JobChange {
        use crate::domain::{Backoff, Job, JobType, NewJob};
        use std::time::Duration;
        let job = Job::create(
            NewJob {
                tenant: Tenant::parse(tenant).unwrap(),
                job_type: JobType::parse("noop").unwrap(),
                priority: 0,
                payload: serde_json::json!({}),
                max_attempts: 1,
                backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
                timeout: Duration::from_secs(1),
                retention: Duration::from_secs(1),
                idempotency_key: None,
                request_fingerprint: None,
                run_at: Utc::now(),
            },
            Utc::now(),
        );
        JobChange::job((&job).into())
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_dropped_and_the_others_keep_receiving() {
        let hub = Hub::new(2);
        let (mut slow, mut fast) = (hub.attach("slow"), hub.attach("fast"));
        for id in ["slow", "fast"] {
            hub.connect(&connection(id)).await.unwrap();
            hub.subscribe(&connection(id), Topic::All).await.unwrap();
        }
        let mut received = 0;
        for _ in 0..5 {
            let report = notify(hub.as_ref(), hub.as_ref(), &[change("acme")])
                .await
                .unwrap();
            assert_eq!(report.failed, 0);
            while fast.try_recv().is_ok() {
                received += 1;
            }
        }
        assert_eq!(received, 5, "the reading client got every change");
        let mut kept = 0;
        while slow.try_recv().is_ok() {
            kept += 1;
        }
        assert_eq!(kept, 2, "the slow one got what fit, then was dropped");
        assert!(slow.recv().await.is_none(), "its outbox is closed");
        assert_eq!(
            hub.subscribers(&connection("x").tenant, Topic::All)
                .await
                .unwrap(),
            ["fast"]
        );
    }

    #[tokio::test]
    async fn another_tenants_changes_reach_no_one() {
        let hub = Hub::new(8);
        let mut rx = hub.attach("c");
        hub.connect(&connection("c")).await.unwrap();
        hub.subscribe(&connection("c"), Topic::All).await.unwrap();
        let report = notify(hub.as_ref(), hub.as_ref(), &[change("other")])
            .await
            .unwrap();
        assert_eq!(report.pushes, 0);
        assert!(rx.try_recv().is_err());
    }
}
