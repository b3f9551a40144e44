//! Domain events for sinew: typed from the contract, carried over NATS
//! JetStream, never lost between a database commit and the broker, and
//! never applied twice.

mod broker;
pub mod consumer;
pub mod envelope;
mod error;
pub mod outbox;

pub use broker::{
    Broker, DEAD_DELIVERIES, DEAD_GROUP, DEAD_REASON, DEAD_SUBJECT, Delivery, Published,
};
pub use envelope::Envelope;
pub use error::{EnvelopeError, Error};
pub use outbox::{Outbox, OutboxConfig, Relay, RelayConfig, RelayHandle};
pub use sinew_core::event::Event;
