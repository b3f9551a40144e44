//! What the resilience layers report as they work: a `tracing` event,
//! which lands on the current call's span, and a metric. One function per
//! occurrence keeps the layers free of telemetry details.
//!
//! This is the one interface between the client's and the scaffold's
//! resilience layers and telemetry: a layer calls a function here and
//! knows nothing of spans, instruments or exporters. Before
//! [`init`](crate::init) (or with telemetry disabled) each function only
//! logs.
//!
//! What happens to single calls (a retry, a hedged copy, a refusal by the
//! breaker or the bulkhead, a wait for a slot) is logged at `debug`: under
//! failure or overload it happens on every call, and a console line per
//! call would add load where there is too much already. Every one of them
//! is still on the call's span and in the metrics. A breaker opening is
//! logged at `warn`, its other changes and health changes at `info`.

use std::time::Duration;

use opentelemetry::{Context, KeyValue, trace::TraceContextExt};

use super::{call::enabled, method::split_path, metrics::metrics};

/// Adds an event to the span of the call under way (the client's span,
/// whose context the tracing layer attaches while the layers below run).
fn span_event(name: &'static str, attributes: Vec<KeyValue>) {
    Context::map_current(|cx| {
        let span = cx.span();
        if span.is_recording() {
            span.add_event(name, attributes);
        }
    });
}

/// `rpc.service` and `rpc.method` of the call to `path`, which the
/// resilience layers' metrics are counted by.
fn rpc_attributes(path: &str) -> Vec<KeyValue> {
    let (service, method) = split_path(path);
    vec![
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ]
}

/// A retry is about to wait `wait` and send attempt number `attempt`;
/// `pushback` when the server chose the wait (`grpc-retry-pushback-ms`).
pub fn retry(path: &str, attempt: u32, wait: Duration, transparent: bool, pushback: bool) {
    let backoff_ms = wait.as_secs_f64() * 1000.0;
    tracing::debug!(attempt, backoff_ms, transparent, pushback, "retrying");
    if enabled() {
        span_event(
            "retrying",
            vec![
                KeyValue::new("attempt", i64::from(attempt)),
                KeyValue::new("backoff_ms", backoff_ms),
                KeyValue::new("transparent", transparent),
                KeyValue::new("pushback", pushback),
            ],
        );
        let reason = if transparent { "transparent" } else { "status" };
        let mut attributes = rpc_attributes(path);
        attributes.push(KeyValue::new("reason", reason));
        metrics().retries.add(1, &attributes);
    }
}

/// The retry throttle refused a retry the policy allowed.
pub fn retry_throttled(path: &str) {
    tracing::debug!("retry throttled");
    if enabled() {
        span_event("retry throttled", Vec::new());
        metrics().retries_throttled.add(1, &rpc_attributes(path));
    }
}

/// Hedged copy number `copy` is being sent.
pub fn hedge(path: &str, copy: u32) {
    tracing::debug!(copy, "sending a hedged copy");
    if enabled() {
        span_event("hedging", vec![KeyValue::new("copy", i64::from(copy))]);
        metrics().hedges.add(1, &rpc_attributes(path));
    }
}

/// What one circuit breaker reports: its changes of state, as a `tracing`
/// event, a span event and `sinew.client.breaker.transitions`; the calls
/// it refuses, likewise and in `sinew.client.breaker.refusals`; and which
/// state it is in, in `sinew.client.breaker.state` (one breaker counted in
/// its state from when it is made until it is dropped).
///
/// A breaker that cannot trip is not counted in any state, nor is one made
/// before telemetry was installed: counting the changes of a breaker never
/// counted in its first state would take it below zero there.
#[derive(Debug)]
pub struct BreakerTelemetry {
    /// The endpoint's attributes; none for a breaker of no endpoint.
    endpoint: Vec<KeyValue>,
    /// The endpoint, for the logs.
    name: Option<String>,
    /// Whether it is counted in `sinew.client.breaker.state`.
    counted: bool,
}

impl BreakerTelemetry {
    /// A breaker, made closed, of the endpoint `endpoint` describes: its
    /// name for the logs and its attributes (`None` for a breaker of no
    /// endpoint); `trips` if it can ever trip.
    pub fn new(endpoint: Option<(String, Vec<KeyValue>)>, trips: bool) -> Self {
        let (name, endpoint) = match endpoint {
            Some((name, attributes)) => (Some(name), attributes),
            None => (None, Vec::new()),
        };
        let this = Self {
            endpoint,
            name,
            counted: trips && enabled(),
        };
        this.count("closed", 1);
        this
    }

