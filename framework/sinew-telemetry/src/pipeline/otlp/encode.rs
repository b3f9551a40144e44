//! `ExportTraceServiceRequest` (OTLP trace v1), encoded straight from the
//! spans: the SDK's, and sinew's call spans.
//!
//! The output decodes to exactly what `opentelemetry-proto`'s transform
//! (`group_spans_by_resource_and_scope`) builds for the same batch and
//! resource, and is byte for byte what prost would encode from it: fields
//! in field number order, proto3 defaults (empty strings
//! and bytes, zero numbers) left out, while message fields the transform
//! always sets (`resource`, `scope`, `status`, every attribute's `value`)
//! and oneof values (`bool_value: false`) are always written.
//!
//! What it avoids is the transform's intermediate structs: a `String` per
//! attribute key and value, `Vec`s for ids, events and links. Encoding
//! groups the spans by instrumentation scope, then writes them in one pass
//! into one buffer: each nested message is written where it goes and its
//! length put in front of it after ([`put_nested`]), in the room usually
//! enough for it. The buffer is sized from the bytes per span of the
//! batches before, and the grouping's scratch space is kept from batch to
//! batch, so a batch usually costs one allocation: its buffer.
//!
//! A call span (see [`span`](crate::span)) is written as the SDK
//! span it stands for would be, under sinew's scope, with its name and RPC
//! attributes copied from its method's fields, encoded once by
//! [`span_name_field`] and [`span_attribute_fields`].

use std::time::SystemTime;

use bytes::{BufMut, Bytes};
use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceState},
};
use opentelemetry_sdk::{Resource, trace::SpanData};

use crate::pipeline::{
    queue::Finished,
    span::{CallSpanData, SCOPE, STATUS_CODE},
};

use super::wire::{
    put_bytes, put_fixed32_field, put_fixed64_field, put_len_prefix, put_nested, put_varint_field,
};

/// Field numbers, message by message, from the OTLP protos
/// (`opentelemetry/proto/{collector/trace,trace,common,resource}/v1`).
mod field {
    /// `ExportTraceServiceRequest`.
    pub(super) mod request {
        pub(in super::super) const RESOURCE_SPANS: u32 = 1;
    }
    /// `ResourceSpans`.
    pub(super) mod resource_spans {
        pub(in super::super) const RESOURCE: u32 = 1;
        pub(in super::super) const SCOPE_SPANS: u32 = 2;
        pub(in super::super) const SCHEMA_URL: u32 = 3;
    }
    /// `Resource`.
    pub(super) mod resource {
        pub(in super::super) const ATTRIBUTES: u32 = 1;
    }
    /// `ScopeSpans`.
    pub(super) mod scope_spans {
        pub(in super::super) const SCOPE: u32 = 1;
        pub(in super::super) const SPANS: u32 = 2;
        pub(in super::super) const SCHEMA_URL: u32 = 3;
    }
    /// `InstrumentationScope`.
    pub(super) mod scope {
        pub(in super::super) const NAME: u32 = 1;
        pub(in super::super) const VERSION: u32 = 2;
        pub(in super::super) const ATTRIBUTES: u32 = 3;
    }
    /// `Span`.
    pub(super) mod span {
        pub(in super::super) const TRACE_ID: u32 = 1;
        pub(in super::super) const SPAN_ID: u32 = 2;
        pub(in super::super) const TRACE_STATE: u32 = 3;
        pub(in super::super) const PARENT_SPAN_ID: u32 = 4;
        pub(in super::super) const NAME: u32 = 5;
        pub(in super::super) const KIND: u32 = 6;
        pub(in super::super) const START_TIME_UNIX_NANO: u32 = 7;
        pub(in super::super) const END_TIME_UNIX_NANO: u32 = 8;
        pub(in super::super) const ATTRIBUTES: u32 = 9;
        pub(in super::super) const DROPPED_ATTRIBUTES_COUNT: u32 = 10;
        pub(in super::super) const EVENTS: u32 = 11;
        pub(in super::super) const DROPPED_EVENTS_COUNT: u32 = 12;
        pub(in super::super) const LINKS: u32 = 13;
        pub(in super::super) const DROPPED_LINKS_COUNT: u32 = 14;
        pub(in super::super) const STATUS: u32 = 15;
        pub(in super::super) const FLAGS: u32 = 16;
    }
    /// `Span.Event`.
    pub(super) mod event {
        pub(in super::super) const TIME_UNIX_NANO: u32 = 1;
        pub(in super::super) const NAME: u32 = 2;
        pub(in super::super) const ATTRIBUTES: u32 = 3;
        pub(in super::super) const DROPPED_ATTRIBUTES_COUNT: u32 = 4;
    }
    /// `Span.Link`.
    pub(super) mod link {
        pub(in super::super) const TRACE_ID: u32 = 1;
        pub(in super::super) const SPAN_ID: u32 = 2;
        pub(in super::super) const TRACE_STATE: u32 = 3;
        pub(in super::super) const ATTRIBUTES: u32 = 4;
        pub(in super::super) const DROPPED_ATTRIBUTES_COUNT: u32 = 5;
        pub(in super::super) const FLAGS: u32 = 6;
    }
    /// `Status`.
    pub(super) mod status {
        pub(in super::super) const MESSAGE: u32 = 2;
        pub(in super::super) const CODE: u32 = 3;
    }
    /// `KeyValue`.
    pub(super) mod key_value {
        pub(in super::super) const KEY: u32 = 1;
        pub(in super::super) const VALUE: u32 = 2;
    }
    /// `AnyValue` (each a member of its `value` oneof).
    pub(super) mod any_value {
        pub(in super::super) const STRING_VALUE: u32 = 1;
        pub(in super::super) const BOOL_VALUE: u32 = 2;
        pub(in super::super) const INT_VALUE: u32 = 3;
        pub(in super::super) const DOUBLE_VALUE: u32 = 4;
        pub(in super::super) const ARRAY_VALUE: u32 = 5;
    }
    /// `ArrayValue`.
    pub(super) mod array_value {
        pub(in super::super) const VALUES: u32 = 1;
    }
}

