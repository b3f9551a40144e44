//! Consuming events: a typed handler under a consumer group.
//!
//! [`Consumer::start`] subscribes a [`Handler`] of one event type as a
//! member of a consumer group. For every delivery it:
//!
//! 1. reads the envelope and decodes the event. A message that is not a
//!    sinew event (a header missing), of another type, or whose payload
//!    does not decode goes to the dead-letter subject at once;
//! 2. runs the handler in a span whose parent is the publisher's trace
//!    context;
//! 3. on success, acknowledges and waits for the broker to confirm (a
//!    double ack);
//! 4. on a [retryable](HandlerError::Retry) error, a panic, or a handler
//!    still running at nine tenths of `ack_wait` (it is dropped), asks for the
//!    event again after the backoff; on a [permanent](HandlerError::Permanent)
//!    error, or when the delivery was the last (`max_deliver`), publishes
//!    it to the dead-letter subject with the reason and the delivery count
//!    in headers, then terminates it.
//!
//! The consumer keeps going in every case. At most `max_ack_pending`
//! handlers run at once in one process (and the broker delivers no more
//! than that, unacknowledged, across the group).
//!
//! # Ordering
//!
//! The stream holds each aggregate's events in the order the outbox relay
//! published them, which is their commit order. With `max_ack_pending = 1`
//! a group handles them one at a time in that order, and an event that
//! fails holds back the ones after it until it is acknowledged or dead-
//! lettered. With more in flight, or a redelivery, events of one aggregate
//! may be handled out of order or at the same time: a handler that needs
//! order under concurrency must check it (a version on the aggregate).

use std::{
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use async_nats::HeaderMap;
use futures_util::{FutureExt as _, StreamExt as _};
use opentelemetry::{
    KeyValue,
    context::FutureExt as _,
    global::BoxedTracer,
    trace::{SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use sinew_core::{BoxError, backoff::Backoff, event::Event};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Error,
    broker::{Broker, DEAD_DELIVERIES, DEAD_GROUP, DEAD_REASON, DEAD_SUBJECT, Delivery},
    envelope::{Envelope, MSG_ID},
    metrics::metrics,
};

/// The prefix of dead-letter subjects: a group's dead letters go to
/// `sinew.dead.<group>`.
pub const DEAD_LETTER_PREFIX: &str = "sinew.dead";

/// The settings of one consumer group's subscription.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group: a durable consumer that the group's replicas
    /// share, each event going to one of them. Letters, digits, `_` and
    /// `-`, at most 64.
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

    /// Sets [`ack_wait`](Self::ack_wait).
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets [`max_deliver`](Self::max_deliver).
    #[must_use]
    pub fn max_deliver(mut self, deliveries: u32) -> Self {
        self.max_deliver = deliveries;
        self
    }

    /// Sets [`backoff`](Self::backoff).
    #[must_use]
    pub fn backoff(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = delays.into_iter().collect();
        self
    }

    /// Sets [`max_ack_pending`](Self::max_ack_pending).
    #[must_use]
    pub fn max_ack_pending(mut self, pending: u32) -> Self {
        self.max_ack_pending = pending;
        self
    }

    /// The subject this group's dead letters are published on.
    pub fn dead_letter_subject(&self) -> String {
        format!("{DEAD_LETTER_PREFIX}.{}", self.group)
    }

    /// Checks every setting, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        let group = &self.group;
        if group.is_empty()
            || group.len() > 64
            || !group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::config(
                "consumer.group",
                format!("{group:?} must be 1 to 64 letters, digits, `_` or `-`"),
            ));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(Error::config("consumer.ack_wait", "must be at least 100ms"));
        }
        if self.max_deliver == 0 {
            return Err(Error::config("consumer.max_deliver", "must be at least 1"));
        }
        if self.max_ack_pending == 0 || self.max_ack_pending > 65_536 {
            return Err(Error::config(
                "consumer.max_ack_pending",
                "must be between 1 and 65536",
            ));
        }
        if self.backoff.is_empty() {
            return Err(Error::config(
                "consumer.backoff",
                "must hold at least one delay",
            ));
        }
        Ok(())
    }

    /// The wait before delivery `delivered + 1`.
    fn delay_after(&self, delivered: u64) -> Duration {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }
}

