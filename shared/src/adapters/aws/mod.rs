//! The AWS backend: `JobStore` on DynamoDB (one table), `JobQueue` on SQS (a queue and a
//! dead-letter queue per type), `EventPublisher` on an EventBridge bus. Every call goes through
//! aws-sdk-rust to the endpoint the standard settings name (`AWS_ENDPOINT_URL` for LocalStack
//! or moto, else AWS). `bootstrap` creates the resources where nothing else does (emulators,
//! tests); on AWS the SAM template does.

mod access;
mod attrs;
mod batches;
mod count;
mod counts;
mod creates;
mod events;
#[cfg(feature = "invoke")]
mod functions;
mod layout;
mod listing;
mod live;
mod meter;
mod minutes;
mod pauses;
mod puts;
mod queue;
mod schedules;
mod secrets;
mod store;
mod table;
mod transitions;
mod types;
mod write;

pub use access::DynamoAccess;
pub use count::RequestCounter;
pub use counts::{handle_stream_event, Change, Counters, NotCounted, StreamReader};
pub use events::BusEvents;
#[cfg(feature = "invoke")]
pub use functions::LambdaFunctions;
pub use layout::{item_size, write_units, MODEL_VERSION};
pub use live::{
    change_of_stream_record, changes_from_lambda, notify_stream_event, ApiGatewayPusher,
    DynamoConnections,
};
pub use meter::{CapacityMeter, Hottest};
pub use queue::SqsQueue;
pub use schedules::{EventBridgeScheduler, SchedulerSettings};
pub use secrets::{webhook_key, SecretsManagerKey};
pub use table::DynamoStore;
pub use write::classify;

use crate::ports::Ports;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use std::sync::Arc;
use std::time::Duration;

/// Where the AWS backend's resources are.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub table: String,
    pub event_bus: String,
    /// Where users' schedules are armed (EventBridge Scheduler); `None`: they are only stored,
    /// and the local runtime's scheduler fires them.
    pub scheduler: Option<SchedulerSettings>,
    /// Shards a tenant's jobs spread over (`CONVEYOR_SHARDS`): fixed when the table is made.
    pub shards: u64,
    /// Which lifecycle events go to the bus (`CONVEYOR_EVENTS`).
    pub events: crate::domain::EventSelection,
}

impl AwsSettings {
    /// The table and bus `config` names.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            table: config.table.clone(),
            event_bus: config.event_bus.clone(),
            scheduler: match (&config.scheduler_target_arn, &config.scheduler_role_arn) {
                (Some(target_arn), Some(role_arn)) => Some(SchedulerSettings {
                    group: config.schedule_group.clone(),
                    target_arn: target_arn.clone(),
                    role_arn: role_arn.clone(),
                }),
                _ => None,
            },
            shards: config.shards,
            events: config.events.clone(),
        }
    }
}

/// One type's queue as `bootstrap` creates it.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
    pub visibility: Duration,
}

#[derive(Clone)]
pub struct AwsBackend {
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    pub events: Arc<BusEvents>,
    pub access: Arc<DynamoAccess>,
    /// EventBridge Scheduler, where `AwsSettings::scheduler` is set.
    pub scheduler: Option<Arc<EventBridgeScheduler>>,
    dynamodb: aws_sdk_dynamodb::Client,
    /// What the streams client is made from, when a stream reader is asked for (only the local
    /// runtime and tests read the stream; the functions never make that client).
    streams_config: aws_sdk_dynamodbstreams::Config,
    sqs: aws_sdk_sqs::Client,
    eventbridge: aws_sdk_eventbridge::Client,
    settings: AwsSettings,
}

/// The counter items of the table `config` names, for the `stats` function.
pub async fn open_counters(config: &crate::config::Config) -> Counters {
    let sdk = sdk_config_from_env().await;
    Counters::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table)
}

/// The live-update ports on AWS: connections in the table, pushes through the WebSocket
/// API's management endpoint (`CONVEYOR_WS_ENDPOINT`; without it, wherever the standard
/// settings point, e.g. an emulator).
pub async fn open_live(config: &crate::config::Config) -> crate::ports::LivePorts {
    let sdk = sdk_config_from_env().await;
    let backend = AwsBackend::new(&sdk, AwsSettings::of(config));
    let endpoint = config
        .ws_endpoint
        .clone()
        .or_else(|| sdk.endpoint_url().map(str::to_string))
        .unwrap_or_default();
    crate::ports::LivePorts {
        connections: Arc::new(backend.connections()),
        pusher: Arc::new(ApiGatewayPusher::new(&sdk, &endpoint)),
    }
}

