//! The span of one call, recorded by sinew itself rather than by the SDK.
//!
//! Every sampled call on either side makes a span with the same shape: a
//! name and three RPC attributes fixed by its method, a few attributes of
//! its own, a status. Through the SDK such a span costs a builder, a
//! sampler call through the provider, a copy of the instrumentation scope,
//! the conversion to `SpanData` at its end, and the encoding of every
//! attribute at export. A [`CallSpan`] instead borrows its method's
//! [`SpanParts`], whose name and RPC attributes are encoded as OTLP once
//! per method, and goes to the span queue as it is when it ends.
//!
//! The attributes a call starts with (the address called, or calling) come
//! as [`StartAttributes`], encoded once for all the calls that share them,
//! and the status code, set when the call ends, has a slot of its own,
//! written from a table of the seventeen codes' fields: a span encodes
//! without an attribute of its own to write, unless something beyond
//! sinew sets one.
//!
//! It is an OpenTelemetry [`Span`] all the same, carried in the call's
//! context like the SDK's: the resilience layers' events, a handler's
//! `tracing` spans (its children) and anything else that reaches the
//! current span through the API see no difference. It keeps the SDK's span
//! limits, from the configuration (`OTEL_SPAN_*_COUNT_LIMIT` and the
//! others; by default 128 attributes, events and links, 128 attributes per
//! event and link; beyond, dropped and counted) and its rule for the
//! status: `Ok` beats `Error`, which beats `Unset`. One difference: setting
//! `rpc.grpc.status_code` twice keeps the last value, where the SDK would
//! export both (the specification asks for the last; duplicate keys are
//! not allowed).

use std::{borrow::Cow, fmt, ops::Deref, sync::Arc, time::SystemTime};

use opentelemetry::{
    KeyValue, Value,
    trace::{Event, Link, Span, SpanContext, SpanId, SpanKind, Status},
};

use super::{
    otlp,
    queue::{Finished, SpanQueue},
};

/// The instrumentation scope of sinew's spans, its own and those of the
/// `tracing` bridge.
pub(crate) const SCOPE: &str = "sinew";

/// The attribute a call's gRPC status code is recorded under.
pub(crate) const STATUS_CODE: &str = "rpc.grpc.status_code";

/// A span limit as a length.
fn limit(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// What every span of one method shares: its name and its `rpc.system`,
/// `rpc.service` and `rpc.method` attributes, and both as encoded OTLP
/// fields.
#[derive(Clone)]
pub(crate) struct SpanParts {
    /// `package.Service/Method`.
    pub(crate) name: Cow<'static, str>,
    /// `rpc.system`, `rpc.service`, `rpc.method`.
    pub(crate) rpc: [KeyValue; 3],
    /// The span's `name` field, key and length included.
    pub(crate) name_field: Box<[u8]>,
    /// The three `attributes` fields for `rpc`.
    pub(crate) rpc_fields: Box<[u8]>,
}

/// Attributes a span starts with, beyond the RPC ones, with their encoded
/// OTLP fields: made once and shared by the spans that start with the
/// same.
pub(crate) struct StartAttributes {
    pub(crate) attributes: Box<[KeyValue]>,
    /// The `attributes` fields for `attributes`.
    pub(crate) fields: Box<[u8]>,
}

/// A span's [`SpanParts`]: a registered method's, shared for the life of
/// the process, or, for a path past the registry's bound, its own.
#[derive(Debug, Clone)]
pub(crate) enum Parts {
    Shared(&'static SpanParts),
    Own(Box<SpanParts>),
}

/// A finished call span, as the span queue holds it.
#[derive(Debug, Clone)]
pub(crate) struct CallSpanData {
    pub(crate) context: SpanContext,
    /// [`SpanId::INVALID`] for a root.
    pub(crate) parent_span_id: SpanId,
    pub(crate) parent_is_remote: bool,
    pub(crate) kind: SpanKind,
    pub(crate) parts: Parts,
    /// A name set after the start, in place of the method's.
    pub(crate) renamed: Option<Cow<'static, str>>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// The attributes it started with, after the RPC ones.
    pub(crate) start_attributes: Option<Arc<StartAttributes>>,
    /// The attributes set since (the status code aside).
    pub(crate) attributes: Vec<KeyValue>,
    /// `rpc.grpc.status_code`, once set: the last attribute written.
    pub(crate) status_code: Option<i64>,
    pub(crate) dropped_attributes: u32,
    pub(crate) events: Vec<Event>,
    pub(crate) dropped_events: u32,
    pub(crate) links: Vec<Link>,
    pub(crate) dropped_links: u32,
    pub(crate) status: Status,
}

/// A call's span while the call runs. Ending it (or dropping it) puts it
/// on the span queue; after that it records nothing.
#[derive(Debug)]
pub(crate) struct CallSpan {
    context: SpanContext,
    data: Option<CallSpanData>,
    queue: &'static SpanQueue,
}

// === impl SpanParts ===

impl SpanParts {
    /// The parts of spans named `name` with the RPC attributes `rpc`,
    /// encoded now.
    pub(crate) fn new(name: Cow<'static, str>, rpc: [KeyValue; 3]) -> Self {
        Self {
            name_field: otlp::span_name_field(&name),
            rpc_fields: otlp::span_attribute_fields(&rpc),
            name,
            rpc,
        }
    }
}

impl fmt::Debug for SpanParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The encoded fields say the same again, as bytes.
        f.debug_struct("SpanParts")
            .field("name", &self.name)
            .field("rpc", &self.rpc)
            .finish_non_exhaustive()
    }
}

