//! `RunningSlots` of the embedded backend, held in memory. The data directory has one owner (its
//! lock), so every worker that takes or gives back a slot runs in this process, and a restart,
//! which ends every run, frees every slot with it: what the slots' leases are for elsewhere (a
//! dead worker's slot) cannot happen here. Keeping them off the database saves the single
//! writer two writes a job of a type or tenant that limits its running jobs.

use crate::domain::JobId;
use crate::ports::{RunningSlots, SlotTake, StoreError, SLOT_LINE_LEASE};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
pub struct MemorySlots {
    keys: Mutex<HashMap<String, KeySlots>>,
}

/// One key's slots: who holds one and until when, and who waits in line for one (by job id: a
/// ULID, so in submit order) and until when its place is kept.
#[derive(Default)]
struct KeySlots {
    running: HashMap<JobId, DateTime<Utc>>,
    line: BTreeMap<JobId, DateTime<Utc>>,
}

impl KeySlots {
    fn take(
        &mut self,
        holder: JobId,
        max: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> SlotTake {
        self.running.retain(|_, lease| *lease > now);
        self.line.retain(|_, kept| *kept > now);
        if let Some(lease) = self.running.get_mut(&holder) {
            *lease = until;
            return SlotTake::AlreadyHeld;
        }
        let ahead = self.line.range(..holder).count();
        if self.running.len() + ahead >= max as usize {
            let kept = now + chrono::Duration::from_std(SLOT_LINE_LEASE).unwrap_or_default();
            self.line.insert(holder, kept);
            return SlotTake::Full;
        }
        self.line.remove(&holder);
        self.running.insert(holder, until);
        SlotTake::Taken
    }

    fn is_empty(&self) -> bool {
        self.running.is_empty() && self.line.is_empty()
    }
}

impl MemorySlots {
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeySlots>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RunningSlots for MemorySlots {
    async fn take(
        &self,
        key: &str,
        holder: JobId,
        max: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SlotTake, StoreError> {
        let mut keys = self.keys();
        let slots = keys.entry(key.to_string()).or_default();
        let taken = slots.take(holder, max, until, now);
        if slots.is_empty() {
            keys.remove(key);
        }
        Ok(taken)
    }

    async fn release(&self, key: &str, holder: JobId) -> Result<(), StoreError> {
        let mut keys = self.keys();
        if let Some(slots) = keys.get_mut(key) {
            slots.running.remove(&holder);
            if slots.is_empty() {
                keys.remove(key);
            }
        }
        Ok(())
    }
}