    /// The breaker went from the state `from` to `to`.
    pub fn transition(&self, from: &'static str, to: &'static str) {
        let endpoint = self.name.as_deref().unwrap_or("");
        if to == "open" {
            tracing::warn!(from, to, endpoint, "circuit breaker state change");
        } else {
            tracing::info!(from, to, endpoint, "circuit breaker state change");
        }
        if enabled() {
            span_event(
                "circuit breaker state change",
                vec![KeyValue::new("from", from), KeyValue::new("to", to)],
            );
            let mut attributes = self.endpoint.clone();
            attributes.push(KeyValue::new("to", to));
            metrics().breaker_transitions.add(1, &attributes);
        }
        self.count(from, -1);
        self.count(to, 1);
    }

    /// The breaker refused a call: open, or half-open with every probe
    /// slot taken.
    pub fn refused(&self) {
        let endpoint = self.name.as_deref().unwrap_or("");
        tracing::debug!(endpoint, "circuit breaker open: call refused");
        if enabled() {
            span_event("circuit breaker open", Vec::new());
            metrics().breaker_refusals.add(1, &self.endpoint);
        }
    }

    /// The breaker, in the state `state`, is gone.
    pub fn dropped(&self, state: &'static str) {
        self.count(state, -1);
    }

    fn count(&self, state: &'static str, by: i64) {
        if self.counted {
            let mut attributes = self.endpoint.clone();
            attributes.push(KeyValue::new("state", state));
            metrics().breaker_state.add(by, &attributes);
        }
    }
}

/// The bulkhead refused the call to `path`.
pub fn bulkhead_rejected(path: &str, timed_out: bool) {
    let reason = if timed_out { "timeout" } else { "full" };
    tracing::debug!(reason, "bulkhead refused the call");
    if enabled() {
        span_event("bulkhead refused", vec![KeyValue::new("reason", reason)]);
        let mut attributes = rpc_attributes(path);
        attributes.push(KeyValue::new("reason", reason));
        metrics().bulkhead_rejections.add(1, &attributes);
    }
}

/// The call to `path` waited `waited` in the bulkhead's queue for a slot.
pub fn bulkhead_waited(path: &str, waited: Duration) {
    let ms = waited.as_secs_f64() * 1000.0;
    tracing::debug!(waited_ms = ms, "waited for a bulkhead slot");
    if enabled() {
        span_event("bulkhead wait", vec![KeyValue::new("waited_ms", ms)]);
        metrics()
            .bulkhead_queue_time
            .record(ms, &rpc_attributes(path));
    }
}

/// A health status changed.
pub fn health_changed(service: &str, status: &'static str) {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{Level, Subscriber};
    use tracing_subscriber::{Layer, layer::Context, prelude::*};

    use super::*;

    /// Keeps the level of every event logged.
    #[derive(Clone, Default)]
    struct Levels(Arc<Mutex<Vec<Level>>>);

    impl<S: Subscriber> Layer<S> for Levels {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0.lock().unwrap().push(*event.metadata().level());
        }
    }

    fn levels_of(report: impl FnOnce()) -> Vec<Level> {
        let levels = Levels::default();
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(levels.clone()),
            report,
        );
        levels.0.lock().unwrap().clone()
    }

    #[test]
    fn a_breaker_opening_warns_and_what_happens_to_single_calls_is_debug() {
        let breaker = BreakerTelemetry::new(None, true);
        assert_eq!(
            levels_of(|| breaker.transition("closed", "open")),
            [Level::WARN]
        );
        assert_eq!(
            levels_of(|| breaker.transition("open", "half_open")),
            [Level::INFO]
        );
        assert_eq!(levels_of(|| breaker.refused()), [Level::DEBUG]);
        assert_eq!(
            levels_of(|| {
                retry(
                    "/echo.v1.Echo/Put",
                    2,
                    Duration::from_millis(5),
                    false,
                    false,
                );
                retry_throttled("/echo.v1.Echo/Put");
                hedge("/echo.v1.Echo/Put", 2);
                bulkhead_rejected("/echo.v1.Echo/Put", false);
                bulkhead_waited("/echo.v1.Echo/Put", Duration::from_millis(1));
            }),
            [Level::DEBUG; 5]
        );
    }
}
