//! The gRPC header names sinew reads and writes on every call.
//!
//! Looking a header up by a `&str` parses the string into a header name on
//! each lookup (a scan of the standard names included); a `HeaderName`
//! constant, built at compile time, is only hashed. These lookups happen
//! several times per call, on both sides.

use http::HeaderName;

/// The call's status code, in trailers or a trailers-only response.
pub(crate) const GRPC_STATUS: HeaderName = tonic::Status::GRPC_STATUS;

/// The caller's deadline, as a timeout (`100m`, `5S`, ...).
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRFC A6 server pushback: when (or whether) to retry.
pub(crate) const GRPC_RETRY_PUSHBACK_MS: HeaderName =
    HeaderName::from_static("grpc-retry-pushback-ms");
