//! How the DynamoDB adapters write: update expressions built attribute by attribute, and the
//! backend's errors by what the caller should do about them.

use super::attrs::Item;
use crate::ports::StoreError;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A backend error by what the caller should do about it.
pub fn classify<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_string();
    let message = DisplayErrorContext(&e).to_string();
    match code.as_str() {
        "ConditionalCheckFailedException" => StoreError::Conflict,
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TransactionConflictException"
        | "TransactionInProgressException" => StoreError::Busy(message),
        "ValidationException" | "ItemCollectionSizeLimitExceededException" => {
            StoreError::Rejected(message)
        }
        _ => StoreError::Unavailable(message),
    }
}

/// A cancelled transaction whose first item's condition failed is a `Conflict` (the job
/// changed); anything else as `classify` says.
pub(super) fn classify_transaction<R: std::fmt::Debug>(
    e: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> StoreError {
    let first_failed = e
        .as_service_error()
        .and_then(|se| match se {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(tc) => tc.cancellation_reasons().first().and_then(|r| r.code()).map(|c| c == "ConditionalCheckFailed"),
            _ => None,
        })
        .unwrap_or(false);
    if first_failed {
        StoreError::Conflict
    } else {
        classify(e)
    }
}

/// Whether a transaction was cancelled because one of its items' conditions failed.
pub(super) fn refused_by_condition<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(tc)) => tc
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    }
}

/// An update expression built attribute by attribute, with placeholders for every name and
/// value (so reserved words like `status` or `ttl` need no care).
#[derive(Default)]
pub(super) struct Update {
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
    set: Vec<String>,
    remove: Vec<String>,
    pub(super) conditions: Vec<String>,
}

impl Update {
    pub(super) fn name(&mut self, attr: &str) -> String {
        let key = format!("#n{}", self.names.len());
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    pub(super) fn value(&mut self, v: AttributeValue) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    pub(super) fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.set.push(format!("{n} = {v}"));
        self
    }

    pub(super) fn set_expr(
        &mut self,
        attr: &str,
        expr: impl FnOnce(&mut Self, String) -> String,
    ) -> &mut Self {
        let n = self.name(attr);
        let e = expr(self, n.clone());
        self.set.push(format!("{n} = {e}"));
        self
    }

    pub(super) fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.remove.push(n);
        self
    }

    pub(super) fn when_eq(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.conditions.push(format!("{n} = {v}"));
        self
    }

    pub(super) fn when(&mut self, cond: impl FnOnce(&mut Self) -> String) -> &mut Self {
        let c = cond(self);
        self.conditions.push(c);
        self
    }

    pub(super) fn expression(&self) -> String {
        let mut e = String::new();
        if !self.set.is_empty() {
            e.push_str("SET ");
            e.push_str(&self.set.join(", "));
        }
        if !self.remove.is_empty() {
            e.push_str(" REMOVE ");
            e.push_str(&self.remove.join(", "));
        }
        e
    }

    pub(super) fn condition(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    /// The same update as one item of a transaction.
    pub(super) fn into_transact(self, table: &str, key: Item) -> TransactWriteItem {
        let condition = self.condition();
        TransactWriteItem::builder()
            .update(
                aws_sdk_dynamodb::types::Update::builder()
                    .table_name(table)
                    .set_key(Some(key))
                    .update_expression(self.expression())
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(Some(self.names))
                    .set_expression_attribute_values(
                        (!self.values.is_empty()).then_some(self.values),
                    )
                    .build()
                    .expect("table, key and expression are set"),
            )
            .build()
    }

    pub(super) fn send(
        self,
        client: &Client,
        table: &str,
        key: Item,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let condition = self.condition();
        client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(self.expression())
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
    }
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
