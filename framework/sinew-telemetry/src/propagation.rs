//! Trace context in gRPC metadata: W3C Trace Context (`traceparent`,
//! `tracestate`) and W3C Baggage (`baggage`).
//!
//! The scaffold extracts the context of every incoming call, and the
//! client injects the current one into every outgoing call, so that a
//! handler's calls are children of its incoming span with no code from the
//! user. The same two functions work on any `http::HeaderMap`: this is the
//! hook for carrying a trace across a message broker (put the headers on
//! the message when publishing, extract them when consuming).
//!
//! These two headers are sinew's wire format whatever global propagator is
//! installed, and `traceparent` is written and read here directly: it is
//! on every call, and going through the generic propagator API costs
//! several string allocations per call each way. `tracestate` is only sent
//! when it has entries, and baggage goes through the SDK's
//! `BaggagePropagator` only when there is some.

use std::str::FromStr as _;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    baggage::BaggageExt as _,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::propagation::BaggagePropagator;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The length of a version 00 `traceparent`:
/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
const TRACEPARENT_LEN: usize = 55;

/// Writes `context`'s span (if it has a valid one) and baggage (if any)
/// into `headers`.
pub fn inject(context: &Context, headers: &mut HeaderMap) {
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        headers.insert(TRACEPARENT, traceparent(span_context));
        let state = span_context.trace_state().header();
        if !state.is_empty()
            && let Ok(value) = HeaderValue::from_str(&state)
        {
            headers.insert(TRACESTATE, value);
        }
    }
    if !context.baggage().is_empty() {
        BaggagePropagator::new().inject_context(context, &mut HeaderInjector(headers));
    }
}

/// Reads the caller's span and baggage from `headers`, on top of the
/// current context. A missing or malformed `traceparent` leaves the span
/// out: whatever is recorded next is the root of a new trace.
pub fn extract(headers: &HeaderMap) -> Context {
    // One pass over the headers rather than a lookup for each of the
    // three: a lookup hashes the name, and a call has only a few headers.
    // The first of each counts, as with `HeaderMap::get`.
    let (mut parent, mut state, mut baggage) = (None, None, false);
    for (name, value) in headers {
        if *name == TRACEPARENT {
            parent = parent.or(Some(value));
        } else if *name == TRACESTATE {
            state = state.or(Some(value));
        } else if *name == BAGGAGE {
            baggage = true;
        }
    }
    let mut context = Context::current();
    if let Some((trace_id, span_id, flags)) =
        parent.and_then(|value| parse_traceparent(value.as_bytes()))
    {
        let state = state
            .and_then(|value| value.to_str().ok())
            .and_then(|value| TraceState::from_str(value).ok())
            .unwrap_or_default();
        context = context
            .with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state));
    }
    if baggage {
        context =
            BaggagePropagator::new().extract_with_context(&context, &HeaderExtractor(headers));
    }
    context
}

/// The `traceparent` of `span`: version 00, with only the sampled flag.
fn traceparent(span: &SpanContext) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; TRACEPARENT_LEN];
    out[..3].copy_from_slice(b"00-");
    let mut at = 3;
    for byte in span.trace_id().to_bytes() {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out[at] = b'-';
    at += 1;
    for byte in span.span_id().to_bytes() {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out[at] = b'-';
    out[at + 1] = b'0';
    out[at + 2] = if span.is_sampled() { b'1' } else { b'0' };
    // Backed by a shared buffer from the start: the retry layer copies the
    // headers into every attempt, and a value copied from a plain vector
    // costs a second allocation the first time it is cloned.
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .expect("lowercase hex and dashes are a valid header value");
    // Never indexed by HPACK: every call's value is new, so adding it to
    // both peers' header tables would only evict entries that are used
    // again (measured: about 1,000 instructions a call less).
    value.set_sensitive(true);
    value
}

/// Parses a `traceparent` as the W3C Trace Context spec says: lowercase
/// hex only, version `ff` invalid, all-zero ids invalid, exactly 55 bytes
/// for version 00, and for a later version at least 55 with a `-` before
/// whatever follows. Only the sampled flag is kept.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        0xff => return None,
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    // Decoded without a branch per digit: ids are random, so a branch on
    // "digit or letter" would be mispredicted half the time. Any invalid
    // digit sets the high bit of `invalid`.
    let mut invalid = 0u8;
    for (i, byte) in trace_id.iter_mut().enumerate() {
        let (high, low) = (
            HEX_VALUE[usize::from(value[3 + 2 * i])],
            HEX_VALUE[usize::from(value[4 + 2 * i])],
        );
        invalid |= high | low;
        *byte = high << 4 | (low & 0x0f);
    }
    for (i, byte) in span_id.iter_mut().enumerate() {
        let (high, low) = (
            HEX_VALUE[usize::from(value[36 + 2 * i])],
            HEX_VALUE[usize::from(value[37 + 2 * i])],
        );
        invalid |= high | low;
        *byte = high << 4 | (low & 0x0f);
    }
    if invalid & INVALID_DIGIT != 0 {
        return None;
    }
    let flags = hex_byte(&value[53..55])?;
    let (trace_id, span_id) = (TraceId::from_bytes(trace_id), SpanId::from_bytes(span_id));
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some((
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
    ))
}

