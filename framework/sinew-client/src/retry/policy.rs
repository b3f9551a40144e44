//! What an attempt's outcome means, and whether to try again.

use std::{error::Error, io, sync::Arc, time::Duration};

use sinew_core::status::{caused_by, chain};

use tonic::{Code, Status};

use super::{backoff::Backoff, throttle::RetryThrottle};
use crate::{CallPolicy, RetryPolicy, Rng};

/// gRFC A6 server pushback: the server says when (or whether) to retry.
pub(crate) const PUSHBACK: http::HeaderName = crate::headers::GRPC_RETRY_PUSHBACK_MS;

/// At most this many retries of a request that never reached the server
/// are made on top of the retry policy's attempts (or without one). A
/// connection that keeps being refused must not loop.
pub(crate) const TRANSPARENT_RETRIES: u32 = 1;

/// The server's pushback on a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// No `grpc-retry-pushback-ms`: the client's own backoff applies.
    Absent,
    /// Wait exactly this long before the next attempt.
    Wait(Duration),
    /// A negative or malformed value: do not try again.
    Stop,
}

// === impl Pushback ===

impl Pushback {
    /// Reads a header value: a non-negative decimal integer of
    /// milliseconds; anything else (negative, signed, empty, not a number,
    /// too large) means stop, as gRFC A6 says for invalid values.
    pub(crate) fn parse(value: Option<&[u8]>) -> Self {
        let Some(value) = value else {
            return Self::Absent;
        };
        let millis = std::str::from_utf8(value)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok());
        match millis {
            Some(millis) => Self::Wait(Duration::from_millis(millis)),
            None => Self::Stop,
        }
    }
}

/// What one attempt came to.
pub(crate) enum Outcome<B> {
    /// The server took the call: response headers without `grpc-status`
    /// (the call is committed: the response streams from here, and is
    /// never retried), or a trailers-only `grpc-status: 0`.
    Success(http::Response<B>),
    /// A status other than OK, or an error from the service below.
    Failure(Failure<B>),
}

/// A failed attempt, with what the retry decision needs to know of it.
pub(crate) struct Failure<B> {
    /// The status code; `UNAVAILABLE` for an error that carries no status
    /// (a transport failure, as gRPC maps them).
    pub(crate) code: Code,
    pub(crate) pushback: Pushback,
    /// The request provably never reached the server, so it is safe to
    /// send again whatever the method does.
    pub(crate) never_sent: bool,
    /// An error without a status in its chain.
    pub(crate) transport: bool,
    /// The outcome as the service below gave it, to be returned if this
    /// is the last attempt.
    pub(crate) result: Result<http::Response<B>, crate::BoxError>,
}

// === impl Outcome ===

impl<B> Outcome<B> {
    /// Classifies the result of one attempt.
    pub(crate) fn of(result: Result<http::Response<B>, crate::BoxError>) -> Self {
        match result {
            Ok(response) => {
                // A trailers-only response carries its status in the
                // headers; without one, the server has begun answering.
                let Some(code) = crate::headers::grpc_status(response.headers()) else {
                    return Self::Success(response);
                };
                if code == Code::Ok {
                    return Self::Success(response);
                }
                let pushback =
                    Pushback::parse(response.headers().get(PUSHBACK).map(|v| v.as_bytes()));
                Self::Failure(Failure {
                    code,
                    pushback,
                    never_sent: false,
                    transport: false,
                    result: Ok(response),
                })
            }
            Err(error) => {
                let status = find_status(&*error);
                let (code, pushback) = match status {
                    Some(status) => (
                        status.code(),
                        Pushback::parse(
                            status
                                .metadata()
                                .get(PUSHBACK.as_str())
                                .map(|v| v.as_encoded_bytes()),
                        ),
                    ),
                    None => (Code::Unavailable, Pushback::Absent),
                };
                Self::Failure(Failure {
                    code,
                    pushback,
                    never_sent: never_reached_server(&*error),
                    transport: status.is_none(),
                    result: Err(error),
                })
            }
        }
    }
}

