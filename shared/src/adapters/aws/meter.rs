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

    /// Where the most write units went, of all recorded since the last reset.
    pub fn hottest(&self) -> Option<Hottest> {
        let m = self.0.lock().unwrap();
        let total: f64 = m.by_key.values().sum();
        m.by_key
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(key, units)| Hottest {
                key: key.clone(),
                units: *units,
                share: if total > 0.0 { units / total } else { 0.0 },
            })
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
