//! gRPC errors as HTTP errors: the status code and the JSON body.

use http::StatusCode;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Map, Value as Json, json};
use tonic::Code;

use super::json::wkt_json_form;

/// `google.rpc.Status`, as tonic sends it encoded in the
/// `grpc-status-details-bin` trailer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The error message, for developers.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details, such as `google.rpc.BadRequest`.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// The `google.rpc.Status` JSON body of an error:
/// `{"code": <int>, "message": "...", "details": [..]}`.
///
/// `details` are the bytes of tonic's `grpc-status-details-bin` (an encoded
/// `google.rpc.Status`; empty for none). Each detail is written as the JSON
/// of an `Any` (`{"@type": ..., ...}`) when `pool` knows its type, else as
/// `{"@type": ..., "value": <base64>}`. Details that do not decode are left
/// out: the code and message still go through.
pub fn status_json(code: Code, message: &str, details: &[u8], pool: &DescriptorPool) -> Vec<u8> {
    let details: Vec<Json> = RpcStatus::decode(details)
        .map(|status| {
            status
                .details
                .iter()
                .map(|any| any_json(any, pool))
                .collect()
        })
        .unwrap_or_default();
    json!({ "code": i32::from(code), "message": message, "details": details })
        .to_string()
        .into_bytes()
}

/// An `Any` in the proto3 JSON mapping: the fields of the message next to
/// `@type`, or under `value` for a well-known type (whose JSON may not be an
/// object) and for a type the pool does not know (as base64).
fn any_json(any: &prost_types::Any, pool: &DescriptorPool) -> Json {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let decoded = pool
        .get_message_by_name(name)
        .and_then(|desc| DynamicMessage::decode(desc, any.value.as_slice()).ok())
        .and_then(|message| serde_json::to_value(&message).ok());
    let mut object = Map::new();
    object.insert("@type".into(), any.type_url.clone().into());
    match decoded {
        Some(Json::Object(fields)) if wkt_json_form(name).is_none() => object.extend(fields),
        Some(value) => {
            object.insert("value".into(), value);
        }
        None => {
            object.insert("value".into(), base64(&any.value).into());
        }
    }
    Json::Object(object)
}

/// Standard base64 with padding, as the JSON mapping writes bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The standard gRPC to HTTP status mapping, as grpc-gateway and the
/// `google.api` transcoders use it.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 Client Closed Request has no constant; it is in range, so
        // the fallback is never taken.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_pads() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }
}
