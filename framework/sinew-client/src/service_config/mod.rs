//! The gRPC service config: per-method timeouts, retry and hedging
//! policies, and retry throttling, in the JSON form grpc-go and grpc-java
//! read ([service_config.md], [gRFC A6]).
//!
//! ```
//! use std::time::Duration;
//! use sinew_client::service_config::ServiceConfig;
//!
//! let config = ServiceConfig::from_json(r#"{
//!     "methodConfig": [{
//!         "name": [{"service": "echo.v1.Echo"}],
//!         "timeout": "1.5s",
//!         "retryPolicy": {
//!             "maxAttempts": 4,
//!             "initialBackoff": "0.1s",
//!             "maxBackoff": "1s",
//!             "backoffMultiplier": 2,
//!             "retryableStatusCodes": ["UNAVAILABLE"]
//!         }
//!     }]
//! }"#)?;
//! let get = config.method("/echo.v1.Echo/Get").expect("configured");
//! assert_eq!(get.timeout, Some(Duration::from_millis(1500)));
//! assert_eq!(get.retry.map(|r| r.max_attempts), Some(4));
//! assert!(config.method("/other.v1.Other/Get").is_none());
//! # Ok::<(), sinew_client::service_config::ServiceConfigError>(())
//! ```
//!
//! # What is read
//!
//! - `methodConfig[].name[]`: `{"service": S, "method": M}` applies to one
//!   method, `{"service": S}` (or an empty `method`) to every method of
//!   `S`, and `{}` (or an empty `service`) to every method: the default.
//!   [`ServiceConfig::method`] picks the most specific entry. Each name
//!   may appear once across all entries.
//! - `methodConfig[].timeout`, `retryPolicy`, `hedgingPolicy`: into a
//!   [`MethodConfig`]. An entry may have a retry policy or a hedging policy,
//!   not both.
//! - `retryThrottling`: into [`RetryThrottling`].
//!
//! Every other field (`loadBalancingConfig`, `waitForReady`,
//! `maxRequestMessageBytes`, ...) is ignored, as the spec allows; a field
//! that *is* read but has the wrong JSON type is an error, and so is a
//! value out of the range A6 sets. A JSON `null` counts as absent, as in
//! proto3 JSON. Field names are the lowerCamelCase ones only (grpc-java
//! reads no others either).
//!
//! Durations are proto3 JSON durations: decimal seconds with an `s`
//! suffix, such as `"1.5s"`, `".1s"` or `"10s"`, with at most nine
//! fractional digits, never negative. Status codes are canonical names
//! (`"UNAVAILABLE"`, in any case) or numbers (`14`).
//!
//! A6's client-side cap on attempts is not applied here: `maxAttempts`
//! above [`MAX_ATTEMPTS_CAP`](crate::MAX_ATTEMPTS_CAP) is kept as
//! written and capped where attempts are made, so a client that raises the
//! cap sees the configured value.
//!
//! Every error is a [`ServiceConfigError`] naming the JSON path of the
//! field at fault, such as
//! `methodConfig[0].retryPolicy.maxAttempts: must be at least 2, got 1`.
//!
//! [service_config.md]: https://github.com/grpc/grpc/blob/master/doc/service_config.md
//! [gRFC A6]: https://github.com/grpc/proposal/blob/master/A6-client-retries.md

mod config;
mod duration;
mod error;
mod parse;

#[cfg(test)]
mod tests;

pub use config::{MethodConfig, RetryThrottling, ServiceConfig};
pub use error::ServiceConfigError;