/// An event as a handler receives it: the decoded message and its
/// envelope's facts.
#[derive(Debug, Clone)]
pub struct Received<E> {
    /// The event.
    pub event: E,
    /// The event id (a UUIDv7): the inbox key.
    pub id: String,
    /// The id of the aggregate the event belongs to.
    pub aggregate_id: String,
    /// When the event happened.
    pub occurred_at: Option<SystemTime>,
    /// The schema version it was written with.
    pub schema_version: u32,
    /// How many times it has been delivered, this time included.
    pub delivered: u64,
    /// The consumer group handling it.
    pub group: Arc<str>,
}

/// Why a handler did not handle an event.
///
/// Any error converts into [`Retry`](Self::Retry) with `?`; say
/// [`HandlerError::permanent`] for an event that can never succeed.
pub enum HandlerError {
    /// Try again later (after the backoff), until the last delivery.
    Retry(BoxError),
    /// Never try again: the event goes to the dead-letter subject.
    Permanent(BoxError),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self::Retry(error.into())
    }

    /// A failure no retry can fix.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    fn reason(&self) -> String {
        let (kind, error) = match self {
            Self::Retry(e) => ("retryable", e),
            Self::Permanent(e) => ("permanent", e),
        };
        cut(format!("{kind}: {error}"))
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::Retry(error.into())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry(e) => f.debug_tuple("Retry").field(e).finish(),
            Self::Permanent(e) => f.debug_tuple("Permanent").field(e).finish(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

/// Handles events of type `E`. Closures `Fn(Received<E>) -> impl Future`
/// are handlers; so is [`Inbox::handler`](crate::Inbox::handler), which
/// runs a [`TxHandler`](crate::TxHandler) once per event id.
pub trait Handler<E>: Send + Sync + 'static {
    /// Handles one event.
    fn handle(&self, event: Received<E>) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Checks the handler against the group's settings when the consumer
    /// starts (the inbox checks that it keeps ids long enough).
    fn check(&self, config: &ConsumerConfig) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }
}

impl<E, F, Fut> Handler<E> for F
where
    E: Send + 'static,
    F: Fn(Received<E>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, event: Received<E>) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(event)
    }
}

/// A running consumer. Dropping it leaves it running; [`shutdown`](Self::shutdown)
/// stops it.
#[derive(Debug)]
pub struct Consumer {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Consumer {
    /// Subscribes `handler` to events of type `E` as a member of
    /// `config.group`, and starts handling them on the current runtime.
    /// Install telemetry first: the consumer takes the global tracer when
    /// it starts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid setting, and the broker's error if
    /// the first subscription fails (later ones are retried).
    pub async fn start<E, B, H>(
        broker: &B,
        config: ConsumerConfig,
        handler: H,
    ) -> Result<Self, Error>
    where
        E: Event,
        B: Broker,
        H: Handler<E>,
    {
        config.validate()?;
        handler.check(&config)?;
        let deliveries = broker.subscribe(E::SUBJECT, &config).await?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let group: Arc<str> = Arc::from(config.group.as_str());
        let run = Run {
            broker: broker.clone(),
            span_name: format!("process {}", E::SUBJECT),
            attributes: [
                KeyValue::new("event.type", E::TYPE),
                KeyValue::new("consumer.group", group.clone()),
            ],
            group,
            tracer: opentelemetry::global::tracer("sinew.events"),
            dead_subject: config.dead_letter_subject(),
            config,
            handler: Arc::new(handler),
            slots: Arc::new(Semaphore::new(0)),
            _event: std::marker::PhantomData::<fn() -> E>,
        };
        run.slots
            .add_permits(usize::try_from(run.config.max_ack_pending).unwrap_or(1));
        tracker.spawn(run.run(deliveries, stop.clone(), tracker.clone()));
        Ok(Self { stop, tracker })
    }

