//! One RPC's span and metrics, from its start to its status, on either
//! side. Shared by the server's and the client's tracing layers.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::SystemTime,
};

use opentelemetry::{
    Context as OtelContext, KeyValue,
    context::WithContext,
    trace::{SpanContext, SpanKind, Status, TraceContextExt, TraceFlags},
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use pin_project_lite::pin_project;
use sinew_core::body::{End, Guard, GuardBody};
use tokio::time::Instant;
use tonic::Code;

use super::{
    TraceSampler,
    method::{Durations, Gauge, Method, with_method},
    metrics::metrics,
    pipeline::{CallSpan, CallSpanData, Parts, STATUS_CODE, SpanParts, SpanQueue, StartAttributes},
};
use crate::BoxError;

/// Set by [`init`](super::init): while false, nothing is recorded and a
/// call costs one atomic load here.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How calls are recorded, set once by [`init`](super::init).
static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// The sampler the tracer provider was built with, and the span queue its
/// spans go to.
#[derive(Debug)]
struct Recorder {
    sampler: TraceSampler,
    sdk_sampler: Sampler,
    /// `None` when spans are not exported: calls then get span contexts
    /// (for the logs and the next hop) but no spans. Borrowed for the
    /// life of the process, so that a span holds it without touching a
    /// reference count every thread shares.
    queue: Option<&'static SpanQueue>,
}

/// Turns recording on (telemetry is installed): with `sampler`, the
/// provider's, and sending spans to `queue`.
pub(crate) fn enable(sampler: TraceSampler, queue: Option<Arc<SpanQueue>>) {
    let _ = RECORDER.set(Recorder {
        sampler,
        sdk_sampler: sampler.to_sdk(),
        // Kept for good: telemetry is installed once per process.
        queue: queue.map(|queue| &**Box::leak(Box::new(queue))),
    });
    ENABLED.store(true, Ordering::Release);
}

/// Whether telemetry is installed.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `rpc.grpc.status_code` for `code`.
pub(crate) fn status_attribute(code: Code) -> KeyValue {
    KeyValue::new(STATUS_CODE, code as i64)
}

/// Which side of the call this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// A call in progress: its OpenTelemetry span (in a context), when it
/// started, what to record it under.
///
/// The span is sinew's own [`CallSpan`], made directly rather than through
/// `tracing` or the SDK's tracer: one span per call, without the `tracing`
/// registry's bookkeeping or the SDK's span machinery in between.
#[derive(Debug)]
pub struct CallRecord {
    side: Side,
    cx: OtelContext,
    start: Instant,
    /// When its span started, by the wall clock, if it has one to record;
    /// the span ends that much later than it started by the monotonic
    /// clock. `None` for a call that only carries a span context, which
    /// has nothing to end.
    span_start: Option<SystemTime>,
    /// What the duration histogram is recorded with.
    durations: DurationAttributes,
    active: &'static Gauge,
    done: bool,
}

/// Where a call's duration is recorded.
#[derive(Debug)]
enum DurationAttributes {
    /// A registered method's histograms, bound per status code.
    Registered(&'static Durations),
    /// A path past the registry's bound: its own RPC attributes, then the
    /// status code, filled in when the call ends.
    Own(Box<[KeyValue; 4]>),
}

impl CallRecord {
    /// Starts recording a call to `path` as a child of `parent`; `extra`
    /// gives the attributes its span starts with beside the RPC ones, and
    /// is only called for a span that is recorded. `None` if telemetry is
    /// not installed.
    pub(crate) fn start(
        side: Side,
        path: &str,
        parent: &OtelContext,
        extra: impl FnOnce() -> Option<Arc<StartAttributes>>,
    ) -> Option<Self> {
        let recorder = RECORDER.get()?;
        // A span the sampler is sure to leave out (with head sampling,
        // most spans) is not built at all: see `unsampled_child`.
        let dropped = recorder
            .sampler
            .surely_drops_child_of(parent.span().span_context());
        let (cx, span_start, durations, active) = with_method(path, |method| {
            let (cx, span_start) = if dropped {
                (
                    parent.with_remote_span_context(unsampled_child(parent)),
                    None,
                )
            } else {
                recorder.child(side, parent, method, extra)
            };
            let durations = match method.durations {
                Some(durations) => DurationAttributes::Registered(durations),
                None => {
                    let [system, service, method] = method.attributes.clone();
                    DurationAttributes::Own(Box::new([
                        system,
                        service,
                        method,
                        status_attribute(Code::Ok),
                    ]))
                }
            };
            (
                cx,
                span_start,
                durations,
                method.active.side(side == Side::Server),
            )
        });
        active.enter();
        Some(Self {
            side,
            cx,
            start: Instant::now(),
            span_start,
            durations,
            active,
            done: false,
        })
    }

    /// The context whose span is this call's: attach it while the call
    /// runs, and inject it into outgoing headers.
    pub(crate) fn context(&self) -> &OtelContext {
        &self.cx
    }

    /// The call ended with `code`: record it on the span, end the span,
    /// and record the metrics. Only the first call counts.
    pub(crate) fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        if let Some(span_start) = self.span_start {
            let span = self.cx.span();
            span.set_attribute(status_attribute(code));
            if is_error(self.side, code) {
                span.set_status(Status::error(code.description()));
            }
            span.end_with_timestamp(span_start + elapsed);
        }
        let elapsed = elapsed.as_secs_f64() * 1000.0;
        let server = self.side == Side::Server;
        match &mut self.durations {
            DurationAttributes::Registered(durations) => {
                durations.histogram(server, code).record(elapsed);
            }
            DurationAttributes::Own(own) => {
                own[3] = status_attribute(code);
                let duration = if server {
                    &metrics().server_duration
                } else {
                    &metrics().client_duration
                };
                duration.record(elapsed, &own[..]);
            }
        }
        self.active.exit();
    }
}

// === impl Recorder ===

impl Recorder {
    /// The context of a call to `method` on `side`, a child of `parent`:
    /// with a [`CallSpan`] if the sampler keeps it and spans are exported,
    /// and then when the span started, else with its span context alone.
    /// `extra` gives the attributes the span starts with.
    fn child(
        &self,
        side: Side,
        parent: &OtelContext,
        method: &Method,
        extra: impl FnOnce() -> Option<Arc<StartAttributes>>,
    ) -> (OtelContext, Option<SystemTime>) {
        if parent.is_telemetry_suppressed() {
            // As the SDK: no span, and nothing to pass on.
            let empty = parent.with_remote_span_context(SpanContext::empty_context());
            return (empty, None);
        }
        let kind = match side {
            Side::Server => SpanKind::Server,
            Side::Client => SpanKind::Client,
        };
        let parent_span = parent.span();
        // As the SDK: a parent without a valid context is no parent.
        let empty = SpanContext::empty_context();
        let parent_context = Some(parent_span.span_context())
            .filter(|context| context.is_valid())
            .unwrap_or(&empty);
        let ids = RandomIdGenerator::default();
        let trace_id = if parent_context.is_valid() {
            parent_context.trace_id()
        } else {
            ids.new_trace_id()
        };
        let result = self.sdk_sampler.should_sample(
            Some(parent),
            trace_id,
            &method.name,
            &kind,
            &method.attributes,
            &[],
        );
        // A span the sampler would record without sampling it is never
        // exported; like a dropped one, it keeps only its context.
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        let flags = match result.decision {
            SamplingDecision::Drop => TraceFlags::default(),
            _ => parent_context.trace_flags().with_sampled(sampled),
        };
        let context = SpanContext::new(
            trace_id,
            ids.new_span_id(),
            flags,
            false,
            result.trace_state,
        );
        let Some(queue) = self.queue.filter(|_| sampled) else {
            return (parent.with_remote_span_context(context), None);
        };
        let parts = match method.span {
            Some(parts) => Parts::Shared(parts),
            None => Parts::Own(Box::new(SpanParts::new(
                method.name.clone(),
                method.attributes.clone(),
            ))),
        };
        let data = CallSpanData::start(context, parent_context, kind, parts, extra());
        let start = data.start;
        (parent.with_span(CallSpan::new(data, queue)), Some(start))
    }
}

/// The span context the SDK gives a span its sampler drops, made without
/// the SDK's span around it: the parent's trace (or a new one), a new span
/// id, unsampled, the parent's trace state. Carried in the call's context
/// as a bare span context (no span object, no lock), it still reaches the
/// next hop in `traceparent`, and the logs, so the trace stays whole
/// wherever it is sampled further down. Under telemetry suppression, the
/// empty context, as the SDK gives.
fn unsampled_child(parent: &OtelContext) -> SpanContext {
    if parent.is_telemetry_suppressed() {
        return SpanContext::empty_context();
    }
    let parent = parent.span();
    let parent = parent.span_context();
    let ids = RandomIdGenerator::default();
    let trace_id = if parent.is_valid() {
        parent.trace_id()
    } else {
        ids.new_trace_id()
    };
    SpanContext::new(
        trace_id,
        ids.new_span_id(),
        TraceFlags::default(),
        false,
        parent.trace_state().clone(),
    )
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        // Dropped before a status: the caller went away.
        self.finish(Code::Cancelled);
    }
}