/// The first status in `error`'s chain.
fn find_status<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Status> {
    caused_by::<Status>(error)
}

/// Whether `error` proves that the request never reached the server,
/// anywhere in its chain: a circuit breaker that refused it
/// ([`BreakerOpen`](crate::BreakerOpen): another endpoint may take
/// it); a connection that could not be made (sinew's
/// [`ConnectFailed`](crate::ConnectFailed), a `tonic::ConnectError`,
/// or an `io::Error` of kind `ConnectionRefused`); a request the connection
/// handed back unsent ([`NotSent`](crate::NotSent)); a
/// stream the server reset with `REFUSED_STREAM`, which HTTP/2 defines as
/// "not processed"; or a stream cut by the server's `GOAWAY`, which only
/// ends streams above the last one it processed.
///
/// Walks `source()` and downcasts; never looks at messages.
pub(crate) fn never_reached_server(error: &(dyn Error + 'static)) -> bool {
    chain(error).any(|error| {
        if error.is::<crate::ConnectFailed>()
            || error.is::<crate::NotSent>()
            || error.is::<tonic::ConnectError>()
            || error.is::<crate::BreakerOpen>()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        match error.downcast_ref::<io::Error>() {
            Some(io) if io.kind() == io::ErrorKind::ConnectionRefused => true,
            // `io::Error::source` skips the error it wraps and goes to that
            // error's source: look at the wrapped one itself.
            Some(io) => io
                .get_ref()
                .is_some_and(|inner| never_reached_server(inner)),
            None => false,
        }
    })
}

/// The retry decisions of one call, attempt after attempt.
pub(crate) struct RetryState<'a> {
    retry: Option<RetryPolicy>,
    may_repeat: bool,
    max_attempts: u32,
    /// Attempts that count against `max_attempts`: all but transparent
    /// retries.
    counted: u32,
    transparent_left: u32,
    /// Made at the first failure: a call that succeeds at once (the usual
    /// case) never pays for it.
    backoff: Option<Backoff>,
    rng: &'a Arc<Rng>,
    throttle: Option<&'a RetryThrottle>,
    /// The last decision was "no" only because of the throttle.
    throttled: bool,
    /// The last decision was a transparent retry: the failure never
    /// reached the server, and the retry counts against no policy.
    transparent: bool,
}

// === impl RetryState ===

impl<'a> RetryState<'a> {
    /// The state before the first attempt of a call with `policy`.
    pub(crate) fn new(
        policy: &CallPolicy,
        throttle: Option<&'a RetryThrottle>,
        rng: &'a Arc<Rng>,
        max_attempts_cap: u32,
    ) -> Self {
        let retry = policy.retry;
        Self {
            retry,
            may_repeat: policy.may_repeat(),
            max_attempts: retry.map_or(1, |r| r.max_attempts.clamp(1, max_attempts_cap.max(1))),
            counted: 1,
            transparent_left: TRANSPARENT_RETRIES,
            backoff: None,
            rng,
            throttle,
            throttled: false,
            transparent: false,
        }
    }

    /// Whether the last failure was not retried only because the throttle
    /// refused it.
    pub(crate) fn throttled(&self) -> bool {
        self.throttled
    }

    /// Whether the last retry decided on is a transparent one (for a
    /// failure that never reached the server, on top of the policy's
    /// attempts), whatever the method's idempotency.
    pub(crate) fn transparent(&self) -> bool {
        self.transparent
    }

