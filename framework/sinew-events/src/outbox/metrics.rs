//! The outbox's instruments, on the global meter `sinew.events`, made once.

use std::sync::OnceLock;

use opentelemetry::{
    global,
    metrics::{Counter, Gauge},
};

pub(crate) struct Metrics {
    /// Events the broker acknowledged, by `event.type`.
    pub(crate) published: Counter<u64>,
    /// Rows waiting to be published.
    pub(crate) pending: Gauge<u64>,
    /// Age in seconds of the oldest pending row (0 when none waits).
    pub(crate) lag: Gauge<f64>,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("sinew.events");
        Metrics {
            published: meter
                .u64_counter("sinew.events.published")
                .with_unit("{event}")
                .with_description("Events the outbox relay published and the broker acknowledged")
                .build(),
            pending: meter
                .u64_gauge("sinew.events.outbox.pending")
                .with_unit("{event}")
                .with_description("Outbox rows not yet published")
                .build(),
            lag: meter
                .f64_gauge("sinew.events.outbox.lag")
                .with_unit("s")
                .with_description("Age of the oldest outbox row not yet published")
                .build(),
        }
    })
}
