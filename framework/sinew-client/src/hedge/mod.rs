//! gRFC A6 hedging: copies of a read are sent one after another, a delay
//! apart, and the first good answer wins.
//!
//! # When
//!
//! Only a call whose [`CallPolicy`](crate::CallPolicy) (from the request's extensions) has a
//! `hedging` policy, whose method is `NO_SIDE_EFFECTS`, and whose request
//! is a single message (unary or server-streaming) is hedged. Any other request is passed through
//! untouched: sending a copy of a call with side effects, or of a request
//! stream, is never safe. The retry layer leaves hedged calls alone.
//!
//! # How
//!
//! The request is buffered whole (up to
//! [`DEFAULT_BUFFER_LIMIT`](crate::retry::DEFAULT_BUFFER_LIMIT);
//! a larger one is sent once, unhedged). The first copy goes out at once,
//! then another every `hedging_delay`, up to `max_attempts` copies in all
//! (capped like retries), each after the first with
//! `grpc-previous-rpc-attempts`.
//!
//! - The first response that is committed (headers without `grpc-status`),
//!   OK, or a fatal status (one not in `non_fatal_codes`) wins and is
//!   returned; every other copy still under way is cancelled by dropping
//!   it.
//! - A non-fatal failure sends the next copy at once, if any is left,
//!   rather than waiting out the delay. Its pushback
//!   (`grpc-retry-pushback-ms`) delays the next copy by exactly that much
//!   when non-negative, and stops further copies when negative or
//!   malformed.
//! - When every copy has failed non-fatally, the last failure is returned.
//! - An error without a status (a transport failure) counts as
//!   `UNAVAILABLE`.
//!
//! # Throttle and deadline
//!
//! The [`RetryThrottle`](crate::retry::RetryThrottle), the same
//! type as the retry layer's and best the same instance, takes a token
//! for every non-fatal failure and gives some back for a success; no
//! further copy is sent once it is at or below half. No copy is sent at or
//! after the [`CallDeadline`](crate::CallDeadline); each carries a
//! `grpc-timeout` of the time left, and the call fails with
//! `DEADLINE_EXCEEDED` if no copy has answered by then.
//!
//! The number of copies sent is in the returned response's extensions, as
//! [`Attempts`](crate::retry::Attempts).

mod future;
mod layer;
mod service;

#[cfg(test)]
mod tests;

pub use future::ResponseFuture;
pub use layer::HedgeLayer;
pub use service::Hedge;
