//! A job's transition in the DynamoDB store: one conditional write of its state item, with
//! the tenant's slot and the batch's counts, and a result or payload too large for the item
//! written first as its own.

use super::attrs::{n, s, Item};
use super::batches::CountChange;
use super::layout::{micros, IMMUTABLE};
use super::table::{pk_of, DynamoStore};
use super::write::{classify, Update};
use crate::domain::{batch_count_change, slot_change, Expected, Job, JobId, JobStatus};
use crate::ports::{StoreError, Transitioned};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

const MAYBE_ABSENT: &[&str] = &[
    "progress",
    "result",
    "result_ext",
    "error",
    "concurrency_key",
    "tenant_max_running",
    "batch_id",
    "depends_on",
    "on_dependency_failure",
    "holds_slot",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "expires_at",
    "due_pk",
    "ttl",
];

impl DynamoStore {
    /// A transition's conditional write (and the tenant's slot and the batch's counts with
    /// it); the payload only when `with_payload`. A result or payload too large for the state
    /// item is written first, as its own item.
    pub(super) async fn write_transition(
        &self,
        expected: Expected,
        next: &Job,
        with_payload: bool,
    ) -> Result<Transitioned, StoreError> {
        let ends = next.status.is_terminal();
        let encoded = self.layout.encode(next)?;
        if with_payload {
            if let Some(payload) = encoded.payload {
                self.put_part(payload).await?;
            }
        }
        if let Some(result) = encoded.result {
            self.put_part(result).await?;
        }
        let from_running = expected.status == JobStatus::Running;
        let worker_owned = |attr: &str| {
            matches!(attr, "heartbeat_at" | "progress")
                || (attr == "due_us" && from_running && next.status == JobStatus::Running)
        };
        let payload_attr = |attr: &str| matches!(attr, "payload" | "payload_ext");
        let mut u = Update::default();
        let state = encoded.state;
        for (attr, value) in &state {
            if attr == "pk"
                || attr == "sk"
                || (IMMUTABLE.contains(&attr.as_str()) && !(with_payload && payload_attr(attr)))
                || (from_running && worker_owned(attr))
            {
                continue;
            }
            u.set(attr, value.clone());
        }
        let payload_fields: &[&str] = if with_payload {
            &["payload", "payload_ext"]
        } else {
            &[]
        };
        for attr in MAYBE_ABSENT.iter().chain(payload_fields) {
            let kept = state.contains_key(*attr) || (from_running && worker_owned(attr));
            if !kept {
                u.remove(attr);
            }
        }
        u.when_eq("status", s(expected.status.as_str()))
            .when_eq("attempt", n(expected.attempt))
            .when_eq("version", n(expected.version));
        if let Some(last) = expected.last_heartbeat {
            u.when_eq("due_us", n(micros(last)));
        }
        let key = self.layout.job_key(next.id);
        let pk = pk_of(&key);
        let due = self.due_keys(next.id, &[expected.status, next.status]);
        let slot = slot_change(expected.status, next);
        let batch = next
            .batch_id
            .and_then(|b| Some((b, batch_count_change(expected.status, next.status)?)));
        if ends && slot == 0 && batch.is_none() {
            // The jobs waiting for this one, told once: taken off it as it ends.
            u.remove("waiters");
        }
        if slot != 0 || batch.is_some() {
            // The job's quota slot and its batch's counts move in the same write (one request,
            // a transaction, which returns nothing: the waiters are taken off in a second
            // request, and the batch read in a third).
            let mut writes = vec![u.into_transact(&self.table, key.clone())];
            if slot != 0 {
                writes.push(super::access::slot_write(&self.table, &next.tenant, slot));
            }
            if let Some((b, (pending, status, count))) = batch {
                let change = CountChange {
                    pending,
                    total: 0,
                    ended: Some((status, count)),
                };
                writes.extend(self.batch_writes(b, &[(next.id, change)]));
            }
            self.transact_retrying(writes).await?;
            let mut written = Transitioned::default();
            if let Some((b, _)) = batch.filter(|(_, (p, _, _))| *p < 0) {
                // (every member that ends reads the counts; more than one may see none left,
                // and the batch's end is then done more than once, to one effect)
                if self.read_batch(b).await?.is_some_and(|b| b.pending == 0) {
                    written.batch_ended = Some(b);
                }
            }
            if !ends {
                return Ok(written);
            }
            let taken = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression("REMOVE waiters")
                .condition_expression("attribute_exists(waiters)")
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(classify);
            return match taken {
                Ok(out) => Ok(Transitioned {
                    waiters: waiters_of(out.attributes.as_ref()).waiters,
                    ..written
                }),
                Err(StoreError::Conflict) => Ok(written),
                Err(e) => Err(e),
            };
        }
        let out = u
            .send(&self.client, &self.table, key)
            .set_return_consumed_capacity(self.capacity())
            .set_return_values(ends.then_some(ReturnValue::AllOld))
            .send()
            .await
            .map_err(classify)?;
        self.used(
            if ends { "finish" } else { "transition" },
            &[pk],
            &due,
            out.consumed_capacity(),
        );
        Ok(waiters_of(out.attributes.as_ref()))
    }
}

/// The waiters an ended job's old image held.
fn waiters_of(old: Option<&Item>) -> Transitioned {
    let waiters = match old.and_then(|item| item.get("waiters")) {
        Some(AttributeValue::Ss(ids)) => ids.iter().filter_map(|w| JobId::parse(w).ok()).collect(),
        _ => vec![],
    };
    Transitioned {
        waiters,
        batch_ended: None,
    }
}
