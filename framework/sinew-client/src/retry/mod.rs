//! gRFC A6 retries: a failed call is sent again, when that is safe, after
//! a jittered exponential backoff, within the call's deadline and the
//! client's retry throttle.
//!
//! # Policy
//!
//! Each request's [`CallPolicy`](crate::CallPolicy), from its
//! extensions, says whether and how to retry. A request without one is
//! passed through untouched; so is a call the policy hedges (gRFC A6 gives
//! a call one or the other; [`CallPolicy::hedged`](crate::CallPolicy::hedged)
//! chooses, for both layers).
//!
//! - `max_attempts` counts the first attempt, and is capped at
//!   [`MAX_ATTEMPTS_CAP`](crate::MAX_ATTEMPTS_CAP) unless the layer
//!   raises the cap.
//! - Before retry `n` the layer waits a uniform random time in
//!   `[0, min(initial_backoff * multiplier^(n-1), max_backoff)]`, in whole
//!   milliseconds, drawn from the layer's seeded
//!   [`Rng`](crate::Rng) (sinew-core's one backoff, with full jitter).
//! - Every attempt after the first carries `grpc-previous-rpc-attempts`.
//! - A server can push back with `grpc-retry-pushback-ms` on a failed
//!   attempt: a non-negative integer is the exact wait before the next
//!   attempt (and restarts the backoff sequence); a negative or malformed
//!   value stops retrying.
//!
//! # What is retried
//!
//! An attempt fails when its response headers carry a non-OK
//! `grpc-status` (a trailers-only response, which is how servers answer
//! most errors) or the service below returns an error. A response whose
//! headers carry no `grpc-status` means the server is answering: the call
//! is committed and returned as it is, never retried.
//!
//! - A method that may repeat (`NO_SIDE_EFFECTS`, `IDEMPOTENT`, or a
//!   caller who opted in) is retried on the policy's `retryable_codes`.
//!   `RESOURCE_EXHAUSTED` is retried only when the server pushed back.
//!   An error without a status (a transport failure) counts as
//!   `UNAVAILABLE`.
//! - Any other method is retried only when the request provably never
//!   reached the server: a connection that could not be made
//!   ([`ConnectFailed`](crate::ConnectFailed), a refused connect), a
//!   request the closing connection handed back unsent
//!   ([`NotSent`](crate::NotSent)), a breaker that refused it
//!   ([`BreakerOpen`](crate::BreakerOpen): another endpoint may take it),
//!   a stream the server reset with HTTP/2 `REFUSED_STREAM`, or one cut by
//!   its `GOAWAY` above the last stream it processed. Such a failure also
//!   gets one immediate "transparent" retry on top of the policy's
//!   attempts, with or without a retry policy.
//!
//! The error's chain is walked for these by type (sinew-core's one
//! walker), never by message.
//!
//! # Deadline
//!
//! With a [`CallDeadline`](crate::CallDeadline) in the extensions,
//! no attempt starts, and no backoff is waited, that would end at or past
//! it: the call returns the last attempt's outcome instead. Each attempt
//! goes out with a `grpc-timeout` of the time left, and an attempt still
//! waiting for its response headers at the deadline (or a request body
//! still being buffered) fails the call with `DEADLINE_EXCEEDED`. A
//! deadline already passed before the first attempt fails the call with
//! `DEADLINE_EXCEEDED` caused by [`DeadlineSpent`](crate::DeadlineSpent).
//!
//! # Replay
//!
//! A unary or server-streaming request is one message: it is read whole
//! before the first attempt (up to [`DEFAULT_BUFFER_LIMIT`]) and every
//! attempt gets a copy. A larger one is sent once, never retried. A request
//! stream is recorded as the first attempt reads it (up to
//! [`DEFAULT_REPLAY_LIMIT`]); a retry replays the recording and goes on
//! reading the stream. Once more than the limit has been read, the call is
//! committed to the attempt under way. Attempts are sequential, so only
//! one reads the stream at a time.
//!
//! # Throttling
//!
//! A [`RetryThrottle`] (on by default; share one per target) stops retries
//! while the target keeps failing.
//!
//! # Readiness
//!
//! [`Retry`] is always ready: each attempt drives its own clone of the
//! inner service to readiness, so the inner service must be `Clone`.
//!
//! The number of attempts a call made is in the returned response's
//! extensions, as [`Attempts`].

mod attempt;
mod backoff;
mod future;
mod layer;
mod policy;
mod replay;
mod service;
mod throttle;

#[cfg(test)]
pub(crate) mod mock;
#[cfg(test)]
mod tests;

pub use attempt::Attempts;
pub use future::ResponseFuture;
pub use layer::{DEFAULT_BUFFER_LIMIT, DEFAULT_REPLAY_LIMIT, RetryLayer};
pub use service::Retry;
pub use throttle::RetryThrottle;

// Shared with the hedge layer, which sends its copies the same way.
pub(crate) use attempt::{Template, deadline_exceeded, deadline_spent, send, within};
#[cfg(test)]
pub(crate) use policy::never_reached_server;
pub(crate) use policy::{Failure, Outcome, Pushback};
pub(crate) use replay::Replay;