    /// Accounts a failed attempt with the throttle, then decides: `Some`
    /// wait before the next attempt, or `None` to give up.
    ///
    /// A retry under the policy needs, in this order: no negative or
    /// malformed pushback; a status code in `retryable_codes` (and, for
    /// `RESOURCE_EXHAUSTED`, a pushback: without it the server is out of
    /// something a retry would only use more of); a method that may
    /// repeat, or a request that never reached the server; an attempt
    /// left; and the throttle's consent. The wait is the pushback if any
    /// (which restarts the backoff sequence), else the next jittered
    /// backoff. Failing all that, a request that never reached the server
    /// gets one immediate transparent retry, which bypasses the throttle
    /// and does not count against `max_attempts`.
    pub(crate) fn on_failure<B>(&mut self, failure: &Failure<B>) -> Option<Duration> {
        self.transparent = false;
        let code_retryable = self
            .retry
            .is_some_and(|retry| retry.retryable_codes.contains(failure.code));
        if let Some(throttle) = self.throttle
            && (code_retryable || failure.transport)
        {
            throttle.on_failure();
        }
        if failure.pushback == Pushback::Stop {
            return None;
        }
        let by_policy = code_retryable
            && (failure.code != Code::ResourceExhausted
                || matches!(failure.pushback, Pushback::Wait(_)))
            && (self.may_repeat || failure.never_sent)
            && self.counted < self.max_attempts;
        let throttle_allows = self.throttle.is_none_or(RetryThrottle::allows_retry);
        self.throttled = by_policy && !throttle_allows;
        let by_policy = by_policy && throttle_allows;
        if by_policy && let Some(retry) = &self.retry {
            let rng = self.rng;
            let backoff = self
                .backoff
                .get_or_insert_with(|| Backoff::new(retry, rng.clone()));
            self.counted += 1;
            return Some(match failure.pushback {
                Pushback::Wait(wait) => {
                    backoff.reset();
                    wait
                }
                _ => backoff.next_wait(),
            });
        }
        if failure.never_sent && self.transparent_left > 0 {
            self.transparent_left -= 1;
            self.transparent = true;
            return Some(Duration::ZERO);
        }
        None
    }

