//! What can go wrong setting telemetry up or taking it down.

use std::time::Duration;

/// Telemetry could not be set up, flushed or shut down.
///
/// Setting up fails only on configuration (a value named by its variable or
/// setter) or on the process state (installed twice, no runtime). Flushing
/// and shutting down fail when an exporter could not deliver in time; the
/// telemetry is lost, but the process carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A setting does not parse or is out of range.
    #[error("invalid {key}: {value:?}: {reason}")]
    Invalid {
        /// The environment variable (`OTEL_TRACES_SAMPLER`) or, for a value
        /// set in code, the setter (`sampler`).
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`init`](super::init) already ran in this process. The `tracing`
    /// subscriber and the OpenTelemetry globals can be installed once.
    #[error("telemetry is already installed in this process")]
    AlreadyInstalled,
    /// Another global `tracing` subscriber was installed before
    /// [`init`](super::init) ran.
    #[error("another global tracing subscriber is already installed")]
    SubscriberInstalled,
    /// A metrics endpoint is configured but [`init`](super::init) was
    /// called outside a tokio runtime; the metric exporter's gRPC channel
    /// needs one to connect. (Spans are sent from a runtime thread of
    /// sinew's own.)
    #[error(
        "exporting metrics to an OTLP endpoint needs a tokio runtime: call init from inside one (such as #[tokio::main])"
    )]
    NoRuntime,
    /// The OTLP exporter for a signal could not be built.
    #[error("cannot build the OTLP {signal} exporter: {reason}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// Why.
        reason: String,
    },
    /// Flushing or shutting down did not complete: an export failed or did
    /// not finish within the bound. The telemetry concerned is lost.
    #[error("telemetry {action} failed: {reason}")]
    Export {
        /// `flush` or `shutdown`.
        action: &'static str,
        /// What failed, signal by signal.
        reason: String,
    },
    /// Flushing or shutting down took longer than its bound and was left to
    /// finish in the background.
    #[error("telemetry {action} did not finish within {limit:?}")]
    TimedOut {
        /// `flush` or `shutdown`.
        action: &'static str,
        /// The bound.
        limit: Duration,
    },
}

impl TelemetryError {
    /// The variable or setter at fault, for [`Invalid`](Self::Invalid).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}
