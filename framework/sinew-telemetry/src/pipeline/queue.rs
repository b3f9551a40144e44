//! The span queue: bounded, counted, exported in batches by a thread of
//! its own.
//!
//! Finished spans of both kinds wait here: sinew's call spans (see
//! [`span`](super::span)), handed over as they end, and the SDK's, from
//! the tracer provider through [`QueueProcessor`] (a handler's `tracing`
//! spans, anything made with the global tracer). Ending a span takes an
//! uncontended lock and pushes it; it never blocks on the export and never
//! fails.
//!
//! The thread (`sinew-spans`) takes every span queued and exports them a
//! batch at a time: when a batch is full, when the schedule delay has
//! passed since the last export, on a flush, and at shutdown, when it
//! exports everything left and stops. Spans taken no longer count against
//! the queue's capacity, so while an export is slow at most twice the
//! capacity is held: the queue's, and the spans being exported. A span that finds the queue full is dropped
//! and counted in [`QueueCounters::dropped`], so the count is exact: the
//! queue never loses a span any other way. Spans in batches the collector
//! did not take are counted in `failed` instead, whether the export failed
//! or timed out, and so are the spans a collector rejected from a batch it
//! otherwise took (an OTLP partial success, reported through
//! [`record_rejected`](QueueCounters::record_rejected)). Spans the sampler
//! left out never get here, and spans ended after the shutdown are not
//! counted.
//!
//! The SDK's `BatchSpanProcessor` does the same for the SDK's spans alone,
//! but keeps its count of drops to itself; one queue for both kinds also
//! means one batch, one export and one thread.

use std::{
    fmt,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanLimits, SpanProcessor},
};

use super::span::CallSpanData;
use crate::BoxError;

/// How long a flush through the SDK (`force_flush` on the tracer
/// provider, which has no bound of its own) waits at most.
const SDK_FLUSH_LIMIT: Duration = Duration::from_secs(30);

/// A finished span.
#[derive(Debug, Clone)]
pub(crate) enum Finished {
    /// One of sinew's call spans.
    Call(CallSpanData),
    /// A span of the SDK's.
    Sdk(SpanData),
}

/// What the queue's thread exports batches with.
pub(crate) trait Export: Send + 'static {
    /// Exports `batch`, blocking until it is delivered or has failed.
    fn export(&mut self, batch: &[Finished]) -> Result<(), BoxError>;

    /// Called once, after the last export.
    fn shutdown(&mut self) {}
}

/// What the span queue has lost, shared by the queue, the exporter and the
/// [`Telemetry`](super::Telemetry) guard.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    /// Spans dropped because the queue was full.
    dropped: AtomicU64,
    /// Spans in batches whose export failed.
    failed: AtomicU64,
    /// Whether the last export failed, so failures are logged once per
    /// outage rather than once per batch.
    failing: AtomicBool,
}

/// Sizes and timing of a [`SpanQueue`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueSettings {
    /// Spans waiting at most; beyond, dropped.
    pub(crate) capacity: usize,
    /// Spans per export at most.
    pub(crate) batch_size: usize,
    /// Between exports of a batch that is not full.
    pub(crate) delay: Duration,
    /// What each span ended into the queue may hold.
    pub(crate) span_limits: SpanLimits,
}

/// The queue. See the module docs.
pub(crate) struct SpanQueue {
    state: Mutex<State>,
    /// Wakes the export thread.
    work: Condvar,
    /// Wakes those waiting for a flush or the shutdown.
    progress: Condvar,
    settings: QueueSettings,
    counters: Arc<QueueCounters>,
}

struct State {
    spans: Vec<Finished>,
    /// Flushes asked for so far, and done: a flush waits for its number.
    flushes_asked: u64,
    flushes_done: u64,
    /// Whether an export failed among those the last flush waited for.
    flush_failed: bool,
    shutting_down: bool,
    stopped: bool,
}

/// A flush or shutdown of the queue did not finish.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("the span queue did not finish exporting within {0:?}")]
    TimedOut(Duration),
    #[error("spans were lost: the collector did not take them")]
    ExportFailed,
    #[error("the span queue is already shut down")]
    AlreadyShutDown,
}

