//! Domain events for sinew: typed from the contract, carried over NATS
//! JetStream, never lost between a database commit and the broker, and
//! never applied twice.

mod broker;
pub mod consumer;
pub mod envelope;
mod error;
pub mod inbox;
pub mod jetstream;
pub mod memory;
mod metrics;
pub mod outbox;

pub use broker::{
    Broker, DEAD_DELIVERIES, DEAD_GROUP, DEAD_REASON, DEAD_SUBJECT, Delivery, Published,
};
pub use consumer::{Consumer, ConsumerConfig, Handler, HandlerError, Received};
pub use envelope::Envelope;
pub use error::{EnvelopeError, Error};
pub use inbox::{Inbox, InboxConfig, InboxDatabase, InboxHandler, TxHandler};
pub use jetstream::{JetStream, JetStreamConfig, Storage, StreamConfig};
pub use memory::MemoryBroker;
pub use outbox::{Outbox, OutboxConfig, Relay, RelayConfig, RelayHandle};
pub use sinew_core::event::Event;
