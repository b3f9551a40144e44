//! What the resilience layers report as they work: a `tracing` event,
//! which lands on the current call's span, and a metric. One function per
//! occurrence keeps the layers free of telemetry details.

use std::time::Duration;

use opentelemetry::KeyValue;

use super::{
    call::enabled,
    metrics::{metrics, split_path},
};

/// A retry is about to wait `wait` and send attempt number `attempt`.
pub(crate) fn retry(path: &str, attempt: u32, wait: Duration, transparent: bool) {
    tracing::info!(
        attempt,
        backoff_ms = wait.as_secs_f64() * 1000.0,
        transparent,
        "retrying"
    );
    if enabled() {
        let reason = if transparent { "transparent" } else { "status" };
        metrics().retries.add(
            1,
            &[
                KeyValue::new("rpc.method", split_path(path).1.to_owned()),
                KeyValue::new("reason", reason),
            ],
        );
    }
}

/// The retry throttle refused a retry the policy allowed.
pub(crate) fn retry_throttled(path: &str) {
    tracing::info!("retry throttled");
    if enabled() {
        metrics().retries_throttled.add(
            1,
            &[KeyValue::new("rpc.method", split_path(path).1.to_owned())],
        );
    }
}

/// Hedged copy number `copy` is being sent.
pub(crate) fn hedge(path: &str, copy: u32) {
    tracing::info!(copy, "sending a hedged copy");
    if enabled() {
        metrics().hedges.add(
            1,
            &[KeyValue::new("rpc.method", split_path(path).1.to_owned())],
        );
    }
}

/// A circuit breaker changed state.
pub(crate) fn breaker_transition(to: &'static str) {
    tracing::info!(to, "circuit breaker state change");
    if enabled() {
        metrics()
            .breaker_transitions
            .add(1, &[KeyValue::new("to", to)]);
    }
}

/// An open circuit breaker refused a call.
pub(crate) fn breaker_refused() {
    tracing::info!("circuit breaker open: call refused");
}

/// The bulkhead refused a call.
pub(crate) fn bulkhead_rejected(timed_out: bool) {
    let reason = if timed_out { "timeout" } else { "full" };
    tracing::info!(reason, "bulkhead refused the call");
    if enabled() {
        metrics()
            .bulkhead_rejections
            .add(1, &[KeyValue::new("reason", reason)]);
    }
}

/// A call waited `waited` in the bulkhead's queue for a slot.
pub(crate) fn bulkhead_waited(waited: Duration) {
    let ms = waited.as_secs_f64() * 1000.0;
    tracing::info!(waited_ms = ms, "waited for a bulkhead slot");
    if enabled() {
        metrics().bulkhead_queue_time.record(ms, &[]);
    }
}

/// A health status changed.
pub(crate) fn health_changed(service: &str, status: &'static str) {
    tracing::info!(service, status, "health status change");
    if enabled() {
        metrics().health_changes.add(
            1,
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("status", status),
            ],
        );
    }
}