/// Every AWS request's time limits. A connection takes at most 3.1 s (the SDK's own default,
/// which an explicit timeout configuration would otherwise drop), an attempt at most 30 s (an
/// SQS long poll waits up to 20 s), and a request with its retries at most 60 s: a service
/// that stops answering fails the request instead of holding its caller (a Lambda invocation,
/// a poller) until its own end.
pub fn sdk_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_millis(3100))
        .operation_attempt_timeout(std::time::Duration::from_secs(30))
        .operation_timeout(std::time::Duration::from_secs(60))
        .build()
}

/// The SDK's configuration from the standard environment (credentials, region, endpoint).
#[cfg(not(feature = "lambda"))]
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(sdk_timeouts())
        .load()
        .await
}

/// The SDK's configuration in a Lambda function: credentials and region from the variables
/// Lambda sets (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`), `AWS_ENDPOINT_URL` if set; standard retries.
#[cfg(feature = "lambda")]
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    use aws_credential_types::provider::SharedCredentialsProvider;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut config = aws_types::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(
            env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .map(aws_config::Region::new),
        )
        .credentials_provider(SharedCredentialsProvider::new(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        ))
        .http_client(http_client())
        .retry_config(aws_smithy_types::retry::RetryConfig::standard())
        .timeout_config(sdk_timeouts())
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new());
    if let Some(url) = env("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(url);
    }
    config.build()
}

/// The HTTP client every AWS client uses: HTTPS by rustls with ring, the TLS stack the rest of
/// the binary already carries (one stack, not two: the Lambda binaries stay small).
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct BootstrapError {
    pub what: String,
    pub message: String,
}

fn boot_err<E: std::error::Error + 'static>(what: &str) -> impl Fn(E) -> BootstrapError + '_ {
    move |e| BootstrapError {
        what: format!("creating {what}"),
        message: aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
    }
}

impl AwsBackend {
    pub fn new(sdk: &aws_config::SdkConfig, settings: AwsSettings) -> Self {
        Self::counted(sdk, settings, None)
    }

    /// `new`, with every request the clients send counted by `counter`.
    pub fn counted(
        sdk: &aws_config::SdkConfig,
        settings: AwsSettings,
        counter: Option<RequestCounter>,
    ) -> Self {
        Self::metered(sdk, settings, counter, None)
    }

    /// `counted`, and the table's consumed write capacity added up by `meter`.
    pub fn metered(
        sdk: &aws_config::SdkConfig,
        settings: AwsSettings,
        counter: Option<RequestCounter>,
        meter: Option<CapacityMeter>,
    ) -> Self {
        let dynamodb = {
            let mut c = aws_sdk_dynamodb::config::Builder::from(sdk);
            if let Some(counter) = &counter {
                c = c.interceptor(counter.clone());
            }
            aws_sdk_dynamodb::Client::from_conf(c.build())
        };
        let streams_config = {
            let mut c = aws_sdk_dynamodbstreams::config::Builder::from(sdk);
            if let Some(counter) = &counter {
                c = c.interceptor(counter.clone());
            }
            c.build()
        };
        let sqs = {
            let mut c = aws_sdk_sqs::config::Builder::from(sdk);
            if let Some(counter) = &counter {
                c = c.interceptor(counter.clone());
            }
            aws_sdk_sqs::Client::from_conf(c.build())
        };
        let eventbridge = {
            let mut c = aws_sdk_eventbridge::config::Builder::from(sdk);
            if let Some(counter) = &counter {
                c = c.interceptor(counter.clone());
            }
            aws_sdk_eventbridge::Client::from_conf(c.build())
        };
        let scheduler = settings.scheduler.clone().map(|scheduler_settings| {
            let mut c = aws_sdk_scheduler::config::Builder::from(sdk);
            if let Some(counter) = &counter {
                c = c.interceptor(counter.clone());
            }
            Arc::new(EventBridgeScheduler::new(
                aws_sdk_scheduler::Client::from_conf(c.build()),
                scheduler_settings,
            ))
        });
        Self {
            scheduler,
            store: Arc::new(DynamoStore::new(
                dynamodb.clone(),
                &settings.table,
                settings.shards,
                meter,
            )),
            queue: Arc::new(SqsQueue::new(sqs.clone())),
            events: Arc::new(BusEvents::new(
                eventbridge.clone(),
                &settings.event_bus,
                settings.events.clone(),
            )),
            access: Arc::new(DynamoAccess::new(dynamodb.clone(), &settings.table)),
            dynamodb,
            streams_config,
            sqs,
            eventbridge,
            settings,
        }
    }