    /// Stops taking events and waits for the handlers under way to finish
    /// and acknowledge. Events fetched and not yet handled are delivered
    /// again after `ack_wait`.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

struct Run<E, B: Broker, H> {
    broker: B,
    group: Arc<str>,
    /// Made once, not per event: the consumer span's name, and the
    /// metrics' `event.type` and `consumer.group`.
    span_name: String,
    attributes: [KeyValue; 2],
    /// The global tracer as it is when the consumer starts.
    tracer: BoxedTracer,
    dead_subject: String,
    config: ConsumerConfig,
    handler: Arc<H>,
    slots: Arc<Semaphore>,
    _event: std::marker::PhantomData<fn() -> E>,
}

impl<E: Event, B: Broker, H: Handler<E>> Run<E, B, H> {
    async fn run(
        self,
        mut deliveries: B::Deliveries,
        stop: CancellationToken,
        tracker: TaskTracker,
    ) {
        let this = Arc::new(self);
        let reconnect = Backoff::new(Duration::from_millis(100), Duration::from_secs(10), 2.0);
        let mut failures = 0u32;
        loop {
            let slot = tokio::select! {
                () = stop.cancelled() => return,
                slot = this.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = deliveries.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    failures = 0;
                    let this = this.clone();
                    // Boxed: the handling future is large, and tokio moves
                    // a spawned future several times before it runs.
                    tracker.spawn(Box::pin(async move {
                        this.handle(delivery).await;
                        drop(slot);
                    }));
                }
                Some(Err(error)) => {
                    tracing::warn!(group = %this.group, %error, "event consumer: receiving failed");
                }
                None => {
                    // The subscription ended: subscribe again, backing off.
                    loop {
                        let wait = reconnect.ceiling(failures);
                        failures = failures.saturating_add(1);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                        match this.broker.subscribe(E::SUBJECT, &this.config).await {
                            Ok(fresh) => {
                                deliveries = fresh;
                                break;
                            }
                            Err(error) => tracing::warn!(
                                group = %this.group, %error,
                                "event consumer: subscribing again failed"
                            ),
                        }
                    }
                }
            }
        }
    }

    async fn handle(&self, delivery: B::Delivery) {
        let delivered = delivery.delivered();
        let envelope = Envelope::from_message(
            delivery.subject(),
            delivery.headers(),
            delivery.payload().clone(),
        );
        let attributes = &self.attributes;
        if delivered > 1 {
            metrics().redelivered.add(1, attributes);
        }
        let (envelope, event) = match envelope.and_then(|envelope| {
            let event = envelope.event::<E>()?;
            Ok((envelope, event))
        }) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.dead_letter(&delivery, delivered, &cut(error.to_string()), "malformed")
                    .await;
                return;
            }
        };
        if delivered > u64::from(self.config.max_deliver) {
            // Its acknowledgement timed out on the last delivery.
            self.dead_letter(
                &delivery,
                delivered,
                "delivery limit reached: no acknowledgement within ack_wait",
                "max_deliver",
            )
            .await;
            return;
        }

