//! The errors of sinew-events.

use std::time::Duration;

/// What went wrong publishing, consuming or keeping the outbox and inbox.
///
/// Messages name what failed and why, never a payload, a credential or a
/// connection string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached, or refused an operation.
    #[error("broker: {0}")]
    Broker(#[source] sinew_core::BoxError),
    /// The broker did not confirm in time.
    #[error("broker did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A setting is invalid; the message names the setting.
    #[error("invalid setting `{key}`: {reason}")]
    Config {
        /// The setting, such as `consumer.max_deliver`.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The settings file could not be read or holds a mistake; the reason
    /// names the key and the line.
    #[error("settings in {origin}: {reason}")]
    Settings {
        /// The file.
        origin: String,
        /// What is wrong, where.
        reason: String,
    },
    /// A message is not a sinew event, or not the one expected.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The bus or consumer was shut down.
    #[error("shut down")]
    Closed,
    /// The outbox's oldest pending event has waited longer than the
    /// threshold of [`Outbox::lag_check`](crate::outbox::Outbox::lag_check).
    #[error(
        "the oldest pending outbox event has waited {}, over {}",
        humantime::format_duration(*.age),
        humantime::format_duration(*.threshold)
    )]
    OutboxLag {
        /// How long it has waited.
        age: Duration,
        /// The threshold.
        threshold: Duration,
    },
}

impl Error {
    pub(crate) fn broker(error: impl Into<sinew_core::BoxError>) -> Self {
        Self::Broker(error.into())
    }

    pub(crate) fn config(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            key,
            reason: reason.into(),
        }
    }
}

/// Why a received message could not be read as an event: always a
/// permanent failure (the message goes to the dead-letter subject).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A header the envelope needs is missing or not valid.
    #[error("header `{0}` is missing or invalid")]
    Header(&'static str),
    /// The message is an event of another type than the consumer handles.
    #[error("unexpected event type `{found}`, expected `{expected}`")]
    UnknownType {
        /// The type the consumer handles.
        expected: &'static str,
        /// The type the message carries (cut to 200 bytes).
        found: String,
    },
    /// The payload does not decode as the event's message.
    #[error("payload does not decode as `{event_type}`: {reason}")]
    Payload {
        /// The event type.
        event_type: &'static str,
        /// What prost reported.
        reason: String,
    },
    /// Encoded envelope bytes (an outbox row) do not decode.
    #[error("stored envelope does not decode: {0}")]
    Stored(String),
}