    /// The table's counter items (what the `stats` function keeps).
    pub fn counters(&self) -> Counters {
        Counters::new(self.dynamodb.clone(), &self.settings.table)
    }

    /// A reader of the table's stream that keeps the counters, where no `stats` function does
    /// (the local runtime, tests).
    pub fn stream_reader(&self) -> StreamReader {
        StreamReader::new(
            self.dynamodb.clone(),
            aws_sdk_dynamodbstreams::Client::from_conf(self.streams_config.clone()),
            &self.settings.table,
        )
    }

    /// Live-update connections and subscriptions in the table.
    pub fn connections(&self) -> DynamoConnections {
        DynamoConnections::new(self.dynamodb.clone(), &self.settings.table)
    }

    /// The DynamoDB client (for tools and tests that look at items as stored).
    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    pub fn ports(&self) -> Ports {
        self.ports_with(self.queue.clone())
    }

    /// `ports` with no dead-letter queue to read (`NoDeadLetters`): for every function but
    /// maintenance, so that none carries the code that receives from a queue.
    pub fn ports_without_dead_letters(&self) -> Ports {
        self.ports_with(Arc::new(crate::ports::NoDeadLetters))
    }

    fn ports_with(&self, dead_letters: Arc<dyn crate::ports::QueueConsumer>) -> Ports {
        Ports {
            store: self.store.clone(),
            queue: self.queue.clone(),
            events: self.events.clone(),
            dead_letters,
            keys: self.access.clone(),
            audit: self.access.clone(),
            tenants: self.access.clone(),
            schedules: self.access.clone(),
            triggers: match &self.scheduler {
                Some(s) => s.clone(),
                None => Arc::new(crate::ports::StoredDefinitionsOnly),
            },
            rates: self.access.clone(),
            slots: self.access.clone(),
            debounces: self.access.clone(),
            pauses: self.access.clone(),
            types: self.access.clone(),
            history: Arc::new(minutes::DynamoHistory {
                client: self.dynamodb.clone(),
                table: self.store.table.clone(),
            }),
            dispatch: crate::ports::Dispatch::FromStream,
        }
    }

