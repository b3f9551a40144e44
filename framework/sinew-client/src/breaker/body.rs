use sinew_core::body::{End, Guard, GuardBody};
use tonic::Code;

use super::{
    classify::{code_outcome, error_outcome},
    handle::Ticket,
    state::Outcome,
};

/// The response body of a [`Breaker`](super::Breaker)'s call: it records
/// the call's outcome when its trailers arrive. Dropped first, it records
/// a failure if the call's deadline has passed, else nothing (its ticket
/// frees any probe slot). A response whose outcome its
/// headers gave is passed with no ticket.
pub type BreakerBody<B> = GuardBody<B, Ticket>;

/// The outcome of a call whose status came after its headers.
impl Guard for Ticket {
    fn finish(self, end: End<'_>) {
        let outcome = match end {
            // Trailers without a status are a protocol error, which tonic
            // reports as UNKNOWN.
            End::Trailers(trailers) => Some(code_outcome(
                crate::headers::grpc_status(trailers).unwrap_or(Code::Unknown),
            )),
            End::Error(error) => error_outcome(error),
            // The stream ended without trailers: tonic reports UNKNOWN.
            End::Stream => Some(Outcome::Failure),
        };
        if let Some(outcome) = outcome {
            self.record(outcome);
        }
    }
}
