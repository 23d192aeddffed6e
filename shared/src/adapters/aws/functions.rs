//! Lambda functions invoked directly: the external types whose handler is a function's ARN
//! (`jobs::external`), one synchronous invocation an attempt. Only what runs jobs carries this
//! client (feature `invoke`: the worker function, the local runtime).

use crate::domain::JobError;
use crate::jobs::{status_is_retryable, FunctionAnswer, FunctionCaller};
use async_trait::async_trait;
use aws_sdk_lambda::error::{DisplayErrorContext, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use std::time::Duration;

/// Invokes functions through the Lambda API: `AWS_ENDPOINT_URL_LAMBDA` if set (an emulator),
/// else where the SDK's configuration points.
pub struct LambdaFunctions {
    client: aws_sdk_lambda::Client,
}

impl LambdaFunctions {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let mut config = aws_sdk_lambda::config::Builder::from(sdk);
        if let Some(url) = std::env::var("AWS_ENDPOINT_URL_LAMBDA")
            .ok()
            .filter(|u| !u.is_empty())
        {
            config = config.endpoint_url(url);
        }
        Self {
            client: aws_sdk_lambda::Client::from_conf(config.build()),
        }
    }
}

#[async_trait]
impl FunctionCaller for LambdaFunctions {
    async fn invoke(
        &self,
        arn: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<FunctionAnswer, JobError> {
        // One invocation an attempt: the SDK does not try again (the job's retries do), and it
        // waits as long as the type's timeout.
        let once = aws_sdk_lambda::config::Builder::default()
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(3100))
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        let answer = self
            .client
            .invoke()
            .function_name(arn)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(body))
            .customize()
            .config_override(once)
            .send()
            .await;
        match answer {
            Ok(out) => Ok(FunctionAnswer {
                payload: out.payload.map(Blob::into_inner).unwrap_or_default(),
                raised: out.function_error,
            }),
            Err(SdkError::TimeoutError(_)) => Err(JobError::retryable(format!(
                "the function did not answer within {} ms",
                timeout.as_millis()
            ))),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let message = format!("invoking {arn}: {}", DisplayErrorContext(&e));
                // (refused for good: no such function, not allowed, a request it cannot take)
                Err(match status {
                    Some(s) if !status_is_retryable(s) && (400..500).contains(&s) => {
                        JobError::with_kind("handler", message, false)
                    }
                    _ => JobError::retryable(message),
                })
            }
        }
    }
}