    /// Accounts a successful (or committed) call with the throttle.
    pub(crate) fn on_success(&self) {
        if let Some(throttle) = self.throttle {
            throttle.on_success();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;
    use crate::CodeSet;
    use tonic::body::Body;

    #[test]
    fn pushback_values() {
        assert_eq!(Pushback::parse(None), Pushback::Absent);
        assert_eq!(Pushback::parse(Some(b"0")), Pushback::Wait(Duration::ZERO));
        assert_eq!(
            Pushback::parse(Some(b"1500")),
            Pushback::Wait(Duration::from_millis(1500))
        );
        for bad in [
            &b"-1"[..],
            b"",
            b"+5",
            b"1.5",
            b"soon",
            b" 5",
            b"99999999999999999999999",
        ] {
            assert_eq!(Pushback::parse(Some(bad)), Pushback::Stop, "{bad:?}");
        }
    }

    #[derive(Debug)]
    struct Wrapper(Box<dyn Error + Send + Sync>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn refused() -> io::Error {
        io::Error::from(io::ErrorKind::ConnectionRefused)
    }

    #[test]
    fn connect_failures_are_found_anywhere_in_the_chain() {
        let connect = tonic::ConnectError(Box::new(io::Error::other("tls handshake")));
        assert!(never_reached_server(&connect));
        assert!(never_reached_server(&refused()));
        assert!(never_reached_server(&Wrapper(Box::new(Wrapper(Box::new(
            refused()
        ))))));
        // Inside an io::Error, whose `source` skips what it wraps.
        let wrapped = io::Error::other(tonic::ConnectError(Box::new(io::Error::other("x"))));
        assert!(never_reached_server(&wrapped));
        // Inside a status, as tonic builds them from transport errors.
        let connect = tonic::ConnectError(Box::new(refused()));
        let status = Status::from_error(Box::new(Wrapper(Box::new(connect))));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(never_reached_server(&status));
        // A breaker's refusal: the call went nowhere.
        let refused_by_breaker = crate::status_with_cause(
            Code::Unavailable,
            "circuit breaker open",
            crate::BreakerOpen { retry_after: None },
        );
        assert!(never_reached_server(&refused_by_breaker));
    }

    #[test]
    fn failures_that_may_have_reached_the_server_are_not_never_sent() {
        assert!(!never_reached_server(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(!never_reached_server(&Status::unavailable("down")));
        assert!(!never_reached_server(&Wrapper(Box::new(io::Error::other(
            "connection refused"
        )))));
    }

    #[test]
    fn outcomes_of_responses() {
        let committed = http::Response::new(Body::empty());
        assert!(matches!(Outcome::of(Ok(committed)), Outcome::Success(_)));
        let ok = Status::ok("").into_http::<Body>();
        assert!(matches!(Outcome::of(Ok(ok)), Outcome::Success(_)));
        let mut busy = Status::resource_exhausted("busy").into_http::<Body>();
        busy.headers_mut().insert(PUSHBACK, "25".parse().unwrap());
        let Outcome::Failure(failure) = Outcome::of(Ok(busy)) else {
            panic!("a failure");
        };
        assert_eq!(failure.code, Code::ResourceExhausted);
        assert_eq!(failure.pushback, Pushback::Wait(Duration::from_millis(25)));
        assert!(!failure.transport && !failure.never_sent);
    }

    #[test]
    fn outcomes_of_errors() {
        let mut status = Status::unavailable("later");
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", "-3".parse().unwrap());
        let Outcome::Failure(failure) = Outcome::<Body>::of(Err(status.into())) else {
            panic!("a failure");
        };
        assert_eq!(failure.pushback, Pushback::Stop);
        assert!(!failure.transport);

        let Outcome::Failure(failure) = Outcome::<Body>::of(Err(Box::new(refused()))) else {
            panic!("a failure");
        };
        assert_eq!(failure.code, Code::Unavailable);
        assert!(failure.transport && failure.never_sent);
    }

    fn failure(code: Code, pushback: Pushback, never_sent: bool) -> Failure<Body> {
        Failure {
            code,
            pushback,
            never_sent,
            transport: false,
            result: Err(Status::new(code, "").into()),
        }
    }

    fn policy(idempotency: sinew_core::contract::Idempotency) -> CallPolicy {
        CallPolicy {
            idempotency,
            retry: Some(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(10),
                backoff_multiplier: 1.0,
                retryable_codes: CodeSet::of(&[Code::Unavailable, Code::ResourceExhausted]),
            }),
            ..CallPolicy::unknown("/t.T/M")
        }
    }

    #[test]
    fn never_sent_failures_use_the_policy_then_one_transparent_retry() {
        use sinew_core::contract::Idempotency;
        let rng = Arc::new(Rng::seeded(1));
        let mut state = RetryState::new(&policy(Idempotency::Unknown), None, &rng, 5);
        let never_sent = failure(Code::Unavailable, Pushback::Absent, true);
        // Two policy retries (3 attempts), then one transparent.
        assert!(state.on_failure(&never_sent).is_some());
        assert!(!state.transparent(), "a policy retry");
        assert!(state.on_failure(&never_sent).is_some());
        assert!(!state.transparent(), "a policy retry");
        assert_eq!(state.on_failure(&never_sent), Some(Duration::ZERO));
        assert!(state.transparent());
        assert_eq!(state.on_failure(&never_sent), None);
        assert!(!state.transparent());

        // A method that may repeat gets the transparent retry too, for a
        // failure its policy does not retry, and it is logged as one.
        let mut state = RetryState::new(&policy(Idempotency::Idempotent), None, &rng, 5);
        let refused = failure(Code::Internal, Pushback::Absent, true);
        assert_eq!(state.on_failure(&refused), Some(Duration::ZERO));
        assert!(state.transparent());
    }

    #[test]
    fn codes_outside_the_set_and_unsafe_methods_are_not_retried() {
        use sinew_core::contract::Idempotency;
        let rng = Arc::new(Rng::seeded(1));
        let mut state = RetryState::new(&policy(Idempotency::Idempotent), None, &rng, 5);
        assert_eq!(
            state.on_failure(&failure(Code::Internal, Pushback::Absent, false)),
            None
        );
        let mut state = RetryState::new(&policy(Idempotency::Unknown), None, &rng, 5);
        assert_eq!(
            state.on_failure(&failure(Code::Unavailable, Pushback::Absent, false)),
            None
        );
    }
}