/// `SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the flags say
/// whether the parent (or, on a link, the linked span) is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// `SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`: it is.
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Encodes batches of spans as `ExportTraceServiceRequest`s under one
/// resource.
///
/// Not `Sync` in use: [`encode`](Self::encode) takes `&mut self` for its
/// scratch space, so an exporter keeps it behind a lock (uncontended: the
/// SDK never exports concurrently on one exporter).
#[derive(Debug)]
pub(crate) struct TraceEncoder {
    /// The `resource` field of `ResourceSpans`, key and length included:
    /// the same for every batch, so encoded once.
    resource_field: Vec<u8>,
    /// The `schema_url` field of `ResourceSpans`, or nothing without one.
    schema_url_field: Vec<u8>,
    /// Per span of the batch being encoded: the index of its group in
    /// `groups`.
    span_groups: Vec<usize>,
    /// The batch's spans grouped by instrumentation scope, in order of
    /// first appearance (the transform's order): the index of each group's
    /// first span, whose scope it is written with (as the transform does
    /// when scopes are equal but list their attributes in another order).
    groups: Vec<usize>,
    /// Bytes per span of the largest batches so far, to size the buffer.
    bytes_per_span: usize,
}

/// The room set aside for lengths, by how long such messages usually are:
/// an attribute, a scope or a status takes less than 128 bytes, a span
/// less than 16 KiB, a whole batch less than 2 MiB.
mod room {
    pub(super) const SMALL: usize = 1;
    pub(super) const SPAN: usize = 2;
    pub(super) const BATCH: usize = 3;
}

/// A gRPC message's prefix: a compression flag and a 4-byte length.
pub(crate) const GRPC_PREFIX: usize = 5;

/// Room for a span's bytes before any batch has been seen.
const FIRST_BYTES_PER_SPAN: usize = 256;

// === impl TraceEncoder ===

impl TraceEncoder {
    /// An encoder for spans of an empty resource, until
    /// [`set_resource`](Self::set_resource).
    pub(crate) fn new() -> Self {
        let mut encoder = Self {
            resource_field: Vec::new(),
            schema_url_field: Vec::new(),
            span_groups: Vec::new(),
            groups: Vec::new(),
            bytes_per_span: FIRST_BYTES_PER_SPAN,
        };
        encoder.set_resource(&Resource::builder_empty().build());
        encoder
    }

    /// Encodes `resource` once, for every batch from now on.
    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        use field::{resource as f, resource_spans};

        let mut field = Vec::new();
        // Always present, even empty: the transform always sets it.
        put_nested(&mut field, resource_spans::RESOURCE, room::SPAN, |buf| {
            for (key, value) in resource.iter() {
                put_kv_field(buf, f::ATTRIBUTES, key.as_str(), value);
            }
        });
        self.resource_field = field;

        let mut field = Vec::new();
        let schema_url = resource.schema_url().unwrap_or_default();
        put_str_field(&mut field, resource_spans::SCHEMA_URL, schema_url);
        self.schema_url_field = field;
    }

    /// Encodes `spans` as one `ExportTraceServiceRequest`: one
    /// `ResourceSpans` (even for no spans, as the transform makes), holding
    /// a `ScopeSpans` per instrumentation scope.
    #[cfg(test)]
    pub(crate) fn encode(&mut self, spans: &[Finished]) -> Bytes {
        self.encode_framed(spans).slice(GRPC_PREFIX..)
    }

    /// [`encode`](Self::encode)'s message as a gRPC length-prefixed
    /// message (uncompressed), ready to be sent as the request's body.
    pub(crate) fn encode_framed(&mut self, spans: &[Finished]) -> Bytes {
        use field::{request, resource_spans, scope_spans};

        self.span_groups.clear();
        self.groups.clear();
        for (index, span) in spans.iter().enumerate() {
            let scope = scope_of(span);
            let found = self
                .groups
                .iter()
                .position(|&first| same_scope(scope_of(&spans[first]), scope));
            let group = found.unwrap_or_else(|| {
                self.groups.push(index);
                self.groups.len() - 1
            });
            self.span_groups.push(group);
        }

        let fixed = GRPC_PREFIX + self.resource_field.len() + self.schema_url_field.len() + 16;
        let mut buf = Vec::with_capacity(fixed + spans.len() * self.bytes_per_span);
        // The prefix, filled in once the message's length is known.
        buf.extend_from_slice(&[0; GRPC_PREFIX]);
        put_nested(&mut buf, request::RESOURCE_SPANS, room::BATCH, |buf| {
            buf.put_slice(&self.resource_field);
            for (index, &first) in self.groups.iter().enumerate() {
                let scope = scope_of(&spans[first]);
                put_nested(buf, resource_spans::SCOPE_SPANS, room::BATCH, |buf| {
                    put_nested(buf, scope_spans::SCOPE, room::SMALL, |buf| {
                        put_scope(buf, scope);
                    });
                    let members = spans
                        .iter()
                        .zip(&self.span_groups)
                        .filter(|&(_, &group)| group == index);
                    for (span, _) in members {
                        put_nested(buf, scope_spans::SPANS, room::SPAN, |buf| match span {
                            Finished::Sdk(span) => put_span(buf, span),
                            Finished::Call(span) => put_call_span(buf, span),
                        });
                    }
                    put_str_field(buf, scope_spans::SCHEMA_URL, schema_url(scope));
                });
            }
            buf.put_slice(&self.schema_url_field);
        });
        if let Some(per_span) = buf.len().saturating_sub(fixed).checked_div(spans.len()) {
            // Round up a little, so that a batch like the last one fits.
            self.bytes_per_span = self.bytes_per_span.max(per_span + per_span / 8);
        }
        // Not compressed, then the length, big-endian. A batch past 4 GiB
        // is not sent whole: the length says less and the collector
        // refuses it, as it would refuse anything that large.
        let len = u32::try_from(buf.len() - GRPC_PREFIX).unwrap_or(u32::MAX);
        buf[1..GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
        Bytes::from(buf)
    }
}