/// Whether `code` marks the span as failed, per the RPC semantic
/// conventions: on a client, any code but OK; on a server, only codes that
/// say the server failed (not the caller's mistakes).
fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    }
}

/// Records the end of a response: at once when its status is in the
/// headers, else when the body's trailers arrive.
pub(crate) fn finish_on_response<B>(
    mut record: CallRecord,
    response: http::Response<B>,
) -> http::Response<RecordedBody<B>> {
    let record = match crate::headers::grpc_status(response.headers()) {
        Some(code) => {
            record.finish(code);
            None
        }
        None => Some(Box::new(record)),
    };
    response.map(|body| RecordedBody::new(body, record))
}

/// The code a failed call (no response at all) is recorded with.
pub(crate) fn code_of_error(error: &BoxError) -> Code {
    match error.downcast_ref::<tonic::Status>() {
        Some(status) => status.code(),
        None => Code::Unavailable,
    }
}

/// The response body of a traced call: it records the call's status from
/// its trailers. A call whose status came in the headers, or that is not
/// traced, has nothing left to record. The default, an empty body, is what
/// a server answers a failed call with (a status, trailers only) when no
/// handler made a body.
///
/// The record is boxed, so that the body is small where there is nothing
/// to record (it is moved out through every layer above).
pub type RecordedBody<B> = GuardBody<B, Box<CallRecord>>;

