//! Trace context in gRPC metadata: W3C `traceparent`/`tracestate` and
//! baggage, with whatever propagator [`init`](super::init) installed.
//!
//! The scaffold extracts the context of every incoming call, and the
//! client injects the current one into every outgoing call, so that a
//! handler's calls are children of its incoming span with no code from the
//! user. The same two functions work on any `http::HeaderMap`: this is the
//! hook for carrying a trace across a message broker (put the headers on
//! the message when publishing, extract them when consuming).

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
};

/// Writes `context` into `headers` with the global propagator.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut HeaderInjector(headers));
    });
}

/// Reads a context from `headers` with the global propagator; the empty
/// context if there is none.
pub fn extract(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Writes propagation fields as HTTP headers.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // A field that is not a valid header is left out rather than sent
        // mangled.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Reads propagation fields from HTTP headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::{
        propagation::TextMapPropagator,
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    #[test]
    fn a_context_survives_a_round_trip_through_headers() {
        let propagator = TraceContextPropagator::new();
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let context = Context::new().with_remote_span_context(span.clone());
        let mut headers = HeaderMap::new();
        propagator.inject_context(&context, &mut HeaderInjector(&mut headers));
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = propagator.extract(&HeaderExtractor(&headers));
        assert_eq!(back.span().span_context().trace_id(), span.trace_id());
        assert_eq!(back.span().span_context().span_id(), span.span_id());
    }
}
