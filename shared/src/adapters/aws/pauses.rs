//! `PauseStore` on the jobs table: one partition (`PAUSES`), an item per type and scope. There
//! are few, read whole by a worker now and then (it keeps them a few seconds) and by the API.

use super::access::DynamoAccess;
use super::attrs::{get_s, s};
use super::write::classify;
use crate::domain::{JobType, Pause, PauseScope, Pauses};
use crate::ports::{PauseStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

const PAUSES_PK: &str = "PAUSES";

fn sk(scope: &PauseScope, job_type: &JobType) -> String {
    format!("{}#{job_type}", scope.key())
}

#[async_trait]
impl PauseStore for DynamoAccess {
    async fn pause(&self, pause: &Pause) -> Result<bool, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(PAUSES_PK))
            .item("sk", s(sk(&pause.scope, &pause.job_type)))
            .item("since", s(pause.since.to_rfc3339()))
            .item("by", s(pause.by.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(classify);
        match put {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn resume(&self, scope: &PauseScope, job_type: &JobType) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(PAUSES_PK))
            .key("sk", s(sk(scope, job_type)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn pauses(&self) -> Result<Pauses, StoreError> {
        // (strongly consistent: a pause answered is seen by the next read; one page holds them all)
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(PAUSES_PK))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        let mut pauses = vec![];
        for item in out.items() {
            let Some((scope, job_type)) = get_s(item, "sk").and_then(|k| k.split_once('#')) else {
                continue;
            };
            let since = get_s(item, "since")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let by = get_s(item, "by").unwrap_or_default();
            pauses.extend(Pause::stored(scope, job_type, since, by));
        }
        Ok(Pauses(pauses))
    }
}
