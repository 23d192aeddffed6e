//! How the store puts items: single new items, items that stand alone (a payload, a result, an
//! audit entry), batch writes of plain new items, and transactions (chunked by DynamoDB's
//! limits, sent again while another transaction holds one of their items).

use super::attrs::{get_s, Item};
use super::layout::{item_size, INDEX_DUE};
use super::table::{pk_of, DynamoStore};
use super::write::{classify, classify_transaction};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::{Put, PutRequest, TransactWriteItem, WriteRequest};

/// Most items in one TransactWriteItems, and most bytes (DynamoDB's limit is 4 MB; a margin is
/// kept for the request's own keys and expressions).
pub(super) const TRANSACTION_MAX: usize = 100;
pub(super) const TRANSACTION_BYTES: usize = 3_500_000;
/// Most items in one BatchWriteItem.
const BATCH_WRITE_MAX: usize = 25;
impl DynamoStore {
    /// Put an item that stands alone (a payload or result part), counting its capacity.
    pub(super) async fn put_part(&self, item: Item) -> Result<(), StoreError> {
        let key = pk_of(&item);
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await
            .map_err(classify)?;
        self.used("part", &[key], &[], out.consumed_capacity());
        Ok(())
    }

    /// Put a new item (refused if its key is taken), counting its capacity.
    pub(super) async fn put_new_item(
        &self,
        kind: &'static str,
        item: Item,
    ) -> Result<(), StoreError> {
        let (key, due) = (pk_of(&item), get_s(&item, "due_pk").map(str::to_string));
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await
            .map_err(classify)?;
        let due: Vec<_> = due.into_iter().map(|k| (INDEX_DUE, k)).collect();
        self.used(kind, &[key], &due, out.consumed_capacity());
        Ok(())
    }

    /// A write of a transaction putting a new item (refused if the key is taken).
    pub(super) fn put_new(&self, item: Item) -> TransactWriteItem {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .expect("table, item and condition are set"),
            )
            .build()
    }

    /// Send one transaction, counting its capacity (shared evenly by the keys it wrote).
    pub(super) async fn transact(
        &self,
        writes: Vec<TransactWriteItem>,
    ) -> Result<(), SdkTransactError> {
        let keys: Vec<String> = writes.iter().map(written_pk).collect();
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .set_return_consumed_capacity(self.capacity())
            .send()
            .await?;
        for c in out.consumed_capacity() {
            self.used("transaction", &keys, &[], Some(c));
        }
        Ok(())
    }

    /// `transact`, sent again (with jittered backoff) while DynamoDB cancels it for a
    /// conflicting transaction on one of its items; other errors as `classify_transaction`.
    pub(super) async fn transact_retrying(
        &self,
        writes: Vec<TransactWriteItem>,
    ) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match self.transact(writes.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 12 && is_transaction_conflict(&e) => {
                    attempt += 1;
                    backoff(attempt).await;
                }
                Err(e) => return Err(classify_transaction(e)),
            }
        }
    }

    /// Put new items (fresh ids, no conditions needed) in batch writes of 25, each written on
    /// its own: no transaction, so each costs its size and no more. Unprocessed items are sent
    /// again with backoff.
    pub(super) async fn put_plain(&self, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(BATCH_WRITE_MAX) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item.clone()))
                                .build()
                                .expect("item is set"),
                        )
                        .build()
                })
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let keys: Vec<String> = pending
                    .iter()
                    .filter_map(|w| w.put_request().map(|p| pk_of(p.item())))
                    .collect();
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending.clone())
                    .set_return_consumed_capacity(self.capacity())
                    .send()
                    .await
                    .map_err(classify)?;
                for c in out.consumed_capacity() {
                    self.used("create", &keys, &[], Some(c));
                }
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(StoreError::Busy(
                            "the table kept leaving writes unprocessed".into(),
                        ));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
    }
}

pub(super) type SdkTransactError = aws_sdk_dynamodb::error::SdkError<
    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
    aws_sdk_dynamodb::config::http::HttpResponse,
>;

/// Whether DynamoDB cancelled a transaction because another one was changing one of its items
/// at the same moment (worth sending again).
pub(super) fn is_transaction_conflict(e: &SdkTransactError) -> bool {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e.as_service_error() {
        Some(E::TransactionCanceledException(tc)) => {
            let reasons = tc.cancellation_reasons();
            reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
                && !reasons
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed"))
        }
        Some(E::TransactionInProgressException(_)) => true,
        Some(other) => other.code() == Some("TransactionConflictException"),
        None => false,
    }
}

pub(super) async fn backoff(attempt: u32) {
    let cap = 10u64 << attempt.min(6);
    let ms = rand::random::<u64>() % cap.max(1) + 1;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// The partition key a transaction's write touches.
fn written_pk(w: &TransactWriteItem) -> String {
    if let Some(p) = w.put() {
        return pk_of(p.item());
    }
    if let Some(u) = w.update() {
        return pk_of(u.key());
    }
    if let Some(c) = w.condition_check() {
        return pk_of(c.key());
    }
    if let Some(d) = w.delete() {
        return pk_of(d.key());
    }
    "?".into()
}

/// Items in transactions of at most 100 items (less `reserved`, for writes added to each)
/// and 3.5 MB.
pub(super) fn chunk_for_transactions(items: Vec<Item>, reserved: usize) -> Vec<Vec<Item>> {
    let mut chunks: Vec<Vec<Item>> = vec![];
    let mut bytes = 0;
    for item in items {
        let size = item_size(&item);
        let full = chunks.last().is_none_or(|c| {
            c.len() + reserved >= TRANSACTION_MAX || bytes + size > TRANSACTION_BYTES
        });
        if full {
            chunks.push(vec![]);
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("pushed").push(item);
    }
    chunks
}
