//! The span queue, bounded and counted.
//!
//! The SDK's `BatchSpanProcessor` already keeps spans off the request path:
//! ending a span puts it on a bounded channel with `try_send`, and a thread
//! of its own exports batches. When the channel is full it drops the span,
//! but its count of drops is private: it only appears in a log line at
//! shutdown. So sinew keeps its own count, exactly:
//!
//! 1. [`CountingProcessor`] sits in front of the batch processor and counts
//!    the spans it has handed over but the exporter has not yet received
//!    (`queued`).
//! 2. [`CountingExporter`] wraps the OTLP exporter; when the batch thread
//!    hands it a batch, the batch leaves the queue (`queued -= len`).
//! 3. A span that would take `queued` above the capacity is dropped by the
//!    counting processor and counted in `dropped`. Since the batch
//!    processor's channel has the same capacity and never holds more than
//!    `queued` spans, it never drops on its own, so `dropped` counts every
//!    span lost to a full queue.
//!
//! What `dropped` does not count: spans the sampler did not keep (they
//! never reach a processor), spans ended after shutdown, and spans in
//! batches the collector did not take; those are counted in `failed`
//! instead, whether the export failed or timed out, and so are the spans
//! a collector rejected from a batch it otherwise took (an OTLP partial
//! success, which the exporter reports through
//! [`record_rejected`](QueueCounters::record_rejected)).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanExporter, SpanProcessor},
};

/// What the span queue has lost, shared by the processor, the exporter and
/// the [`Telemetry`](super::Telemetry) guard.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    /// Spans handed to the batch processor, not yet to the exporter.
    queued: AtomicUsize,
    /// Spans dropped because the queue was full.
    dropped: AtomicU64,
    /// Spans in batches whose export failed.
    failed: AtomicU64,
    /// Whether the last export failed, so failures are logged once per
    /// outage rather than once per batch.
    failing: AtomicBool,
}

/// Counts spans dropped in front of a batch processor. See the module docs.
pub(crate) struct CountingProcessor<P> {
    inner: P,
    capacity: usize,
    counters: Arc<QueueCounters>,
}

/// Counts spans as they leave the queue, and failed exports.
pub(crate) struct CountingExporter<E> {
    inner: E,
    counters: Arc<QueueCounters>,
}

// === impl QueueCounters ===

impl QueueCounters {
    /// Spans dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans in batches the exporter could not deliver.
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counts spans a collector rejected from a batch it accepted.
    pub(crate) fn record_rejected(&self, spans: u64) {
        self.failed.fetch_add(spans, Ordering::Relaxed);
    }

    /// Takes a place in the queue, or counts a drop if there is none.
    fn admit(&self, capacity: usize) -> bool {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before < capacity {
            true
        } else {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives back a place the batch processor did not use.
    fn release(&self, count: usize) {
        // Saturating: a batch can only hold spans that were admitted, but
        // the count must never wrap whatever the processor does.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                Some(queued.saturating_sub(count))
            });
    }

    fn record_export(&self, spans: usize, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "sinew::telemetry", "span export recovered");
                }
            }
            Err(error) => {
                self.failed.fetch_add(spans as u64, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "sinew::telemetry",
                        %error,
                        spans,
                        "span export failed; spans are lost until it recovers \
                         (further failures are counted, not logged)",
                    );
                }
            }
        }
    }
}

// === impl CountingProcessor ===

impl<P: SpanProcessor> CountingProcessor<P> {
    /// Counts drops in front of `inner`, a batch processor whose queue
    /// holds `capacity` spans and whose exporter is a [`CountingExporter`]
    /// sharing `counters`.
    pub(crate) fn new(inner: P, capacity: usize, counters: Arc<QueueCounters>) -> Self {
        Self {
            inner,
            capacity,
            counters,
        }
    }
}

