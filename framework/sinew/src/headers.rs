//! The gRPC header names sinew reads and writes on every call.
//!
//! Looking a header up by a `&str` parses the string into a header name on
//! each lookup (a scan of the standard names included); a `HeaderName`
//! constant, built at compile time, is only hashed. These lookups happen
//! several times per call, on both sides.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The call's status code, in trailers or a trailers-only response.
pub(crate) const GRPC_STATUS: HeaderName = tonic::Status::GRPC_STATUS;

/// The caller's deadline, as a timeout (`100m`, `5S`, ...).
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRFC A6 server pushback: when (or whether) to retry.
pub(crate) const GRPC_RETRY_PUSHBACK_MS: HeaderName =
    HeaderName::from_static("grpc-retry-pushback-ms");

/// Up to how many values a header map is scanned rather than hashed into
/// by [`find`]: as many as a call's headers or trailers usually hold.
const SCAN_MAX: usize = 8;

/// The first value of `name` in `headers`, as `HeaderMap::get` finds it.
///
/// Several layers look for `grpc-status` in every response's headers and
/// trailers, which hold two or three entries, and the server for
/// `grpc-timeout` in a handful of request headers: comparing their names
/// costs less than hashing the one looked for. A larger map is looked up.
pub(crate) fn find<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() <= SCAN_MAX {
        headers
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    } else {
        headers.get(name)
    }
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
}
