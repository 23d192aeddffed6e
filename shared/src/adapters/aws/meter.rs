//! Write units the table reported, and where they went: for `conveyor bench-aws`, which prints
//! the units per job, per heartbeat, and the partition heat (the largest share of the units
//! that one partition key value took, in the table or in an index).

use aws_sdk_dynamodb::types::ConsumedCapacity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Each write asks for its consumed capacity (by index) only while a meter is attached.
#[derive(Debug, Clone, Default)]
pub struct CapacityMeter(Arc<Mutex<Metered>>);

#[derive(Debug, Default)]
struct Metered {
    units: f64,
    /// Units by partition key value: `table <pk>` or `<index> <index pk>`.
    by_key: HashMap<String, f64>,
    /// Writes and units by what they were (`create`, `start`, `heartbeat`, ...).
    by_kind: HashMap<&'static str, (u64, f64)>,
}

/// The partition key value that took the largest share of the write units.
#[derive(Debug, Clone, PartialEq)]
pub struct Hottest {
    pub key: String,
    pub units: f64,
    pub share: f64,
}

impl CapacityMeter {
    pub fn write_units(&self) -> f64 {
        self.0.lock().unwrap().units
    }

    pub fn reset(&self) {
        *self.0.lock().unwrap() = Metered::default();
    }

    /// Writes of one kind and their units.
    pub fn of_kind(&self, kind: &str) -> (u64, f64) {
        self.0
            .lock()
            .unwrap()
            .by_kind
            .get(kind)
            .copied()
            .unwrap_or_default()
    }

    /// Every kind of write recorded, with its writes and units, by kind.
    pub fn kinds(&self) -> Vec<(&'static str, u64, f64)> {
        let m = self.0.lock().unwrap();
        let mut kinds: Vec<_> = m.by_kind.iter().map(|(k, (n, u))| (*k, *n, *u)).collect();
        kinds.sort_by_key(|(k, _, _)| *k);
        kinds
    }

    /// Where the most write units went, of all recorded since the last reset, among the keys
    /// many jobs share (a shard, a counter, an index partition): those whose load grows with
    /// the job rate. A key of one job's own (`one_job_key`) takes its units once, whatever the
    /// rate.
    pub fn hottest(&self) -> Option<Hottest> {
        let m = self.0.lock().unwrap();
        let total: f64 = m.by_key.values().sum();
        m.by_key
            .iter()
            .filter(|(key, _)| !one_job_key(key))
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(key, units)| Hottest {
                key: key.clone(),
                units: *units,
                share: if total > 0.0 { units / total } else { 0.0 },
            })
    }

    /// The key of one job's own that took the most write units, and its units.
    pub fn largest_one_job_key(&self) -> Option<(String, f64)> {
        let m = self.0.lock().unwrap();
        m.by_key
            .iter()
            .filter(|(key, _)| one_job_key(key))
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, u)| (k.clone(), *u))
    }

    /// Partition key values written, with their units.
    pub fn keys(&self) -> HashMap<String, f64> {
        self.0.lock().unwrap().by_key.clone()
    }

    /// One request's capacity: the table's units shared by the partition keys of the items it
    /// wrote, each index's by the index keys it wrote (`(index, key)`).
    pub(super) fn record(
        &self,
        kind: &'static str,
        table_keys: &[String],
        index_keys: &[(&str, String)],
        used: Option<&ConsumedCapacity>,
    ) {
        let Some(used) = used else { return };
        let total = used.capacity_units.unwrap_or(0.0);
        let mut m = self.0.lock().unwrap();
        m.units += total;
        let entry = m.by_kind.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += total;
        let indexes: f64 = used
            .global_secondary_indexes()
            .map(|g| g.values().filter_map(|c| c.capacity_units).sum())
            .unwrap_or(0.0);
        let table = used
            .table()
            .and_then(|t| t.capacity_units)
            .unwrap_or(total - indexes);
        for key in table_keys {
            *m.by_key.entry(format!("table {key}")).or_default() += table / table_keys.len() as f64;
        }
        if let Some(by_index) = used.global_secondary_indexes() {
            for (index, c) in by_index {
                let keys: Vec<&String> = index_keys
                    .iter()
                    .filter(|(i, _)| i == index)
                    .map(|(_, k)| k)
                    .collect();
                let units = c.capacity_units.unwrap_or(0.0);
                if keys.is_empty() {
                    *m.by_key.entry(format!("{index} ?")).or_default() += units;
                }
                for key in &keys {
                    *m.by_key.entry(format!("{index} {key}")).or_default() +=
                        units / keys.len() as f64;
                }
            }
        }
    }
}

/// Whether a recorded key (`table <pk>`) belongs to one job alone: its payload or result, its
/// log, its steps, its idempotency key.
fn one_job_key(key: &str) -> bool {
    let pk = key.strip_prefix("table ").unwrap_or("");
    ["P#", "L#", "S#", "IDEM#"]
        .iter()
        .any(|p| pk.starts_with(p))
}