/// A framed message ([`TraceEncoder::encode_framed`]'s), gzip-compressed
/// and framed again with the compressed flag set, for `grpc-encoding:
/// gzip`. The fast level: a batch of spans compresses well at any level,
/// and the exporting thread's time is better kept.
pub(crate) fn gzip_framed(framed: &[u8]) -> std::io::Result<Bytes> {
    use std::io::Write as _;

    let payload = &framed[GRPC_PREFIX.min(framed.len())..];
    let mut out = Vec::with_capacity(GRPC_PREFIX + payload.len() / 4);
    out.extend_from_slice(&[0; GRPC_PREFIX]);
    let mut gzip = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    gzip.write_all(payload)?;
    let mut out = gzip.finish()?;
    let len = u32::try_from(out.len() - GRPC_PREFIX).unwrap_or(u32::MAX);
    out[0] = 1;
    out[1..GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(out))
}

impl Default for TraceEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The instrumentation scope `span` belongs to.
fn scope_of(span: &Finished) -> &InstrumentationScope {
    static SINEW: std::sync::LazyLock<InstrumentationScope> =
        std::sync::LazyLock::new(|| InstrumentationScope::builder(SCOPE).build());
    match span {
        Finished::Sdk(span) => &span.instrumentation_scope,
        Finished::Call(_) => &SINEW,
    }
}

/// The `attributes` field of `rpc.grpc.status_code` for `code`, for the
/// gRPC codes (0 to 16), encoded once.
fn status_code_field(code: i64) -> Option<&'static [u8]> {
    static FIELDS: std::sync::LazyLock<Vec<Box<[u8]>>> = std::sync::LazyLock::new(|| {
        (0..=16)
            .map(|code| span_attribute_fields(&[KeyValue::new(STATUS_CODE, code)]))
            .collect()
    });
    let index = usize::try_from(code).ok()?;
    FIELDS.get(index).map(|field| &field[..])
}

/// The `name` field of a span named `name`, key included.
pub(crate) fn span_name_field(name: &str) -> Box<[u8]> {
    let mut buf = Vec::new();
    put_str_field(&mut buf, field::span::NAME, name);
    buf.into()
}

/// The `attributes` fields of a span with `attributes`, keys included.
pub(crate) fn span_attribute_fields(attributes: &[KeyValue]) -> Box<[u8]> {
    let mut buf = Vec::new();
    put_attributes(&mut buf, field::span::ATTRIBUTES, attributes);
    buf.into()
}

/// Whether two scopes are equal as the SDK sees them (attributes in any
/// order), without the SDK's equality's allocations in the usual case:
/// clones of one scope, attributes in the same order.
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    a.name() == b.name()
        && a.version() == b.version()
        && a.schema_url() == b.schema_url()
        && (a.attributes().eq(b.attributes()) || a == b)
}

fn schema_url(scope: &InstrumentationScope) -> &str {
    scope.schema_url().unwrap_or_default()
}

fn put_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    use field::scope as f;

    put_str_field(buf, f::NAME, scope.name());
    put_str_field(buf, f::VERSION, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        put_kv_field(buf, f::ATTRIBUTES, kv.key.as_str(), &kv.value);
    }
}

fn put_span(buf: &mut Vec<u8>, span: &SpanData) {
    use field::span as f;

    put_span_head(buf, &span.span_context, span.parent_span_id);
    put_str_field(buf, f::NAME, &span.name);
    put_span_times(buf, &span.span_kind, span.start_time, span.end_time);
    put_attributes(buf, f::ATTRIBUTES, &span.attributes);
    put_span_tail(
        buf,
        &SpanTail {
            dropped_attributes: span.dropped_attributes_count,
            events: &span.events,
            dropped_events: span.events.dropped_count,
            links: &span.links,
            dropped_links: span.links.dropped_count,
            status: &span.status,
            flags: flags(&span.span_context, span.parent_span_is_remote),
        },
    );
}

