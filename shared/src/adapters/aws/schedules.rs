//! Schedules on AWS: their definitions in the table (`ScheduleStore`), and each one armed as an
//! EventBridge Scheduler schedule that invokes the `scheduler` function at every tick
//! (`ScheduleTrigger`), with the tick's time in its input.
//!
//! | item | pk | sk | |
//! |---|---|---|---|
//! | schedule | `SCHEDULES` | `<tenant>#<name>` | `doc` (definition and recent runs), `version` |
//!
//! | start rate | `STARTS#<key>` | `TAT` | `tat`: micros, the GCRA arrival time of the next start |
//! | running slots | `SLOTS#<key>` | `SLOTS` | `h:<job id>` (a holder) and `l:<job id>` (a job waiting in line, in id order) → lease end (micros); `version` |
//! | debounce key | `DEBOUNCE#<key>` | `JOB` | `job`: the job it holds; `ttl` |
//!
//! Schedules are few and read by key or by tenant (a Query on the sort key's prefix); the
//! local runtime's scheduler reads the whole partition. A rate is read (strongly consistent)
//! and written back only if unchanged since, so two workers are never both admitted past it.

use super::access::DynamoAccess;
use super::attrs::{get_s, s};
use super::write::classify;
use crate::domain::{Schedule, ScheduleName, Tenant};
use crate::ports::{
    Debounces, RateDecision, RunningSlots, ScheduleStore, ScheduleTrigger, SlotTake, StartRates,
    StoreError, TriggerError,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target};
use std::collections::HashMap;

const PK: &str = "SCHEDULES";

fn sk(tenant: &Tenant, name: &ScheduleName) -> String {
    format!("{tenant}#{name}")
}

fn decode(item: &super::attrs::Item) -> Result<Schedule, StoreError> {
    let doc =
        get_s(item, "doc").ok_or_else(|| StoreError::Unavailable("item has no doc".into()))?;
    serde_json::from_str(doc)
        .map_err(|e| StoreError::Unavailable(format!("unreadable schedule: {e}")))
}

