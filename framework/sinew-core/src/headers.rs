//! The gRPC header names sinew reads and writes on every call.
//!
//! Looking a header up by a `&str` parses the string into a header name on
//! each lookup (a scan of the standard names included); a `HeaderName`
//! constant, built at compile time, is only hashed. These lookups happen
//! several times per call, on both sides.

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

/// The call's status code, in trailers or a trailers-only response.
pub const GRPC_STATUS: HeaderName = tonic::Status::GRPC_STATUS;

/// The caller's deadline, as a timeout (`100m`, `5S`, ...).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRFC A6 server pushback: when (or whether) to retry.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Up to how many values a header map is scanned rather than hashed into
/// by [`find`]: as many as a call's headers or trailers usually hold.
const SCAN_MAX: usize = 8;

/// The first value of `name` in `headers`, as `HeaderMap::get` finds it.
///
/// Several layers look for `grpc-status` in every response's headers and
/// trailers, which hold two or three entries, and the server for
/// `grpc-timeout` in a handful of request headers: comparing their names
/// costs less than hashing the one looked for. A larger map is looked up.
#[inline]
pub fn find<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() <= SCAN_MAX {
        headers
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    } else {
        headers.get(name)
    }
}

/// The gRPC status code in `headers` (response headers, or trailers), if
/// they carry a `grpc-status`: the one reader every layer uses.
///
/// A value that is not a known code reads as `UNKNOWN`, as tonic reads it:
/// a response that carries a malformed status has still ended, and ended
/// badly. `None` means there is no status here yet (a response whose
/// status comes in its trailers).
#[inline]
pub fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    find(headers, &GRPC_STATUS).map(|value| Code::from_bytes(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_sees_what_get_sees_in_small_and_large_maps() {
        for size in [0, 1, 3, SCAN_MAX, SCAN_MAX + 1, 40] {
            let mut headers = HeaderMap::new();
            for i in 0..size {
                let name = HeaderName::try_from(format!("x-filler-{i}")).unwrap();
                headers.insert(name, HeaderValue::from(i));
            }
            assert_eq!(find(&headers, &GRPC_STATUS), None);
            if size > 0 {
                headers.append(GRPC_STATUS, HeaderValue::from_static("14"));
                headers.append(GRPC_STATUS, HeaderValue::from_static("0"));
            }
            assert_eq!(
                find(&headers, &GRPC_STATUS),
                headers.get(GRPC_STATUS),
                "{size}"
            );
            let filler = HeaderName::from_static("x-filler-0");
            assert_eq!(find(&headers, &filler), headers.get(&filler), "{size}");
        }
    }

    #[test]
    fn grpc_status_reads_codes_and_malformed_values_as_unknown() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        assert_eq!(grpc_status(&headers), Some(Code::Unavailable));
        headers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert_eq!(grpc_status(&headers), Some(Code::Ok));
        for malformed in ["", "abc", "99", "-1", "1.5"] {
            headers.insert(GRPC_STATUS, HeaderValue::from_static(malformed));
            assert_eq!(grpc_status(&headers), Some(Code::Unknown), "{malformed:?}");
        }
    }
}
