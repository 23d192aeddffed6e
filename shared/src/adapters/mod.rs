//! Adapters behind the ports: `embedded` (one machine, durable on local disk; feature
//! `embedded`) and `aws` (DynamoDB, SQS, EventBridge; feature `aws`).

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod hub;

use crate::config::{Backend, Config};
use crate::jobs::Registry;
use crate::ports::Ports;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "CONVEYOR_BACKEND={0}: this build does not include that backend (cargo feature `{0}`)"
    )]
    NotBuilt(&'static str),
    /// `CONVEYOR_TYPE_LIMITS` names a type that is not registered.
    #[error("{0}")]
    TypeLimits(String),
    /// The table is not one this release can read (see `AwsBackend::check_model`).
    #[error("{0}")]
    Table(String),
    #[cfg(feature = "embedded")]
    #[error(transparent)]
    Embedded(#[from] embedded::DbError),
}

/// The registry of shipped job types and the ports `config.backend` names, with each type's
/// queue and dead-letter queue declared (embedded; on AWS the template creates them).
pub async fn open_ports(config: &Config) -> Result<(Ports, Arc<Registry>), OpenError> {
    open_ports_reading::<false>(config).await
}

/// `open_ports` for what settles dead letters (the maintenance function): on AWS its ports read
/// the types' dead-letter queues, which no other function's do (`NoDeadLetters`; a parameter of
/// the type, so that the others are built without that code).
pub async fn open_ports_with_dead_letters(
    config: &Config,
) -> Result<(Ports, Arc<Registry>), OpenError> {
    open_ports_reading::<true>(config).await
}

async fn open_ports_reading<const DEAD_LETTERS: bool>(
    config: &Config,
) -> Result<(Ports, Arc<Registry>), OpenError> {
    let registry = |settings: &crate::jobs::BuiltinSettings| {
        let mut registry = Registry::builtin(&config.queue_prefix, settings);
        registry
            .limit(&config.type_limits)
            .map_err(OpenError::TypeLimits)?;
        Ok::<_, OpenError>(registry)
    };
    // (the external types are declared in the store the ports hold)
    let with_external =
        |registry: Registry, settings: &crate::jobs::BuiltinSettings, ports: &Ports| {
            let calls = Arc::new(crate::jobs::ExternalCalls::new(
                ports.types.clone(),
                settings.webhook_secret.clone(),
                settings.outbound.clone(),
                config.public_url.clone(),
            ));
            registry.with_external(calls.clone());
            (Arc::new(registry), calls)
        };
    match config.backend {
        #[cfg(feature = "aws")]
        Backend::Aws => {
            // One SDK configuration for the clients and the signing key (cold start).
            let sdk = aws::sdk_config_from_env().await;
            let backend = aws::AwsBackend::new(&sdk, aws::AwsSettings::of(config));
            backend
                .check_model()
                .await
                .map_err(|e| OpenError::Table(e.to_string()))?;
            let settings = with_stored_signing_key(config, &sdk);
            let ports = if DEAD_LETTERS {
                backend.ports()
            } else {
                backend.ports_without_dead_letters()
            };
            let (registry, calls) = with_external(registry(&settings)?, &settings, &ports);
            calls.allow_lambda(
                crate::jobs::LambdaHandlers::parse(&config.lambda_handlers),
                function_caller(&sdk),
            );
            Ok((ports, registry))
        }
        #[cfg(not(feature = "aws"))]
        Backend::Aws => Err(OpenError::NotBuilt("aws")),
        #[cfg(feature = "embedded")]
        Backend::Embedded => {
            let settings = crate::jobs::BuiltinSettings::from_config(config);
            let registry = registry(&settings)?;
            let ports = open_embedded(config, &registry)?.ports();
            let (registry, _) = with_external(registry, &settings, &ports);
            Ok((ports, registry))
        }
        #[cfg(not(feature = "embedded"))]
        Backend::Embedded => Err(OpenError::NotBuilt("embedded")),
    }
}

/// What invokes the Lambda functions external types name, in a build that runs their jobs
/// (feature `invoke`: the worker function, the local runtime).
#[cfg(feature = "aws")]
pub fn function_caller(
    sdk: &aws_config::SdkConfig,
) -> Option<Arc<dyn crate::jobs::FunctionCaller>> {
    #[cfg(feature = "invoke")]
    return Some(Arc::new(aws::LambdaFunctions::new(sdk)));
    #[cfg(not(feature = "invoke"))]
    {
        let _ = sdk;
        None
    }
}

/// The shipped types' settings: `Config`'s, and on the AWS backend, where no signing key is
/// given, the one in the Secrets Manager secret `CONVEYOR_WEBHOOK_SECRET_ID` names (read on
/// the first delivery, not here).
pub async fn builtin_settings(config: &Config) -> crate::jobs::BuiltinSettings {
    #[cfg(feature = "aws")]
    if config.backend == Backend::Aws && config.webhook_secret_id.is_some() {
        return with_stored_signing_key(config, &aws::sdk_config_from_env().await);
    }
    crate::jobs::BuiltinSettings::from_config(config)
}

/// The JWT settings `config` names; on the AWS backend, where no secret is given but
/// `CONVEYOR_JWT_SECRET_ID` is, the HS256 secret is read from Secrets Manager on first use.
pub async fn jwt_settings(config: &Config) -> crate::auth::JwtSettings {
    #[cfg_attr(not(feature = "aws"), allow(unused_mut))]
    let mut settings = crate::auth::JwtSettings {
        secret: config
            .jwt_secret
            .clone()
            .map(|s| Arc::new(s) as Arc<dyn crate::jobs::SigningKey>),
        jwks: config.jwks.clone(),
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        jwks_operator: config.jwks_operator,
    };
    #[cfg(feature = "aws")]
    if let (None, Some(id), Backend::Aws) =
        (&settings.secret, &config.jwt_secret_id, &config.backend)
    {
        let sdk = aws::sdk_config_from_env().await;
        settings.secret = Some(Arc::new(aws::SecretsManagerKey::new(
            aws_sdk_secretsmanager::Client::new(&sdk),
            id,
        )));
    }
    settings
}

/// The authenticator over `ports`' keys with `config`'s JWT settings (never dev mode: the
/// local runtime decides that).
pub async fn authenticator(config: &Config, ports: &Ports) -> crate::auth::Authenticator {
    crate::auth::Authenticator::new(jwt_settings(config).await, ports.keys.clone())
}

#[cfg(feature = "aws")]
fn with_stored_signing_key(
    config: &Config,
    sdk: &aws_config::SdkConfig,
) -> crate::jobs::BuiltinSettings {
    let mut settings = crate::jobs::BuiltinSettings::from_config(config);
    if let (None, Some(id)) = (&settings.webhook_secret, &config.webhook_secret_id) {
        settings.webhook_secret = Some(aws::webhook_key(sdk, id));
    }
    settings
}

/// The embedded backend as `config` describes it, with each type's queue declared.
#[cfg(feature = "embedded")]
pub fn open_embedded(
    config: &Config,
    registry: &Registry,
) -> Result<embedded::EmbeddedBackend, embedded::DbError> {
    embedded::EmbeddedBackend::open_with(
        &config.data_dir,
        config.durability,
        config.wal_limit_bytes as i64,
        config.write_queue,
        queue_settings(config, registry),
    )
}

/// Each type's queue with its redrive policy (dead-letter queue after too many receives).
#[cfg(feature = "embedded")]
pub fn queue_settings(
    config: &Config,
    registry: &Registry,
) -> Vec<(String, embedded::QueueSettings)> {
    registry
        .all_queues()
        .into_iter()
        .map(|(r, queue, dlq)| {
            (
                queue,
                embedded::QueueSettings {
                    max_receive_count: config.max_receive_count,
                    dead_letter_queue: Some(dlq),
                    dead_letter_retention: r.options.retention,
                },
            )
        })
        .collect()
}

/// Each type's queue as the AWS backend creates it: its dead-letter queue after
/// `CONVEYOR_MAX_RECEIVE_COUNT` receives, visibility six times the type's timeout.
#[cfg(feature = "aws")]
pub fn queue_specs(config: &Config, registry: &Registry) -> Vec<aws::QueueSpec> {
    registry
        .all_queues()
        .into_iter()
        .map(|(r, name, dead_letter_queue)| aws::QueueSpec {
            name,
            dead_letter_queue,
            max_receive_count: config.max_receive_count,
            visibility: r.options.visibility(),
        })
        .collect()
}
