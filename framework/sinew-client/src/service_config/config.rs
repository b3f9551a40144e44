use std::{collections::HashMap, time::Duration};

use crate::{HedgingPolicy, RetryPolicy};

use super::ServiceConfigError;

/// A parsed and validated service config; see the [module docs](super).
///
/// The default, [`ServiceConfig::default`], is the empty config: no method
/// is configured and there is no throttling.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceConfig {
    /// One entry per `methodConfig` element, in order.
    pub(super) methods: Vec<MethodConfig>,
    /// Service name, then method name, to an index into `methods`. The
    /// method name is empty for a whole-service entry; the default entry
    /// is under the empty service and empty method.
    pub(super) names: HashMap<String, HashMap<String, usize>>,
    pub(super) retry_throttling: Option<RetryThrottling>,
}

/// What a service config sets for the methods one `methodConfig` entry
/// names. A field left out of the JSON is `None`: the client's other
/// sources (contract, defaults) decide it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MethodConfig {
    /// `timeout`: the longest a call may take, all attempts included. The
    /// call's deadline is the earlier of this and the caller's own.
    pub timeout: Option<Duration>,
    /// `retryPolicy`. `max_attempts` is as written, possibly above
    /// [`MAX_ATTEMPTS_CAP`](crate::MAX_ATTEMPTS_CAP); the retry
    /// layer caps it.
    pub retry: Option<RetryPolicy>,
    /// `hedgingPolicy`; never set together with `retry`. `max_attempts` is
    /// as written, and capped like retries.
    pub hedging: Option<HedgingPolicy>,
}

/// `retryThrottling`: a token bucket per server that turns retries and
/// hedging off while too many calls fail (gRFC A6).
///
/// Tokens start at `max_tokens`; each failed call takes one, each
/// successful one adds `token_ratio`; while the count is at or below half
/// of `max_tokens`, calls are not retried or hedged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryThrottling {
    /// The bucket's size and starting count: 1 to 1000.
    pub max_tokens: u32,
    /// Tokens a successful call adds: above zero, truncated to three
    /// decimal places as the spec says (`0.1239` reads as `0.123`).
    pub token_ratio: f64,
}

// === impl ServiceConfig ===

impl ServiceConfig {
    /// Parses and validates a service config in its JSON form. The error
    /// names the JSON path of the first field at fault.
    pub fn from_json(json: &str) -> Result<Self, ServiceConfigError> {
        super::parse::parse(json)
    }

    /// The configuration of the method at `path` (`/pkg.Service/Method`),
    /// from the most specific entry that names it: the one naming the
    /// service and the method, else the one naming the service, else the
    /// default. `None` if no entry applies.
    ///
    /// A path without a `Service/Method` shape gets the default.
    pub fn method(&self, path: &str) -> Option<&MethodConfig> {
        let (service, method) = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split_once('/')
            .unwrap_or(("", ""));
        let in_service = self.names.get(service);
        let index = in_service
            .and_then(|methods| methods.get(method))
            .or_else(|| in_service.and_then(|methods| methods.get("")))
            .or_else(|| self.names.get("").and_then(|methods| methods.get("")))?;
        self.methods.get(*index)
    }

    /// The `retryThrottling` settings, if the config has them.
    pub fn retry_throttling(&self) -> Option<RetryThrottling> {
        self.retry_throttling
    }

    /// Whether the config configures nothing: no method entry applies to
    /// any call, and there is no throttling.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.retry_throttling.is_none()
    }
}