    /// Create the table (indexes, TTL, stream), the bus and each queue with its dead-letter
    /// queue, where they do not exist yet. Safe to run again.
    pub async fn bootstrap(&self, queues: &[QueueSpec]) -> Result<(), BootstrapError> {
        self.create_table().await?;
        let bus = self
            .eventbridge
            .create_event_bus()
            .name(&self.settings.event_bus)
            .send()
            .await;
        if let Err(e) = bus {
            if !e
                .as_service_error()
                .is_some_and(|se| se.is_resource_already_exists_exception())
            {
                return Err(boot_err("the event bus")(e));
            }
        }
        for q in queues {
            self.create_queue(q).await?;
        }
        if let Some(scheduler) = &self.scheduler {
            scheduler.create_group().await.map_err(|e| BootstrapError {
                what: "creating the schedule group".into(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    async fn create_table(&self) -> Result<(), BootstrapError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .expect("name and type are set")
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .expect("name and type are set")
        };
        use ScalarAttributeType::{N, S};
        // The one index: `scheduled` and `waiting` jobs and unfinished batches, by when they
        // are due, as keys (maintenance reads each one it acts on).
        let due = GlobalSecondaryIndex::builder()
            .index_name(layout::INDEX_DUE)
            .key_schema(key("due_pk", KeyType::Hash))
            .key_schema(key("due_us", KeyType::Range))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .expect("name, keys and projection are set");
        let created = self
            .dynamodb
            .create_table()
            .table_name(&self.settings.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .attribute_definitions(attr("pk", S))
            .attribute_definitions(attr("sk", S))
            .attribute_definitions(attr("due_pk", S))
            .attribute_definitions(attr("due_us", N))
            .global_secondary_indexes(due)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .expect("enabled is set"),
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) =>
            {
                return self.check_model().await; // exists: if it is ours
            }
            Err(e) => return Err(boot_err("the table")(e)),
        }
        // Wait until it is active, then switch TTL on (`ttl`, epoch seconds).
        for _ in 0..120 {
            let status = self
                .dynamodb
                .describe_table()
                .table_name(&self.settings.table)
                .send()
                .await
                .map_err(boot_err("the table"))?
                .table
                .and_then(|t| t.table_status);
            if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.dynamodb
            .update_time_to_live()
            .table_name(&self.settings.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("ttl")
                    .build()
                    .expect("enabled and attribute are set"),
            )
            .send()
            .await
            .map_err(boot_err("the table's TTL"))?;
        self.check_model().await
    }

    /// Whether the table holds jobs in this release's layout, as its `META` item says (written
    /// by the first process to find a table without one, if the table has no index of an
    /// earlier layout). A table of another layout, or made for another shard count, is refused
    /// with what to do: nothing is read in a layout it was not written in.
    pub async fn check_model(&self) -> Result<(), BootstrapError> {
        use aws_sdk_dynamodb::types::AttributeValue::{N, S};
        let table = &self.settings.table;
        let refuse = |message: String| BootstrapError {
            what: format!("using the table {table}"),
            message,
        };
        let meta = || {
            self.dynamodb
                .get_item()
                .table_name(table)
                .key("pk", S("META".into()))
                .key("sk", S("MODEL".into()))
                .consistent_read(true)
        };
        let mut found = meta()
            .send()
            .await
            .map_err(boot_err("the table's model"))?
            .item;
        if found.is_none() {
            // An earlier layout kept every tenant's jobs under a `by_tenant` index: a table
            // that answers a query of it is one (this layout has no such index, and a query of
            // an index a table lacks is refused).
            let earlier = self
                .dynamodb
                .query()
                .table_name(table)
                .index_name("by_tenant")
                .key_condition_expression("tenant = :t")
                .expression_attribute_values(":t", S("-".into()))
                .limit(1)
                .send()
                .await;
            if earlier.is_ok() {
                return Err(refuse(
                    "it holds jobs in an earlier release's layout (under its by_tenant index), \
                     which this release does not read. Give this deployment a new table \
                     (CONVEYOR_TABLE; the SAM template makes one), and let the old table's jobs \
                     finish with the release that wrote them"
                        .into(),
                ));
            }
            let written = self
                .dynamodb
                .put_item()
                .table_name(table)
                .item("pk", S("META".into()))
                .item("sk", S("MODEL".into()))
                .item("version", N(MODEL_VERSION.to_string()))
                .item("shards", N(self.settings.shards.to_string()))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match written {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
                {
                    found = meta()
                        .send()
                        .await
                        .map_err(boot_err("the table's model"))?
                        .item;
                }
                Err(e) => return Err(boot_err("the table's model")(e)),
            }
        }
        let item = found.unwrap_or_default();
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
        };
        if number("version") != Some(MODEL_VERSION) {
            return Err(refuse(format!(
                "it was written in layout {} and this release reads layout {MODEL_VERSION}. Give \
                 this deployment a new table (CONVEYOR_TABLE), and let the old table's jobs \
                 finish with the release that wrote them",
                number("version").map_or("?".to_string(), |v| v.to_string())
            )));
        }
        let shards = number("shards").unwrap_or(0);
        if shards != self.settings.shards as i64 {
            return Err(refuse(format!(
                "it was made with CONVEYOR_SHARDS={shards}, and a job's place in it depends on \
                 that count; this deployment says {}. Set CONVEYOR_SHARDS={shards}",
                self.settings.shards
            )));
        }
        Ok(())
    }

    /// A queue with no dead-letter queue.
    pub async fn create_plain_queue(&self, name: &str) -> Result<(), BootstrapError> {
        self.sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(boot_err("a queue"))?;
        Ok(())
    }

    async fn create_queue(&self, q: &QueueSpec) -> Result<(), BootstrapError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let dlq_url = self
            .sqs
            .create_queue()
            .queue_name(&q.dead_letter_queue)
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .map_err(boot_err("a dead-letter queue"))?
            .queue_url
            .unwrap_or_default();
        let dlq_arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(boot_err("a dead-letter queue"))?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": q.max_receive_count.to_string(),
        });
        self.sqs
            .create_queue()
            .queue_name(&q.name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                q.visibility.as_secs().clamp(1, 43_200).to_string(),
            )
            .send()
            .await
            .map_err(boot_err("a queue"))?;
        Ok(())
    }
}

#[cfg(test)]
mod sdk_tests {
    #[tokio::test]
    async fn every_client_has_a_connect_an_attempt_and_a_request_timeout() {
        let sdk = super::sdk_config_from_env().await;
        let t = sdk.timeout_config().expect("a timeout configuration");
        assert_eq!(
            t.connect_timeout(),
            Some(std::time::Duration::from_millis(3100))
        );
        assert!(t
            .operation_attempt_timeout()
            .is_some_and(|a| a > std::time::Duration::from_secs(20)));
        assert!(t.operation_timeout().is_some());
    }
}
