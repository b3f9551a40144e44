//! Typed causes of the failures the client's layers produce themselves.
//!
//! Each is small and public so that callers can tell them apart by type:
//! a layer fails a call with a `tonic::Status` of the right code whose
//! source is one of these. Use [`cause`] to find it:
//!
//! ```
//! use sinew::client::{BreakerOpen, cause};
//! # let status = tonic::Status::unavailable("x");
//! if cause::<BreakerOpen>(&status).is_some() {
//!     // fail over, serve from cache, ...
//! }
//! ```
//!
//! The message on the wire, when a status crosses a service boundary,
//! stays generic; the cause never leaves the process.

use std::{error::Error, fmt, sync::Arc, time::Duration};

use tonic::{Code, Status};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEndpoint;

impl fmt::Display for NoEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no endpoint available")
    }
}

impl Error for NoEndpoint {}

/// A fault injected on purpose by the fault injection layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault;

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("injected fault")
    }
}

impl Error for InjectedFault {}

/// A status with `code`, a generic `message`, and `cause` as its source.
pub fn status_with_cause<E>(code: Code, message: &str, cause: E) -> Status
where
    E: Error + Send + Sync + 'static,
{
    let mut status = Status::new(code, message);
    status.set_source(Arc::new(cause));
    status
}

/// The cause of type `E` of `status`, if a sinew layer produced it.
pub fn cause<E: Error + 'static>(status: &Status) -> Option<&E> {
    status.source().and_then(caused_by)
}

/// The first error of type `E` among `error` and its sources.
pub(crate) fn caused_by<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The status in a boxed error from a layer below, or one made from it.
pub fn to_status(error: crate::BoxError) -> Status {
    Status::from_error(error)
}