#[async_trait]
impl ScheduleStore for DynamoAccess {
    async fn put_schedule(
        &self,
        schedule: &Schedule,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(schedule)
            .map_err(|e| StoreError::Rejected(format!("encode: {e}")))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(PK))
            .item("sk", s(sk(&schedule.tenant, &schedule.name)))
            .item("doc", s(doc))
            .item("version", AttributeValue::N(schedule.version.to_string()));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(StoreError::Conflict),
            Err(e) => Err(classify(e)),
        }
    }

    async fn schedule(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<Option<Schedule>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(sk(tenant, name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item.as_ref().map(decode).transpose()
    }

    async fn schedules(&self, tenant: Option<&Tenant>) -> Result<Vec<Schedule>, StoreError> {
        let mut all = vec![];
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(match tenant {
                    Some(_) => "pk = :pk AND begins_with(sk, :t)",
                    None => "pk = :pk",
                })
                .expression_attribute_values(":pk", s(PK))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if let Some(t) = tenant {
                query = query.expression_attribute_values(":t", s(format!("{t}#")));
            }
            let out = query.send().await.map_err(classify)?;
            for item in out.items() {
                // (one that cannot be read is left out, said, and does not hide the others)
                match decode(item) {
                    Ok(schedule) => all.push(schedule),
                    Err(e) => {
                        tracing::error!(error = %e, "a stored schedule cannot be read; left out")
                    }
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(all),
            }
        }
    }

    async fn delete_schedule(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(sk(tenant, name)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}

/// Where armed schedules go and what they invoke.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub group: String,
    /// The `scheduler` function.
    pub target_arn: String,
    /// The role EventBridge Scheduler assumes to invoke it.
    pub role_arn: String,
}

/// Users' schedules as EventBridge Scheduler schedules (time zones, `at()` and retries are
/// native there).
pub struct EventBridgeScheduler {
    client: aws_sdk_scheduler::Client,
    settings: SchedulerSettings,
}

impl EventBridgeScheduler {
    pub fn new(client: aws_sdk_scheduler::Client, settings: SchedulerSettings) -> Self {
        Self { client, settings }
    }

    /// The EventBridge name of a tenant's schedule: a digest of the tenant, then the name
    /// (at most 62 characters; names are unique per tenant only).
    pub fn name_of(tenant: &Tenant, name: &ScheduleName) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(tenant.as_str().as_bytes());
        format!("t{}-{name}", &hex::encode(digest)[..12])
    }

    /// What the target receives at each tick: the schedule, and the tick's time as EventBridge
    /// Scheduler fills it in.
    pub fn input_of(tenant: &Tenant, name: &ScheduleName) -> String {
        serde_json::json!({
            "schedule_tick": {
                "tenant": tenant,
                "name": name,
                "tick": "<aws.scheduler.scheduled-time>",
            }
        })
        .to_string()
    }

    /// Create the group where it does not exist (emulators, tests; the template creates it).
    pub async fn create_group(&self) -> Result<(), TriggerError> {
        match self
            .client
            .create_schedule_group()
            .name(&self.settings.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conflict_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The armed schedule's expression, time zone, state and input, as EventBridge holds them
    /// (for tools and tests).
    pub async fn armed(
        &self,
        tenant: &Tenant,
        name: &ScheduleName,
    ) -> Result<Option<(String, String, String, String)>, TriggerError> {
        match self
            .client
            .get_schedule()
            .name(Self::name_of(tenant, name))
            .group_name(&self.settings.group)
            .send()
            .await
        {
            Ok(s) => Ok(Some((
                s.schedule_expression().unwrap_or_default().to_string(),
                s.schedule_expression_timezone()
                    .unwrap_or_default()
                    .to_string(),
                s.state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                s.target()
                    .and_then(|t| t.input())
                    .unwrap_or_default()
                    .to_string(),
            ))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

fn unavailable<E: std::error::Error + 'static>(e: E) -> TriggerError {
    TriggerError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())
}

fn refused_or_unavailable<E, R>(e: aws_sdk_scheduler::error::SdkError<E, R>) -> TriggerError
where
    E: aws_sdk_scheduler::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_scheduler::error::ProvideErrorMetadata;
    if e.code() == Some("ValidationException") {
        return TriggerError::Refused(e.message().unwrap_or("invalid").to_string());
    }
    unavailable(e)
}

fn when(
    t: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<aws_sdk_scheduler::primitives::DateTime> {
    t.map(|t| aws_sdk_scheduler::primitives::DateTime::from_secs(t.timestamp()))
}

#[async_trait]
impl ScheduleTrigger for EventBridgeScheduler {
    async fn arm(&self, schedule: &Schedule) -> Result<(), TriggerError> {
        let name = Self::name_of(&schedule.tenant, &schedule.name);
        let target = Target::builder()
            .arn(&self.settings.target_arn)
            .role_arn(&self.settings.role_arn)
            .input(Self::input_of(&schedule.tenant, &schedule.name))
            .build()
            .map_err(|e| TriggerError::Refused(e.to_string()))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| TriggerError::Refused(e.to_string()))?;
        let state = if schedule.paused {
            ScheduleState::Disabled
        } else {
            ScheduleState::Enabled
        };
        // (A start in the past means nothing and is refused there: given only when ahead.)
        let start = schedule.start_at.filter(|s| *s > chrono::Utc::now());
        let expression = schedule.expression.aws_expression();
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.settings.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone(&schedule.timezone)
            .set_start_date(when(start))
            .set_end_date(when(schedule.end_at))
            .state(state.clone())
            .flexible_time_window(window.clone())
            .target(target.clone())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conflict_exception()) =>
            {
                self.client
                    .update_schedule()
                    .name(&name)
                    .group_name(&self.settings.group)
                    .schedule_expression(&expression)
                    .schedule_expression_timezone(&schedule.timezone)
                    .set_start_date(when(start))
                    .set_end_date(when(schedule.end_at))
                    .state(state)
                    .flexible_time_window(window)
                    .target(target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(refused_or_unavailable)
            }
            Err(e) => Err(refused_or_unavailable(e)),
        }
    }

    async fn disarm(&self, tenant: &Tenant, name: &ScheduleName) -> Result<(), TriggerError> {
        match self
            .client
            .delete_schedule()
            .name(Self::name_of(tenant, name))
            .group_name(&self.settings.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl StartRates for DynamoAccess {
    async fn admit(
        &self,
        key: &str,
        interval: std::time::Duration,
        burst: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<RateDecision, StoreError> {
        let pk = format!("STARTS#{key}");
        for _ in 0..8 {
            let stored = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(pk.clone()))
                .key("sk", s("TAT"))
                .consistent_read(true)
                .send()
                .await
                .map_err(classify)?
                .item
                .and_then(|item| match item.get("tat") {
                    Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
                    _ => None,
                });
            let tat = match crate::domain::gcra(stored, now, interval, burst) {
                Ok(tat) => tat,
                Err(at) => return Ok(RateDecision::WaitUntil(at)),
            };
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk.clone()))
                .item("sk", s("TAT"))
                .item("tat", AttributeValue::N(tat.to_string()));
            let put = match stored {
                None => put.condition_expression("attribute_not_exists(pk)"),
                Some(old) => put
                    .condition_expression("tat = :old")
                    .expression_attribute_values(":old", AttributeValue::N(old.to_string())),
            };
            match put.send().await {
                Ok(_) => return Ok(RateDecision::Admitted),
                // Another worker took a start meanwhile: read again.
                Err(e) if conditional_failed(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Err(StoreError::Conflict)
    }
}

/// A key's running slots as stored: holders and the line, each job id → lease end (micros).
#[derive(Default)]
struct Slots {
    holders: HashMap<String, i64>,
    line: HashMap<String, i64>,
    /// 0: no item yet.
    version: i64,
}

/// A holder's attribute in a key's slots item (top-level attributes, not maps: a holder is
/// given back by removing its attribute in one unconditional-read-free update, and no write
/// leaves an empty map behind, which an emulator's stream writes in a form its readers cannot
/// parse).
const HOLDER: &str = "h:";
/// A place in line's attribute.
const IN_LINE: &str = "l:";

/// The `prefix`ed attributes of `item`: job id → lease end (micros).
fn micros_by(item: &super::attrs::Item, prefix: &str) -> HashMap<String, i64> {
    item.iter()
        .filter_map(|(k, v)| match (k.strip_prefix(prefix), v) {
            (Some(id), AttributeValue::N(n)) => n.parse().ok().map(|n| (id.to_string(), n)),
            _ => None,
        })
        .collect()
}

impl DynamoAccess {
    async fn slots(&self, pk: &str) -> Result<Slots, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s("SLOTS"))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?
            .item
            .unwrap_or_default();
        Ok(Slots {
            holders: micros_by(&item, HOLDER),
            line: micros_by(&item, IN_LINE),
            version: match item.get("version") {
                Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                _ => 0,
            },
        })
    }

    /// Write a key's slots if the item is still at their `version`; `false` if it changed.
    async fn put_slots(&self, pk: &str, slots: &Slots) -> Result<bool, StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(pk))
            .item("sk", s("SLOTS"))
            .item(
                "version",
                AttributeValue::N((slots.version + 1).to_string()),
            );
        for (prefix, map) in [(HOLDER, &slots.holders), (IN_LINE, &slots.line)] {
            for (id, lease) in map {
                put = put.item(
                    format!("{prefix}{id}"),
                    AttributeValue::N(lease.to_string()),
                );
            }
        }
        let put = if slots.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(slots.version.to_string()))
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }
}

#[async_trait]
impl RunningSlots for DynamoAccess {
    async fn take(
        &self,
        key: &str,
        holder: crate::domain::JobId,
        max: u32,
        until: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<SlotTake, StoreError> {
        let pk = format!("SLOTS#{key}");
        let holder = holder.to_string();
        let now_us = now.timestamp_micros();
        let lease_us = crate::ports::SLOT_LINE_LEASE.as_micros() as i64;
        for _ in 0..8 {
            let mut slots = self.slots(&pk).await?;
            slots.holders.retain(|_, lease| *lease > now_us);
            slots.line.retain(|_, lease| *lease > now_us);
            let held = slots.holders.contains_key(&holder);
            // (Job ids sort in submit order.)
            let ahead = slots.line.keys().filter(|k| **k < holder).count();
            let outcome = if held {
                slots
                    .holders
                    .insert(holder.clone(), until.timestamp_micros());
                SlotTake::AlreadyHeld
            } else if slots.holders.len() + ahead >= max as usize {
                // In line: written only when its place would run out within half its lease.
                match slots.line.get(&holder) {
                    Some(kept) if *kept > now_us + lease_us / 2 => return Ok(SlotTake::Full),
                    _ => slots.line.insert(holder.clone(), now_us + lease_us),
                };
                SlotTake::Full
            } else {
                slots.line.remove(&holder);
                slots
                    .holders
                    .insert(holder.clone(), until.timestamp_micros());
                SlotTake::Taken
            };
            if self.put_slots(&pk, &slots).await? {
                return Ok(outcome);
            }
            // (another worker wrote the key's slots first: asking again at once, all together,
            // would only collide again)
            tokio::time::sleep(std::time::Duration::from_millis(rand::random::<u64>() % 20)).await;
        }
        Err(StoreError::Conflict)
    }

    /// One update, read-free: the holder's attribute removed and the version moved on (so a
    /// take that read the slots before it writes again). Many workers asking for the key's
    /// slots at once never hold a release back.
    async fn release(&self, key: &str, holder: crate::domain::JobId) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("SLOTS#{key}")))
            .key("sk", s("SLOTS"))
            .condition_expression("attribute_exists(#h)")
            .update_expression("REMOVE #h ADD #v :one")
            .expression_attribute_names("#h", format!("{HOLDER}{holder}"))
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":one", AttributeValue::N("1".into()));
        match update.send().await {
            Ok(_) => Ok(()),
            // (not a holder: nothing to give back)
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A write refused by its condition: someone else changed the item first.
fn conditional_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    e.code() == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl Debounces for DynamoAccess {
    async fn debounced(&self, key: &str) -> Result<Option<crate::domain::JobId>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("DEBOUNCE#{key}")))
            .key("sk", s("JOB"))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?
            .item;
        Ok(item
            .as_ref()
            .and_then(|i| get_s(i, "job"))
            .and_then(|id| crate::domain::JobId::parse(id).ok()))
    }

    async fn hold(
        &self,
        key: &str,
        job: crate::domain::JobId,
        replacing: Option<crate::domain::JobId>,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("DEBOUNCE#{key}")))
            .item("sk", s("JOB"))
            .item("job", s(job.to_string()))
            .item("ttl", AttributeValue::N(expires.timestamp().to_string()));
        let put = match replacing {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(old) => put
                .condition_expression("#j = :old")
                .expression_attribute_names("#j", "job")
                .expression_attribute_values(":old", s(old.to_string())),
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(StoreError::Conflict),
            Err(e) => Err(classify(e)),
        }
    }

    async fn forget(&self, key: &str, job: crate::domain::JobId) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("DEBOUNCE#{key}")))
            .key("sk", s("JOB"))
            .condition_expression("#j = :job")
            .expression_attribute_names("#j", "job")
            .expression_attribute_values(":job", s(job.to_string()));
        match delete.send().await {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}