        let tracer = &self.tracer;
        let parent = envelope.trace_parent();
        let span = tracer
            .span_builder(self.span_name.clone())
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", E::SUBJECT),
                KeyValue::new("messaging.consumer.group.name", self.group.clone()),
                KeyValue::new("messaging.message.id", envelope.id.clone()),
                KeyValue::new("event.type", E::TYPE),
                KeyValue::new(
                    "event.delivery_count",
                    i64::try_from(delivered).unwrap_or(i64::MAX),
                ),
            ])
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        let received = Received {
            event,
            id: envelope.id,
            aggregate_id: envelope.aggregate_id,
            occurred_at: envelope
                .occurred_at
                .and_then(|at| SystemTime::try_from(at).ok()),
            schema_version: envelope.schema_version,
            delivered,
            group: self.group.clone(),
        };
        let started = Instant::now();
        // A handler gets nine tenths of `ack_wait`: past `ack_wait` the
        // broker delivers the event again anyway, so the attempt is dropped
        // (its transaction rolls back) and counts as a retryable failure,
        // early enough for its redelivery to wait out the backoff.
        let attempt = AssertUnwindSafe(self.handler.handle(received))
            .catch_unwind()
            .with_context(cx.clone());
        let patience = self.config.ack_wait.mul_f64(0.9);
        let outcome = match tokio::time::timeout(patience, attempt).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => Err(HandlerError::Retry(panic_message(&panic).into())),
            Err(_) => Err(HandlerError::Retry(
                format!(
                    "handler took longer than 9/10 of ack_wait ({})",
                    humantime::format_duration(patience)
                )
                .into(),
            )),
        };
        let elapsed = started.elapsed().as_secs_f64() * 1e3;
        let outcome_name = match &outcome {
            Ok(()) => "ok",
            Err(HandlerError::Retry(_)) => "retry",
            Err(HandlerError::Permanent(_)) => "permanent",
        };
        let [a, b] = attributes.clone();
        metrics()
            .handler_duration
            .record(elapsed, &[a, b, KeyValue::new("outcome", outcome_name)]);
        let span = cx.span();
        match outcome {
            Ok(()) => {
                if let Err(error) = delivery.ack().await {
                    // It comes again; an inbox drops the repeat.
                    tracing::warn!(group = %self.group, %error, "event consumer: acknowledgement failed");
                } else {
                    metrics().consumed.add(1, attributes);
                }
            }
            Err(error) => {
                let reason = error.reason();
                span.set_status(Status::error(reason.clone()));
                let last = delivered >= u64::from(self.config.max_deliver);
                match error {
                    HandlerError::Retry(_) if !last => {
                        let delay = self.config.delay_after(delivered);
                        tracing::debug!(group = %self.group, delivered, ?delay, "event handler failed; retrying");
                        if let Err(error) = delivery.nak(delay).await {
                            tracing::warn!(group = %self.group, %error, "event consumer: nak failed");
                        }
                    }
                    HandlerError::Retry(_) => {
                        self.dead_letter(&delivery, delivered, &reason, "max_deliver")
                            .await;
                    }
                    HandlerError::Permanent(_) => {
                        self.dead_letter(&delivery, delivered, &reason, "permanent")
                            .await;
                    }
                }
            }
        }
    }

    /// Publishes the delivery to the group's dead-letter subject, then
    /// terminates it. If the dead letter cannot be published, the event
    /// is asked for again instead: nothing is dropped unrecorded.
    async fn dead_letter(
        &self,
        delivery: &B::Delivery,
        delivered: u64,
        reason: &str,
        kind: &'static str,
    ) {
        let mut headers = delivery.headers().cloned().unwrap_or_else(HeaderMap::new);
        // One dead letter per event and group, however often this runs.
        let id = headers
            .get(MSG_ID)
            .map(|id| format!("{}:{}", id.as_str(), self.group));
        if let Some(id) = id {
            headers.insert(MSG_ID, id.as_str());
        }
        headers.insert(DEAD_REASON, reason);
        headers.insert(DEAD_DELIVERIES, delivered.to_string().as_str());
        headers.insert(DEAD_SUBJECT, delivery.subject());
        headers.insert(DEAD_GROUP, &*self.group);
        let published = self
            .broker
            .publish_raw(
                self.dead_subject.clone(),
                headers,
                delivery.payload().clone(),
            )
            .await;
        match published {
            Ok(_) => {
                tracing::warn!(
                    group = %self.group, subject = delivery.subject(), delivered, reason,
                    "event dead-lettered"
                );
                let [a, b] = self.attributes.clone();
                metrics()
                    .dead_lettered
                    .add(1, &[a, b, KeyValue::new("reason", kind)]);
                if let Err(error) = delivery.term().await {
                    tracing::warn!(group = %self.group, %error, "event consumer: terminating a dead letter failed");
                }
            }
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "event consumer: publishing a dead letter failed; retrying");
                let delay = self.config.delay_after(delivered);
                if let Err(error) = delivery.nak(delay).await {
                    tracing::warn!(group = %self.group, %error, "event consumer: nak failed");
                }
            }
        }
    }
}

/// A reason cut to 1000 bytes, for a header.
fn cut(mut text: String) -> String {
    const MAX: usize = 1000;
    if text.len() > MAX {
        let end = (0..=MAX)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    // Header values hold no line breaks.
    text.replace(['\r', '\n'], " ")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    format!("handler panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_by_name() {
        let check = |config: ConsumerConfig| match config.validate() {
            Err(Error::Config { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(check(ConsumerConfig::new("a.b")), "consumer.group");
        assert_eq!(check(ConsumerConfig::new("")), "consumer.group");
        assert_eq!(
            check(ConsumerConfig::new("g").max_deliver(0)),
            "consumer.max_deliver"
        );
        assert_eq!(
            check(ConsumerConfig::new("g").max_ack_pending(0)),
            "consumer.max_ack_pending"
        );
        assert_eq!(
            check(ConsumerConfig::new("g").backoff([])),
            "consumer.backoff"
        );
        assert_eq!(
            check(ConsumerConfig::new("g").ack_wait(Duration::from_millis(10))),
            "consumer.ack_wait"
        );
        assert!(ConsumerConfig::new("shipping-v2_a").validate().is_ok());
    }

    #[test]
    fn redeliveries_wait_by_the_backoff_list() {
        let config =
            ConsumerConfig::new("g").backoff([Duration::from_secs(1), Duration::from_secs(4)]);
        assert_eq!(config.delay_after(1), Duration::from_secs(1));
        assert_eq!(config.delay_after(2), Duration::from_secs(4));
        assert_eq!(config.delay_after(9), Duration::from_secs(4));
    }

    #[test]
    fn reasons_fit_a_header() {
        assert_eq!(cut("a\r\nb".into()), "a  b");
        assert_eq!(cut("é".repeat(600)).len(), 1000);
    }
}
