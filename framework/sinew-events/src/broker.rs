//! What a message broker must do for sinew's events: the [`Broker`] and
//! [`Delivery`] traits, implemented by [`JetStream`](crate::JetStream)
//! (durable, for production) and [`MemoryBroker`](crate::MemoryBroker)
//! (in one process, for tests and demos).

use std::{future::Future, time::Duration};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::Stream;

use crate::{Error, consumer::ConsumerConfig, envelope::Envelope};

/// Header of a dead letter: why it was given up on.
pub const DEAD_REASON: &str = "Sinew-Dead-Reason";
/// Header of a dead letter: how many times it had been delivered.
pub const DEAD_DELIVERIES: &str = "Sinew-Dead-Deliveries";
/// Header of a dead letter: the subject it was published on.
pub const DEAD_SUBJECT: &str = "Sinew-Dead-Subject";
/// Header of a dead letter: the consumer group that gave up on it.
pub const DEAD_GROUP: &str = "Sinew-Dead-Group";

/// What the broker said of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The broker already had a message with this id (inside its
    /// deduplication window) and dropped this one.
    pub duplicate: bool,
}

/// A broker of events: stores what is published until each consumer group
/// has acknowledged it.
pub trait Broker: Clone + Send + Sync + 'static {
    /// One delivered message.
    type Delivery: Delivery;
    /// The deliveries of one subscription.
    type Deliveries: Stream<Item = Result<Self::Delivery, Error>> + Send + Unpin + 'static;

    /// Publishes a message and waits until the broker has stored it. The
    /// `Nats-Msg-Id` header, when present, deduplicates: a second message
    /// with the same id inside the deduplication window is dropped (and
    /// reported as such).
    fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> impl Future<Output = Result<Published, Error>> + Send;

    /// Subscribes to `subject` as one member of the consumer group
    /// `config.group`: each message goes to one member of the group.
    fn subscribe(
        &self,
        subject: &str,
        config: &ConsumerConfig,
    ) -> impl Future<Output = Result<Self::Deliveries, Error>> + Send;

    /// Publishes an event's envelope and waits until the broker has
    /// stored it.
    fn publish(
        &self,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<Published, Error>> + Send {
        self.publish_raw(
            envelope.subject.clone(),
            envelope.headers(),
            envelope.payload.clone(),
        )
    }

    /// Whether the broker is reachable now.
    fn is_connected(&self) -> bool;

    /// A readiness check: passes while the broker is connected. Its future
    /// borrows nothing, so it fits the scaffold's probes:
    /// `Probe::new("broker", move || bus.check())`.
    fn check(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let connected = self.is_connected();
        async move {
            if connected {
                Ok(())
            } else {
                Err(Error::broker("not connected to the broker"))
            }
        }
    }
}

/// One delivery of a message to a consumer.
pub trait Delivery: Send + Sync + 'static {
    /// The subject the message was published on.
    fn subject(&self) -> &str;
    /// The message's headers.
    fn headers(&self) -> Option<&HeaderMap>;
    /// The message's body.
    fn payload(&self) -> &Bytes;
    /// How many times it has been delivered, this time included (1 the
    /// first time).
    fn delivered(&self) -> u64;
    /// Acknowledges the message and waits for the broker to confirm it: it
    /// will not come again.
    fn ack(&self) -> impl Future<Output = Result<(), Error>> + Send;
    /// Asks for the message again after `delay`.
    fn nak(&self, delay: Duration) -> impl Future<Output = Result<(), Error>> + Send;
    /// Gives up on the message: it is not delivered to this group again.
    fn term(&self) -> impl Future<Output = Result<(), Error>> + Send;
}