/// Writes a call span as [`put_span`] writes the SDK span it stands for:
/// the same fields in the same order.
fn put_call_span(buf: &mut Vec<u8>, span: &CallSpanData) {
    use field::span as f;

    put_span_head(buf, &span.context, span.parent_span_id);
    match &span.renamed {
        Some(name) => put_str_field(buf, f::NAME, name),
        None => buf.put_slice(&span.parts.name_field),
    }
    put_span_times(buf, &span.kind, span.start, span.end);
    buf.put_slice(&span.parts.rpc_fields);
    if let Some(start) = &span.start_attributes {
        buf.put_slice(&start.fields);
    }
    put_attributes(buf, f::ATTRIBUTES, &span.attributes);
    if let Some(code) = span.status_code {
        match status_code_field(code) {
            Some(field) => buf.put_slice(field),
            None => put_kv_field(buf, f::ATTRIBUTES, STATUS_CODE, &Value::I64(code)),
        }
    }
    put_span_tail(
        buf,
        &SpanTail {
            dropped_attributes: span.dropped_attributes,
            events: &span.events,
            dropped_events: span.dropped_events,
            links: &span.links,
            dropped_links: span.dropped_links,
            status: &span.status,
            flags: flags(&span.context, span.parent_is_remote),
        },
    );
}

/// A span's fields after its attributes.
struct SpanTail<'a> {
    dropped_attributes: u32,
    events: &'a [Event],
    dropped_events: u32,
    links: &'a [Link],
    dropped_links: u32,
    status: &'a Status,
    /// See [`flags`].
    flags: u32,
}

/// Writes a span's ids, trace state and parent: the fields before its
/// name.
fn put_span_head(buf: &mut Vec<u8>, context: &SpanContext, parent: SpanId) {
    use field::span as f;

    put_bytes(buf, f::TRACE_ID, &context.trace_id().to_bytes());
    put_bytes(buf, f::SPAN_ID, &context.span_id().to_bytes());
    put_trace_state_field(buf, f::TRACE_STATE, context.trace_state());
    if parent != SpanId::INVALID {
        put_bytes(buf, f::PARENT_SPAN_ID, &parent.to_bytes());
    }
}

/// Writes a span's kind, start and end: the fields between its name and
/// its attributes.
fn put_span_times(buf: &mut Vec<u8>, span_kind: &SpanKind, start: SystemTime, end: SystemTime) {
    use field::span as f;

    put_varint_field(buf, f::KIND, kind(span_kind));
    put_fixed64_nonzero(buf, f::START_TIME_UNIX_NANO, nanos(start));
    put_fixed64_nonzero(buf, f::END_TIME_UNIX_NANO, nanos(end));
}

/// Writes the fields after a span's attributes.
fn put_span_tail(buf: &mut Vec<u8>, tail: &SpanTail<'_>) {
    use field::span as f;

    put_varint_nonzero(buf, f::DROPPED_ATTRIBUTES_COUNT, tail.dropped_attributes);
    for event in tail.events {
        put_nested(buf, f::EVENTS, room::SMALL, |buf| put_event(buf, event));
    }
    put_varint_nonzero(buf, f::DROPPED_EVENTS_COUNT, tail.dropped_events);
    for link in tail.links {
        put_nested(buf, f::LINKS, room::SMALL, |buf| put_link(buf, link));
    }
    put_varint_nonzero(buf, f::DROPPED_LINKS_COUNT, tail.dropped_links);
    // Always present, even `Unset` with no message: the transform always
    // sets it.
    put_nested(buf, f::STATUS, room::SMALL, |buf| {
        put_status(buf, tail.status)
    });
    // Last, as prost writes fields in field number order.
    put_fixed32_field(buf, f::FLAGS, tail.flags);
}

/// The span's trace flags, plus whether its parent is remote: the
/// transform always sets the "has is-remote" bit, for spans and links.
fn flags(context: &SpanContext, remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | CONTEXT_HAS_IS_REMOTE;
    if remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

/// `Span.SpanKind`.
fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// Nanoseconds since the Unix epoch; 0 for earlier times, as the
/// transform does.
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Writes a `Status` message: its message only for an error.
fn put_status(buf: &mut Vec<u8>, status: &Status) {
    use field::status as f;

    let (code, message) = status_parts(status);
    put_str_field(buf, f::MESSAGE, message);
    put_varint_nonzero(buf, f::CODE, code);
}

/// `Status.StatusCode` and the message.
fn status_parts(status: &Status) -> (u32, &str) {
    match status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description),
    }
}

/// Writes a `Span.Event` message.
fn put_event(buf: &mut Vec<u8>, event: &Event) {
    use field::event as f;

    put_fixed64_nonzero(buf, f::TIME_UNIX_NANO, nanos(event.timestamp));
    put_str_field(buf, f::NAME, &event.name);
    put_attributes(buf, f::ATTRIBUTES, &event.attributes);
    put_varint_nonzero(
        buf,
        f::DROPPED_ATTRIBUTES_COUNT,
        event.dropped_attributes_count,
    );
}

