//! sinew's OpenTelemetry metrics, recorded by the scaffold and the client.
//!
//! The instruments come from the global meter provider the first time they
//! are used, so [`init`](super::init) must run before the first call is
//! served or made (it does, when it is the first line of `main`).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `rpc.server.duration` | histogram | ms | `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code` |
//! | `rpc.client.duration` | histogram | ms | the same |
//! | `rpc.server.active_requests` | up-down counter (observed when collected) | {request} | `rpc.service`, `rpc.method` |
//! | `rpc.client.active_requests` | up-down counter (observed when collected) | {request} | `rpc.service`, `rpc.method` |
//! | `sinew.client.retries` | counter | {attempt} | `rpc.service`, `rpc.method`, `reason` (`status`, `transparent`) |
//! | `sinew.client.retries_throttled` | counter | {attempt} | `rpc.service`, `rpc.method` |
//! | `sinew.client.hedges` | counter | {attempt} | `rpc.service`, `rpc.method` |
//! | `sinew.client.breaker.state` | up-down counter | {breaker} | `state` (`closed`, `open`, `half_open`), and the endpoint's `server.address`, `network.peer.address`, `network.peer.port` |
//! | `sinew.client.breaker.transitions` | counter | {transition} | `to` (`closed`, `open`, `half_open`), and the endpoint's as above |
//! | `sinew.client.breaker.refusals` | counter | {request} | the endpoint's as above |
//! | `sinew.client.bulkhead.rejections` | counter | {request} | `rpc.service`, `rpc.method`, `reason` (`full`, `timeout`) |
//! | `sinew.client.bulkhead.queue_time` | histogram | ms | `rpc.service`, `rpc.method` |
//! | `sinew.health.status_changes` | counter | {change} | `service`, `status` |
//!
//! `sinew.client.breaker.state` counts each endpoint's breaker in the
//! state it is in, from when the client makes it until it is dropped:
//! `state="open"` at 1 says the endpoint's breaker is open. An open
//! breaker whose recovery timeout has passed is counted open until the
//! next call to its endpoint turns it half-open. Breakers that cannot trip
//! (a client with its breakers off) are not counted, nor are breakers
//! made before telemetry was installed.

use std::sync::OnceLock;

use opentelemetry::{
    global,
    metrics::{Counter, Histogram, ObservableUpDownCounter, UpDownCounter},
};

use super::method::observe_active;

/// Every instrument sinew records to.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) server_duration: Histogram<f64>,
    pub(crate) client_duration: Histogram<f64>,
    /// Observed from the per-method counters in
    /// [`method`](super::method) when the meter collects; held so the
    /// callbacks stay registered.
    _server_active: ObservableUpDownCounter<i64>,
    _client_active: ObservableUpDownCounter<i64>,
    pub(crate) retries: Counter<u64>,
    pub(crate) retries_throttled: Counter<u64>,
    pub(crate) hedges: Counter<u64>,
    pub(crate) breaker_state: UpDownCounter<i64>,
    pub(crate) breaker_transitions: Counter<u64>,
    pub(crate) breaker_refusals: Counter<u64>,
    pub(crate) bulkhead_rejections: Counter<u64>,
    pub(crate) bulkhead_queue_time: Histogram<f64>,
    pub(crate) health_changes: Counter<u64>,
}

/// The instruments, made on first use from the global meter provider.
pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = global::meter("sinew");
        // Latency buckets in milliseconds, from sub-millisecond to a minute.
        let buckets = vec![
            0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
            10000.0, 60000.0,
        ];
        Metrics {
            server_duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Duration of incoming RPCs")
                .with_boundaries(buckets.clone())
                .build(),
            client_duration: meter
                .f64_histogram("rpc.client.duration")
                .with_unit("ms")
                .with_description("Duration of outgoing RPCs, every attempt and wait included")
                .with_boundaries(buckets.clone())
                .build(),
            _server_active: meter
                .i64_observable_up_down_counter("rpc.server.active_requests")
                .with_unit("{request}")
                .with_description("Incoming RPCs in flight")
                .with_callback(|observer| observe_active(true, observer))
                .build(),
            _client_active: meter
                .i64_observable_up_down_counter("rpc.client.active_requests")
                .with_unit("{request}")
                .with_description("Outgoing RPCs in flight")
                .with_callback(|observer| observe_active(false, observer))
                .build(),
            retries: meter
                .u64_counter("sinew.client.retries")
                .with_unit("{attempt}")
                .with_description("Attempts made after the first")
                .build(),
            retries_throttled: meter
                .u64_counter("sinew.client.retries_throttled")
                .with_unit("{attempt}")
                .with_description("Retries the retry throttle refused")
                .build(),
            hedges: meter
                .u64_counter("sinew.client.hedges")
                .with_unit("{attempt}")
                .with_description("Hedged copies sent after the first")
                .build(),
            breaker_state: meter
                .i64_up_down_counter("sinew.client.breaker.state")
                .with_unit("{breaker}")
                .with_description("Circuit breakers in each state")
                .build(),
            breaker_transitions: meter
                .u64_counter("sinew.client.breaker.transitions")
                .with_unit("{transition}")
                .with_description("Circuit breaker state changes")
                .build(),
            breaker_refusals: meter
                .u64_counter("sinew.client.breaker.refusals")
                .with_unit("{request}")
                .with_description("Calls a circuit breaker refused")
                .build(),
            bulkhead_rejections: meter
                .u64_counter("sinew.client.bulkhead.rejections")
                .with_unit("{request}")
                .with_description("Calls the bulkhead refused")
                .build(),
            bulkhead_queue_time: meter
                .f64_histogram("sinew.client.bulkhead.queue_time")
                .with_unit("ms")
                .with_description("Time calls waited for a bulkhead slot")
                .with_boundaries(buckets)
                .build(),
            health_changes: meter
                .u64_counter("sinew.health.status_changes")
                .with_unit("{change}")
                .with_description("Health status changes")
                .build(),
        }
    })
}
