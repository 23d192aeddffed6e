//! Billed requests, counted: an SDK interceptor that sees every request the clients send
//! (each retry too, as AWS bills it), by service and operation. The bench and the cost test
//! read it; nothing in production needs it.

use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Requests sent, by (service, operation).
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl RequestCounter {
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("?".into(), "?".into()));
        *self
            .0
            .lock()
            .unwrap()
            .entry((service, operation))
            .or_default() += 1;
        Ok(())
    }
}
