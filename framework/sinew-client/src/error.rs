//! Typed causes of the failures the client's layers produce themselves.
//!
//! Each is small and public so that callers can tell them apart by type:
//! a layer fails a call with a `tonic::Status` of the right code whose
//! source is one of these. Use [`cause`] to find it:
//!
//! ```
//! use sinew_client::{BreakerOpen, cause};
//! # let status = tonic::Status::unavailable("x");
//! if cause::<BreakerOpen>(&status).is_some() {
//!     // fail over, serve from cache, ...
//! }
//! ```
//!
//! The message on the wire, when a status crosses a service boundary,
//! stays generic; the cause never leaves the process.

use std::{error::Error, fmt, time::Duration};

pub use sinew_core::{
    fault::InjectedFault,
    status::{cause, status_with_cause, to_status},
};

/// The circuit breaker of the endpoint (or of every endpoint) is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    /// How long until the breaker lets a probe through, if known.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker open")
    }
}

impl Error for BreakerOpen {}

/// The bulkhead is full: its concurrency limit is reached and its wait
/// queue is full, or the wait in the queue timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    /// True if the call waited in the queue and timed out there; false if
    /// the queue was full and it did not wait.
    pub timed_out: bool,
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timed_out {
            f.write_str("bulkhead queue wait timed out")
        } else {
            f.write_str("bulkhead full")
        }
    }
}

impl Error for BulkheadFull {}

/// The call's deadline had passed before it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineSpent;

impl fmt::Display for DeadlineSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline already spent; call not sent")
    }
}

impl Error for DeadlineSpent {}

/// No endpoint can take the call: none is known, or every one is ejected.
///
/// Where the endpoints were ejected because connects to them fail, its
/// source is the last [`ConnectFailed`](crate::ConnectFailed): why (a
/// refused connect, a TLS handshake's reason).
#[derive(Debug, Clone, Default)]
pub struct NoEndpoint {
    last: Option<crate::ConnectFailed>,
}

impl NoEndpoint {
    pub(crate) fn after(last: Option<crate::ConnectFailed>) -> Self {
        Self { last }
    }
}

impl fmt::Display for NoEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoint available")
    }
}

impl Error for NoEndpoint {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.last
            .as_ref()
            .map(|last| last as &(dyn Error + 'static))
    }
}