/// Marks a byte that is not a lowercase hex digit in [`HEX_VALUE`].
const INVALID_DIGIT: u8 = 0x80;

/// Each byte's value as a lowercase hex digit, or [`INVALID_DIGIT`].
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID_DIGIT; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Two lowercase hex digits as a byte.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let (high, low) = (
        HEX_VALUE[usize::from(digits[0])],
        HEX_VALUE[usize::from(digits[1])],
    );
    ((high | low) & INVALID_DIGIT == 0).then_some(high << 4 | low)
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
        KeyValue,
        propagation::TextMapPropagator,
        trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn span(flags: TraceFlags, state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            state,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn extracted(pairs: &[(&'static str, &str)]) -> SpanContext {
        extract(&headers(pairs)).span().span_context().clone()
    }

    #[test]
    fn a_context_survives_a_round_trip_through_headers() {
        let state = TraceState::from_key_value([("vendor", "value")]).unwrap();
        let sent = span(TraceFlags::SAMPLED, state);
        let context = Context::new()
            .with_remote_span_context(sent.clone())
            .with_baggage([KeyValue::new("tenant", "acme")]);
        let mut map = HeaderMap::new();
        inject(&context, &mut map);
        assert_eq!(map["traceparent"], PARENT);
        assert_eq!(map["tracestate"], "vendor=value");

        let back = extract(&map);
        let received = back.span().span_context().clone();
        assert_eq!(received.trace_id(), sent.trace_id());
        assert_eq!(received.span_id(), sent.span_id());
        assert!(received.is_sampled());
        assert!(received.is_remote());
        assert_eq!(received.trace_state().get("vendor"), Some("value"));
        assert_eq!(
            back.baggage().get("tenant").map(ToString::to_string),
            Some("acme".to_owned())
        );
    }

    #[test]
    fn what_is_written_is_what_the_sdk_propagator_writes_and_reads() {
        for flags in [TraceFlags::SAMPLED, TraceFlags::NOT_SAMPLED] {
            let context =
                Context::new().with_remote_span_context(span(flags, TraceState::default()));
            let mut ours = HeaderMap::new();
            inject(&context, &mut ours);
            let mut theirs = HeaderMap::new();
            TraceContextPropagator::new()
                .inject_context(&context, &mut HeaderInjector(&mut theirs));
            assert_eq!(ours["traceparent"], theirs["traceparent"]);
            let back = TraceContextPropagator::new().extract(&HeaderExtractor(&ours));
            assert_eq!(back.span().span_context().is_sampled(), flags.is_sampled());
        }
    }

    #[test]
    fn nothing_is_written_without_a_span_or_baggage() {
        let mut map = HeaderMap::new();
        inject(&Context::new(), &mut map);
        assert!(map.is_empty(), "{map:?}");
        // An empty tracestate is left out.
        let context = Context::new()
            .with_remote_span_context(span(TraceFlags::SAMPLED, TraceState::default()));
        inject(&context, &mut map);
        assert_eq!(map.len(), 1, "{map:?}");
    }

    #[test]
    fn a_valid_traceparent_is_read() {
        let read = extracted(&[("traceparent", PARENT)]);
        assert!(read.is_valid());
        assert!(read.is_sampled());
        let unsampled = extracted(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        assert!(unsampled.is_valid());
        assert!(!unsampled.is_sampled());
        // A later version may append fields after a dash; unknown flags are
        // ignored.
        let future = extracted(&[(
            "traceparent",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra",
        )]);
        assert!(future.is_valid());
        assert!(future.is_sampled());
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // Version ff is invalid.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 has exactly four fields.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Wrong separators, non-hex.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            // A later version must separate what it appends.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(
                !extracted(&[("traceparent", bad)]).is_valid(),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn a_malformed_tracestate_is_dropped_not_the_parent() {
        let read = extracted(&[("traceparent", PARENT), ("tracestate", "no equals sign")]);
        assert!(read.is_valid());
        assert_eq!(read.trace_state().header(), "");
    }

    #[test]
    fn the_first_of_repeated_trace_headers_counts() {
        let mut map = headers(&[("tracestate", "first=1")]);
        map.append("traceparent", HeaderValue::from_static(PARENT));
        map.append(
            "traceparent",
            HeaderValue::from_static("00-11111111111111111111111111111111-2222222222222222-00"),
        );
        map.append("tracestate", HeaderValue::from_static("second=2"));
        let read = extract(&map).span().span_context().clone();
        assert_eq!(
            read.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert!(read.is_sampled());
        assert_eq!(read.trace_state().header(), "first=1");
    }
}
