//! What a call's outcome means for the breaker.

use std::error::Error;

use tonic::{Code, Status};

use super::state::Outcome;
use crate::{BreakerOpen, BulkheadFull, DeadlineSpent, cause};

/// Success unless `code` says the server is unhealthy.
pub(crate) fn code_outcome(code: Code) -> Outcome {
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::ResourceExhausted => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// The outcome of a call that failed with `error`: the code of the first
/// status in its chain, or a failure if there is none (a transport error).
/// `None` if a sinew layer below refused the call without sending it, which
/// says nothing about the server.
pub(crate) fn error_outcome(error: &(dyn Error + 'static)) -> Option<Outcome> {
    match sinew_core::status::caused_by::<Status>(error) {
        Some(status) if never_sent(status) => None,
        Some(status) => Some(code_outcome(status.code())),
        None => Some(Outcome::Failure),
    }
}

fn never_sent(status: &Status) -> bool {
    cause::<BulkheadFull>(status).is_some()
        || cause::<DeadlineSpent>(status).is_some()
        || cause::<BreakerOpen>(status).is_some()
}

/// The code of a response with HTTP status `status` and no `grpc-status`,
/// by the gRPC spec's HTTP to gRPC status mapping, as tonic maps it. A
/// proxy's 503 is thus a failure, its 404 not.
pub(crate) fn http_code(status: http::StatusCode) -> Code {
    use http::StatusCode;
    match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status_with_cause;

    #[test]
    fn only_unhealthy_codes_fail() {
        let failures = [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
            Code::ResourceExhausted,
        ];
        for code in (0..=16).map(Code::from_i32) {
            let expected = if failures.contains(&code) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(code_outcome(code), expected, "{code:?}");
        }
    }

    #[test]
    fn errors_are_failures_unless_a_status_or_local_refusal_says_otherwise() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(error_outcome(&io), Some(Outcome::Failure));
        let not_found = Status::not_found("no");
        assert_eq!(error_outcome(&not_found), Some(Outcome::Success));
        let full = status_with_cause(
            Code::ResourceExhausted,
            "full",
            BulkheadFull { timed_out: false },
        );
        assert_eq!(error_outcome(&full), None);
    }

    #[test]
    fn http_statuses_map_as_the_spec_says() {
        assert_eq!(
            code_outcome(http_code(http::StatusCode::SERVICE_UNAVAILABLE)),
            Outcome::Failure
        );
        assert_eq!(
            code_outcome(http_code(http::StatusCode::NOT_FOUND)),
            Outcome::Success
        );
    }
}