impl<P> fmt::Debug for CountingProcessor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingProcessor")
            .field("capacity", &self.capacity)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.counters.admit(self.capacity) {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

// === impl CountingExporter ===

impl<E> CountingExporter<E> {
    /// Counts what `inner` is handed and fails to deliver.
    pub(crate) fn new(inner: E, counters: Arc<QueueCounters>) -> Self {
        Self { inner, counters }
    }
}

impl<E: fmt::Debug> fmt::Debug for CountingExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingExporter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        // The batch has left the queue as soon as it is handed over, before
        // the (possibly slow) export runs, so new spans can take its place.
        let spans = batch.len();
        self.counters.release(spans);
        let export = self.inner.export(batch);
        let counters = Arc::clone(&self.counters);
        async move {
            let result = export.await;
            counters.record_export(spans, &result);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        mpsc::{Receiver, SyncSender, sync_channel},
    };

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::{
        error::OTelSdkError,
        trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
    };

    use super::*;

    /// An exporter scripted by the test: it reports each export, then
    /// waits for the test's go-ahead, then succeeds or fails.
    #[derive(Debug)]
    struct Scripted {
        started: SyncSender<usize>,
        proceed: Mutex<Receiver<bool>>,
    }

    impl SpanExporter for Scripted {
        fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
            let _ = self.started.send(batch.len());
            let ok = self.proceed.lock().unwrap().recv().unwrap_or(true);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(OTelSdkError::InternalFailure("collector is down".into()))
                }
            }
        }
    }

    struct Harness {
        provider: SdkTracerProvider,
        counters: Arc<QueueCounters>,
        started: Receiver<usize>,
        proceed: SyncSender<bool>,
    }

    /// A provider whose spans go through a counted queue of `capacity`,
    /// exported one at a time.
    fn harness(capacity: usize) -> Harness {
        let (started_tx, started) = sync_channel(64);
        let (proceed, proceed_rx) = sync_channel(64);
        let counters = Arc::new(QueueCounters::default());
        let exporter = CountingExporter::new(
            Scripted {
                started: started_tx,
                proceed: Mutex::new(proceed_rx),
            },
            Arc::clone(&counters),
        );
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(capacity)
                    .with_max_export_batch_size(1)
                    .with_scheduled_delay(Duration::from_secs(3600))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(CountingProcessor::new(
                batch,
                capacity,
                Arc::clone(&counters),
            ))
            .build();
        Harness {
            provider,
            counters,
            started,
            proceed,
        }
    }

    fn end_spans(provider: &SdkTracerProvider, count: usize) {
        let tracer = provider.tracer("test");
        for _ in 0..count {
            tracer.start("span").end();
        }
    }

    #[test]
    fn spans_beyond_a_full_queue_are_dropped_and_counted() {
        let h = harness(4);
        let wait = Duration::from_secs(10);

        // The first span goes straight to the exporter, which then stalls,
        // as it would on a slow collector.
        end_spans(&h.provider, 1);
        assert_eq!(h.started.recv_timeout(wait), Ok(1));

        // Four spans fill the queue; six more are dropped, and ending them
        // does not block.
        end_spans(&h.provider, 10);
        assert_eq!(h.counters.dropped(), 6);

        // Once the collector answers, the queue drains: nothing else lost.
        for _ in 0..5 {
            h.proceed.send(true).unwrap();
        }
        for _ in 0..4 {
            assert_eq!(h.started.recv_timeout(wait), Ok(1));
        }
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.dropped(), 6);
        assert_eq!(h.counters.failed(), 0);
        assert_eq!(h.counters.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_queue_with_room_drops_nothing() {
        let h = harness(8);
        for _ in 0..8 {
            h.proceed.send(true).unwrap();
        }
        for _ in 0..8 {
            end_spans(&h.provider, 1);
            assert_eq!(h.started.recv_timeout(Duration::from_secs(10)), Ok(1));
        }
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.dropped(), 0);
    }

    #[test]
    fn failed_exports_are_counted_apart_from_drops() {
        let h = harness(8);
        h.proceed.send(false).unwrap();
        h.proceed.send(true).unwrap();
        end_spans(&h.provider, 1);
        assert_eq!(h.started.recv_timeout(Duration::from_secs(10)), Ok(1));
        end_spans(&h.provider, 1);
        assert_eq!(h.started.recv_timeout(Duration::from_secs(10)), Ok(1));
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.failed(), 1);
        assert_eq!(h.counters.dropped(), 0);
    }
}
