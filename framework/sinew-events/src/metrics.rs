//! The events' OpenTelemetry instruments, made from the global meter
//! provider the first time one is used (install telemetry first).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `sinew.events.published` | counter | {event} | `event.type` |
//! | `sinew.events.consumed` | counter | {event} | `event.type`, `consumer.group` |
//! | `sinew.events.redelivered` | counter | {event} | `event.type`, `consumer.group` |
//! | `sinew.events.dead_lettered` | counter | {event} | `event.type`, `consumer.group`, `reason` |
//! | `sinew.events.inbox.duplicates` | counter | {event} | `event.type`, `consumer.group` |
//! | `sinew.events.handler.duration` | histogram | ms | `event.type`, `consumer.group`, `outcome` |
//! | `sinew.events.outbox.pending` | gauge | {event} | |
//! | `sinew.events.outbox.lag` | gauge | s | |
//!
//! `published` counts what the broker acknowledged from the outbox relay,
//! copies it dropped as duplicates included. Only the relay holding the
//! lease records the outbox gauges.

use std::sync::OnceLock;

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Gauge, Histogram},
};

pub(crate) struct Metrics {
    pub(crate) published: Counter<u64>,
    pub(crate) consumed: Counter<u64>,
    pub(crate) redelivered: Counter<u64>,
    pub(crate) dead_lettered: Counter<u64>,
    pub(crate) inbox_duplicates: Counter<u64>,
    pub(crate) handler_duration: Histogram<f64>,
    pub(crate) outbox_pending: Gauge<u64>,
    pub(crate) outbox_lag: Gauge<f64>,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("sinew.events");
        Metrics {
            published: meter
                .u64_counter("sinew.events.published")
                .with_unit("{event}")
                .with_description("Events the outbox relay published and the broker acknowledged.")
                .build(),
            consumed: meter
                .u64_counter("sinew.events.consumed")
                .with_unit("{event}")
                .with_description("Events handled and acknowledged, inbox duplicates included.")
                .build(),
            redelivered: meter
                .u64_counter("sinew.events.redelivered")
                .with_unit("{event}")
                .with_description("Deliveries of an event after its first.")
                .build(),
            dead_lettered: meter
                .u64_counter("sinew.events.dead_lettered")
                .with_unit("{event}")
                .with_description("Events given up on and sent to the dead-letter subject.")
                .build(),
            inbox_duplicates: meter
                .u64_counter("sinew.events.inbox.duplicates")
                .with_unit("{event}")
                .with_description("Redelivered events the inbox had handled already.")
                .build(),
            handler_duration: meter
                .f64_histogram("sinew.events.handler.duration")
                .with_unit("ms")
                .with_description("Time in the event handler, inbox transaction included.")
                .build(),
            outbox_pending: meter
                .u64_gauge("sinew.events.outbox.pending")
                .with_unit("{event}")
                .with_description("Outbox rows not yet published.")
                .build(),
            outbox_lag: meter
                .f64_gauge("sinew.events.outbox.lag")
                .with_unit("s")
                .with_description("Age of the oldest outbox row not yet published.")
                .build(),
        }
    })
}

/// `event.type` and `consumer.group`.
pub(crate) fn consumer_attributes(event_type: &'static str, group: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("event.type", event_type),
        KeyValue::new("consumer.group", group.to_owned()),
    ]
}
