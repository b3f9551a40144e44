//! The envelope every event travels in: `sinew.EventEnvelope`.
//!
//! On JetStream it is the message's headers plus its payload (the event,
//! encoded); in an outbox row it is the envelope message, encoded whole.
//! The header names are the constants below.

use std::{collections::BTreeMap, time::SystemTime};

use async_nats::{HeaderMap, HeaderName};
use bytes::Bytes;
use prost::Message as _;
use sinew_core::event::Event;

use crate::error::EnvelopeError;

/// JetStream's deduplication header: the event id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The event's type, its message's full protobuf name.
pub const EVENT_TYPE: &str = "Sinew-Event-Type";
/// The id of the aggregate the event belongs to.
pub const AGGREGATE_ID: &str = "Sinew-Aggregate-Id";
/// When the event happened, RFC 3339 in UTC with nanoseconds.
pub const OCCURRED_AT: &str = "Sinew-Occurred-At";
/// The event's schema version.
pub const SCHEMA_VERSION: &str = "Sinew-Schema-Version";
/// The trace context headers (W3C Trace Context) the envelope carries.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The envelope of one event, field for field `sinew.EventEnvelope`
/// (`proto/sinew/events.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// The event id, a UUIDv7, hyphenated: the outbox row's id, the
    /// JetStream message id and the inbox key.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The event message's full protobuf name.
    #[prost(string, tag = "2")]
    pub r#type: String,
    /// The subject the event is published on.
    #[prost(string, tag = "3")]
    pub subject: String,
    /// The id of the aggregate the event belongs to.
    #[prost(string, tag = "4")]
    pub aggregate_id: String,
    /// When the event happened.
    #[prost(message, optional, tag = "5")]
    pub occurred_at: Option<prost_types::Timestamp>,
    /// The schema version the contract declares.
    #[prost(uint32, tag = "6")]
    pub schema_version: u32,
    /// W3C trace context of the span that recorded the event.
    #[prost(btree_map = "string, string", tag = "7")]
    pub trace_context: BTreeMap<String, String>,
    /// The event message, encoded.
    #[prost(bytes = "bytes", tag = "8")]
    pub payload: Bytes,
}

impl Envelope {
    /// The envelope of `event`, happening now, with a new UUIDv7 id and the
    /// current trace context (the span of the RPC being handled, say).
    pub fn new<E: Event>(event: &E) -> Self {
        let mut headers = http::HeaderMap::new();
        sinew_telemetry::propagation::inject(&opentelemetry::Context::current(), &mut headers);
        let trace_context = TRACE_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        Self {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            r#type: E::TYPE.to_owned(),
            subject: E::SUBJECT.to_owned(),
            aggregate_id: event.aggregate_id(),
            occurred_at: Some(SystemTime::now().into()),
            schema_version: E::SCHEMA_VERSION,
            trace_context,
            payload: event.encode_to_vec().into(),
        }
    }

    /// Decodes an envelope stored whole (an outbox row).
    pub fn from_stored(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::decode(bytes).map_err(|e| EnvelopeError::Stored(e.to_string()))
    }

    /// When the event happened.
    pub fn occurred_at(&self) -> Option<SystemTime> {
        let at = self.occurred_at?;
        SystemTime::try_from(at).ok()
    }

    /// The NATS headers the envelope travels in (the payload goes as the
    /// message's body).
    pub fn headers(&self) -> HeaderMap {
        // Names made with `from_static` are neither checked nor copied, as
        // `&str` names are on every insert; `String` values are moved in.
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static(MSG_ID), self.id.as_str());
        headers.insert(HeaderName::from_static(EVENT_TYPE), self.r#type.as_str());
        headers.insert(
            HeaderName::from_static(AGGREGATE_ID),
            self.aggregate_id.as_str(),
        );
        if let Some(at) = self.occurred_at() {
            headers.insert(
                HeaderName::from_static(OCCURRED_AT),
                humantime::format_rfc3339_nanos(at).to_string(),
            );
        }
        headers.insert(
            HeaderName::from_static(SCHEMA_VERSION),
            self.schema_version.to_string(),
        );
        for (name, value) in &self.trace_context {
            headers.insert(name.as_str(), value.as_str());
        }
        headers
    }