/// Writes a `Span.Link` message.
fn put_link(buf: &mut Vec<u8>, link: &Link) {
    use field::link as f;

    let context = &link.span_context;
    put_bytes(buf, f::TRACE_ID, &context.trace_id().to_bytes());
    put_bytes(buf, f::SPAN_ID, &context.span_id().to_bytes());
    put_trace_state_field(buf, f::TRACE_STATE, context.trace_state());
    put_attributes(buf, f::ATTRIBUTES, &link.attributes);
    put_varint_nonzero(
        buf,
        f::DROPPED_ATTRIBUTES_COUNT,
        link.dropped_attributes_count,
    );
    put_fixed32_field(buf, f::FLAGS, flags(context, context.is_remote()));
}

/// The length of a trace state as its W3C header (`k1=v1,k2=v2`),
/// measured without building it.
fn trace_state_len(state: &TraceState) -> usize {
    let mut len = 0;
    for (index, (key, value)) in state.into_iter().enumerate() {
        // A comma before every entry but the first.
        len += usize::from(index > 0) + key.len() + 1 + value.len();
    }
    len
}

/// Writes a trace state as the header `TraceState::header` would make,
/// without making it.
fn put_trace_state_field(buf: &mut Vec<u8>, tag: u32, state: &TraceState) {
    if *state == TraceState::NONE {
        return;
    }
    let len = trace_state_len(state);
    if len == 0 {
        return;
    }
    put_len_prefix(buf, tag, len);
    for (index, (key, value)) in state.into_iter().enumerate() {
        if index > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(key.as_bytes());
        buf.put_u8(b'=');
        buf.put_slice(value.as_bytes());
    }
}

fn put_attributes(buf: &mut Vec<u8>, tag: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        put_kv_field(buf, tag, kv.key.as_str(), &kv.value);
    }
}

#[inline]
fn put_kv_field(buf: &mut Vec<u8>, tag: u32, key: &str, value: &Value) {
    use field::key_value as f;

    put_nested(buf, tag, room::SMALL, |buf| {
        put_str_field(buf, f::KEY, key);
        // Always present: the API's values all map to an `AnyValue`.
        put_nested(buf, f::VALUE, room::SMALL, |buf| put_any_value(buf, value));
    });
}

/// An attribute value or array element, borrowed: `AnyValue`'s members
/// that the API's values map to.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(&'a str),
}

/// Writes an `AnyValue`'s member. A value of a kind this encoder does not
/// know (the API's `Value` may grow) is an empty `AnyValue`, where the
/// transform would panic.
fn put_any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Array(array) => {
            put_nested(buf, field::any_value::ARRAY_VALUE, room::SMALL, |buf| {
                for_each_element(array, |element| {
                    put_nested(buf, field::array_value::VALUES, room::SMALL, |buf| {
                        put_scalar(buf, element);
                    });
                });
            });
        }
        value => {
            if let Some(value) = scalar(value) {
                put_scalar(buf, value);
            }
        }
    }
}

fn scalar(value: &Value) -> Option<Scalar<'_>> {
    match value {
        Value::Bool(value) => Some(Scalar::Bool(*value)),
        Value::I64(value) => Some(Scalar::Int(*value)),
        Value::F64(value) => Some(Scalar::Double(*value)),
        Value::String(value) => Some(Scalar::Str(value.as_str())),
        _ => None,
    }
}

/// Calls `f` on each element of `array`. Elements of a kind this encoder
/// does not know are skipped.
fn for_each_element<'a>(array: &'a Array, mut f: impl FnMut(Scalar<'a>)) {
    match array {
        Array::Bool(values) => values.iter().for_each(|v| f(Scalar::Bool(*v))),
        Array::I64(values) => values.iter().for_each(|v| f(Scalar::Int(*v))),
        Array::F64(values) => values.iter().for_each(|v| f(Scalar::Double(*v))),
        Array::String(values) => values.iter().for_each(|v| f(Scalar::Str(v.as_str()))),
        _ => {}
    }
}

/// Writes the `AnyValue` member holding `value`. A oneof member is written
/// even when it is its type's default (`false`, `0`, `""`), or it would
/// decode as no value at all.
fn put_scalar(buf: &mut Vec<u8>, value: Scalar<'_>) {
    use field::any_value as f;

    match value {
        Scalar::Bool(value) => put_varint_field(buf, f::BOOL_VALUE, u64::from(value)),
        // int64 is sent as its two's complement: ten bytes when negative.
        Scalar::Int(value) => put_varint_field(buf, f::INT_VALUE, value as u64),
        Scalar::Double(value) => put_fixed64_field(buf, f::DOUBLE_VALUE, value.to_bits()),
        Scalar::Str(value) => put_bytes(buf, f::STRING_VALUE, value.as_bytes()),
    }
}

/// Writes a string field; proto3 leaves an empty one out.
fn put_str_field(buf: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        put_bytes(buf, tag, value.as_bytes());
    }
}

/// Writes a varint field; proto3 leaves a zero out.
fn put_varint_nonzero(buf: &mut Vec<u8>, tag: u32, value: impl Into<u64>) {
    match value.into() {
        0 => {}
        value => put_varint_field(buf, tag, value),
    }
}