// === impl StartAttributes ===

impl StartAttributes {
    /// `attributes`, encoded now.
    pub(crate) fn new(attributes: Vec<KeyValue>) -> Arc<Self> {
        Arc::new(Self {
            fields: otlp::span_attribute_fields(&attributes),
            attributes: attributes.into(),
        })
    }
}

impl fmt::Debug for StartAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartAttributes")
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

// === impl Parts ===

impl Deref for Parts {
    type Target = SpanParts;

    fn deref(&self) -> &SpanParts {
        match self {
            Self::Shared(parts) => parts,
            Self::Own(parts) => parts,
        }
    }
}

// === impl CallSpanData ===

impl CallSpanData {
    /// A span started now, with `start_attributes` after the RPC ones.
    pub(crate) fn start(
        context: SpanContext,
        parent: &SpanContext,
        kind: SpanKind,
        parts: Parts,
        start_attributes: Option<Arc<StartAttributes>>,
    ) -> Self {
        let start = opentelemetry::time::now();
        Self {
            context,
            parent_span_id: parent.span_id(),
            parent_is_remote: parent.is_remote(),
            kind,
            parts,
            renamed: None,
            start,
            end: start,
            start_attributes,
            attributes: Vec::new(),
            status_code: None,
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
            dropped_links: 0,
            status: Status::Unset,
        }
    }
}

// === impl CallSpan ===

impl CallSpan {
    /// Records `data` until it ends, then hands it to `queue`.
    pub(crate) fn new(data: CallSpanData, queue: &'static SpanQueue) -> Self {
        Self {
            context: data.context.clone(),
            data: Some(data),
            queue,
        }
    }
}