    /// Reads an envelope back from a message's subject, headers and
    /// payload. Every header but the trace context is required.
    pub fn from_message(
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
    ) -> Result<Self, EnvelopeError> {
        let headers = headers.ok_or(EnvelopeError::Header(MSG_ID))?;
        // One pass over the headers: each `HeaderMap::get` by a `&str`
        // checks and copies the name, then hashes it.
        let (mut id, mut r#type, mut aggregate_id, mut occurred_at, mut schema_version) =
            (None, None, None, None, None);
        let mut trace_context = BTreeMap::new();
        for (name, values) in headers.iter() {
            let Some(value) = values.first() else {
                continue;
            };
            let name: &str = name.as_ref();
            let slot = match name {
                MSG_ID => &mut id,
                EVENT_TYPE => &mut r#type,
                AGGREGATE_ID => &mut aggregate_id,
                OCCURRED_AT => &mut occurred_at,
                SCHEMA_VERSION => &mut schema_version,
                _ => {
                    if TRACE_HEADERS.contains(&name) {
                        trace_context.insert(name.to_owned(), value.as_str().to_owned());
                    }
                    continue;
                }
            };
            *slot = Some(value.as_str());
        }
        fn required<'a>(
            value: Option<&'a str>,
            name: &'static str,
        ) -> Result<&'a str, EnvelopeError> {
            value
                .filter(|v| !v.is_empty())
                .ok_or(EnvelopeError::Header(name))
        }
        let id = required(id, MSG_ID)?.to_owned();
        let r#type = required(r#type, EVENT_TYPE)?.to_owned();
        let aggregate_id = aggregate_id
            .ok_or(EnvelopeError::Header(AGGREGATE_ID))?
            .to_owned();
        let occurred_at = humantime::parse_rfc3339(required(occurred_at, OCCURRED_AT)?)
            .map_err(|_| EnvelopeError::Header(OCCURRED_AT))?;
        let schema_version = required(schema_version, SCHEMA_VERSION)?
            .parse()
            .map_err(|_| EnvelopeError::Header(SCHEMA_VERSION))?;
        Ok(Self {
            id,
            r#type,
            subject: subject.to_owned(),
            aggregate_id,
            occurred_at: Some(occurred_at.into()),
            schema_version,
            trace_context,
            payload,
        })
    }

    /// Decodes the event the envelope carries, if it is an `E`.
    pub fn event<E: Event>(&self) -> Result<E, EnvelopeError> {
        if self.r#type != E::TYPE {
            let mut found = self.r#type.clone();
            if found.len() > 200 {
                let cut = (0..=200).rev().find(|&i| found.is_char_boundary(i));
                found.truncate(cut.unwrap_or(0));
            }
            return Err(EnvelopeError::UnknownType {
                expected: E::TYPE,
                found,
            });
        }
        E::decode(self.payload.clone()).map_err(|e| EnvelopeError::Payload {
            event_type: E::TYPE,
            reason: e.to_string(),
        })
    }

    /// The trace context the event was recorded in, as the parent of the
    /// consumer's span.
    pub fn trace_parent(&self) -> opentelemetry::Context {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.trace_context {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        sinew_telemetry::propagation::extract(&headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Placed {
        #[prost(string, tag = "1")]
        order_id: String,
        #[prost(int64, tag = "2")]
        amount: i64,
    }

    impl Event for Placed {
        const TYPE: &'static str = "shop.Placed";
        const SUBJECT: &'static str = "shop.placed";
        const SCHEMA_VERSION: u32 = 3;
        fn aggregate_id(&self) -> String {
            self.order_id.clone()
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Other {}

    impl Event for Other {
        const TYPE: &'static str = "shop.Other";
        const SUBJECT: &'static str = "shop.other";
        const SCHEMA_VERSION: u32 = 1;
        fn aggregate_id(&self) -> String {
            String::new()
        }
    }

    fn placed() -> Placed {
        Placed {
            order_id: "o-7".into(),
            amount: 1250,
        }
    }

    #[test]
    fn an_envelope_survives_headers_and_payload() {
        let envelope = Envelope::new(&placed());
        assert_eq!(
            uuid::Uuid::parse_str(&envelope.id)
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(envelope.schema_version, 3);
        let back = Envelope::from_message(
            "shop.placed",
            Some(&envelope.headers()),
            envelope.payload.clone(),
        )
        .unwrap();
        assert_eq!(back, envelope);
        assert_eq!(back.event::<Placed>().unwrap(), placed());

        // The trace context comes back; other headers are ignored.
        let mut traced = envelope;
        traced.trace_context = BTreeMap::from([
            (
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            ),
            ("tracestate".to_owned(), "vendor=1".to_owned()),
        ]);
        let mut headers = traced.headers();
        headers.insert("X-Other", "ignored");
        let back =
            Envelope::from_message("shop.placed", Some(&headers), traced.payload.clone()).unwrap();
        assert_eq!(back, traced);
    }

    #[test]
    fn an_envelope_survives_storage() {
        let envelope = Envelope::new(&placed());
        let stored = envelope.encode_to_vec();
        assert_eq!(Envelope::from_stored(&stored).unwrap(), envelope);
        assert!(Envelope::from_stored(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn bad_messages_are_named() {
        let envelope = Envelope::new(&placed());
        let payload = envelope.payload.clone();
        assert_eq!(
            Envelope::from_message("s", None, payload.clone()),
            Err(EnvelopeError::Header(MSG_ID))
        );
        for name in [
            MSG_ID,
            EVENT_TYPE,
            AGGREGATE_ID,
            OCCURRED_AT,
            SCHEMA_VERSION,
        ] {
            let mut headers = HeaderMap::new();
            for (key, values) in envelope.headers().iter() {
                if key.to_string() != name {
                    for value in values {
                        headers.append(key.clone(), value.clone());
                    }
                }
            }
            assert_eq!(
                Envelope::from_message("s", Some(&headers), payload.clone()),
                Err(EnvelopeError::Header(name)),
                "{name}"
            );
        }
        assert!(matches!(
            envelope.event::<Other>(),
            Err(EnvelopeError::UnknownType {
                expected: "shop.Other",
                ..
            })
        ));
        let corrupt = Envelope {
            payload: Bytes::from_static(&[0x0a, 0xff]),
            ..envelope
        };
        assert!(matches!(
            corrupt.event::<Placed>(),
            Err(EnvelopeError::Payload { .. })
        ));
    }

    /// The hand-written message is `sinew.EventEnvelope` field for field.
    #[test]
    fn the_envelope_matches_its_contract() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sinew-build/proto");
        let pool = protox::compile(["sinew/events.proto"], [dir]).unwrap();
        let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(pool).unwrap();
        let message = pool.get_message_by_name("sinew.EventEnvelope").unwrap();
        let envelope = Envelope::new(&placed());
        let bytes = envelope.encode_to_vec();
        let dynamic =
            prost_reflect::DynamicMessage::decode(message.clone(), bytes.as_slice()).unwrap();
        let field = |name: &str| dynamic.get_field_by_name(name).unwrap().into_owned();
        assert_eq!(field("id").as_str(), Some(envelope.id.as_str()));
        assert_eq!(field("type").as_str(), Some("shop.Placed"));
        assert_eq!(field("subject").as_str(), Some("shop.placed"));
        assert_eq!(field("aggregate_id").as_str(), Some("o-7"));
        assert_eq!(field("schema_version").as_u32(), Some(3));
        assert_eq!(field("payload").as_bytes(), Some(&envelope.payload));
        assert!(dynamic.has_field_by_name("occurred_at"));
        assert_eq!(message.fields().count(), 8);
    }
}
