//! The sagas' OpenTelemetry instruments, made from the global meter
//! provider the first time one is used (install telemetry first).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `sinew.saga.started` | counter | {saga} | `saga.name` |
//! | `sinew.saga.completed` | counter | {saga} | `saga.name` |
//! | `sinew.saga.compensated` | counter | {saga} | `saga.name` |
//! | `sinew.saga.parked` | counter | {saga} | `saga.name` |
//! | `sinew.saga.step.duration` | histogram | ms | `saga.name`, `saga.step`, `saga.phase`, `outcome` |
//!
//! A saga is counted as it ends in each run that drives it: one parked,
//! then resumed and compensated, counts once in each.

use std::sync::OnceLock;

use opentelemetry::{
    global,
    metrics::{Counter, Histogram},
};

pub(crate) struct Metrics {
    pub(crate) started: Counter<u64>,
    pub(crate) completed: Counter<u64>,
    pub(crate) compensated: Counter<u64>,
    pub(crate) parked: Counter<u64>,
    pub(crate) step_duration: Histogram<f64>,
}

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("sinew.saga");
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit("{saga}")
                .with_description(description)
                .build()
        };
        Metrics {
            started: counter("sinew.saga.started", "Sagas started."),
            completed: counter("sinew.saga.completed", "Sagas whose every step succeeded."),
            compensated: counter(
                "sinew.saga.compensated",
                "Sagas whose completed steps were undone after a step failed.",
            ),
            parked: counter(
                "sinew.saga.parked",
                "Sagas parked as NeedsAttention (a compensation kept failing, or an unregistered version).",
            ),
            step_duration: meter
                .f64_histogram("sinew.saga.step.duration")
                .with_unit("ms")
                .with_description("Time of one attempt of a step's action or compensation.")
                .build(),
        }
    })
}
