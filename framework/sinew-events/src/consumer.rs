//! Consuming events: a typed handler under a consumer group.

use std::time::Duration;

/// The settings of one consumer group's subscription.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group: a durable consumer that the group's replicas
    /// share, each event going to one of them. Letters, digits, `_` and `-`.
    pub group: String,
    /// How long the broker waits for an acknowledgement before delivering
    /// the event again. Default 30s.
    pub ack_wait: Duration,
    /// Deliveries in all, the first included; after the last, a failing
    /// event goes to the dead-letter subject. Default 5.
    pub max_deliver: u32,
    /// The delay before each redelivery of an event that failed with a
    /// retryable error: the n-th redelivery waits the n-th entry, the last
    /// entry repeating. Default 1s, 5s, 30s.
    pub backoff: Vec<Duration>,
    /// Events delivered and not yet acknowledged, across the group: the
    /// bound on concurrent handlers. Default 64.
    pub max_ack_pending: u32,
}

impl ConsumerConfig {
    /// The defaults, for group `group`.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            max_ack_pending: 64,
        }
    }
}