/// A call whose status comes after its headers ends with its body.
impl Guard for Box<CallRecord> {
    fn finish(mut self, end: End<'_>) {
        let code = match end {
            End::Trailers(trailers) => {
                crate::headers::grpc_status(trailers).unwrap_or(Code::Unknown)
            }
            End::Error(_) => Code::Unavailable,
            // The body ended without trailers: gRPC calls that UNKNOWN.
            End::Stream => Code::Unknown,
        };
        CallRecord::finish(&mut self, code);
    }
}

pin_project! {
    /// Response future of the server's and the client's tracing layers
    /// ([`ServerTrace`](crate::trace::server::ServerTrace),
    /// [`ClientTrace`](crate::trace::client::ClientTrace)): records the
    /// call's status when its response (or failure) arrives.
    pub struct TracedFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Off { #[pin] inner: F },
        Recorded { #[pin] inner: WithContext<F>, record: Option<CallRecord> },
    }
}

impl<F> TracedFuture<F> {
    pub(crate) fn off(inner: F) -> Self {
        Self {
            state: State::Off { inner },
        }
    }

    pub(crate) fn recorded(inner: WithContext<F>, record: CallRecord) -> Self {
        Self {
            state: State::Recorded {
                inner,
                record: Some(record),
            },
        }
    }
}

impl<F, B, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<RecordedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let unrecorded = |response: http::Response<B>| response.map(RecordedBody::unguarded);
        match self.project().state.project() {
            StateProj::Off { inner } => inner
                .poll(cx)
                .map(|result| result.map(unrecorded).map_err(Into::into)),
            StateProj::Recorded { inner, record } => {
                let result = match inner.poll(cx) {
                    Poll::Ready(result) => result.map_err(Into::into),
                    Poll::Pending => return Poll::Pending,
                };
                let Some(mut record) = record.take() else {
                    return Poll::Ready(result.map(unrecorded));
                };
                Poll::Ready(match result {
                    Ok(response) => Ok(finish_on_response(record, response)),
                    Err(error) => {
                        record.finish(code_of_error(&error));
                        Err(error)
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId, TraceState, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

    use super::*;

    fn parent(sampled: bool) -> OtelContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let state = TraceState::from_key_value([("vendor", "value")]).unwrap();
        OtelContext::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            flags,
            true,
            state,
        ))
    }

    /// What the SDK itself makes of a span its sampler drops.
    fn dropped_by_sdk(sampler: Sampler, parent: &OtelContext) -> SpanContext {
        let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
        let span = provider.tracer("test").start_with_context("child", parent);
        opentelemetry::trace::Span::span_context(&span).clone()
    }

    #[test]
    fn an_unsampled_child_is_what_the_sdk_would_make() {
        for (sampler, parent) in [
            (
                Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
                parent(false),
            ),
            (Sampler::AlwaysOff, parent(true)),
            (Sampler::AlwaysOff, OtelContext::new()),
        ] {
            let ours = unsampled_child(&parent);
            let sdk = dropped_by_sdk(sampler, &parent);
            assert!(ours.is_valid());
            assert_eq!(ours.trace_flags(), sdk.trace_flags());
            assert_eq!(ours.is_remote(), sdk.is_remote());
            assert_eq!(ours.trace_state(), sdk.trace_state());
            assert_ne!(ours.span_id(), parent.span().span_context().span_id());
            if parent.has_active_span() {
                assert_eq!(ours.trace_id(), sdk.trace_id());
                assert_eq!(ours.trace_id(), TraceId::from(7));
            } else {
                assert_ne!(ours.trace_id(), sdk.trace_id(), "a new trace each");
            }
        }
        assert!(!unsampled_child(&parent(true).with_telemetry_suppressed()).is_valid());
    }

    fn recorder(sampler: TraceSampler, queue: Option<Arc<SpanQueue>>) -> Recorder {
        Recorder {
            sampler,
            sdk_sampler: sampler.to_sdk(),
            queue: queue.map(|queue| &**Box::leak(Box::new(queue))),
        }
    }

    fn child_of(recorder: &Recorder, parent: &OtelContext) -> OtelContext {
        let method = super::super::method::method("/pkg.Service/Child");
        let (cx, span_start) = recorder.child(Side::Client, parent, &method, || {
            Some(StartAttributes::new(vec![KeyValue::new(
                "server.address",
                "10.0.0.1",
            )]))
        });
        // A start time exactly when there is a span to end.
        assert_eq!(span_start.is_some(), cx.span().is_recording());
        cx
    }

    #[test]
    fn a_sampled_call_records_its_own_span_when_spans_are_exported() {
        use crate::pipeline::testing::{Finished, name};

        let (queue, exported) = crate::pipeline::testing::recording_queue();
        let recorder = recorder(TraceSampler::ParentBasedAlwaysOn, Some(queue));
        let cx = child_of(&recorder, &parent(true));
        let span = cx.span();
        assert!(span.is_recording());
        let context = span.span_context().clone();
        assert_eq!(context.trace_id(), TraceId::from(7));
        assert!(context.is_sampled() && !context.is_remote());
        assert_eq!(context.trace_state().get("vendor"), Some("value"));
        span.end();

        let spans = exported();
        let [Finished::Call(data)] = &spans[..] else {
            panic!("{spans:?}")
        };
        assert_eq!(name(data), "pkg.Service/Child");
        assert_eq!(data.context.span_id(), context.span_id());
        assert_eq!(data.parent_span_id, SpanId::from(9));
        assert!(data.parent_is_remote);
        assert_eq!(data.kind, SpanKind::Client);
        let start = data.start_attributes.as_ref().expect("start attributes");
        assert_eq!(
            &start.attributes[..],
            [KeyValue::new("server.address", "10.0.0.1")]
        );
        assert_eq!(data.parts.rpc[2], KeyValue::new("rpc.method", "Child"));

        // A root: a new trace, no parent.
        let root = child_of(&recorder, &OtelContext::new());
        assert!(root.span().span_context().is_valid());
        root.span().end();
        let spans = exported();
        let [Finished::Call(data)] = &spans[..] else {
            panic!("{spans:?}")
        };
        assert_eq!(data.parent_span_id, SpanId::INVALID);
        assert_ne!(data.context.trace_id(), TraceId::from(7));
    }

    #[test]
    fn without_export_or_sampling_a_call_keeps_only_its_context() {
        // Sampled but not exported: the flag still goes on to the next hop.
        let unexported = recorder(TraceSampler::ParentBasedAlwaysOn, None);
        let cx = child_of(&unexported, &parent(true));
        assert!(!cx.span().is_recording());
        assert!(cx.span().span_context().is_sampled());
        assert_eq!(cx.span().span_context().trace_id(), TraceId::from(7));

        // The sampler's no: a new span id, unsampled, in the same trace.
        let (queue, exported) = crate::pipeline::testing::recording_queue();
        let ratio = recorder(TraceSampler::TraceIdRatio(0.0), Some(queue));
        let cx = child_of(&ratio, &parent(true));
        let context = cx.span().span_context().clone();
        assert!(context.is_valid() && !context.is_sampled());
        assert_ne!(context.span_id(), SpanId::from(9));
        cx.span().end();
        assert!(exported().is_empty());

        // Suppressed: nothing at all, as the SDK does.
        let cx = child_of(&unexported, &parent(true).with_telemetry_suppressed());
        assert!(!cx.span().span_context().is_valid());
    }
}
