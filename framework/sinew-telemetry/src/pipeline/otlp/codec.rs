//! The gRPC codec of the export call: the request is already encoded and
//! framed, and goes in as the body in place of what the codec writes
//! (nothing; see the exporter), and of the response only the partial
//! success matters.

use bytes::Buf;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use super::wire::{self, Malformed, WireType};

/// `ExportTraceServiceResponse.partial_success`.
const PARTIAL_SUCCESS: u32 = 1;
/// `ExportTracePartialSuccess.rejected_spans`.
const REJECTED_SPANS: u32 = 1;
/// `ExportTracePartialSuccess.error_message`.
const ERROR_MESSAGE: u32 = 2;

/// Reads back the `ExportTraceServiceResponse`'s partial success of an
/// export whose request is sent pre-encoded.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExportCodec;

/// Writes nothing: the request's body is the pre-encoded batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestEncoder;

/// Reads the partial success out of the response, skipping everything
/// else.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ResponseDecoder;

/// What the collector said it did not take from a batch it otherwise
/// accepted. Both empty on full success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartialSuccess {
    /// Spans the collector dropped; 0 when the message is only a warning.
    pub(crate) rejected_spans: i64,
    /// Why, for people.
    pub(crate) error_message: String,
}

// === impl ExportCodec ===

impl Codec for ExportCodec {
    type Encode = ();
    type Decode = PartialSuccess;
    type Encoder = RequestEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

// === impl RequestEncoder ===

impl Encoder for RequestEncoder {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, (): (), _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

// === impl ResponseDecoder ===

impl Decoder for ResponseDecoder {
    type Item = PartialSuccess;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PartialSuccess>, Status> {
        // The export went through either way: a response we cannot read
        // does not make it fail.
        Ok(Some(read_response(src).unwrap_or_default()))
    }
}

/// Reads an `ExportTraceServiceResponse`. Per protobuf, a field seen twice
/// takes its last value, and a message field seen twice is merged.
pub(crate) fn read_response(buf: &mut impl Buf) -> Result<PartialSuccess, Malformed> {
    let mut partial = PartialSuccess::default();
    while buf.has_remaining() {
        let (tag, wire_type) = wire::get_key(buf)?;
        if tag == PARTIAL_SUCCESS && wire_type == WireType::Len {
            let len = wire::get_len(buf)?;
            let mut message = buf.take(len);
            read_partial_success(&mut message, &mut partial)?;
            // Whatever the inner reader left of its message.
            let rest = message.remaining();
            message.into_inner().advance(rest);
        } else {
            wire::skip(buf, wire_type)?;
        }
    }
    Ok(partial)
}

fn read_partial_success(buf: &mut impl Buf, partial: &mut PartialSuccess) -> Result<(), Malformed> {
    while buf.has_remaining() {
        match wire::get_key(buf)? {
            (REJECTED_SPANS, WireType::Varint) => {
                // int64: a negative count is the two's complement.
                partial.rejected_spans = wire::get_varint(buf)? as i64;
            }
            (ERROR_MESSAGE, WireType::Len) => {
                let len = wire::get_len(buf)?;
                let mut bytes = vec![0; len];
                buf.copy_to_slice(&mut bytes);
                partial.error_message = String::from_utf8_lossy(&bytes).into_owned();
            }
            (_, wire_type) => wire::skip(buf, wire_type)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message as _;

    use super::*;

    fn read(response: &ExportTraceServiceResponse) -> PartialSuccess {
        read_response(&mut response.encode_to_vec().as_slice()).unwrap()
    }

    #[test]
    fn a_full_success_rejects_nothing() {
        assert_eq!(
            read(&ExportTraceServiceResponse::default()),
            PartialSuccess::default()
        );
        assert_eq!(
            read(&ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess::default()),
            }),
            PartialSuccess::default()
        );
    }

    #[test]
    fn a_partial_success_is_read() {
        let partial = read(&ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 7,
                error_message: "too old".to_owned(),
            }),
        });
        assert_eq!(partial.rejected_spans, 7);
        assert_eq!(partial.error_message, "too old");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = Vec::new();
        wire::put_varint_field(&mut bytes, 9, 1);
        bytes.extend(
            ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: 3,
                    error_message: String::new(),
                }),
            }
            .encode_to_vec(),
        );
        wire::put_bytes(&mut bytes, 10, b"later");
        assert_eq!(
            read_response(&mut bytes.as_slice()).unwrap().rejected_spans,
            3
        );
    }

    #[test]
    fn a_truncated_response_is_malformed() {
        let bytes = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "x".to_owned(),
            }),
        }
        .encode_to_vec();
        let truncated = &bytes[..bytes.len() - 1];
        assert_eq!(read_response(&mut &truncated[..]), Err(Malformed));
    }
}