/// Writes a `fixed64` field; proto3 leaves a zero out.
fn put_fixed64_nonzero(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        put_fixed64_field(buf, tag, value);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use opentelemetry::{
        Context, StringValue,
        trace::{
            Span as _, SpanBuilder, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
            TracerProvider as _,
        },
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::{
        error::OTelSdkResult,
        trace::{SdkTracerProvider, SpanExporter, SpanLimits},
    };
    use prost::Message as _;

    use super::*;
    use crate::pipeline::span::{
        CallSpanData, StartAttributes,
        tests::{as_sdk, context, parts},
    };

    /// Encodes the SDK's `spans`.
    fn encode_sdk(encoder: &mut TraceEncoder, spans: &[SpanData]) -> Bytes {
        let spans: Vec<Finished> = spans.iter().cloned().map(Finished::Sdk).collect();
        encoder.encode(&spans)
    }

    /// Keeps what the provider hands it: the spans, and the resource.
    #[derive(Debug, Clone, Default)]
    struct Collecting {
        spans: Arc<Mutex<Vec<SpanData>>>,
        resource: Arc<Mutex<Option<Resource>>>,
    }

    impl SpanExporter for Collecting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.spans.lock().unwrap().extend(batch);
            Ok(())
        }

        fn set_resource(&mut self, resource: &Resource) {
            *self.resource.lock().unwrap() = Some(resource.clone());
        }
    }

    impl Collecting {
        fn take(&self) -> (Vec<SpanData>, Resource) {
            let spans = std::mem::take(&mut *self.spans.lock().unwrap());
            let resource = self.resource.lock().unwrap().clone().expect("a resource");
            (spans, resource)
        }
    }

    /// What `opentelemetry-proto`'s transform (what `opentelemetry-otlp`
    /// sends) makes of `spans` under `resource`.
    fn reference(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
        let resource = ResourceAttributesWithSchema::from(resource);
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans.to_vec(), &resource),
        }
    }

    /// Encodes `spans` and checks the bytes decode to the reference and
    /// are what prost would write for it.
    #[track_caller]
    fn assert_encodes_like_the_transform(spans: &[SpanData], resource: &Resource) {
        let mut encoder = TraceEncoder::new();
        encoder.set_resource(resource);
        let bytes = encode_sdk(&mut encoder, spans);
        let expected = reference(spans, resource);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_ref()).expect("valid protobuf");
        assert_eq!(decoded, expected);
        assert_eq!(bytes.as_ref(), expected.encode_to_vec().as_slice());

        // The scratch space is reused: the next batch is as good.
        let again = encode_sdk(&mut encoder, spans);
        assert_eq!(again, bytes);
    }

    fn provider(exporter: Collecting, resource: Resource) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_limits(SpanLimits {
                max_events_per_span: 3,
                max_attributes_per_span: 24,
                max_links_per_span: 2,
                max_attributes_per_event: 2,
                max_attributes_per_link: 1,
            })
            .with_simple_exporter(exporter)
            .build()
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "encoder-test"),
                    KeyValue::new("service.instance.id", "a%b,c=d é"),
                    KeyValue::new("host.cpus", 2),
                    KeyValue::new("sampled.share", 0.25),
                    KeyValue::new("canary", true),
                    KeyValue::new(
                        "regions",
                        Value::Array(Array::String(vec!["eu".into(), "us".into()])),
                    ),
                ],
                "https://opentelemetry.io/schemas/1.26.0",
            )
            .build()
    }

    /// Attributes of every value type, edge values included.
    fn every_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("string", "hello"),
            KeyValue::new("string.empty", ""),
            KeyValue::new("string.owned", String::from("owned ✓")),
            KeyValue::new("bool.true", true),
            KeyValue::new("bool.false", false),
            KeyValue::new("int", 42),
            KeyValue::new("int.zero", 0),
            KeyValue::new("int.negative", -7),
            KeyValue::new("int.min", i64::MIN),
            KeyValue::new("int.max", i64::MAX),
            KeyValue::new("double", 1.5),
            KeyValue::new("double.zero", 0.0),
            KeyValue::new("double.negative", -2.25),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, 1 << 40]))),
            KeyValue::new("doubles", Value::Array(Array::F64(vec![0.0, 3.5]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from(""),
                    StringValue::from(String::from("c")),
                ])),
            ),
            KeyValue::new("empty.array", Value::Array(Array::I64(Vec::new()))),
            KeyValue::new("", "an empty key"),
        ]
    }

    fn remote_context(state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            SpanId::from(0x1112_1314_1516_1718),
            TraceFlags::SAMPLED,
            true,
            state.parse().unwrap(),
        )
    }

    #[test]
    fn a_batch_encodes_exactly_as_the_transform_makes_it() {
        let exporter = Collecting::default();
        let provider = provider(exporter.clone(), resource());
        let scope = |attributes: Vec<KeyValue>| {
            InstrumentationScope::builder("sinew")
                .with_version("0.1.0")
                .with_schema_url("https://opentelemetry.io/schemas/1.27.0")
                .with_attributes(attributes)
                .build()
        };
        let sinew = provider.tracer_with_scope(scope(vec![
            KeyValue::new("a", 1),
            KeyValue::new("b", "two"),
        ]));
        // Equal to sinew's scope as the SDK sees it: the attributes in
        // another order. Its spans join sinew's group.
        let sinew_again = provider.tracer_with_scope(scope(vec![
            KeyValue::new("b", "two"),
            KeyValue::new("a", 1),
        ]));
        let other = provider.tracer("other-library");

        // A root span with every kind of attribute, and events.
        let mut root = sinew
            .span_builder("root")
            .with_kind(SpanKind::Server)
            .with_attributes(every_value())
            .start(&sinew);
        root.add_event("no attributes", Vec::new());
        root.add_event(
            "with attributes",
            vec![
                KeyValue::new("event.int", 3),
                KeyValue::new("event.ok", true),
            ],
        );
        root.add_event_with_timestamp(
            "at the epoch",
            SystemTime::UNIX_EPOCH,
            vec![KeyValue::new(
                "event.array",
                Value::Array(Array::F64(vec![1.0])),
            )],
        );
        root.set_status(Status::Ok);
        let root_cx = Context::current_with_span(root);

        // A child, of another library, interleaved.
        let mut child = other
            .span_builder("child")
            .with_kind(SpanKind::Client)
            .start_with_context(&other, &root_cx);
        child.set_status(Status::error("the callee failed"));
        child.end();

        // A child of a remote parent, with its trace state, and links.
        let remote = Context::new().with_remote_span_context(remote_context("vendor=a,other=b"));
        let mut from_remote = sinew_again
            .span_builder("from remote")
            .with_kind(SpanKind::Consumer)
            .with_links(vec![
                Link::new(
                    remote_context("linked=1"),
                    vec![KeyValue::new("link.kind", "follows")],
                    0,
                ),
                Link::with_context(root_cx.span().span_context().clone()),
            ])
            .start_with_context(&sinew_again, &remote);
        from_remote.set_status(Status::error(""));
        from_remote.end();

        // A span over every limit: dropped attributes, events, links.
        let mut attributes = every_value();
        attributes.extend((0..10).map(|i| KeyValue::new(format!("extra.{i}"), i)));
        let mut overflowing = SpanBuilder::from_name("overflowing")
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .with_links(vec![
                Link::new(
                    remote_context(""),
                    vec![KeyValue::new("x", 1), KeyValue::new("y", 2)],
                    0,
                ),
                Link::with_context(remote_context("")),
                Link::with_context(remote_context("")),
            ])
            .with_start_time(SystemTime::UNIX_EPOCH - Duration::from_secs(1))
            .start_with_context(&other, &root_cx);
        for i in 0..5 {
            overflowing.add_event(
                format!("event {i}"),
                vec![
                    KeyValue::new("p", i),
                    KeyValue::new("q", i),
                    KeyValue::new("r", i),
                ],
            );
        }
        overflowing.end();

        let internal = sinew.start_with_context("internal", &root_cx);
        drop(internal);
        root_cx.span().end();

        let (spans, resource) = exporter.take();
        assert_eq!(spans.len(), 5);
        let dropped = &spans[2];
        assert_eq!(dropped.name, "overflowing");
        assert!(dropped.dropped_attributes_count > 0);
        assert!(dropped.events.dropped_count > 0);
        assert!(dropped.links.dropped_count > 0);
        assert!(dropped.events[0].dropped_attributes_count > 0);
        assert!(dropped.links[0].dropped_attributes_count > 0);
        assert!(spans[1].parent_span_is_remote);

        assert_encodes_like_the_transform(&spans, &resource);

        let decoded = ExportTraceServiceRequest::decode(
            {
                let mut encoder = TraceEncoder::new();
                encoder.set_resource(&resource);
                encode_sdk(&mut encoder, &spans)
            }
            .as_ref(),
        )
        .unwrap();
        // Two groups, in order of their first span to end: the other
        // library's, then sinew's, each with its spans in batch order.
        let scopes = &decoded.resource_spans[0].scope_spans;
        let names =
            |i: usize| -> Vec<&str> { scopes[i].spans.iter().map(|s| s.name.as_str()).collect() };
        assert_eq!(scopes.len(), 2);
        assert_eq!(names(0), ["child", "overflowing"]);
        assert_eq!(names(1), ["from remote", "internal", "root"]);
        // Remote parent: sampled, "has is-remote" and "is remote".
        assert_eq!(scopes[1].spans[0].flags, 0x301);
        assert_eq!(scopes[1].spans[0].trace_state, "vendor=a,other=b");
        assert_eq!(scopes[1].spans[1].flags, 0x101);
        // The sinew group is written with its first span's scope.
        let attributes: Vec<&str> = scopes[1]
            .scope
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(attributes, ["b", "a"]);
    }

    #[test]
    fn spans_of_every_kind_and_status_encode_as_the_transform_makes_them() {
        let exporter = Collecting::default();
        let provider = provider(exporter.clone(), Resource::builder_empty().build());
        let tracer = provider.tracer("kinds");
        let kinds = [
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ];
        let statuses = [Status::Unset, Status::Ok, Status::error("no")];
        for kind in kinds {
            for status in &statuses {
                let mut span = tracer
                    .span_builder("")
                    .with_kind(kind.clone())
                    .start(&tracer);
                span.set_status(status.clone());
                span.end();
            }
        }
        let (spans, resource) = exporter.take();
        assert_eq!(spans.len(), 15);
        assert_encodes_like_the_transform(&spans, &resource);
    }

    #[test]
    fn messages_longer_than_the_room_set_aside_encode_as_the_transform_makes_them() {
        let exporter = Collecting::default();
        let provider = provider(exporter.clone(), resource());
        let tracer = provider.tracer("lengths");
        // An attribute, an event and a status message past 127 bytes, a
        // span past 16 KiB, and enough spans that the batch passes 2 MiB:
        // each length needs more room than was set aside for it.
        let long = |n: usize| "x".repeat(n);
        let mut span = tracer.span_builder(long(200)).start(&tracer);
        span.set_attribute(KeyValue::new("long", long(300)));
        span.add_event(long(150), vec![KeyValue::new("k", long(140))]);
        span.set_status(Status::error(long(500)));
        span.end();
        let mut huge = tracer.span_builder("huge").start(&tracer);
        huge.set_attribute(KeyValue::new("huge", long(20_000)));
        huge.end();
        for i in 0..110 {
            let mut span = tracer.span_builder(format!("bulk {i}")).start(&tracer);
            span.set_attribute(KeyValue::new("payload", long(20_000)));
            span.end();
        }
        let (spans, resource) = exporter.take();
        assert_eq!(spans.len(), 112);
        assert_encodes_like_the_transform(&spans, &resource);
        // A small batch after the big one: its buffer is sized by the big
        // one's bytes per span, and it still comes out exact.
        let mut encoder = TraceEncoder::new();
        encoder.set_resource(&resource);
        encode_sdk(&mut encoder, &spans);
        let small = encode_sdk(&mut encoder, &spans[..1]);
        assert_eq!(
            small.as_ref(),
            reference(&spans[..1], &resource).encode_to_vec().as_slice()
        );
    }

    #[test]
    fn an_empty_batch_is_a_valid_request_without_spans() {
        // One instance: a resource's attribute order is its map's.
        let resource = resource();
        let mut encoder = TraceEncoder::new();
        encoder.set_resource(&resource);
        let bytes = encoder.encode(&[]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_ref()).expect("valid protobuf");
        // As the transform makes it: the resource, and no scopes.
        assert_eq!(decoded, reference(&[], &resource));
        assert_eq!(decoded.resource_spans.len(), 1);
        assert!(decoded.resource_spans[0].scope_spans.is_empty());
        assert_eq!(
            decoded.resource_spans[0].schema_url,
            "https://opentelemetry.io/schemas/1.26.0"
        );
    }

    #[test]
    fn without_a_resource_the_resource_is_empty() {
        let bytes = TraceEncoder::new().encode(&[]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_ref()).unwrap();
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                Vec::new(),
                &ResourceAttributesWithSchema::default(),
            ),
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn trace_states_are_written_as_their_header() {
        for header in ["", "a=1", "a=1,b=2", "vendor=x,other=y,z=0"] {
            let state: TraceState = header.parse().unwrap();
            assert_eq!(trace_state_len(&state), state.header().len(), "{header}");
            let mut buf = Vec::new();
            put_trace_state_field(&mut buf, 3, &state);
            if header.is_empty() {
                assert!(buf.is_empty(), "an empty state is left out");
            } else {
                assert_eq!(buf[..2], [3 << 3 | 2, header.len() as u8]);
                assert_eq!(&buf[2..], state.header().as_bytes());
            }
        }
    }

    #[test]
    fn call_spans_encode_as_the_sdk_spans_they_stand_for() {
        let exporter = Collecting::default();
        let provider = provider(exporter.clone(), resource());
        // A span of the `tracing` bridge's scope, and one of another's.
        provider.tracer(SCOPE).start("handler work").end();
        provider.tracer("other").start("elsewhere").end();
        let (sdk, resource) = exporter.take();

        let mut root = CallSpanData::start(
            context(1, false),
            &SpanContext::empty_context(),
            SpanKind::Client,
            parts("pkg.Service/Get"),
            Some(StartAttributes::new(vec![KeyValue::new(
                "server.address",
                "10.0.0.1",
            )])),
        );
        root.attributes.push(KeyValue::new("attempts", 2));
        root.status_code = Some(14);
        root.status = Status::error("Unavailable");
        root.events.push(Event::new(
            "retrying",
            SystemTime::UNIX_EPOCH + Duration::from_millis(5),
            vec![KeyValue::new("attempt", 2)],
            1,
        ));
        root.dropped_events = 3;
        root.end = root.start + Duration::from_millis(7);
        let mut child = CallSpanData::start(
            context(2, false),
            &context(1, true),
            SpanKind::Server,
            parts("pkg.Service/Get"),
            None,
        );
        // Not a gRPC code: written as any other attribute.
        child.status_code = Some(99);
        child.renamed = Some("renamed".into());
        child.links.push(Link::new(context(3, true), Vec::new(), 0));
        child.dropped_attributes = 1;
        child.end = child.start + Duration::from_millis(3);

        let batch = vec![
            Finished::Call(root),
            Finished::Sdk(sdk[0].clone()),
            Finished::Sdk(sdk[1].clone()),
            Finished::Call(child),
        ];
        let standing_for: Vec<SpanData> = batch
            .iter()
            .map(|span| match span {
                Finished::Sdk(span) => span.clone(),
                Finished::Call(span) => as_sdk(span),
            })
            .collect();
        let mut encoder = TraceEncoder::new();
        encoder.set_resource(&resource);
        let bytes = encoder.encode(&batch);
        let expected = reference(&standing_for, &resource);
        assert_eq!(bytes.as_ref(), expected.encode_to_vec().as_slice());
        // The call spans share the bridge's scope.
        let decoded = ExportTraceServiceRequest::decode(bytes.as_ref()).unwrap();
        let scopes = &decoded.resource_spans[0].scope_spans;
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[0].scope.as_ref().unwrap().name, SCOPE);
        let names: Vec<&str> = scopes[0].spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pkg.Service/Get", "handler work", "renamed"]);
    }
}
