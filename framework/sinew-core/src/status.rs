//! Statuses and their causes: one way to attach a typed cause to a status,
//! and one walker that finds a cause in an error chain.
//!
//! A sinew layer fails a call with a `tonic::Status` of the right code, a
//! generic message, and a small typed error (such as the client's
//! `BreakerOpen`, or [`InjectedFault`](crate::fault::InjectedFault)) as its
//! source. Callers tell failures apart by that type, never by the message,
//! and the cause never leaves the process: only the code and the message
//! go on the wire.

use std::{error::Error, sync::Arc};

use tonic::{Code, Status};

use crate::BoxError;

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

/// `error` and its sources, in order: the one walker of error chains.
///
/// Every classification of an error in sinew (was it a connect failure, a
/// refused stream, a status, an injected fault?) walks this chain and
/// downcasts; none matches on messages.
pub fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&error| error.source())
}

/// The first error of type `E` among `error` and its sources.
pub fn caused_by<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    chain(error).find_map(|error| error.downcast_ref::<E>())
}

/// Displays an error with its sources, `: `-separated: how sinew logs an
/// error whose cause is further down its chain.
#[derive(Debug, Clone, Copy)]
pub struct DisplayChain<'a>(pub &'a (dyn Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in chain(self.0).enumerate() {
            if i > 0 {
                f.write_str(": ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// The status in a boxed error from a layer below, or one made from it.
pub fn to_status(error: BoxError) -> Status {
    Status::from_error(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    fn sample() -> Outer {
        Outer(Middle(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[test]
    fn the_chain_walks_every_source_in_order() {
        let error = sample();
        let texts: Vec<String> = chain(&error).map(ToString::to_string).collect();
        assert_eq!(texts, ["outer", "middle", "connection refused"]);
        assert_eq!(
            DisplayChain(&error).to_string(),
            "outer: middle: connection refused"
        );
    }

    #[test]
    fn a_cause_is_found_anywhere_in_the_chain() {
        let error = sample();
        let io = caused_by::<std::io::Error>(&error).expect("the io error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(caused_by::<crate::fault::InjectedFault>(&error).is_none());

        let status = status_with_cause(Code::Unavailable, "down", sample());
        assert!(cause::<Middle>(&status).is_some());
        assert!(cause::<crate::fault::InjectedFault>(&status).is_none());
    }
}