impl Span for CallSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        mut attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        let Some(data) = &mut self.data else { return };
        let limits = self.queue.span_limits();
        if data.events.len() < limit(limits.max_events_per_span) {
            let per_event = limit(limits.max_attributes_per_event);
            let dropped = attributes.len().saturating_sub(per_event);
            attributes.truncate(per_event);
            data.events
                .push(Event::new(name, timestamp, attributes, count(dropped)));
        } else {
            data.dropped_events = data.dropped_events.saturating_add(1);
        }
    }

    fn span_context(&self) -> &SpanContext {
        &self.context
    }

    fn is_recording(&self) -> bool {
        self.data.is_some()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        let Some(data) = &mut self.data else { return };
        let max = limit(self.queue.span_limits().max_attributes_per_span);
        if attribute.key.as_str() == STATUS_CODE
            && let Value::I64(code) = attribute.value
        {
            if data.status_code.is_none() && data.attribute_count() >= max {
                data.dropped_attributes = data.dropped_attributes.saturating_add(1);
            } else {
                data.status_code = Some(code);
            }
            return;
        }
        if data.attribute_count() < max {
            data.attributes.push(attribute);
        } else {
            data.dropped_attributes = data.dropped_attributes.saturating_add(1);
        }
    }

    fn set_status(&mut self, status: Status) {
        let Some(data) = &mut self.data else { return };
        // The SDK's order: Ok > Error > Unset.
        if status > data.status {
            data.status = status;
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(data) = &mut self.data {
            data.renamed = Some(new_name.into());
        }
    }

    fn add_link(&mut self, span_context: SpanContext, mut attributes: Vec<KeyValue>) {
        let Some(data) = &mut self.data else { return };
        let limits = self.queue.span_limits();
        if data.links.len() < limit(limits.max_links_per_span) {
            let per_link = limit(limits.max_attributes_per_link);
            let dropped = attributes.len().saturating_sub(per_link);
            attributes.truncate(per_link);
            data.links
                .push(Link::new(span_context, attributes, count(dropped)));
        } else {
            data.dropped_links = data.dropped_links.saturating_add(1);
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        if let Some(mut data) = self.data.take() {
            data.end = timestamp;
            self.queue.push(Finished::Call(data));
        }
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        // An ended span (a call's span ends when the call does) reads no
        // clock: `end` would, only to find it has nothing to end.
        if self.data.is_some() {
            self.end();
        }
    }
}

impl CallSpanData {
    /// How many attributes the span has, the RPC ones included.
    fn attribute_count(&self) -> usize {
        let start = self
            .start_attributes
            .as_ref()
            .map_or(0, |start| start.attributes.len());
        3 + start + self.attributes.len() + usize::from(self.status_code.is_some())
    }
}

fn count(dropped: usize) -> u32 {
    u32::try_from(dropped).unwrap_or(u32::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry::trace::{TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLimits, SpanLinks};

    use super::*;
    use crate::pipeline::queue::tests::recording_queue;

    /// The span's name.
    pub(crate) fn name(span: &CallSpanData) -> &str {
        span.renamed.as_deref().unwrap_or(&span.parts.name)
    }

    /// The SDK's `SpanData` for `span`: what the SDK would have exported
    /// for the same span.
    pub(crate) fn as_sdk(span: &CallSpanData) -> SpanData {
        let mut attributes = span.parts.rpc.to_vec();
        if let Some(start) = &span.start_attributes {
            attributes.extend(start.attributes.iter().cloned());
        }
        attributes.extend(span.attributes.iter().cloned());
        attributes.extend(
            span.status_code
                .map(|code| KeyValue::new(STATUS_CODE, code)),
        );
        let mut events = SpanEvents::default();
        events.events = span.events.clone();
        events.dropped_count = span.dropped_events;
        let mut links = SpanLinks::default();
        links.links = span.links.clone();
        links.dropped_count = span.dropped_links;
        SpanData {
            span_context: span.context.clone(),
            parent_span_id: span.parent_span_id,
            parent_span_is_remote: span.parent_is_remote,
            span_kind: span.kind.clone(),
            name: Cow::Owned(name(span).to_owned()),
            start_time: span.start,
            end_time: span.end,
            attributes,
            dropped_attributes_count: span.dropped_attributes,
            events,
            links,
            status: span.status.clone(),
            instrumentation_scope: opentelemetry::InstrumentationScope::builder(SCOPE).build(),
        }
    }

    pub(crate) fn parts(name: &'static str) -> Parts {
        let (service, method) = name.split_once('/').unwrap();
        Parts::Own(Box::new(SpanParts::new(
            Cow::Borrowed(name),
            [
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
            ],
        )))
    }

    pub(crate) fn context(span: u64, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(0x51),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            TraceState::default(),
        )
    }

    fn started(queue: Arc<SpanQueue>) -> CallSpan {
        let queue: &'static SpanQueue = Box::leak(Box::new(queue));
        let data = CallSpanData::start(
            context(2, false),
            &context(1, true),
            SpanKind::Server,
            parts("pkg.Service/Method"),
            Some(StartAttributes::new(vec![KeyValue::new(
                "network.peer.port",
                4242,
            )])),
        );
        CallSpan::new(data, queue)
    }

    #[test]
    fn a_span_reaches_the_queue_once_as_it_was_recorded() {
        let (queue, finished) = recording_queue();
        let mut span = started(Arc::clone(&queue));
        assert!(span.is_recording());
        span.set_attribute(KeyValue::new("extra", true));
        span.add_event("retrying", vec![KeyValue::new("attempt", 2)]);
        span.add_link(context(9, true), Vec::new());
        span.update_name("renamed");
        span.end();
        assert!(!span.is_recording());
        span.set_attribute(KeyValue::new("late", true));
        span.end();
        drop(span);

        let spans = finished();
        assert_eq!(spans.len(), 1, "ended once");
        let Finished::Call(data) = &spans[0] else {
            panic!("not a call span")
        };
        assert_eq!(name(data), "renamed");
        assert_eq!(data.parent_span_id, SpanId::from(1));
        assert!(data.parent_is_remote);
        assert_eq!(data.attributes, [KeyValue::new("extra", true)]);
        assert_eq!(data.events.len(), 1);
        assert_eq!(data.links.len(), 1);
        assert!(data.end >= data.start);
    }

    #[test]
    fn a_dropped_span_ends() {
        let (queue, finished) = recording_queue();
        drop(started(queue));
        assert_eq!(finished().len(), 1);
    }

    #[test]
    fn the_status_follows_the_sdks_order() {
        let (queue, finished) = recording_queue();
        let mut span = started(queue);
        span.set_status(Status::error("first"));
        span.set_status(Status::Unset);
        span.set_status(Status::Ok);
        span.set_status(Status::error("after ok"));
        span.end();
        let Finished::Call(data) = &finished()[0] else {
            panic!("not a call span")
        };
        assert_eq!(data.status, Status::Ok);
    }

    #[test]
    fn the_sdks_limits_hold() {
        let (queue, finished) = recording_queue();
        let mut span = started(queue);
        for i in 0..200 {
            span.set_attribute(KeyValue::new("n", i));
            span.add_event("e", Vec::new());
            span.add_link(context(10 + i as u64, false), Vec::new());
        }
        let many = (0..130).map(|i| KeyValue::new("k", i)).collect();
        span.end();
        let Finished::Call(data) = &finished()[0] else {
            panic!("not a call span")
        };
        // Three RPC attributes and the peer port came first.
        assert_eq!(data.attribute_count(), 128);
        assert_eq!(data.attributes.len() + 4, 128);
        assert_eq!(data.dropped_attributes, 200 - (128 - 4));
        assert_eq!((data.events.len(), data.dropped_events), (128, 72));
        assert_eq!((data.links.len(), data.dropped_links), (128, 72));

        let (queue, finished) = recording_queue();
        let mut span = started(queue);
        span.add_event("many", many);
        span.end();
        let Finished::Call(data) = &finished()[0] else {
            panic!("not a call span")
        };
        assert_eq!(data.events[0].attributes.len(), 128);
        assert_eq!(data.events[0].dropped_attributes_count, 2);
    }

    #[test]
    fn configured_limits_hold() {
        let limits = SpanLimits {
            max_attributes_per_span: 6,
            max_events_per_span: 2,
            max_links_per_span: 1,
            max_attributes_per_event: 1,
            max_attributes_per_link: 0,
        };
        let (queue, finished) = crate::pipeline::queue::tests::recording_queue_with(limits);
        let mut span = started(queue);
        for i in 0..5 {
            span.set_attribute(KeyValue::new("n", i));
            span.add_event("e", vec![KeyValue::new("a", 1), KeyValue::new("b", 2)]);
            span.add_link(context(10 + i as u64, false), vec![KeyValue::new("a", 1)]);
        }
        span.end();
        let Finished::Call(data) = &finished()[0] else {
            panic!("not a call span")
        };
        // Three RPC attributes and the peer port came first: two more fit.
        assert_eq!(data.attribute_count(), 6);
        assert_eq!(data.dropped_attributes, 3);
        assert_eq!((data.events.len(), data.dropped_events), (2, 3));
        assert_eq!(data.events[0].attributes.len(), 1);
        assert_eq!(data.events[0].dropped_attributes_count, 1);
        assert_eq!((data.links.len(), data.dropped_links), (1, 4));
        assert!(data.links[0].attributes.is_empty());
        assert_eq!(data.links[0].dropped_attributes_count, 1);
    }

    #[test]
    fn the_status_code_has_its_own_slot_and_the_last_value_wins() {
        let (queue, finished) = recording_queue();
        let mut span = started(queue);
        span.set_attribute(KeyValue::new(STATUS_CODE, 14));
        span.set_attribute(KeyValue::new("after", 1));
        span.set_attribute(KeyValue::new(STATUS_CODE, 0));
        // Not a code: an attribute like any other.
        span.set_attribute(KeyValue::new(STATUS_CODE, "OK"));
        span.end();
        let Finished::Call(data) = &finished()[0] else {
            panic!("not a call span")
        };
        assert_eq!(data.status_code, Some(0));
        assert_eq!(
            data.attributes,
            [KeyValue::new("after", 1), KeyValue::new(STATUS_CODE, "OK")]
        );
        assert_eq!(data.attribute_count(), 3 + 1 + 2 + 1);
    }
}