/// Hands the SDK's finished spans to a [`SpanQueue`].
#[derive(Debug)]
pub(crate) struct QueueProcessor(Arc<SpanQueue>);

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

    fn record_export(&self, spans: usize, result: &Result<(), BoxError>) {
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

// === impl SpanQueue ===

impl SpanQueue {
    /// Starts a queue exporting with `exporter` on a thread of its own.
    pub(crate) fn start(
        settings: QueueSettings,
        counters: Arc<QueueCounters>,
        exporter: impl Export,
    ) -> std::io::Result<Arc<Self>> {
        let queue = Arc::new(Self {
            state: Mutex::new(State {
                spans: Vec::new(),
                flushes_asked: 0,
                flushes_done: 0,
                flush_failed: false,
                shutting_down: false,
                stopped: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            settings: QueueSettings {
                capacity: settings.capacity.max(1),
                batch_size: settings.batch_size.max(1),
                ..settings
            },
            counters,
        });
        let thread_queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("sinew-spans".to_owned())
            .spawn(move || thread_queue.run(exporter))?;
        Ok(queue)
    }

    /// What a span ended into this queue may hold.
    pub(crate) fn span_limits(&self) -> &SpanLimits {
        &self.settings.span_limits
    }

    /// Queues `span`, or drops and counts it if the queue is full.
    pub(crate) fn push(&self, span: Finished) {
        let mut state = self.lock();
        if state.shutting_down {
            return;
        }
        if state.spans.len() >= self.settings.capacity {
            drop(state);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.spans.push(span);
        let full = state.spans.len() == self.settings.batch_size;
        drop(state);
        if full {
            self.work.notify_one();
        }
    }

    /// Exports every span queued before the call, waiting at most `limit`.
    /// Fails if an export it waited for failed. After the shutdown there
    /// is nothing left to export.
    pub(crate) fn flush(&self, limit: Duration) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.stopped {
            return Ok(());
        }
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.work.notify_one();
        let state = self.wait(state, limit, |state| {
            state.flushes_done >= ticket || state.stopped
        })?;
        if state.flush_failed {
            return Err(QueueError::ExportFailed);
        }
        Ok(())
    }

    /// Exports what is left and stops the thread, waiting at most `limit`.
    /// Spans ended afterwards are not recorded.
    pub(crate) fn shutdown(&self, limit: Duration) -> Result<(), QueueError> {
        let mut state = self.lock();
        if state.shutting_down {
            return Err(QueueError::AlreadyShutDown);
        }
        state.shutting_down = true;
        self.work.notify_one();
        self.wait(state, limit, |state| state.stopped).map(drop)
    }

    /// Waits at most `limit` for `done`, and returns the state it saw.
    fn wait<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        limit: Duration,
        done: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>, QueueError> {
        let deadline = Instant::now() + limit;
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QueueError::TimedOut(limit));
            }
            state = self
                .progress
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics under the lock but a push's allocation.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The export thread.
    fn run(&self, mut exporter: impl Export) {
        let QueueSettings {
            batch_size, delay, ..
        } = self.settings;
        let mut batch = Vec::new();
        let mut next_export = Instant::now() + delay;
        // Whether an export failed since the flushes last caught up.
        let mut failed = false;
        loop {
            let mut state = self.lock();
            loop {
                let asked = state.flushes_asked > state.flushes_done;
                if asked || state.shutting_down || state.spans.len() >= batch_size {
                    break;
                }
                let now = Instant::now();
                if now >= next_export {
                    break;
                }
                state = self
                    .work
                    .wait_timeout(state, next_export - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            // Everything queued is taken, leaving the queue room for as
            // many again, and exported a batch at a time. The flushes asked
            // for so far are done once it is.
            let covers = state.flushes_asked;
            std::mem::swap(&mut batch, &mut state.spans);
            drop(state);

            for spans in batch.chunks(batch_size) {
                let result = exporter.export(spans);
                failed |= result.is_err();
                self.counters.record_export(spans.len(), &result);
            }
            batch.clear();
            next_export = Instant::now() + delay;

            let mut state = self.lock();
            state.flushes_done = state.flushes_done.max(covers);
            state.flush_failed = std::mem::take(&mut failed);
            self.progress.notify_all();
            if state.shutting_down && state.spans.is_empty() {
                drop(state);
                exporter.shutdown();
                self.lock().stopped = true;
                self.progress.notify_all();
                return;
            }
        }
    }
}

impl fmt::Debug for SpanQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanQueue")
            .field("settings", &self.settings)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

// === impl QueueError ===

impl QueueError {
    pub(crate) fn into_sdk(self) -> OTelSdkError {
        match self {
            Self::TimedOut(limit) => OTelSdkError::Timeout(limit),
            error @ Self::ExportFailed => OTelSdkError::InternalFailure(error.to_string()),
            Self::AlreadyShutDown => OTelSdkError::AlreadyShutdown,
        }
    }
}

// === impl QueueProcessor ===

impl QueueProcessor {
    pub(crate) fn new(queue: Arc<SpanQueue>) -> Self {
        Self(queue)
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        // As the SDK's batch processor: only sampled spans are exported.
        if span.span_context.is_sampled() {
            self.0.push(Finished::Sdk(span));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.flush(SDK_FLUSH_LIMIT).map_err(QueueError::into_sdk)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown(timeout).map_err(QueueError::into_sdk)
    }

    fn set_resource(&mut self, _resource: &Resource) {
        // The exporter was built with the same resource as the provider.
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// Keeps every batch it is given.
    struct Recording(Arc<Mutex<Vec<Finished>>>);

    impl Export for Recording {
        fn export(&mut self, batch: &[Finished]) -> Result<(), BoxError> {
            self.0.lock().unwrap().extend(batch.iter().cloned());
            Ok(())
        }
    }

    /// A queue that keeps what it exports, and a function that flushes it
    /// and returns everything exported so far.
    pub(crate) fn recording_queue() -> (Arc<SpanQueue>, impl Fn() -> Vec<Finished>) {
        recording_queue_with(SpanLimits::default())
    }

    /// A [`recording_queue`] whose spans have these limits.
    pub(crate) fn recording_queue_with(
        span_limits: SpanLimits,
    ) -> (Arc<SpanQueue>, impl Fn() -> Vec<Finished>) {
        let exported = Arc::new(Mutex::new(Vec::new()));
        let queue = SpanQueue::start(
            QueueSettings {
                span_limits,
                ..settings(64, 64)
            },
            Arc::default(),
            Recording(Arc::clone(&exported)),
        )
        .unwrap();
        let flushed = Arc::clone(&queue);
        (queue, move || {
            flushed.flush(WAIT).unwrap();
            std::mem::take(&mut *exported.lock().unwrap())
        })
    }

    fn settings(capacity: usize, batch_size: usize) -> QueueSettings {
        QueueSettings {
            capacity,
            batch_size,
            delay: Duration::from_secs(3600),
            span_limits: SpanLimits::default(),
        }
    }

    /// An exporter scripted by the test: it reports each batch's size,
    /// then waits for the test's go-ahead, then succeeds or fails.
    struct Scripted {
        started: SyncSender<usize>,
        proceed: Receiver<bool>,
    }

    impl Export for Scripted {
        fn export(&mut self, batch: &[Finished]) -> Result<(), BoxError> {
            let _ = self.started.send(batch.len());
            if self.proceed.recv().unwrap_or(true) {
                Ok(())
            } else {
                Err("collector is down".into())
            }
        }
    }

    struct Harness {
        queue: Arc<SpanQueue>,
        provider: SdkTracerProvider,
        counters: Arc<QueueCounters>,
        started: Receiver<usize>,
        proceed: SyncSender<bool>,
    }

    /// A provider whose spans go through a queue of `capacity`, exported
    /// `batch_size` at a time by a scripted exporter.
    fn harness(capacity: usize, batch_size: usize) -> Harness {
        let (started_tx, started) = sync_channel(64);
        let (proceed, proceed_rx) = sync_channel(64);
        let counters = Arc::new(QueueCounters::default());
        let queue = SpanQueue::start(
            settings(capacity, batch_size),
            Arc::clone(&counters),
            Scripted {
                started: started_tx,
                proceed: proceed_rx,
            },
        )
        .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::new(Arc::clone(&queue)))
            .build();
        Harness {
            queue,
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
        let h = harness(4, 1);

        // The first span goes straight to the exporter, which then stalls,
        // as it would on a slow collector.
        end_spans(&h.provider, 1);
        assert_eq!(h.started.recv_timeout(WAIT), Ok(1));

        // Four spans fill the queue; six more are dropped, and ending them
        // does not block.
        end_spans(&h.provider, 10);
        assert_eq!(h.counters.dropped(), 6);

        // Once the collector answers, the queue drains: nothing else lost.
        for _ in 0..5 {
            h.proceed.send(true).unwrap();
        }
        for _ in 0..4 {
            assert_eq!(h.started.recv_timeout(WAIT), Ok(1));
        }
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.dropped(), 6);
        assert_eq!(h.counters.failed(), 0);
    }

    #[test]
    fn a_full_batch_goes_at_once_and_the_rest_on_a_flush() {
        let h = harness(64, 3);
        for _ in 0..8 {
            h.proceed.send(true).unwrap();
        }
        // A full batch goes without waiting for the schedule delay (an
        // hour). The next spans are ended only once the thread has taken
        // the batch, so each batch is exactly the spans ended for it (the
        // thread takes everything queued when it wakes).
        for _ in 0..2 {
            end_spans(&h.provider, 3);
            assert_eq!(h.started.recv_timeout(WAIT), Ok(3), "a full batch goes");
        }
        // Less than a batch waits for the delay, or for a flush, which
        // returns once it is exported.
        end_spans(&h.provider, 1);
        h.queue.flush(WAIT).unwrap();
        assert_eq!(h.started.try_recv(), Ok(1));
        // Nothing queued: a flush has nothing to export.
        h.queue.flush(WAIT).unwrap();
        assert!(h.started.try_recv().is_err());
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.dropped(), 0);
    }

    #[test]
    fn more_than_a_batch_queued_goes_a_batch_at_a_time() {
        // The exporter stalls on the first span, so seven more queue up
        // behind it; once it answers, the thread takes all seven and sends
        // them as batches of three at most.
        let h = harness(64, 3);
        end_spans(&h.provider, 3);
        assert_eq!(h.started.recv_timeout(WAIT), Ok(3));
        end_spans(&h.provider, 7);
        for _ in 0..4 {
            h.proceed.send(true).unwrap();
        }
        let batches: Vec<usize> = (0..3)
            .map(|_| h.started.recv_timeout(WAIT).expect("a batch goes"))
            .collect();
        assert_eq!(batches, [3, 3, 1]);
        h.queue.flush(WAIT).unwrap();
        assert!(h.started.try_recv().is_err());
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.dropped(), 0);
    }

    #[test]
    fn failed_exports_are_counted_apart_from_drops() {
        let h = harness(8, 8);
        h.proceed.send(false).unwrap();
        h.proceed.send(true).unwrap();
        end_spans(&h.provider, 2);
        assert!(matches!(h.queue.flush(WAIT), Err(QueueError::ExportFailed)));
        assert_eq!(h.started.try_recv(), Ok(2));
        end_spans(&h.provider, 1);
        h.queue.flush(WAIT).unwrap();
        assert_eq!(h.started.try_recv(), Ok(1));
        h.provider.shutdown().unwrap();
        assert_eq!(h.counters.failed(), 2);
        assert_eq!(h.counters.dropped(), 0);
    }

    #[test]
    fn a_stalled_export_bounds_flush_and_shutdown() {
        let h = harness(8, 1);
        end_spans(&h.provider, 2);
        assert_eq!(h.started.recv_timeout(WAIT), Ok(1));
        let short = Duration::from_millis(50);
        assert!(matches!(h.queue.flush(short), Err(QueueError::TimedOut(_))));
        assert!(matches!(
            h.queue.shutdown(short),
            Err(QueueError::TimedOut(_))
        ));
        // Let it go: the shutdown exports the rest, then the thread stops.
        h.proceed.send(true).unwrap();
        h.proceed.send(true).unwrap();
        assert_eq!(h.started.recv_timeout(WAIT), Ok(1));
        h.queue.flush(WAIT).unwrap();
        assert!(h.queue.lock().stopped);
        assert!(matches!(
            h.queue.shutdown(WAIT),
            Err(QueueError::AlreadyShutDown)
        ));
        // Ended after the shutdown: not recorded, not counted as dropped.
        end_spans(&h.provider, 1);
        assert!(h.queue.lock().spans.is_empty());
        assert_eq!(h.counters.dropped(), 0);
    }

    #[test]
    fn the_sdks_spans_go_through_the_queue() {
        let (queue, exported) = recording_queue();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor::new(queue))
            .build();
        provider.tracer("test").start("kept").end();
        let spans = exported();
        assert!(
            matches!(&spans[..], [Finished::Sdk(span)] if span.name == "kept"),
            "{spans:?}"
        );
    }
}
